from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina_core.explain.overlay import CONTOUR_RGB, outline, overlay, save_png, side_by_side


def gradient_image(height: int = 48, width: int = 40, channels: int | None = 3) -> np.ndarray:
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    image = ramp.astype(np.uint8)
    return image if channels is None else np.repeat(image[:, :, None], channels, axis=2)


def centre_cam(height: int, width: int) -> np.ndarray:
    rr, cc = np.mgrid[:height, :width]
    return np.exp(-((rr - height / 2) ** 2 + (cc - width / 2) ** 2) / (height * width / 8)).astype(np.float32)


def test_overlay_is_rgb_uint8_for_grey_and_colour_images() -> None:
    results = [
        overlay(image, centre_cam(48, 40))
        for image in (gradient_image(channels=None), gradient_image(channels=1), gradient_image(channels=3))
    ]
    for result in results:
        assert result.shape == (48, 40, 3)
        assert result.dtype == np.uint8
    # a grey image is drawn as its RGB copy, whichever way its channel is given
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_overlay_shows_the_heat_where_the_map_is_and_the_image_everywhere() -> None:
    cam = np.zeros((48, 40), dtype=np.float32)
    cam[:, 20:] = 1.0  # hot right half, cold left half
    dark, bright = np.full((48, 40, 3), 40, np.uint8), np.full((48, 40, 3), 200, np.uint8)
    on_dark, on_bright = overlay(dark, cam).astype(int), overlay(bright, cam).astype(int)
    # jet: hot is red, cold is blue, on either image
    for result in (on_dark, on_bright):
        assert (result[:, 25:, 0] > result[:, 25:, 2] + 50).all()
        assert (result[:, :15, 2] > result[:, :15, 0] + 50).all()
    # the image shows through everywhere: a brighter photo gives a brighter overlay
    assert (on_bright.sum(axis=2) > on_dark.sum(axis=2)).all()
    # colour photos keep their channel order (RGB in, RGB out)
    photo = np.zeros((48, 40, 3), np.uint8)
    photo[:24, :, 0] = 255  # top half red
    photo[24:, :, 2] = 255  # bottom half blue
    flat = overlay(photo, np.full((48, 40), 0.5, np.float32)).astype(int)
    assert flat[:24, :, 0].mean() > flat[24:, :, 0].mean() + 50
    assert flat[24:, :, 2].mean() > flat[:24, :, 2].mean() + 50


def test_cam_at_model_size_is_resized_to_the_image() -> None:
    result = overlay(gradient_image(), centre_cam(16, 16))
    assert result.shape == (48, 40, 3)
    # jet colours the peak red and cold areas blue: the centre is redder than a corner
    assert int(result[24, 20, 0]) - int(result[24, 20, 2]) > int(result[2, 2, 0]) - int(result[2, 2, 2])


def test_alpha_weighs_heat_map_against_image() -> None:
    image = gradient_image()
    assert np.abs(overlay(image, centre_cam(48, 40), alpha=0.0).astype(int) - image).max() <= 1
    full = overlay(image, centre_cam(48, 40), alpha=1.0)
    assert not np.array_equal(full, image)
    assert np.abs(full.astype(int) - overlay(np.zeros_like(image), centre_cam(48, 40), alpha=1.0)).max() <= 1


@pytest.mark.parametrize(
    ("image", "cam", "alpha", "message"),
    [
        (gradient_image().astype(np.float32), centre_cam(48, 40), 0.4, "uint8"),
        (gradient_image(), centre_cam(48, 40) * 2, 0.4, r"\[0, 1\]"),
        (gradient_image(), centre_cam(48, 40) - 0.5, 0.4, r"\[0, 1\]"),
        (gradient_image(), np.full((48, 40), np.nan, dtype=np.float32), 0.4, "finite"),
        (gradient_image(), centre_cam(48, 40)[None], 0.4, "2-D"),
        (gradient_image(), centre_cam(48, 40), 1.5, "alpha"),
        (gradient_image(channels=4), centre_cam(48, 40), 0.4, "shape"),
    ],
    ids=["float-image", "cam-above-1", "cam-negative", "cam-nan", "cam-3d", "alpha", "rgba"],
)
def test_input_ranges_are_checked(image: np.ndarray, cam: np.ndarray, alpha: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        overlay(image, cam, alpha=alpha)


def test_side_by_side_strips_and_mask_contour() -> None:
    image = gradient_image()
    heat = overlay(image, centre_cam(48, 40))
    assert side_by_side(image, heat).shape == (48, 80, 3)

    mask = np.zeros((48, 40), dtype=bool)
    mask[10:20, 10:30] = True
    strip = side_by_side(gradient_image(channels=None), heat, mask)
    assert strip.shape == (48, 120, 3) and strip.dtype == np.uint8
    third = strip[:, 80:]
    assert tuple(third[10, 15]) == CONTOUR_RGB  # on the border
    assert tuple(third[15, 15]) != CONTOUR_RGB  # inside stays the image
    np.testing.assert_array_equal(strip[:, :40], gradient_image())
    with pytest.raises(ValueError, match="one size"):
        side_by_side(image, heat[:, :30])
    with pytest.raises(ValueError, match="mask shape"):
        outline(image, mask[:20])


def test_save_png_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    strip = side_by_side(gradient_image(), overlay(gradient_image(), centre_cam(48, 40)))
    path = save_png(tmp_path / "gallery" / "case.png", strip)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), strip)
    assert [p.name for p in path.parent.iterdir()] == ["case.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "bad.png", strip.astype(np.float32))
