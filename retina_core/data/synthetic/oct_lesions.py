"""What each Kermany class changes in a B-scan, decided before any pixel is painted.

A :class:`Pathology` is a handful of per-column profiles (how far the RPE is lifted, how much
fluid or hyperreflective material sits under the retina, how much the retina is thickened)
plus a list of cysts and foci to stamp afterwards. The layer painter in ``oct.py`` reads the
profiles, so a drusen bump lifts every photoreceptor layer above it exactly as it lifts the RPE.
Lesion size and number scale with a per-scan severity in [0, 1]: mild cases are the hard ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from retina_core.data.synthetic.difficulty import OctDifficulty
from retina_core.domain import OctClass

_F32 = np.float32
FLUID = 0.015
"""Reflectivity of fluid: as dark as the vitreous."""
DRUSEN_CONTENT = 0.42
PED_CONTENT = 0.62
FOCUS = 0.85
_SHIFT = 4
_SCALE = 1 << _SHIFT


@dataclass(frozen=True)
class Cyst:
    u: float
    """Lateral position in [-0.5, 0.5] of the scan."""
    depth: float
    """Position between the top of the INL (0) and the bottom of the ONL (1)."""
    ry: float
    """Vertical semi-axis, as a share of the image height."""
    aspect: float
    """Width / height in final pixels."""
    hyperreflective: bool = False
    """A bright focus (lipid, inflammatory cells) rather than a dark fluid space."""


@dataclass
class Pathology:
    """Per-column profiles (working columns) and stamps; all zero for a NORMAL scan."""

    sub_rpe: np.ndarray
    """RPE elevation above Bruch's membrane, in pixels (drusen, pigment-epithelial detachment)."""
    sub_rpe_value: float
    shrm: np.ndarray
    """Subretinal hyperreflective material under the neurosensory retina, in pixels."""
    srf: np.ndarray
    """Subretinal fluid, in pixels."""
    thickening: np.ndarray
    """Multiplier (>= 1) of the inner retina and outer nuclear layer thickness."""
    pit_scale: float = 1.0
    """DME fills the foveal pit: 1 keeps it, 0 flattens it."""
    shadow: np.ndarray | None = None
    """Attenuation (0..1) of everything below the RPE: dense lesions cast shadows."""
    stamps: list[Cyst] = field(default_factory=list)

    @classmethod
    def normal(cls, columns: int) -> Pathology:
        zeros = np.zeros(columns, _F32)
        return cls(zeros, 0.0, zeros.copy(), zeros.copy(), np.ones(columns, _F32))


def _dome(u: np.ndarray, centre: float, half_width: float, height: float) -> np.ndarray:
    """Drusen are domes, not Gaussians: steep-sided with a rounded top."""
    t = (u - centre) / half_width
    return (height * np.clip(1.0 - t * t, 0.0, 1.0) ** 0.6).astype(_F32)


def _bump(u: np.ndarray, centre: float, sigma: float, height: float) -> np.ndarray:
    return (height * np.exp(-0.5 * ((u - centre) / sigma) ** 2)).astype(_F32)


def draw_pathology(
    oct_class: OctClass,
    rng: np.random.Generator,
    u: np.ndarray,
    fovea: float,
    height: int,
    severity: float,
    difficulty: OctDifficulty,
) -> Pathology:
    """The lesions of one scan; ``u`` are the working columns' lateral positions in [-0.5, 0.5]."""
    path = Pathology.normal(len(u))
    size = difficulty.min_scale + (1.0 - difficulty.min_scale) * severity
    if oct_class is OctClass.DRUSEN:
        _drusen(rng, path, u, fovea, height, severity, size, difficulty)
    elif oct_class is OctClass.CNV:
        _cnv(rng, path, u, fovea, height, size, difficulty)
    elif oct_class is OctClass.DME:
        _dme(rng, path, u, fovea, height, severity, size, difficulty)
    return path


def _count(bounds: tuple[int, int], severity: float, rng: np.random.Generator) -> int:
    lo, hi = bounds
    return max(lo, round(lo + (hi - lo) * severity * rng.uniform(0.5, 1.0)))


def _drusen(
    rng: np.random.Generator,
    path: Pathology,
    u: np.ndarray,
    fovea: float,
    height: int,
    severity: float,
    size: float,
    difficulty: OctDifficulty,
) -> None:
    for _ in range(_count(difficulty.drusen, severity, rng)):
        centre = float(np.clip(fovea + rng.normal(0.0, 0.13), -0.42, 0.42))
        half_width = rng.uniform(0.018, 0.045) * (0.6 + 0.4 * size)
        path.sub_rpe += _dome(u, centre, half_width, rng.uniform(0.018, 0.045) * height * size)
    path.sub_rpe_value = DRUSEN_CONTENT


