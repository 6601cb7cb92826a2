"""The retinal vessel tree: arcades that leave the optic disc, curve round the macula and branch.

Vessels are generated as polylines (random walks with a steady turn, tapering and branching)
and only then rasterised, so that lesions that live *on* vessels (venous beading, new vessels
along the arcades) can be placed on the same geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from retina_core.data.synthetic.fundus_geometry import Anatomy

_SHIFT = 4
"""Fractional bits for OpenCV drawing: sub-pixel vertices keep thin vessels smooth."""
_SCALE = 1 << _SHIFT
STEP = 0.02
"""Random-walk step as a share of the field radius."""
BRANCH_P = 0.06
MAX_DEPTH = 3


@dataclass(frozen=True)
class Vessel:
    points: np.ndarray
    """(n, 2) vertices in working pixels, starting at the proximal end."""
    widths: np.ndarray
    """(n - 1,) segment widths in pixels."""
    vein: bool
    depth: int
    """0 for a main trunk leaving the disc."""


def grow_tree(rng: np.random.Generator, anatomy: Anatomy) -> list[Vessel]:
    """Four arcades (two temporal curving round the macula, two nasal) of arteries and veins."""
    r = anatomy.radius
    temporal = -anatomy.side
    vessels: list[Vessel] = []
    for vein in (False, True):
        base = r * (0.016 if vein else 0.012) * rng.uniform(0.85, 1.15)
        for sup in (-1, 1):
            a = math.radians(rng.uniform(55.0, 80.0))
            heading = math.atan2(sup * math.sin(a), temporal * math.cos(a))
            turn = -sup * temporal * rng.uniform(0.75, 1.1) / r
            _grow(rng, anatomy.disc, heading, turn, r * rng.uniform(1.0, 1.25), base, vein, 0, r, vessels)
            b = math.radians(rng.uniform(15.0, 50.0))
            heading = math.atan2(sup * math.sin(b), -temporal * math.cos(b))
            turn = rng.normal(0.0, 0.4) / r
            _grow(
                rng, anatomy.disc, heading, turn, r * rng.uniform(0.5, 0.7), base * 0.8, vein, 0, r, vessels
            )
    for _ in range(int(rng.integers(2, 5))):
        heading = math.atan2(rng.uniform(-0.35, 0.35), temporal)
        _grow(rng, anatomy.disc, heading, 0.0, r * rng.uniform(0.2, 0.35), r * 0.006, False, 1, r, vessels)
    return vessels


def _grow(
    rng: np.random.Generator,
    start: tuple[float, float],
    heading: float,
    turn: float,
    length: float,
    width: float,
    vein: bool,
    depth: int,
    radius: float,
    out: list[Vessel],
) -> None:
    step = STEP * radius
    n = max(2, int(length / step))
    wiggle = rng.normal(0.0, 0.07, n + 1)
    branch = rng.random(n + 1) < BRANCH_P
    xs = [start[0]]
    ys = [start[1]]
    for i in range(1, n + 1):
        heading += turn * step + wiggle[i]
        xs.append(xs[-1] + step * math.cos(heading))
        ys.append(ys[-1] + step * math.sin(heading))
        if depth < MAX_DEPTH and i > 2 and branch[i]:
            child = heading + rng.choice((-1.0, 1.0)) * math.radians(rng.uniform(25.0, 65.0))
            child_width = width * (1.0 - 0.45 * i / n) * rng.uniform(0.55, 0.75)
            child_length = radius * rng.uniform(0.2, 0.45)
            child_turn = rng.normal(0.0, 0.8) / radius
            _grow(
                rng,
                (xs[-1], ys[-1]),
                child,
                child_turn,
                child_length,
                child_width,
                vein,
                depth + 1,
                radius,
                out,
            )
    widths = width * (1.0 - 0.45 * np.arange(n) / n)
    out.append(Vessel(points=np.column_stack([xs, ys]), widths=widths, vein=vein, depth=depth))


def draw_polyline(canvas: np.ndarray, points: np.ndarray, widths: np.ndarray, opacity: float = 1.0) -> None:
    """Rasterise a tapering polyline into a uint8 opacity canvas (255 = opaque).

    Widths under a pixel are drawn one pixel wide and proportionally fainter, which is what an
    area-averaging camera would record and keeps thin branches from flickering in and out.
    Runs of segments that rasterise alike are drawn in one call: Python per segment is the cost.
    """
    pts = np.round(points * _SCALE).astype(np.int32)
    values = (255 * opacity * np.minimum(1.0, widths)).astype(np.int32) // 8 * 8
    thickness = np.maximum(1, np.round(widths)).astype(np.int32)
    n = len(widths)
    start = 0
    for i in range(1, n + 1):
        if i < n and values[i] == values[start] and thickness[i] == thickness[start]:
            continue
        if values[start] > 0:
            run = pts[start : i + 1].reshape(-1, 1, 2)
            cv2.polylines(
                canvas, [run], False, int(values[start]), int(thickness[start]), cv2.LINE_AA, _SHIFT
            )
        start = i


def rasterise(vessels: list[Vessel], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 opacity canvases (255 = opaque) of the arteries and of the veins."""
    arteries = np.zeros(shape, np.uint8)
    veins = np.zeros(shape, np.uint8)
    for vessel in vessels:
        draw_polyline(veins if vessel.vein else arteries, vessel.points, vessel.widths)
    return arteries, veins
