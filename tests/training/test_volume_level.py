"""OCT volumes from DICOM, end to end: ingest, train, the eye-level evaluation, its report table,
and the driving B-scans in the explanation gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from retina_core import verbs
from retina_core.catalog.repository import export_images
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality, Source, Split
from retina_core.evaluation.volume import VolumeLevelResult
from retina_core.explain.stage import explain_registered
from retina_core.reporting.data import ModelSection, ReportData
from retina_core.reporting.html import render_html
from retina_core.training.run import train_modality
from tests.fusion.world import world_settings
from tests.reporting.helpers import Page
from tests.support.dicom_files import OPT, dicom_bytes

B_SCANS = 3


def dicom_volumes(synth: Path, landing: Path) -> int:
    """The synthetic Kermany B-scans, three of one class per OPT file, one patient per volume."""
    landing.mkdir(parents=True)
    rows = ["sop_instance_uid,label"]
    n = 0
    for folder in sorted((synth / "kermany" / "OCT2017" / "train").iterdir()):
        scans = sorted(folder.glob("*.jpeg"))
        for start in range(0, len(scans) - B_SCANS + 1, B_SCANS):
            pixels = np.stack(
                [np.asarray(Image.open(p).convert("L")) for p in scans[start : start + B_SCANS]]
            )
            uid = generate_uid()
            (landing / f"vol{n:03d}.dcm").write_bytes(
                dicom_bytes(pixels, sop_class=OPT, sop_instance_uid=uid, patient_id=f"P{n:03d}")
            )
            rows.append(f"{uid},{folder.name}")
            n += 1
    (landing / "labels.csv").write_text("\n".join(rows) + "\n")
    return n


def test_volumes_are_evaluated_reported_and_explained_per_eye(tmp_path: Path) -> None:
    synth = tmp_path / "synth"
    write_synthetic(synth, SynthSpec(fundus=0, oct=120, pairs=0, size=48, seed=5))
    volumes = dicom_volumes(synth, tmp_path / "landing")
    settings = world_settings(tmp_path / "home")
    settings.train.oct.epochs, settings.train.oct.image_size = 1, 32
    settings.evaluation.bootstrap = 50
    summary = verbs.ingest(settings, Source.DICOM, str(tmp_path / "landing"))
    assert summary.accepted == volumes * B_SCANS and summary.quarantined == []
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)

    report = train_modality(settings, Modality.OCT, engine=engine, store=store)
    level = VolumeLevelResult.model_validate(report.extras["volume_level"])
    test_rows = [r for r in export_images(engine) if r["split"] == Split.TEST.value]
    assert level.n_b_scans == len(test_rows) == report.evaluation.image_level.n
    assert level.n_volumes == len({r["volume_id"] for r in test_rows}) == level.n_b_scans // B_SCANS
    assert level.n_patients == level.n_volumes  # one patient per volume here
    assert level.rules["top_decile_mean"].youden_source == "validation"

    section = ModelSection(
        name="oct_cnn", version=str(report.version), architecture="test_resnet",
        evaluation=report.evaluation, volume_level=report.extras["volume_level"],
    )  # fmt: skip
    data = ReportData(run_id="r", created_at="2024-01-01T00:00:00Z", models=[section])
    page = Page(render_html(data, {}, {}))
    rows = page.rows["model-oct_cnn-volumes"]
    assert [attrs.get("data-level") for attrs, _ in rows[1:]] == [
        "b_scan", "volume-max", "volume-mean", "volume-top_decile_mean",
    ]  # fmt: skip

    explained = explain_registered(settings, engine, store, "oct_cnn", report.version, tmp_path / "report")
    drivers = [g for g in explained.gallery if g.kind == "volume-driver"]
    assert drivers and all("B-scan" in g.caption for g in drivers)
    assert all((tmp_path / "report" / g.path).is_file() for g in drivers)