def _cnv(
    rng: np.random.Generator,
    path: Pathology,
    u: np.ndarray,
    fovea: float,
    height: int,
    size: float,
    difficulty: OctDifficulty,
) -> None:
    """A fibrovascular detachment: broad, irregular, bright inside, often with fluid over it."""
    centre = float(np.clip(fovea + rng.normal(0.0, 0.07), -0.35, 0.35))
    for _ in range(int(rng.integers(2, 5))):
        offset = rng.normal(0.0, 0.035)
        sigma = rng.uniform(0.02, 0.055) * (0.5 + 0.5 * size)
        path.sub_rpe += _bump(u, centre + offset, sigma, rng.uniform(0.025, 0.07) * height * size)
    path.sub_rpe_value = PED_CONTENT
    if rng.random() < 0.7:
        sigma = rng.uniform(0.02, 0.045) * (0.5 + 0.5 * size)
        path.shrm += _bump(u, centre + rng.normal(0.0, 0.02), sigma, rng.uniform(0.012, 0.04) * height * size)
    if rng.random() < difficulty.cnv_subretinal_fluid_p:
        sigma = rng.uniform(0.05, 0.11)
        path.srf += _bump(u, centre + rng.normal(0.0, 0.04), sigma, rng.uniform(0.01, 0.05) * height * size)
    if rng.random() < difficulty.cnv_intraretinal_fluid_p:
        _add_cysts(rng, path, centre, int(rng.integers(1, 6)), size)
    path.thickening += _bump(u, centre, 0.1, 0.25 * size)
    depth = np.clip((path.sub_rpe + path.shrm) / (0.06 * height), 0.0, 1.0)
    path.shadow = (1.0 - 0.55 * depth).astype(_F32)


def _dme(
    rng: np.random.Generator,
    path: Pathology,
    u: np.ndarray,
    fovea: float,
    height: int,
    severity: float,
    size: float,
    difficulty: OctDifficulty,
) -> None:
    """Cystoid spaces in the INL/ONL, a thickened retina and a filled-in foveal pit."""
    path.thickening += _bump(
        u, fovea + rng.normal(0.0, 0.03), rng.uniform(0.1, 0.2), rng.uniform(0.25, 0.9) * size
    )
    path.pit_scale = 1.0 - 0.85 * severity
    _add_cysts(rng, path, fovea, _count(difficulty.cysts, severity, rng), size)
    if rng.random() < difficulty.dme_subretinal_fluid_p:
        path.srf += _bump(
            u,
            fovea + rng.normal(0.0, 0.03),
            rng.uniform(0.04, 0.08),
            rng.uniform(0.01, 0.035) * height * size,
        )
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(2, 9))):
            u_f = fovea + rng.normal(0.0, 0.12)
            path.stamps.append(
                Cyst(u=u_f, depth=rng.uniform(-0.6, 0.9), ry=0.005, aspect=1.0, hyperreflective=True)
            )


def _add_cysts(rng: np.random.Generator, path: Pathology, centre: float, count: int, size: float) -> None:
    for _ in range(count):
        ry = rng.uniform(0.008, 0.032) * size
        path.stamps.append(
            Cyst(
                u=float(centre + rng.normal(0.0, 0.09)),
                depth=rng.uniform(0.1, 0.85),
                ry=ry,
                aspect=rng.uniform(0.9, 1.9),
            )
        )


def stamp(
    stamps: list[Cyst],
    image: np.ndarray,
    mask: np.ndarray,
    top: np.ndarray,
    bottom: np.ndarray,
    height: int,
    width: int,
) -> None:
    """Draw cysts and foci between per-column ``top`` and ``bottom`` rows (working pixels).

    ``width`` is the final image width: cysts are specified round-ish in final pixels, and the
    working canvas may be narrower, so their horizontal axis is scaled to the canvas.
    """
    if not stamps:
        return
    columns = image.shape[1]
    fluid = np.zeros(image.shape, np.uint8)
    foci = np.zeros(image.shape, np.uint8)
    for cyst in stamps:
        col = int(np.clip(round((cyst.u + 0.5) * (columns - 1)), 0, columns - 1))
        ry = max(0.8, cyst.ry * height)
        rx = max(0.8, ry * cyst.aspect * columns / width)
        y = top[col] + cyst.depth * (bottom[col] - top[col])
        centre = (round(col * _SCALE), round(float(y) * _SCALE))
        axes = (round(rx * _SCALE), round(ry * _SCALE))
        canvas = foci if cyst.hyperreflective else fluid
        cv2.ellipse(canvas, centre, axes, 0, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1, cv2.LINE_8, _SHIFT)
    for canvas, value in ((fluid, FLUID), (foci, FOCUS)):
        alpha = canvas.astype(_F32) * _F32(1 / 255)
        image += alpha * (_F32(value) - image)
