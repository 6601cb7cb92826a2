"""Synthetic colour fundus photographs with DR lesions graded by the ICDR scale.

A photo is built in two stages, the way a camera sees a retina: first the retina's own
colours (reflectance: background, disc, macula, vessels, lesions), then the photograph
(illumination, vignetting, white balance, exposure, gamma, blur, noise and the black surround).
Keeping the stages apart is what lets one per-image nuisance change the look of every
structure consistently. Rendering happens at a working resolution (``WORK_MIN`` to
``WORK_MAX`` pixels wide) and is resized to the requested width, so full-size photos stay cheap.

Speed matters (thousands of photos per data set), hence colour planes stored channel-first
and every local structure (disc, macula, lesions, dust) composited only inside its bounding box.
"""

from __future__ import annotations

import cv2
import numpy as np

from retina_core.data.synthetic.difficulty import FUNDUS, FundusDifficulty
from retina_core.data.synthetic.fundus_geometry import Anatomy, FundusFrame, draw_anatomy, draw_frame
from retina_core.data.synthetic.fundus_lesions import LesionLayers, draw_lesions
from retina_core.data.synthetic.vessels import Vessel, draw_polyline, grow_tree, rasterise
from retina_core.domain import DRGrade

WORK_MIN = 320
"""Small outputs are rendered at least this wide and shrunk, so lesions keep their look at any size."""
WORK_MAX = 768

_F32 = np.float32
_LIGHT_FUNDUS = np.array([0.86, 0.42, 0.17], _F32)
_DARK_FUNDUS = np.array([0.62, 0.24, 0.11], _F32)
_TEXTURE_GAIN = np.array([1.0, 1.4, 1.4], _F32)
_MACULA_TINT = np.array([0.7, 0.5, 0.55], _F32)
_FOVEA_TINT = np.array([0.6, 0.45, 0.5], _F32)
_DISC = np.array([1.0, 0.8, 0.52], _F32)
_CUP = np.array([1.0, 0.93, 0.8], _F32)
_ARTERY_TINT = np.array([0.66, 0.42, 0.46], _F32)
_VEIN_TINT = np.array([0.48, 0.26, 0.34], _F32)
_NEW_VESSEL_TINT = np.array([0.5, 0.2, 0.24], _F32)
_RED_LESION_TINT = np.array([0.5, 0.16, 0.18], _F32)
_EXUDATE = np.array([1.0, 0.86, 0.42], _F32)
_COTTON_WOOL = np.array([0.98, 0.9, 0.78], _F32)
_REFLEX = np.array([0.3, 0.3, 0.28], _F32)
_HALO = np.array([0.6, 0.5, 0.35], _F32)
_DUST_TINT = np.array([0.0, 0.0, 0.0], _F32)

Box = tuple[slice, slice]


