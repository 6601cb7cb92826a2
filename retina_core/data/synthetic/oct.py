"""Synthetic OCT B-scans of the macula (Spectralis-like, as in Kermany 2018).

The retina is a stack of layers whose per-column boundaries are computed first (bowl-shaped
RPE, foveal pit, thicker nerve-fibre layer towards the disc) and painted with soft one-pixel
edges. Pathology (``oct_lesions``) acts on the stack before painting, so that a druse lifts the
photoreceptors with the RPE and fluid pushes the retina up. The scanner comes last: multiplicative
speckle, logarithmic display and gain, at the final resolution so the grain looks like OCT.

Geometry that belongs to an eye rather than to a scan (curvature, thickness, tilt, choroid) lives
in :class:`OctPatient`, drawn once per patient, so that scans of one patient look alike and a
patient-level split is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from retina_core.data.synthetic.difficulty import OCT, OctDifficulty
from retina_core.data.synthetic.oct_lesions import FLUID, Pathology, draw_pathology, stamp
from retina_core.domain import OctClass

WORK_MAX = 512
"""Layers vary slowly across the scan, so wider scans are painted at this width and stretched."""

_F32 = np.float32
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], _F32)
"""Standard normal quantiles: indexing them with random bytes is a fast, good-enough Gaussian."""
_SPECKLE_KERNEL = np.array([0.25, 0.5, 0.25], _F32) / _F32(np.sqrt(0.375))
"""Lateral smoothing of speckle (OCT grain is wider than tall), variance-preserving."""

# Reflectivity of each layer, top to bottom; the layer names index the boundary list.
_LAYERS = (
    "rnfl",
    "gcl",
    "ipl",
    "inl",
    "opl",
    "onl",
    "elm",
    "is",
    "ez",
    "os",
    "iz",
    "srf",
    "shrm",
    "rpe",
    "sub_rpe",
)
_VALUES = {
    "rnfl": 0.8,
    "gcl": 0.38,
    "ipl": 0.55,
    "inl": 0.2,
    "opl": 0.5,
    "onl": 0.12,
    "elm": 0.42,
    "is": 0.2,
    "ez": 0.85,
    "os": 0.28,
    "iz": 0.62,
    "srf": FLUID,
    "shrm": 0.75,
    "rpe": 0.95,
}
_CHOROID = 0.4
_SCLERA = 0.22


@dataclass(frozen=True)
class OctPatient:
    """One eye's anatomy, shared by all of a patient's scans (heights are shares of the image height)."""

    rpe_level: float
    curvature: float
    """How far the RPE rises at the scan edges: a bowl in most eyes, flatter in some."""
    tilt: float
    thickness: float
    """Parafoveal retinal thickness, ILM to RPE."""
    inner_share: float
    pit_depth: float
    pit_width: float
    """Foveal pit Gaussian width, in scan widths."""
    choroid: float
    nasal: int
    """+1 when the disc (thicker nerve-fibre layer) is to the right."""
    reflectivity: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> OctPatient:
        return cls(
            rpe_level=rng.uniform(0.5, 0.68),
            curvature=rng.uniform(-0.04, 0.3),
            tilt=rng.normal(0.0, 0.05),
            thickness=rng.uniform(0.14, 0.19),
            inner_share=rng.uniform(0.5, 0.6),
            pit_depth=rng.uniform(0.6, 0.85),
            pit_width=rng.uniform(0.05, 0.085),
            choroid=rng.uniform(0.08, 0.2),
            nasal=1 if rng.random() < 0.5 else -1,
            reflectivity=rng.uniform(0.85, 1.15),
        )


def render_oct(
    oct_class: int,
    rng: np.random.Generator,
    width: int,
    height: int = 496,
    patient: OctPatient | None = None,
    *,
    severity: float | None = None,
    difficulty: OctDifficulty = OCT,
) -> tuple[np.ndarray, np.ndarray]:
    """A greyscale uint8 B-scan of ``oct_class`` and its uint8 lesion mask (255 on lesions).

    ``severity`` in [0, 1] scales lesion size and count; by default it is drawn from the
    difficulty's Beta distribution. The mask is all zero for NORMAL.
    """
    oct_class = OctClass(oct_class)
    if width < 8 or height < 8:
        raise ValueError(f"OCT size must be at least 8x8 px, not {width}x{height}")
    if patient is None:
        patient = OctPatient.draw(rng)
    if severity is None:
        severity = float(rng.beta(*difficulty.severity_beta))
    columns = min(width, WORK_MAX)
    u = ((np.arange(columns) + 0.5) / columns - 0.5).astype(_F32)
    fovea = float(rng.normal(0.0, 0.04))
    pit = 1.0 if rng.random() < 0.7 else rng.uniform(0.35, 1.0)
    pathology = draw_pathology(
        oct_class, rng, u, fovea, height, float(np.clip(severity, 0.0, 1.0)), difficulty
    )
    bounds = _boundaries(rng, patient, pathology, u, fovea, pit, height)
    values = [rng.uniform(*difficulty.background), *(_VALUES[n] for n in _LAYERS[:-1])]
    values += [pathology.sub_rpe_value, _CHOROID, _SCLERA]
    rows = np.arange(height, dtype=_F32)[:, None]
    reflectivity = _paint(rows, bounds, values)
    _choroid(rng, reflectivity, rows, bounds, pathology, height)
    mask = _lesion_mask(rows, bounds, pathology)
    stamp(
        pathology.stamps,
        reflectivity,
        mask,
        bounds[_LAYERS.index("inl")],
        bounds[_LAYERS.index("onl") + 1],
        height,
        width,
    )
    if columns != width:
        reflectivity = cv2.resize(reflectivity, (width, height), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    image = _scanner(rng, reflectivity * _F32(patient.reflectivity), difficulty)
    if rng.random() < difficulty.wedge_p:
        _registration_wedges(rng, image, mask)
    return image, mask


def _boundaries(
    rng: np.random.Generator,
    patient: OctPatient,
    pathology: Pathology,
    u: np.ndarray,
    fovea: float,
    pit: float,
    height: int,
) -> np.ndarray:
    """Rows (float) of every layer's top edge plus Bruch's membrane and the choroid's bottom: (17, columns).

    Built bottom-up from Bruch's membrane, because that is the one surface pathology never moves.
    """
    h = float(height)
    x = 2.0 * u
    shift = rng.normal(0.0, 0.025)
    tilt = patient.tilt + rng.normal(0.0, 0.015)
    bruch = h * (patient.rpe_level + shift - patient.curvature * x * x + tilt * x)
    g = np.exp(-0.5 * ((u - fovea) / patient.pit_width) ** 2)
    total = patient.thickness * h
    inner = total * patient.inner_share * (1.0 - patient.pit_depth * pit * pathology.pit_scale * g)
    inner = inner * pathology.thickening
    outer = total * (1.0 - patient.inner_share) * (1.0 + 0.2 * g)
    rnfl_share = (0.12 + 0.22 * np.clip(0.5 + patient.nasal * u, 0.0, 1.0)) * (1.0 - 0.8 * g)
    rnfl = inner * rnfl_share
    rest = inner - rnfl
    thick = {
        "rnfl": rnfl,
        "gcl": rest * 0.35,
        "ipl": rest * 0.25,
        "inl": rest * 0.23,
        "opl": rest * 0.17,
        "onl": _onl(outer, pathology),
        "elm": np.full_like(u, 0.004 * h),
        "is": outer * 0.2,
        "ez": np.full_like(u, 0.009 * h),
        "os": outer * 0.12,
        "iz": np.full_like(u, 0.006 * h),
        "srf": pathology.srf,
        "shrm": pathology.shrm,
        "rpe": np.full_like(u, 0.026 * h),
        "sub_rpe": pathology.sub_rpe,
    }
    tops = [bruch]
    for name in reversed(_LAYERS):
        tops.append(tops[-1] - thick[name])
    bounds = np.stack([*reversed(tops), bruch + patient.choroid * h]).astype(_F32)
    lift = 0.04 * h - float(bounds[0].min())
    if lift > 0:
        bounds += _F32(lift)
    return bounds


def _onl(outer: np.ndarray, pathology: Pathology) -> np.ndarray:
    """The outer nuclear layer swells with oedema and is squeezed over lifted RPE, keeping the ILM smoother."""
    onl = outer * 0.52 * (1.0 + 0.7 * (pathology.thickening - 1.0))
    return np.maximum(onl - 0.6 * (pathology.sub_rpe + pathology.shrm), 0.35 * onl)


def _paint(rows: np.ndarray, bounds: np.ndarray, values: list[float]) -> np.ndarray:
    """Piecewise-constant layers with one-pixel ramps at each edge (anti-aliased, cheap)."""
    image = np.full((rows.shape[0], bounds.shape[1]), values[0], _F32)
    ramp = np.empty_like(image)
    for k in range(bounds.shape[0]):
        step = values[k + 1] - values[k]
        if step == 0:
            continue
        np.subtract(rows + _F32(0.5), bounds[k][None, :], out=ramp)
        np.clip(ramp, 0.0, 1.0, out=ramp)
        ramp *= _F32(step)
        image += ramp
    return image


def _choroid(
    rng: np.random.Generator,
    image: np.ndarray,
    rows: np.ndarray,
    bounds: np.ndarray,
    pathology: Pathology,
    height: int,
) -> None:
    """Dark vessel lumens in the choroid, signal loss with depth, and shadows under dense lesions."""
    bruch = bounds[-2][None, :]
    below = np.clip(rows - bruch, 0.0, None)
    coarse = rng.standard_normal((24, max(2, image.shape[1] // 12))).astype(_F32)
    lumens = cv2.resize(coarse, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)
    in_choroid = (below > 0) & (rows < bounds[-1][None, :])
    image *= np.where(in_choroid, 1.0 - 0.45 * np.clip(lumens, 0.0, 1.6), 1.0).astype(_F32)
    falloff = np.exp(-below / _F32(0.12 * height))
    if pathology.shadow is not None:
        falloff = np.where(below > 0, falloff * pathology.shadow[None, :], falloff)
    image *= falloff * (1.0 - 0.25 * rows / _F32(height))


def _lesion_mask(rows: np.ndarray, bounds: np.ndarray, pathology: Pathology) -> np.ndarray:
    """Lifted RPE with what lies under it, subretinal fluid and material; cysts are stamped later."""
    mask = np.zeros((rows.shape[0], bounds.shape[1]), np.uint8)
    regions = (
        (pathology.sub_rpe, _LAYERS.index("rpe"), len(_LAYERS)),
        (pathology.srf, _LAYERS.index("srf"), _LAYERS.index("shrm")),
        (pathology.shrm, _LAYERS.index("shrm"), _LAYERS.index("rpe")),
    )
    for profile, top, bottom in regions:
        peak = float(profile.max())
        if peak <= 0.01:
            continue
        columns = profile > max(0.01, 0.05 * peak)
        inside = (rows >= np.floor(bounds[top])[None, :]) & (rows < np.ceil(bounds[bottom])[None, :])
        mask[inside & columns[None, :]] = 255
    return mask


def _scanner(rng: np.random.Generator, reflectivity: np.ndarray, difficulty: OctDifficulty) -> np.ndarray:
    """Multiplicative speckle, logarithmic compression and gain: how OCT turns reflectivity into grey."""
    noise = _NORMAL_QUANTILES[rng.integers(0, 256, reflectivity.shape, dtype=np.uint8)]
    noise = cv2.sepFilter2D(noise, -1, _SPECKLE_KERNEL, np.ones(1, _F32), borderType=cv2.BORDER_REFLECT)
    sigma = _F32(rng.uniform(*difficulty.speckle_sigma))
    signal = reflectivity * np.exp(sigma * noise - sigma * sigma / 2) * _F32(rng.uniform(*difficulty.gain))
    compression = _F32(rng.uniform(8.0, 16.0))
    display = np.log1p(compression * np.clip(signal, 0.0, None)) / np.log1p(compression)
    return np.clip(display * _F32(255.0), 0.0, 255.0).astype(np.uint8)


def _registration_wedges(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """White corner triangles left by the scanner's eye-tracking registration in some Kermany scans."""
    h, w = image.shape
    for left in (True, False):
        if rng.random() < 0.5:
            continue
        dx = int(w * rng.uniform(0.05, 0.25))
        dy = int(h * rng.uniform(0.05, 0.3))
        x0 = 0 if left else w - 1
        x1 = dx if left else w - 1 - dx
        y0 = 0 if rng.random() < 0.5 else h - 1
        y1 = dy if y0 == 0 else h - 1 - dy
        triangle = np.array([[x0, y0], [x1, y0], [x0, y1]], np.int32)
        cv2.fillPoly(image, [triangle], 255)
        cv2.fillPoly(mask, [triangle], 0)
