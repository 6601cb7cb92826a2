"""DICOM ingestion: modality from the SOP class, volumes as B-scans, pseudonymous patients,
stable quarantine reasons, and no identifying header field anywhere the run writes to."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from retina_cli.app import app
from retina_core import verbs
from retina_core.catalog.repository import export_images
from retina_core.config import IngestSettings, Settings
from retina_core.data.dicom import dicom_images
from retina_core.data.splits import pseudonym
from retina_core.domain import Source
from tests.support.dicom_files import (
    IDENTIFYING,
    PRIVATE_NAME,
    dicom_bytes,
    dicom_folder,
    fundus_pixels,
    smooth_fundus,
)

FORBIDDEN = [*IDENTIFYING.values(), PRIVATE_NAME, "Doe", "Jane", "MRN-4711", "MRN-0815", "Roe^Richard"]


def _ingest(tmp_path: Path):
    folder = tmp_path / "landing"
    dicom_folder(folder)
    settings = Settings(home=tmp_path / "home")
    return settings, verbs.ingest(settings, Source.DICOM, str(folder))


def test_clinic_export_lands_with_modality_eye_pseudonym_volume_and_reasons(tmp_path: Path) -> None:
    settings, summary = _ingest(tmp_path)
    reasons = {q.path: q.reason.split(":")[0] for q in summary.quarantined}
    assert reasons == {
        "truncated.dcm": "dicom_invalid",
        "nopixels.dcm": "dicom_no_pixels",
        "lying_frames.dcm": "dicom_invalid",
        "ct.dcm": "dicom_unsupported_sop_class",
        "mpeg.dcm": "dicom_compressed_unsupported",
        "notdicom.dcm": "dicom_invalid",
    }
    rows = {r["source_path"]: r for r in export_images(verbs.catalog_engine(settings))}
    assert set(rows) == {"op_rgb.dcm", "op_jpeg.dcm", "op_mono16.dcm"} | {
        f"IMG0004#frame={i}" for i in range(3)
    }
    assert summary.accepted == 6 and summary.new_images == {"fundus": 3, "oct": 3}
    key = settings.split.key
    rgb, jpeg, mono = rows["op_rgb.dcm"], rows["op_jpeg.dcm"], rows["op_mono16.dcm"]
    assert (rgb["modality"], rgb["eye"], rgb["label"]) == ("fundus", "OD", 3)  # label by SOP Instance UID
    assert (jpeg["eye"], jpeg["label"]) == ("OS", 1)  # label by patient + eye
    assert (mono["eye"], mono["label"]) == (None, None)  # no laterality, no label: kept unlabeled
    assert rgb["patient_id"] == pseudonym("MRN-4711", key) and jpeg["patient_id"] == pseudonym(
        "MRN-0815", key
    )
    assert rgb["acquired_on"] == "2024-03-15" and rgb["volume_id"] is None
    frames = [rows[f"IMG0004#frame={i}"] for i in range(3)]
    assert {f["modality"] for f in frames} == {"oct"} and {f["label"] for f in frames} == {0}  # CNV
    assert len({f["volume_id"] for f in frames}) == 1 and frames[0]["volume_id"] is not None
    assert [f["frame_index"] for f in frames] == [0, 1, 2]
    assert len({f["split"] for f in frames}) == 1  # one patient, one split


def test_stored_images_are_the_decoded_pixels(tmp_path: Path) -> None:
    settings, _ = _ingest(tmp_path)
    rows = {r["source_path"]: r for r in export_images(verbs.catalog_engine(settings))}
    store = verbs.curated_store(settings)

    def stored(path: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(store.get_bytes(rows[path]["object_key"]))))

    assert np.array_equal(stored("op_rgb.dcm"), fundus_pixels(1))  # RGB kept exactly
    jpeg = stored("op_jpeg.dcm").astype(int)  # YBR_FULL_422 converted back to RGB (lossy)
    assert jpeg.shape == smooth_fundus().shape and np.abs(jpeg - smooth_fundus()).mean() < 4
    mono = stored("op_mono16.dcm")  # 12 bits stored keep their top 8
    assert mono.dtype == np.uint8 and np.array_equal(mono, (fundus_pixels(3, bits=12)[..., 0] >> 4))
    assert stored("IMG0004#frame=1").shape == (40, 44)
    assert all(r["object_key"].endswith(".png") for r in rows.values())


def test_no_identifying_field_survives_anywhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "landing"
    dicom_folder(folder)
    home = tmp_path / "home"
    result = CliRunner().invoke(
        app, ["ingest", "dicom", str(folder), "--json"], env={"RETINA_HOME": str(home)}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accepted"] == 6
    places = {"cli output": result.output, "logs": caplog.text}
    with sqlite3.connect(home / "catalog.db") as db:
        places["catalog"] = "\n".join(db.iterdump())
    for path in (home / "store").rglob("*"):
        if path.is_file():
            places[f"store {path.name}"] = path.name + path.read_bytes().decode("latin-1")
    export = CliRunner().invoke(app, ["catalog", "export", "--json"], env={"RETINA_HOME": str(home)})
    places["export"] = export.stdout
    assert any(name.startswith("store reason") for name in places)  # quarantine reasons were written
    leaks = {(where, word) for where, text in places.items() for word in FORBIDDEN if word in text}
    assert leaks == set()
    assert not list((home / "store").rglob("*.dcm"))  # the DICOM files themselves are never stored


def test_labels_option_and_absent_labels_file(tmp_path: Path) -> None:
    folder = tmp_path / "landing"
    dicom_folder(folder)
    other = tmp_path / "elsewhere.csv"
    other.write_text("patient_id,eye,label\nMRN-4711,OD,4\n")
    settings = Settings(home=tmp_path / "home")
    verbs.ingest(settings, Source.DICOM, str(folder), labels=str(other))
    rows = {r["source_path"]: r for r in export_images(verbs.catalog_engine(settings))}
    assert rows["op_rgb.dcm"]["label"] == 4 and rows["op_jpeg.dcm"]["label"] is None
    result = CliRunner().invoke(
        app,
        ["ingest", "dicom", str(folder), "--labels", str(tmp_path / "absent.csv"), "--json"],
        env={"RETINA_HOME": str(tmp_path / "home2")},
    )
    assert result.exit_code == 2 and "absent.csv" in result.stderr


def test_a_label_that_does_not_fit_the_modality_is_quarantined(tmp_path: Path) -> None:
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(dicom_bytes(fundus_pixels(1), laterality="R"))
    (folder / "labels.csv").write_text("patient_id,eye,label\nMRN-4711,OD,CNV\n")
    summary = verbs.ingest(Settings(home=tmp_path / "home"), Source.DICOM, str(folder))
    assert [q.reason.split(":")[0] for q in summary.quarantined] == ["label_not_a_number"]


def test_pixel_budget_is_checked_before_decoding() -> None:
    data = dicom_bytes(fundus_pixels(1))
    with pytest.raises(ValueError, match="too_many_pixels"):
        dicom_images(data, IngestSettings(max_pixels=100))
    facts, frames = dicom_images(data, IngestSettings())
    assert facts.modality == "fundus" and len(frames) == 1


def test_s3_landing_and_labels_beside_the_files(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    from tests.catalog.test_ingest_s3 import upload_tree

    endpoint, bucket = s3_bucket
    dicom_folder(tmp_path / "landing")
    upload_tree(tmp_path / "landing", endpoint, bucket, "clinic/export")
    settings = Settings(
        home=tmp_path / "home", storage_url=f"s3://{bucket}/curated", s3_endpoint_url=endpoint
    )
    summary = verbs.ingest(settings, Source.DICOM, f"s3://{bucket}/clinic/export")
    assert summary.accepted == 6 and len(summary.quarantined) == 6
    rows = {r["source_path"]: r for r in export_images(verbs.catalog_engine(settings))}
    assert rows["op_rgb.dcm"]["label"] == 3 and rows["IMG0004#frame=2"]["label"] == 0
    again = verbs.ingest(settings, Source.DICOM, f"s3://{bucket}/clinic/export")
    assert (again.accepted, again.already_known) == (0, 6)