def render_fundus(
    grade: int, rng: np.random.Generator, width: int, *, difficulty: FundusDifficulty = FUNDUS
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 photo of the given DR grade and its uint8 lesion mask (255 on lesions).

    The height follows from a camera profile drawn per photo (0.75 to 1.0 of the width); the
    mask is all zero for grade 0, since distractors such as dust are not lesions.
    """
    grade = DRGrade(grade)
    if width < 8:
        raise ValueError(f"fundus width must be at least 8 px, not {width}")
    height, cx, cy, radius = draw_frame(rng, width)
    work_w = int(np.clip(width, WORK_MIN, WORK_MAX))
    scale = work_w / width
    frame = FundusFrame(work_w, max(8, round(height * scale)), cx * scale, cy * scale, radius * scale)
    anatomy = draw_anatomy(rng, frame)
    vessels = grow_tree(rng, anatomy)
    layers = LesionLayers.empty((frame.height, frame.width))
    contrast = rng.uniform(*difficulty.lesion_contrast)
    draw_lesions(rng, difficulty.grades[grade], anatomy, vessels, contrast, layers)
    retina = _retina(rng, anatomy, vessels, layers)
    dist = _distance(frame, frame.cx, frame.cy)
    image = _photograph(rng, retina, anatomy, vessels, dist, difficulty)
    mask = np.where(dist < frame.radius - 1.0, layers.mask, 0).astype(np.uint8)
    return _resize(image, mask, width, height)


def _resize(image: np.ndarray, mask: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """To the requested size; a shrunk mask keeps any pixel a lesion touches, so tiny lesions survive."""
    if image.shape[1] == width and image.shape[0] == height:
        return image, mask
    if width < image.shape[1]:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        mask = np.where(cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA) > 0, 255, 0)
        return image, mask.astype(np.uint8)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image, cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def _distance(frame: FundusFrame, x: float, y: float, box: Box | None = None) -> np.ndarray:
    rows, cols = box if box is not None else (slice(0, frame.height), slice(0, frame.width))
    xs = np.arange(cols.start, cols.stop, dtype=_F32)[None, :] - _F32(x)
    ys = np.arange(rows.start, rows.stop, dtype=_F32)[:, None] - _F32(y)
    return np.sqrt(xs * xs + ys * ys)


def _box(frame: FundusFrame, centre: tuple[float, float], reach: float) -> Box | None:
    x0, x1 = max(0, int(centre[0] - reach)), min(frame.width, int(centre[0] + reach) + 2)
    y0, y1 = max(0, int(centre[1] - reach)), min(frame.height, int(centre[1] + reach) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _canvas_box(canvas: np.ndarray, pad: int = 0) -> Box | None:
    """Bounding box of a canvas's non-zero pixels: lesion layers are sparse, so work only there."""
    x, y, w, h = cv2.boundingRect(canvas)
    if w == 0 or h == 0:
        return None
    rows = slice(max(0, y - pad), min(canvas.shape[0], y + h + pad))
    return rows, slice(max(0, x - pad), min(canvas.shape[1], x + w + pad))


def _darken(image: np.ndarray, box: Box | None, alpha: np.ndarray, tint: np.ndarray) -> None:
    """Multiply towards ``tint``: absorbing structures (blood, pigment) scale the light they return."""
    if box is None:
        return
    for c in range(3):
        image[c][box] *= 1.0 - alpha * (1.0 - tint[c])


def _blend(image: np.ndarray, box: Box | None, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Mix towards ``colour``: reflective structures (disc, exudates) replace what lies below."""
    if box is None:
        return
    for c in range(3):
        plane = image[c][box]
        plane += alpha * (colour[c] - plane)


def _darken_canvas(image: np.ndarray, canvas: np.ndarray, tint: np.ndarray) -> None:
    box = _canvas_box(canvas)
    if box is not None:
        _darken(image, box, canvas[box].astype(_F32) * _F32(1 / 255), tint)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, roughly unit, low-frequency noise: a coarse random grid upsampled smoothly."""
    coarse = rng.standard_normal((cells, cells)).astype(_F32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _gaussian_spot(
    image: np.ndarray,
    frame: FundusFrame,
    centre: tuple[float, float],
    sigma: float,
    depth: float,
    tint: np.ndarray,
) -> None:
    box = _box(frame, centre, 3.0 * sigma)
    if box is not None:
        dist = _distance(frame, centre[0], centre[1], box)
        _darken(image, box, depth * np.exp(-0.5 * (dist / _F32(sigma)) ** 2), tint)


def _retina(
    rng: np.random.Generator, anatomy: Anatomy, vessels: list[Vessel], layers: LesionLayers
) -> np.ndarray:
    """The retina's reflectance as float32 colour planes (3, h, w), about 0..1."""
    frame = anatomy.frame
    shape = (frame.height, frame.width)
    r = anatomy.radius
    base = (_LIGHT_FUNDUS + rng.random() * (_DARK_FUNDUS - _LIGHT_FUNDUS)) * rng.uniform(0.93, 1.07, 3)
    texture = _smooth_noise(rng, shape, int(rng.integers(8, 16))) * _F32(rng.uniform(0.025, 0.055))
    image = np.empty((3, *shape), _F32)
    for c in range(3):
        np.multiply(1.0 + texture * _TEXTURE_GAIN[c], _F32(base[c]), out=image[c])

    _gaussian_spot(image, frame, anatomy.macula, 0.13 * r, rng.uniform(0.25, 0.45), _MACULA_TINT)
    _gaussian_spot(image, frame, anatomy.macula, 0.03 * r, rng.uniform(0.2, 0.4), _FOVEA_TINT)
    _optic_disc(rng, image, anatomy)

    arteries, veins = rasterise(vessels, shape)
    _darken_canvas(image, arteries, _ARTERY_TINT)
    _darken_canvas(image, veins, _VEIN_TINT)
    _darken_canvas(image, layers.new_vessels, _NEW_VESSEL_TINT)
    _darken_canvas(image, layers.red, _RED_LESION_TINT)
    box = _canvas_box(layers.yellow)
    if box is not None:
        _blend(image, box, layers.yellow[box].astype(_F32) * _F32(1 / 255), _EXUDATE)
    sigma = max(0.8, 0.012 * r)
    box = _canvas_box(layers.pale, pad=int(3 * sigma) + 1)
    if box is not None:
        pale = cv2.GaussianBlur(layers.pale[box].astype(_F32) * _F32(1 / 255), (0, 0), sigma)
        _blend(image, box, pale, _COTTON_WOOL)
    return image


def _optic_disc(rng: np.random.Generator, image: np.ndarray, anatomy: Anatomy) -> None:
    """A bright, slightly tall ellipse with a paler cup; soft-edged, as the rim fades into retina."""
    frame = anatomy.frame
    rd = anatomy.disc_radius
    elong = rng.uniform(1.03, 1.15)
    box = _box(frame, anatomy.disc, 1.4 * rd * elong)
    if box is None:
        return
    rows, cols = box
    xs = (np.arange(cols.start, cols.stop, dtype=_F32)[None, :] - _F32(anatomy.disc[0])) / _F32(rd)
    ys = (np.arange(rows.start, rows.stop, dtype=_F32)[:, None] - _F32(anatomy.disc[1])) / _F32(rd * elong)
    dist = np.sqrt(xs * xs + ys * ys)
    _blend(image, box, np.clip((1.0 - dist) * 4.0 + 0.5, 0.0, 1.0) * _F32(rng.uniform(0.75, 0.95)), _DISC)
    cup = _F32(rng.uniform(0.3, 0.6))
    _blend(image, box, np.clip((cup - dist) / _F32(0.3) + 0.5, 0.0, 1.0) * _F32(0.8), _CUP)


def _photograph(
    rng: np.random.Generator,
    retina: np.ndarray,
    anatomy: Anatomy,
    vessels: list[Vessel],
    dist: np.ndarray,
    difficulty: FundusDifficulty,
) -> np.ndarray:
    """What the camera records: uneven light, white balance, optics and sensor, then the black surround."""
    frame = anatomy.frame
    shape = (frame.height, frame.width)
    rho = np.minimum(dist * _F32(1.0 / frame.radius), 1.0)
    field = np.clip(_F32(frame.radius + 0.5) - dist, 0.0, 1.0)
    light = 1.0 - _F32(rng.uniform(*difficulty.vignetting)) * rho * rho * (0.5 + 0.5 * rho)
    light *= 1.0 + 0.08 * _smooth_noise(rng, shape, 4)
    light *= field * _F32(255.0 * rng.uniform(*difficulty.exposure))
    gains = 1.0 + rng.uniform(-difficulty.colour_cast, difficulty.colour_cast, 3)
    for c in range(3):
        retina[c] *= light * _F32(gains[c])
    if rng.random() < difficulty.light_reflex_p:
        _add_light_reflex(rng, retina, anatomy, vessels, light)
    if rng.random() < 0.25:
        halo = np.clip((rho - 0.82) / 0.18, 0.0, 1.0) * field * _F32(255.0 * rng.uniform(0.05, 0.2))
        for c in range(3):
            retina[c] += halo * _HALO[c]
    _add_dust(rng, retina, anatomy, difficulty)
    sigma = rng.uniform(*difficulty.noise_sigma)
    noise = rng.integers(0, 256, retina.shape, dtype=np.uint8)
    for c in range(3):
        retina[c] += (noise[c].astype(_F32) - 127.5) * field * _F32(sigma / 73.9)
    image = cv2.merge([np.clip(plane, 0.0, 255.0).astype(np.uint8) for plane in retina])
    gamma = rng.uniform(*difficulty.gamma)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    image = cv2.LUT(image, lut)
    if rng.random() < difficulty.blur_p:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(*difficulty.blur_sigma))
    return image


def _add_dust(
    rng: np.random.Generator, image: np.ndarray, anatomy: Anatomy, difficulty: FundusDifficulty
) -> None:
    """Soft grey shadows of dust on the optics: lesion look-alikes that are never labelled."""
    frame = anatomy.frame
    for _ in range(difficulty.dust_spots.sample(rng)):
        p = anatomy.sample_point(rng, (frame.cx, frame.cy), 0.9)
        sigma = anatomy.radius * rng.uniform(0.008, 0.02)
        _gaussian_spot(image, frame, (float(p[0]), float(p[1])), sigma, rng.uniform(0.15, 0.35), _DUST_TINT)


def _add_light_reflex(
    rng: np.random.Generator, image: np.ndarray, anatomy: Anatomy, vessels: list[Vessel], light: np.ndarray
) -> None:
    """The glossy nerve-fibre sheen of young retinas along the arcades: bright but not an exudate."""
    frame = anatomy.frame
    canvas = np.zeros((frame.height, frame.width), np.uint8)
    for vessel in vessels:
        if vessel.depth == 0:
            draw_polyline(canvas, vessel.points, vessel.widths * 4.0, rng.uniform(0.15, 0.4))
    sheen = cv2.GaussianBlur(canvas, (0, 0), max(1.5, 0.02 * anatomy.radius)).astype(_F32) * _F32(1 / 255)
    sheen *= light
    for c in range(3):
        image[c] += sheen * _REFLEX[c]
