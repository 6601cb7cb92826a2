"""How hard the synthetic data is to classify, written as numbers a calibration can edit.

The generator exists so that training, evaluation and Grad-CAM can run without the real
APTOS/Kermany downloads. That only tests anything if the task is neither trivial (every model
scores 1.0) nor hopeless. The training issue sets the target: after a few CPU minutes at
128 px, OCT macro-F1 >= 0.90 and fundus quadratic-weighted kappa >= 0.60. Difficulty is set
in four places, all below, so recalibrating never means touching the renderers:

1. **Overlapping lesion counts (fundus).** Each DR grade draws its lesion counts from
   log-normal distributions (:class:`CountDist`) whose clipped ranges overlap with the
   neighbouring grades': a heavy grade-2 eye can carry as many haemorrhages as a light
   grade-3 one, and grade 1 differs from grade 0 only by a few microaneurysms of a few
   pixels. Wider ``spread`` or closer ``median`` values make grading harder.
2. **Lesion contrast (fundus) and severity (OCT).** Fundus lesion contrast is drawn per image
   from ``lesion_contrast``; OCT severity is drawn per scan from a Beta distribution and scales
   lesion size and count, so a share of cases are mild (three small drusen, two small cysts).
3. **Nuisances.** Per-image blur, exposure, gamma, colour cast, sensor noise and camera dust
   (fundus); speckle strength, gain and registration wedges (OCT). They decorrelate the label
   from global image statistics, so that a model must find the lesions.
4. **Distractors.** Dust spots and light reflexes appear in every grade, including grade 0,
   and are never in the lesion masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CountDist:
    """A lesion count: ``median * exp(spread * N(0, 1))``, rounded and clipped to ``[lo, hi]``.

    Log-normal because lesion counts in real DR are heavy-tailed; clipping keeps each grade
    inside its clinical definition (grade 1 never has haemorrhages, grade 3 always has many).
    """

    median: float
    spread: float
    lo: int
    hi: int

    def sample(self, rng: np.random.Generator) -> int:
        draw = self.median * math.exp(self.spread * rng.standard_normal())
        return int(min(max(round(draw), self.lo), self.hi))


NONE = CountDist(0.0, 0.0, 0, 0)


@dataclass(frozen=True)
class GradeLesions:
    """What one ICDR grade looks like: counts per lesion type and the chance of the rarer signs."""

    microaneurysms: CountDist
    haemorrhages: CountDist = NONE
    exudate_clusters: CountDist = NONE
    cotton_wool: CountDist = NONE
    nv_tufts: CountDist = NONE
    beading_p: float = 0.0
    preretinal_p: float = 0.0
    spread: float = 0.55
    """Radius (fraction of the field radius) around the macula that lesions fall in;
    close to 1 puts them in all four quadrants, as ICDR's severe grade requires."""


@dataclass(frozen=True)
class FundusDifficulty:
    grades: tuple[GradeLesions, ...] = (
        GradeLesions(microaneurysms=NONE),
        GradeLesions(microaneurysms=CountDist(4.0, 0.55, 1, 14)),
        GradeLesions(
            microaneurysms=CountDist(8.0, 0.6, 2, 30),
            haemorrhages=CountDist(4.0, 0.7, 1, 16),
            exudate_clusters=CountDist(0.8, 0.9, 0, 5),
            cotton_wool=CountDist(0.5, 1.0, 0, 3),
            spread=0.65,
        ),
        GradeLesions(
            microaneurysms=CountDist(16.0, 0.5, 5, 60),
            haemorrhages=CountDist(20.0, 0.45, 10, 60),
            exudate_clusters=CountDist(2.0, 0.7, 0, 6),
            cotton_wool=CountDist(2.5, 0.6, 1, 8),
            beading_p=0.6,
            spread=0.85,
        ),
        GradeLesions(
            microaneurysms=CountDist(12.0, 0.6, 3, 60),
            haemorrhages=CountDist(12.0, 0.7, 3, 60),
            exudate_clusters=CountDist(1.5, 0.8, 0, 6),
            cotton_wool=CountDist(1.5, 0.8, 0, 8),
            nv_tufts=CountDist(1.5, 0.5, 1, 4),
            beading_p=0.4,
            preretinal_p=0.35,
            spread=0.8,
        ),
    )
    lesion_contrast: tuple[float, float] = (0.4, 1.0)
    """Per-image multiplier of every lesion's opacity: low values give faint, easily missed lesions."""
    blur_p: float = 0.35
    blur_sigma: tuple[float, float] = (0.6, 1.8)
    """Gaussian blur in working-resolution pixels (defocus, cataract)."""
    exposure: tuple[float, float] = (0.6, 1.25)
    gamma: tuple[float, float] = (0.8, 1.25)
    colour_cast: float = 0.12
    """Largest per-channel gain deviation (white balance differs between cameras)."""
    vignetting: tuple[float, float] = (0.2, 0.6)
    noise_sigma: tuple[float, float] = (1.0, 6.0)
    """Sensor noise in grey levels at working resolution."""
    dust_spots: CountDist = CountDist(1.0, 1.0, 0, 5)
    """Dark, soft camera-dust spots: lesion look-alikes in every grade, never in the mask."""
    light_reflex_p: float = 0.4
    """Bright nerve-fibre sheen along the arcades: an exudate look-alike, never in the mask."""


@dataclass(frozen=True)
class OctDifficulty:
    severity_beta: tuple[float, float] = (1.4, 1.5)
    """Per-scan severity in [0, 1]; scales lesion size and count (mean about 0.48)."""
    min_scale: float = 0.65
    """Lesion size at severity 0, as a share of the size at severity 1."""
    speckle_sigma: tuple[float, float] = (0.45, 0.75)
    """Log-normal speckle strength; higher hides small drusen and cysts."""
    gain: tuple[float, float] = (0.85, 1.15)
    background: tuple[float, float] = (0.015, 0.04)
    """Reflectivity of the vitreous: the grey floor of the image."""
    wedge_p: float = 0.12
    """Chance of white registration wedges in the corners, as some Kermany scans have."""
    drusen: tuple[int, int] = (4, 10)
    cysts: tuple[int, int] = (2, 22)
    cnv_subretinal_fluid_p: float = 0.55
    cnv_intraretinal_fluid_p: float = 0.3
    dme_subretinal_fluid_p: float = 0.25


FUNDUS = FundusDifficulty()
OCT = OctDifficulty()
