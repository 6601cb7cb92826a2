"""The generator's shift knob: nothing changes without it, the camera and the case mix change with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retina_core.data.synthetic import CameraShift, Shift, SynthSpec, apply_camera, write_synthetic
from retina_core.drift.features import FEATURES, image_features


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_default_shift_writes_the_same_bytes(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    knob = tmp_path / "knob"
    write_synthetic(plain, SynthSpec(fundus=3, oct=4, size=32, seed=5))
    write_synthetic(knob, SynthSpec(fundus=3, oct=4, size=32, seed=5, shift=Shift(camera=CameraShift())))
    assert _files(plain) == _files(knob)


def test_another_camera_moves_brightness_sharpness_and_field() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64, 3), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    field = (yy - 32) ** 2 + (xx - 32) ** 2 < 30**2
    image[field] = rng.integers(60, 140, (int(field.sum()), 3))
    mask = (field * 255).astype(np.uint8)
    shifted, shifted_mask = apply_camera(
        image, mask, CameraShift(brightness=1.4, blur_sigma=1.5, field_scale=0.7)
    )
    assert shifted.shape == image.shape and shifted_mask.shape == mask.shape
    assert (shifted_mask > 0).sum() < (mask > 0).sum()  # the lesion mask follows the geometry

    def features(a: np.ndarray) -> dict[str, float]:
        import cv2

        data = cv2.imencode(".png", a)[1].tobytes()
        return dict(zip(FEATURES, image_features(data, 64, 64), strict=True))

    before, after = features(image), features(shifted)
    assert after["brightness"] > before["brightness"]
    assert after["sharpness"] < before["sharpness"]
    assert after["field_fraction"] < before["field_fraction"]


def test_another_case_mix_changes_the_class_shares(tmp_path: Path) -> None:
    mix = Shift(fundus_grade_weights=(0.0, 0.0, 0.0, 0.5, 0.5), oct_class_weights=(0.0, 0.0, 0.0, 1.0))
    summary = write_synthetic(tmp_path, SynthSpec(fundus=20, oct=40, size=32, seed=0, shift=mix))
    assert summary.fundus_by_grade[3] + summary.fundus_by_grade[4] >= 14  # floor of 2 per grade kept
    assert summary.oct_by_class["NORMAL"] >= 28  # Kermany's mix would give 13
