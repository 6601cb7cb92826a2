"""Diabetic-retinopathy lesions drawn onto opacity layers, with the lesion mask drawn alongside.

Every lesion is drawn twice: once, soft and with its per-image opacity, into the layer that
colours it, and once, binary, into the mask. The mask therefore marks faint lesions as fully
as obvious ones, which is what a pointing-game ground truth should do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from retina_core.data.synthetic.difficulty import GradeLesions
from retina_core.data.synthetic.fundus_geometry import Anatomy
from retina_core.data.synthetic.vessels import Vessel, draw_polyline

_SHIFT = 4
_SCALE = 1 << _SHIFT


@dataclass(frozen=True)
class LesionLayers:
    """uint8 opacity canvases (255 = fully opaque) at working resolution, plus the binary mask."""

    red: np.ndarray
    """Microaneurysms and haemorrhages: darken towards deep red."""
    yellow: np.ndarray
    """Hard exudates: brighten towards yellow, crisp edges."""
    pale: np.ndarray
    """Cotton-wool spots: blurred before compositing, hence fluffy."""
    new_vessels: np.ndarray
    """Neovascular tufts and venous beads: tinted like vessels."""
    mask: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> LesionLayers:
        return cls(*(np.zeros(shape, np.uint8) for _ in range(5)))


def draw_lesions(
    rng: np.random.Generator,
    spec: GradeLesions,
    anatomy: Anatomy,
    vessels: list[Vessel],
    contrast: float,
    layers: LesionLayers,
) -> None:
    """Draw one grade's lesions; counts come from ``spec``, opacity scales with ``contrast``."""
    for _ in range(spec.microaneurysms.sample(rng)):
        _microaneurysm(rng, anatomy, spec.spread, contrast, layers)
    for _ in range(spec.haemorrhages.sample(rng)):
        _haemorrhage(rng, anatomy, spec.spread, contrast, layers)
    for _ in range(spec.exudate_clusters.sample(rng)):
        _exudate_cluster(rng, anatomy, contrast, layers)
    for _ in range(spec.cotton_wool.sample(rng)):
        _cotton_wool(rng, anatomy, contrast, layers)
    if rng.random() < spec.beading_p:
        _venous_beading(rng, anatomy, vessels, contrast, layers)
    for _ in range(spec.nv_tufts.sample(rng)):
        _new_vessel_tuft(rng, anatomy, vessels, contrast, layers)
    if rng.random() < spec.preretinal_p:
        _preretinal_haemorrhage(rng, anatomy, contrast, layers)


def _fixed(p: np.ndarray | tuple[float, float]) -> tuple[int, int]:
    return round(float(p[0]) * _SCALE), round(float(p[1]) * _SCALE)


