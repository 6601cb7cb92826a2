"""Where things are in a synthetic fundus photograph: the camera field, the disc and the macula.

Kept apart from the drawing code so that lesion placement and anatomy share one notion of
"inside the visible retina" (lesions must never land in the black surround or in a cropped-off
strip, or the lesion masks would point at nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROFILE_ASPECTS: tuple[float, ...] = (0.75, 0.75, 0.8, 0.85, 0.9, 1.0, 1.0)
"""Height/width of common fundus-camera frames (4:3 sensors and square crops)."""
CROPPED_P = 0.35
"""Share of photos whose circular field is larger than the frame height, so top and bottom are cut."""
LESION_FIELD = 0.86
"""Lesions stay inside this share of the field radius, clear of the dim rim."""


@dataclass(frozen=True)
class FundusFrame:
    """The photograph's frame and circular field, in working-resolution pixels."""

    width: int
    height: int
    cx: float
    cy: float
    radius: float

    def inside(self, x: float, y: float, margin: float = LESION_FIELD) -> bool:
        """True where a point is on visible retina: in the field and not in a cropped strip."""
        in_field = math.hypot(x - self.cx, y - self.cy) < margin * self.radius
        edge = 0.02 * self.height
        return in_field and edge < y < self.height - edge and edge < x < self.width - edge


@dataclass(frozen=True)
class Anatomy:
    """Landmarks of one eye; ``side`` is +1 when the disc is right of the macula."""

    frame: FundusFrame
    disc: tuple[float, float]
    disc_radius: float
    macula: tuple[float, float]
    side: int

    @property
    def radius(self) -> float:
        return self.frame.radius

    def sample_point(
        self, rng: np.random.Generator, around: tuple[float, float], spread: float
    ) -> np.ndarray:
        """A uniform point within ``spread * radius`` of ``around`` on visible retina, off the disc.

        Rejection sampling: the visible region is a cropped disc minus the optic disc, which has
        no closed-form sampler, and lesions are few enough for the retries not to matter.
        """
        reach = spread * self.radius
        for _ in range(64):
            rho = reach * math.sqrt(rng.random())
            phi = rng.uniform(0.0, 2.0 * math.pi)
            x = around[0] + rho * math.cos(phi)
            y = around[1] + rho * math.sin(phi)
            off_disc = math.hypot(x - self.disc[0], y - self.disc[1]) > 1.4 * self.disc_radius
            if off_disc and self.frame.inside(x, y):
                return np.array([x, y])
        return np.array(self.macula, dtype=float)


def draw_frame(rng: np.random.Generator, width: int) -> tuple[int, float, float, float]:
    """Height, field centre and field radius of one photo at its final ``width``.

    Returned in final pixels so that a photo's shape does not depend on the working resolution.
    """
    aspect = float(np.clip(rng.choice(PROFILE_ASPECTS) + rng.normal(0.0, 0.015), 0.75, 1.0))
    height = max(8, round(width * aspect))
    if rng.random() < CROPPED_P:
        radius = 0.5 * height * rng.uniform(1.03, 1.18)
    else:
        radius = 0.5 * min(width, height) * rng.uniform(0.88, 0.98)
    radius = min(radius, 0.49 * width)
    cx = 0.5 * width + rng.normal(0.0, 0.008) * width
    cy = 0.5 * height + rng.normal(0.0, 0.008) * height
    return height, cx, cy, radius


def draw_anatomy(rng: np.random.Generator, frame: FundusFrame) -> Anatomy:
    """Disc nasal of a roughly centred macula, about 2.5 disc diameters apart, as in macula-centred photos."""
    r = frame.radius
    side = 1 if rng.random() < 0.5 else -1
    disc_radius = r * rng.uniform(0.1, 0.13)
    disc = (frame.cx + side * r * rng.uniform(0.3, 0.4), frame.cy + r * rng.uniform(-0.06, 0.04))
    macula = (disc[0] - side * r * rng.uniform(0.44, 0.52), disc[1] + r * rng.uniform(0.0, 0.06))
    return Anatomy(frame=frame, disc=disc, disc_radius=disc_radius, macula=macula, side=side)
