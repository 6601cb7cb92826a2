"""`retina predict` on DICOM: a photo gives what its pixels give as PNG, an OCT volume gets an eye-level score."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina_core.evaluation.volume import volume_scores
from retina_core.fusion.report import FusionReport
from retina_core.predict import InvalidImage, Predictor
from tests.fusion.world import World
from tests.support.dicom_files import OPT, dicom_bytes

pytestmark = pytest.mark.slow  # uses the paired world


def _eyes(world: World, n: int) -> list[dict[str, str]]:
    with (world.out / "pairs.csv").open() as fh:
        return [row for _, row in zip(range(n), csv.DictReader(fh), strict=False)]


def _pixels(path: Path, mode: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert(mode))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_dicom_photo_and_oct_volume(paired_world: World, paired_report: FusionReport, tmp_path: Path) -> None:
    predictor = Predictor(paired_world.settings, paired_world.engine, paired_world.store)
    rows = _eyes(paired_world, 3)
    photo = _pixels(paired_world.out / rows[0]["fundus_path"], "RGB")
    as_png = predictor.predict(_png(photo))
    as_dicom = predictor.predict(dicom_bytes(photo))
    assert as_dicom.fundus == as_png.fundus

    b_scans = [_pixels(paired_world.out / row["oct_path"], "L") for row in rows]
    volume = dicom_bytes(np.stack(b_scans), sop_class=OPT)
    one_by_one = [predictor.predict(None, _png(b)).oct for b in b_scans]
    result = predictor.predict(None, volume, gradcam_dir=tmp_path / "cams")
    assert result.oct is not None and result.oct.volume is not None
    disease = [p.disease_probability for p in one_by_one]
    assert result.oct.volume.b_scan_disease == pytest.approx(disease, abs=1e-5)
    driving = int(np.argmax(disease))
    assert result.oct.volume.driving_b_scan == driving
    assert result.oct.volume.scores == pytest.approx(volume_scores(np.asarray(disease)), abs=1e-5)
    assert result.oct.probabilities == pytest.approx(one_by_one[driving].probabilities, abs=1e-5)
    assert result.oct.gradcam is not None and Path(result.oct.gradcam).stat().st_size > 0
    assert result.fusion is not None and result.fusion.inputs == "oct-only"

    with pytest.raises(InvalidImage, match="fundus images, not oct"):
        predictor.predict(None, dicom_bytes(photo))
    with pytest.raises(InvalidImage, match="dicom_no_pixels"):
        predictor.predict(dicom_bytes(None))
