"""The ``retina`` command's contract, which users script against: JSON shape on stdout, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retina_cli.app import app
from tests.catalog.test_ingest import broken_aptos

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RETINA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RETINA_STORAGE_URL", raising=False)
    monkeypatch.delenv("RETINA_DATABASE_URL", raising=False)
    return tmp_path / "home"


def run_json(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.stdout.count("\n") == 1, f"stdout must hold one JSON line, got: {result.stdout!r}"
    return result.exit_code, json.loads(result.stdout)


def test_ingest_json_lists_every_bad_file_and_exits_zero(home: Path, tmp_path: Path) -> None:
    code, data = run_json("ingest", "aptos", str(broken_aptos(tmp_path / "aptos")))
    assert code == 0
    assert set(data) == {
        "source",
        "scanned",
        "accepted",
        "already_known",
        "duplicates",
        "quarantined",
        "dataset_version",
    }
    assert data["accepted"] == 4 and data["dataset_version"] == 1
    assert len(data["quarantined"]) == 10
    assert all(set(q) == {"path", "reason"} and ": " in q["reason"] for q in data["quarantined"])


def test_unusable_path_exits_two_with_a_clear_error(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", "kermany", str(tmp_path / "absent"), "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "does not exist" in result.stderr


def test_synth_then_ingest_then_export_has_no_patient_in_two_splits(home: Path, tmp_path: Path) -> None:
    code, summary = run_json("synth", str(tmp_path / "s"), "--fundus", "12", "--oct", "30", "--size", "64")
    assert code == 0 and sum(summary["fundus_by_grade"].values()) == 12
    for source in ("aptos", "kermany"):
        code, data = run_json("ingest", source, str(tmp_path / "s" / source))
        assert code == 0 and data["accepted"] > 0 and data["quarantined"] == []
    code, export = run_json("catalog", "export")
    assert code == 0 and export["count"] == 42
    splits_per_patient: dict[str, set[str]] = {}
    for row in export["images"]:
        splits_per_patient.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_per_patient.values())
    assert set().union(*splits_per_patient.values()) == {"train", "val", "test"}


def test_models_list_is_empty_before_training(home: Path) -> None:
    code, data = run_json("models", "list")
    assert code == 0 and data == {"versions": []}


def test_bad_config_file_is_an_error(home: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  oct:\n    epoch: 3\n")  # typo: epochs
    result = runner.invoke(app, ["catalog", "export", "--config", str(cfg)])
    assert result.exit_code == 2 and "epoch" in result.stderr


def test_demo_quick_trains_longer_than_the_quick_preset_without_growing(home: Path, tmp_path: Path) -> None:
    from retina_cli.app import demo_params
    from retina_core.config import load_settings, quick_preset
    from retina_core.domain import Modality

    params = demo_params(tmp_path / "data", quick=True, config=None)
    preset = quick_preset(load_settings(None)).model_dump()
    assert params.settings().model_dump() == preset
    for modality in Modality:
        trained = params.train_params(modality).settings().model_dump()
        mine, quick = trained["train"][modality.value], preset["train"][modality.value]
        assert mine["epochs"] > quick["epochs"] and mine["patience"] >= mine["epochs"]
        # only how long it trains differs: image size, batch and everything else stay the preset's
        for key in ("epochs", "patience"):
            mine[key] = quick[key]
        assert trained == preset
    full = demo_params(tmp_path / "data", quick=False, config=None)
    assert full.train_params(Modality.OCT).settings().train.oct.epochs == full.settings().train.oct.epochs


def test_training_shows_plain_stage_and_epoch_lines_on_stderr_only(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal (a CI log, CliRunner) progress is one line per stage and per epoch, on stderr."""
    monkeypatch.setenv("RETINA_EVALUATION__BOOTSTRAP", "50")
    monkeypatch.setenv("RETINA_TRAIN__NUM_WORKERS", "0")
    code, _ = run_json("synth", str(tmp_path / "s"), "--fundus", "0", "--oct", "30", "--size", "48")
    assert code == 0
    code, _ = run_json("ingest", "kermany", str(tmp_path / "s" / "kermany"))
    assert code == 0
    args = ["--architecture", "test_resnet", "--image-size", "32", "--epochs", "2", "--batch-size", "32"]
    result = runner.invoke(app, ["train", "oct", *args, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1 and json.loads(result.stdout)["model"] == "oct_cnn"
    lines = [line.split("] ", 1)[1] for line in result.stderr.splitlines() if line.startswith("[")]
    assert lines[0] == "train oct: started"
    epochs = [line for line in lines if line.startswith("train oct: epoch ")]
    assert [line.split(":")[1] for line in epochs] == [" epoch 1/2", " epoch 2/2"]
    assert all("train loss " in line and "val macro-F1 " in line and " img/s" in line for line in epochs)
    assert (
        "ETA" in epochs[0] and "ETA" not in epochs[1]
    )  # one epoch left after the first, none after the last
    assert lines[-1].startswith("train oct: done in ")


def test_pipeline_summary_links_the_report_and_the_demo_says_what_next(tmp_path: Path) -> None:
    import yaml

    from retina_cli.app import NEXT_STEP
    from retina_core.results import PipelineResult

    page = tmp_path / "reports" / "run 1" / "index.html"
    result = PipelineResult(run_id="run 1", report_path=str(page), ingested=[], models=[], fusion=None)
    assert result.summary_text().splitlines()[-1] == f"report: {page.as_uri()}"
    assert page.as_uri().startswith("file:///") and "%20" in page.as_uri()  # a link a terminal can open
    deployment = NEXT_STEP.split("start the ", 1)[1].split(" deployment", 1)[0]
    prefect_yaml = yaml.safe_load((Path(__file__).parents[2] / "deployments" / "prefect.yaml").read_text())
    assert "`make serve`" in NEXT_STEP and deployment in {d["name"] for d in prefect_yaml["deployments"]}


def test_prefect_defaults_are_set_before_any_command_imports_a_flow(tmp_path: Path) -> None:
    """`retina demo` and `retina pipeline` import their flow's form before running it; Prefect
    reads its logging level at import, so the project's defaults (WARNING, no telemetry) must be in
    the environment as soon as the settings exist, or every task's INFO line reaches stderr."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from retina_cli.app import _settings\n"
        "assert 'prefect' not in sys.modules, 'the CLI module imported prefect'\n"
        "_settings(None)\n"
        "print(os.environ['PREFECT_LOGGING_LEVEL'], os.environ['DO_NOT_TRACK'], os.environ['PREFECT_HOME'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DO_NOT_TRACK"))}
    env["RETINA_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["WARNING", "1", str(tmp_path / "home" / "prefect")]


def test_train_fusion_json_carries_the_multitask_head_and_the_plain_output_its_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retina_core.config import write_settings_file
    from tests.fusion.conftest import SMALL
    from tests.fusion.world import build_world

    for name in ("RETINA_HOME", "RETINA_STORAGE_URL", "RETINA_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    world = build_world(tmp_path, SMALL, epochs=5, multitask=True)
    config = str(write_settings_file(world.settings, tmp_path / "settings.yaml"))
    code, data = run_json("train", "fusion", "--config", config)
    assert code == 0 and data["model"] == "fusion_head"
    multitask = data["multitask"]
    assert multitask["model"] == "fusion_multitask" and multitask["version"] == 1
    rows = multitask["rows"]
    assert set(rows) == {
        "fusion",
        "fusion_fundus_only",
        "fusion_oct_only",
        "shuffled_control",
        "fundus_cnn_own",
        "oct_cnn_own",
    }
    for metric in ("grade_qwk", "oct_macro_f1", "disease_auc"):
        assert set(rows["fusion"][metric]) >= {"value", "low", "high", "n_units"}
    assert (
        rows["fundus_cnn_own"]["source"].startswith("fundus_cnn v")
        and "oct_macro_f1" not in rows["fundus_cnn_own"]
    )
    assert multitask["primary"] == rows["fusion"]["disease_auc"]

    plain = runner.invoke(app, ["train", "fusion", "--config", config])
    assert plain.exit_code == 0, plain.stderr
    assert "fusion_multitask v1 (champion" in plain.stdout and "grade QWK" in plain.stdout


def test_pipeline_summary_shows_the_multitask_head_when_it_was_trained(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from retina_core.evaluation import Estimate
    from retina_core.results import FusionReport, MultiTaskReport, PipelineResult, TaskRow

    auc = Estimate(0.8, 0.7, 0.9, 40)
    metric = {"value": 0.5, "low": 0.25, "high": 0.75, "n_units": 40}
    multitask = MultiTaskReport(
        version=3,
        status="champion",
        reused=False,
        pairing="real",
        rows=[
            TaskRow(
                key="fusion",
                inputs="both",
                metrics=dict.fromkeys(("grade_qwk", "oct_macro_f1", "disease_auc"), metric),
            )
        ],
    )
    evaluation = SimpleNamespace(
        row=lambda key: SimpleNamespace(result=SimpleNamespace(auc=auc)),
        gain_vs_best_single=auc,
        pairing="real",
    )
    fusion = FusionReport.model_construct(
        model_name="fusion_head",
        version=2,
        status="champion",
        evaluation=evaluation,
        multitask=multitask,
    )
    page = tmp_path / "index.html"
    lines = (
        PipelineResult.model_construct(
            run_id="r", report_path=str(page), ingested=[], models=[], fusion=fusion
        )
        .summary_text()
        .splitlines()
    )
    assert lines[-2] == (
        "  fusion_multitask v3 (champion, real pairs): grade QWK 0.500 [0.250, 0.750], "
        "OCT macro-F1 0.500 [0.250, 0.750], disease AUC 0.500 [0.250, 0.750]"
    )
    assert lines[-3].startswith("  fusion_head v2 (champion, real pairs): AUC 0.800 [0.700, 0.900]")
