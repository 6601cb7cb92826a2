"""Drawing maps for people: heat-map overlays, gallery strips, PNG files.

Kept apart from computing maps (as pytorch-grad-cam keeps ``utils/image.py`` apart from
its CAM classes) so reports can redraw stored maps without a model. Inputs are checked
up front because the usual mistakes (a float image in 0..255, a normalised tensor, a map
not scaled to [0, 1]) otherwise produce a plausible-looking but wrong picture.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

CONTOUR_RGB = (0, 255, 0)
"""Lesion outlines in green: it stays visible on both red fundus photos and grey OCT."""


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 image with the map as a jet heat map on top; ``alpha`` is the heat map's weight.

    ``image`` is uint8 (H, W) greyscale or (H, W, 3) RGB; ``cam`` is (h, w) in [0, 1] and is
    resized to the image when the model ran at another size.
    """
    rgb = _as_rgb(image)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"cam must be 2-D (H, W), got shape {cam.shape}")
    if not np.isfinite(cam).all() or cam.min() < 0.0 or cam.max() > 1.0:
        raise ValueError("cam must be finite and within [0, 1]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    if cam.shape != rgb.shape[:2]:
        cam = np.clip(cv2.resize(cam, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    return show_cam_on_image(rgb.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=1.0 - alpha)


def side_by_side(image: np.ndarray, overlay: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Gallery strip: image | overlay [| image with the lesion mask outlined], RGB uint8."""
    rgb = _as_rgb(image)
    panels = [rgb, _as_rgb(overlay)]
    if mask is not None:
        panels.append(outline(rgb, mask))
    shapes = {panel.shape for panel in panels}
    if len(shapes) != 1:
        raise ValueError(f"panels must share one size, got {sorted(shapes)}")
    return np.concatenate(panels, axis=1)


def outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = CONTOUR_RGB) -> np.ndarray:
    """The image with the mask's contours drawn one pixel wide (RGB uint8)."""
    rgb = _as_rgb(image).copy()
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, color, thickness=1)
    return rgb


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically (temporary file, then rename)."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            Image.fromarray(array).save(handle, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {image.shape}")
