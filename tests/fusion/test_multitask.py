"""Multi-task fusion head: a masked loss that trains every task from whatever labels a pair has."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from retina_cli.app import app
from retina_core.catalog.registry import champion
from retina_core.catalog.repository import image_records
from retina_core.domain import Modality, Split
from retina_core.evaluation import bootstrap_ci
from retina_core.evaluation.metrics import macro_f1, quadratic_weighted_kappa, roc_auc_binary
from retina_core.fusion.multitask import (
    MISSING,
    MultiTaskFusion,
    TaskLabels,
    evaluate_multitask,
    fit_multitask,
    grade_probabilities,
    masked_loss,
    pair_task_labels,
    predict_outputs,
)
from retina_core.fusion.multitask_train import train_multitask_fusion
from retina_core.fusion.train import gather_inputs, train_fusion
from retina_core.predict import Predictor
from retina_core.results import MultiTaskReport
from tests.fusion.world import World

FD, OD = 8, 8


def _embeddings(n: int, seed: int, missing: float) -> tuple[np.ndarray, np.ndarray, TaskLabels]:
    """Grade written along one fundus direction, OCT class one-hot in the OCT embedding, plus noise;
    a fraction ``missing`` of grades and of OCT classes is unlabelled (``-1``)."""
    rng = np.random.default_rng(seed)
    grade = rng.integers(0, 5, n)
    oct_class = rng.integers(0, 4, n)
    f = rng.normal(size=(n, FD)) + 1.2 * grade[:, None] * np.eye(FD)[0]
    o = rng.normal(size=(n, OD)) + 2.5 * np.eye(OD)[oct_class]
    disease = ((grade > 0) | (oct_class != 3)).astype(np.int64)
    labels = TaskLabels(
        grade=np.where(rng.random(n) < missing, MISSING, grade),
        oct_class=np.where(rng.random(n) < missing, MISSING, oct_class),
        disease=disease,
    )
    return f.astype(np.float32), o.astype(np.float32), labels


def test_unlabelled_rows_add_nothing_to_a_tasks_loss() -> None:
    torch.manual_seed(0)
    head = MultiTaskFusion(FD, OD, hidden=16).eval()
    f, o, labels = _embeddings(32, 0, missing=0.5)
    out = head.outputs(torch.as_tensor(f), torch.as_tensor(o))
    full = masked_loss(out, labels.tensors())
    # rows without any label, whatever their embeddings, leave every task's loss unchanged
    noise = head.outputs(torch.randn(8, FD) * 5, torch.randn(8, OD) * 5)
    padded = {k: torch.cat([v, noise[k]]) for k, v in out.items()}
    unlabelled = {t: torch.cat([y, torch.full((8,), MISSING)]) for t, y in labels.tensors().items()}
    torch.testing.assert_close(masked_loss(padded, unlabelled), full)
    # a task with no label in the batch sends no gradient to its own output layer
    none = labels.tensors()
    none["grade"] = torch.full_like(none["grade"], MISSING)
    head.zero_grad()
    masked_loss(head.outputs(torch.as_tensor(f), torch.as_tensor(o)), none).backward()
    assert head.grade.weight.grad is None or torch.count_nonzero(head.grade.weight.grad) == 0
    assert torch.count_nonzero(head.oct_class.weight.grad) > 0


def test_grade_probabilities_are_a_distribution_even_from_unordered_logits() -> None:
    probs = grade_probabilities(torch.tensor([[3.0, -1.0, 2.0, -4.0], [-5.0, -5.0, -5.0, -5.0]]))
    assert probs.shape == (2, 5) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    assert int(probs[1].argmax()) == 0


def test_masked_training_learns_all_three_tasks_above_chance() -> None:
    train, val, test = _embeddings(800, 1, 0.4), _embeddings(200, 2, 0.4), _embeddings(300, 3, 0.0)
    fit = fit_multitask(
        lambda: MultiTaskFusion(FD, OD, hidden=32, modality_dropout=0.2),
        train,
        val,
        epochs=60,
        lr=3e-3,
        seed=0,
    )
    outputs = predict_outputs(fit.head, test[0], test[1])
    scores = evaluate_multitask(outputs, test[2], np.arange(300), n_boot=200, seed=0)
    print({k: str(v) for k, v in scores.items()})
    assert scores["grade_qwk"].low > 0.5  # chance: 0
    assert scores["oct_macro_f1"].low > 0.5  # chance: about 0.25
    assert scores["disease_auc"].low > 0.75  # chance: 0.5
    # the ordinal grade output rarely lands far off: most errors are one grade away
    predicted = outputs["grade"].argmax(1)
    assert np.mean(np.abs(predicted - test[2].grade) <= 1) > 0.8


@pytest.mark.slow  # uses the paired world
def test_multitask_head_on_the_paired_world_learns_every_task_and_registers(own_world: World) -> None:
    paired_world = own_world  # registers and promotes: a private copy of the paired world
    report = train_multitask_fusion(paired_world.settings, paired_world.engine, paired_world.store)
    print(report.model_dump_json(indent=1))  # the numbers, for whoever reads the test log
    both = report.row("fusion").metrics
    assert both["grade_qwk"]["low"] > 0.0  # chance: 0
    assert both["oct_macro_f1"]["low"] > 0.25  # chance with four classes: about 0.25
    assert both["disease_auc"]["low"] > 0.5
    assert {r.key for r in report.rows} == {
        "fusion",
        "fusion_fundus_only",
        "fusion_oct_only",
        "shuffled_control",
        "fundus_cnn_own",
        "oct_cnn_own",
    }
    assert report.decision is not None and report.decision.promoted and report.status == "champion"
    version = champion(paired_world.engine, "fusion_multitask")
    assert version is not None and version.version == report.version
    assert version.primary_metric == "disease_auc" and version.primary_value == both["disease_auc"]["value"]
    again = train_multitask_fusion(paired_world.settings, paired_world.engine, paired_world.store)
    assert again.reused and again.version == report.version and again.rows == report.rows


@pytest.mark.slow  # uses the paired world
def test_predict_returns_the_champion_multitask_outputs(own_world: World) -> None:
    paired_world = own_world  # registers and promotes: a private copy of the paired world
    report = train_multitask_fusion(paired_world.settings, paired_world.engine, paired_world.store)
    with (paired_world.out / "pairs.csv").open() as fh:
        row = next(csv.DictReader(fh))
    fundus = (paired_world.out / row["fundus_path"]).read_bytes()
    oct = (paired_world.out / row["oct_path"]).read_bytes()
    predictor = Predictor(paired_world.settings, paired_world.engine, paired_world.store)
    result = predictor.predict(fundus, oct).multitask
    assert result is not None and result.version == report.version and result.inputs == "both"
    for probs, top in (
        (result.grade_probabilities, result.grade),
        (result.oct_probabilities, result.oct_class),
    ):
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert top == max(probs, key=probs.__getitem__)
    only_oct = predictor.predict(None, oct).multitask
    assert only_oct is not None and only_oct.inputs == "oct-only"


def test_the_encoders_own_rows_are_their_own_predictions_on_the_same_test_pairs(
    small_world: World, small_multitask: MultiTaskReport
) -> None:
    """Each encoder the embeddings came from predicts its own task on the head's test pairs, through
    the same path ``retina predict`` takes from the image bytes, scored with the same bootstrap."""
    world, report = small_world, small_multitask
    inputs = gather_inputs(world.settings, world.engine, world.store)
    test = inputs.arrays[Split.TEST]
    records = {r.sha256: r for m in Modality for r in image_records(world.engine, m)}
    labels = pair_task_labels(test.pairs, {s: (r.modality, r.label) for s, r in records.items()})
    predictor = Predictor(world.settings, world.engine, world.store)
    evaluation = world.settings.evaluation
    expected = {
        Modality.FUNDUS: ("grade_qwk", "grade", lambda y, p: quadratic_weighted_kappa(y, p.argmax(1), 5)),
        Modality.OCT: ("oct_macro_f1", "oct_class", lambda y, p: macro_f1(y, p.argmax(1), 4)),
    }
    for modality, (metric, task, score) in expected.items():
        version = inputs.versions[modality]
        row = report.row(f"{version.name}_own")
        assert row.inputs == modality.value and row.source == f"{version.name} v{version.version}"
        assert set(row.metrics) == {metric, "disease_auc"}  # its own task only, and disease
        probs = []
        for pair in test.pairs:
            sha = pair.fundus_sha if modality is Modality.FUNDUS else pair.oct_sha
            image = world.store.get_bytes(records[sha].object_key)
            found = predictor.predict(**{modality.value: image})
            part = found.fundus if modality is Modality.FUNDUS else found.oct
            assert part is not None and part.version == version.version
            probs.append([*part.probabilities.values(), part.disease_probability])
        p = np.asarray(probs)
        y = np.asarray(getattr(labels, task))
        boot = {"n_boot": evaluation.bootstrap, "seed": evaluation.seed}
        own = bootstrap_ci(
            score, y[y != MISSING], p[y != MISSING, :-1], groups=test.groups[y != MISSING], **boot
        )
        auc = bootstrap_ci(roc_auc_binary, labels.disease, p[:, -1], groups=test.groups, **boot)
        for name, estimate in ((metric, own), ("disease_auc", auc)):
            got = row.metrics[name]
            assert got["value"] == pytest.approx(estimate.value, abs=1e-4)
            assert (got["low"], got["high"]) == pytest.approx((estimate.low, estimate.high), abs=1e-4)
    # the head's rows are still there beside them, on the same pairs
    assert {r.key for r in report.rows} >= {
        "fusion",
        "fusion_fundus_only",
        "fusion_oct_only",
        "shuffled_control",
    }


def test_retina_predict_gives_the_multitask_outputs_and_the_fused_share(
    small_world: World, small_multitask: MultiTaskReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = small_world
    if champion(world.engine, "fusion_head") is None:
        train_fusion(world.settings, world.engine, world.store)  # same encoders: the head stays usable
    monkeypatch.setenv("RETINA_HOME", str(world.settings.home))
    monkeypatch.delenv("RETINA_STORAGE_URL", raising=False)
    monkeypatch.delenv("RETINA_DATABASE_URL", raising=False)
    with (world.out / "pairs.csv").open() as fh:
        row = next(csv.DictReader(fh))
    args = [
        "predict",
        "--fundus",
        str(world.out / row["fundus_path"]),
        "--oct",
        str(world.out / row["oct_path"]),
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    multitask = data["multitask"]
    assert multitask["model"] == "fusion_multitask" and multitask["version"] == small_multitask.version
    assert sum(multitask["grade_probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= multitask["disease_probability"] <= 1.0
    share = data["fusion"]["modality_share"]
    assert share is not None and share["fundus"] + share["oct"] == pytest.approx(1.0)
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert f"fusion_multitask v{small_multitask.version} (both): grade {multitask['grade']}" in plain.stdout
    assert f"fundus {share['fundus']:.0%} · OCT {share['oct']:.0%} of the fused decision" in plain.stdout
