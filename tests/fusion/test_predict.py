"""`retina predict` on the paired world's registered models: one eye in, grades and fused probability out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retina_cli.app import app
from retina_core.catalog.registry import champion
from retina_core.models.persist import DamagedWeights
from retina_core.predict import InvalidImage, Predictor
from retina_core.results import FusionReport
from tests.fusion.world import World

pytestmark = pytest.mark.slow  # uses the paired world


def _an_eye(world: World) -> tuple[Path, Path]:
    with (world.out / "pairs.csv").open() as fh:
        row = next(csv.DictReader(fh))
    return world.out / row["fundus_path"], world.out / row["oct_path"]


def test_one_eye_gets_both_grades_and_the_fused_probability(
    paired_world: World, paired_report: FusionReport, tmp_path: Path
) -> None:
    predictor = Predictor(paired_world.settings, paired_world.engine, paired_world.store)
    fundus, oct = _an_eye(paired_world)
    result = predictor.predict(fundus.read_bytes(), oct.read_bytes(), gradcam_dir=tmp_path / "cams")
    assert result.fundus is not None and result.oct is not None and result.fusion is not None
    assert result.fusion.version == paired_report.version and result.fusion.inputs == "both"
    for part in (result.fundus, result.oct):
        assert sum(part.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert part.predicted == max(part.probabilities, key=part.probabilities.__getitem__)
        assert 0.0 <= part.referable_probability <= part.disease_probability <= 1.0 + 1e-6
        assert part.gradcam is not None and Path(part.gradcam).stat().st_size > 0
    assert 0.0 <= result.fusion.disease_probability <= 1.0

    only_fundus = predictor.predict(fundus.read_bytes())
    assert only_fundus.oct is None and only_fundus.fusion is not None
    assert only_fundus.fusion.inputs == "fundus-only"
    assert only_fundus.fundus == result.fundus.model_copy(update={"gradcam": None})

    with pytest.raises(InvalidImage):
        predictor.predict(b"not an image at all", None)


def test_inputs_are_preprocessed_as_the_model_was_trained_not_as_settings_say(
    paired_world: World, paired_report: FusionReport
) -> None:
    fundus, _ = _an_eye(paired_world)
    assert paired_world.settings.train.fundus.ben_graham  # the world's fundus encoder was trained with it
    as_trained = Predictor(paired_world.settings, paired_world.engine, paired_world.store)
    changed = paired_world.settings.model_copy(deep=True)
    changed.train.fundus.ben_graham = False  # e.g. a user trying the other recipe for the next run
    today = Predictor(changed, paired_world.engine, paired_world.store)
    assert today.predict(fundus.read_bytes()).fundus == as_trained.predict(fundus.read_bytes()).fundus


def test_weights_changed_after_registration_are_refused(
    paired_world: World, paired_report: FusionReport
) -> None:
    head = champion(paired_world.engine, "fusion_head")
    assert head is not None
    path = paired_world.store.local_path(f"{head.object_prefix}/weights.safetensors")  # type: ignore[attr-defined]
    genuine = path.read_bytes()
    try:
        path.write_bytes(genuine[:-4] + b"\0\0\0\0")
        with pytest.raises(DamagedWeights, match="changed after registration"):
            Predictor(paired_world.settings, paired_world.engine, paired_world.store)
    finally:
        path.write_bytes(genuine)


def test_cli_prints_the_prediction_as_json(
    paired_world: World, paired_report: FusionReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETINA_HOME", str(paired_world.settings.home))
    monkeypatch.delenv("RETINA_STORAGE_URL", raising=False)
    monkeypatch.delenv("RETINA_DATABASE_URL", raising=False)
    fundus, oct = _an_eye(paired_world)
    result = CliRunner().invoke(app, ["predict", "--fundus", str(fundus), "--oct", str(oct), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fusion"]["inputs"] == "both" and data["fusion"]["version"] == paired_report.version
    assert data["fundus"]["model"] == "fundus_cnn" and data["oct"]["model"] == "oct_cnn"
    missing = CliRunner().invoke(app, ["predict", "--fundus", str(fundus.with_suffix(".nope"))])
    assert missing.exit_code == 2 and "is not a file" in missing.output