def _ellipse(
    layers: LesionLayers,
    canvas: np.ndarray,
    centre: np.ndarray,
    axes: tuple[float, float],
    angle: float,
    opacity: float,
) -> None:
    axes_fixed = (max(1, round(axes[0] * _SCALE)), max(1, round(axes[1] * _SCALE)))
    value = int(np.clip(255 * opacity, 1, 255))
    cv2.ellipse(canvas, _fixed(centre), axes_fixed, angle, 0, 360, value, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(layers.mask, _fixed(centre), axes_fixed, angle, 0, 360, 255, -1, cv2.LINE_8, _SHIFT)


def _microaneurysm(
    rng: np.random.Generator, anatomy: Anatomy, spread: float, contrast: float, layers: LesionLayers
) -> None:
    p = anatomy.sample_point(rng, anatomy.macula, spread)
    r = max(0.7, anatomy.radius * rng.uniform(0.005, 0.01))
    _ellipse(layers, layers.red, p, (r, r), 0.0, contrast * rng.uniform(0.75, 1.0))


def _haemorrhage(
    rng: np.random.Generator, anatomy: Anatomy, spread: float, contrast: float, layers: LesionLayers
) -> None:
    """Dot/blot haemorrhages (a few overlapping ellipses) or flame-shaped ones along the nerve fibres."""
    p = anatomy.sample_point(rng, anatomy.macula, spread)
    opacity = contrast * rng.uniform(0.8, 1.0)
    if rng.random() < 0.3:
        a = anatomy.radius * rng.uniform(0.02, 0.045)
        radial = math.degrees(math.atan2(p[1] - anatomy.disc[1], p[0] - anatomy.disc[0]))
        _ellipse(layers, layers.red, p, (a, a * rng.uniform(0.22, 0.4)), radial, opacity)
        return
    a = anatomy.radius * rng.uniform(0.012, 0.03)
    for _ in range(int(rng.integers(1, 4))):
        offset = rng.normal(0.0, 0.35 * a, 2)
        axes = (a * rng.uniform(0.6, 1.0), a * rng.uniform(0.45, 0.9))
        _ellipse(layers, layers.red, p + offset, axes, rng.uniform(0, 180), opacity)


def _exudate_cluster(
    rng: np.random.Generator, anatomy: Anatomy, contrast: float, layers: LesionLayers
) -> None:
    """Hard exudates: small crisp yellow dots, scattered or in a circinate ring round a leak."""
    centre = anatomy.sample_point(rng, anatomy.macula, 0.4)
    reach = anatomy.radius * rng.uniform(0.03, 0.1)
    ring = rng.random() < 0.4
    for _ in range(int(rng.integers(4, 26))):
        if ring:
            phi = rng.uniform(0, 2 * math.pi)
            p = centre + reach * rng.uniform(0.8, 1.1) * np.array([math.cos(phi), math.sin(phi)])
        else:
            p = centre + rng.normal(0.0, 0.5 * reach, 2)
        if not anatomy.frame.inside(float(p[0]), float(p[1])):
            continue
        r = max(0.6, anatomy.radius * rng.uniform(0.004, 0.011))
        _ellipse(layers, layers.yellow, p, (r, r * rng.uniform(0.7, 1.0)), rng.uniform(0, 180), contrast)


def _cotton_wool(rng: np.random.Generator, anatomy: Anatomy, contrast: float, layers: LesionLayers) -> None:
    """Nerve-fibre infarcts: pale, fluffy, usually near the disc and along the arcades."""
    p = anatomy.sample_point(rng, anatomy.disc, 0.6)
    a = anatomy.radius * rng.uniform(0.025, 0.05)
    opacity = contrast * rng.uniform(0.6, 0.9)
    _ellipse(layers, layers.pale, p, (a, a * rng.uniform(0.55, 0.9)), rng.uniform(0, 180), opacity)


def _venous_beading(
    rng: np.random.Generator, anatomy: Anatomy, vessels: list[Vessel], contrast: float, layers: LesionLayers
) -> None:
    """Sausage-like calibre changes along a stretch of one or two main veins."""
    trunks = [v for v in vessels if v.vein and v.depth == 0]
    for idx in rng.choice(len(trunks), size=min(len(trunks), int(rng.integers(1, 3))), replace=False):
        vein = trunks[int(idx)]
        n = len(vein.widths)
        start = int(rng.integers(n // 5, max(n // 5 + 1, n // 2)))
        for i in range(start, min(n, start + max(4, n // 3)), 2):
            p = vein.points[i]
            if not anatomy.frame.inside(float(p[0]), float(p[1])):
                continue
            r = max(0.8, float(vein.widths[i]) * rng.uniform(0.75, 1.0))
            _ellipse(layers, layers.new_vessels, p, (r, r), 0.0, min(1.0, 0.4 + contrast))


def _new_vessel_tuft(
    rng: np.random.Generator, anatomy: Anatomy, vessels: list[Vessel], contrast: float, layers: LesionLayers
) -> None:
    """Fine, tortuous, looping vessels at the disc (NVD) or off a main vein (NVE)."""
    centre = np.array(anatomy.disc, dtype=float)
    if rng.random() >= 0.5:
        veins = [v for v in vessels if v.vein and v.depth == 0]
        vein = veins[int(rng.integers(len(veins)))]
        candidate = vein.points[int(rng.integers(len(vein.points) // 4, len(vein.points)))]
        if anatomy.frame.inside(float(candidate[0]), float(candidate[1])):
            centre = candidate
    reach = anatomy.radius * rng.uniform(0.04, 0.08)
    step = anatomy.radius * 0.008
    width = max(0.6, anatomy.radius * 0.004)
    opacity = contrast * rng.uniform(0.75, 1.0)
    for _ in range(int(rng.integers(8, 19))):
        n = int(rng.integers(12, 26))
        points = np.empty((n, 2))
        points[0] = centre + rng.normal(0.0, 0.3 * reach, 2)
        heading = rng.uniform(0, 2 * math.pi)
        for i in range(1, n):
            away = points[i - 1] - centre
            if np.hypot(*away) > reach:
                heading = math.atan2(-away[1], -away[0]) + rng.normal(0.0, 0.6)
            heading += rng.normal(0.0, 0.55)
            points[i] = points[i - 1] + step * np.array([math.cos(heading), math.sin(heading)])
        keep = [anatomy.frame.inside(float(x), float(y), margin=0.97) for x, y in points]
        if not all(keep):
            continue
        widths = np.full(n - 1, width)
        draw_polyline(layers.new_vessels, points, widths, opacity)
        draw_polyline(layers.mask, points, widths + 2.0)


def _preretinal_haemorrhage(
    rng: np.random.Generator, anatomy: Anatomy, contrast: float, layers: LesionLayers
) -> None:
    """Boat-shaped: blood under the hyaloid settles, leaving a flat fluid level on top."""
    centre = anatomy.sample_point(rng, anatomy.macula, 0.5)
    r = anatomy.radius * rng.uniform(0.06, 0.11)
    alpha = math.asin(0.25)
    angles = np.linspace(-alpha, math.pi + alpha, 40)
    poly = np.stack([centre[0] + r * np.cos(angles), centre[1] + r * np.sin(angles)], axis=1)
    keep = np.array([anatomy.frame.inside(float(x), float(y), margin=0.97) for x, y in poly])
    if not keep.all():
        return
    fixed = np.round(poly * _SCALE).astype(np.int32)[None]
    cv2.fillPoly(layers.red, fixed, int(255 * min(1.0, contrast + 0.35)), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(layers.mask, fixed, 255, cv2.LINE_8, _SHIFT)
