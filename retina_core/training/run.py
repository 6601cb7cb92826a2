"""``train``: one single-modality model from the catalog to a registered, evaluated version.

catalog records → preprocessed cache → fit (checkpointed, resumable) → evaluation on the
fixed test split (patient-level CIs, calibration) → registry version → champion rule,
with the champion re-measured on the same test images so the comparison is fair.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel

from retina_core.catalog.registry import (
    Decision,
    ModelVersion,
    apply_decision,
    champion,
    decide,
    decision_pending,
    find_by_run_key,
    get_version,
    register_version,
    run_key,
)
from retina_core.catalog.repository import image_records, latest_dataset_version, pair_rows
from retina_core.config import Settings
from retina_core.domain import Modality, Split
from retina_core.evaluation import TaskSpec, evaluate_predictions
from retina_core.evaluation.calibration import softmax
from retina_core.evaluation.result import EvaluationResult
from retina_core.evaluation.thresholds import (
    apply_thresholds,
    fit_ordinal_scale,
    optimise_thresholds,
    regression_scores_to_probs,
)
from retina_core.models import RetinaClassifier, create_model
from retina_core.models.persist import load_classifier, model_files, read_json, trained_ben_graham
from retina_core.models.registry import model_for_modality
from retina_core.models.spec import ModelSpec
from retina_core.progress import reports_stage
from retina_core.storage import ObjectStore
from retina_core.training import checkpoint as ckpt
from retina_core.training.data import (
    cache_for,
    cap_records,
    ensure_preprocessed,
    hold_out_paired,
    split_arrays,
)
from retina_core.training.device import select_device
from retina_core.training.loop import (
    BatchCallback,
    EpochCallback,
    SplitArrays,
    fit,
    predict_logits,
    seed_everything,
)

log = logging.getLogger(__name__)
TRAINING_CODE_VERSION = "train-v1"
"""Part of the run key: bump when the loop changes meaning, so old runs are not reused."""


class TrainReport(BaseModel):
    modality: str
    model_name: str
    version: int
    status: str
    reused: bool
    run_key: str
    data_version: int | None
    counts: dict[str, int]
    history: list[dict[str, float]]
    best_epoch: int
    resumed_from: int | None
    evaluation: EvaluationResult
    decision: Decision | None
    extras: dict[str, Any] = {}
    seconds: float


class NotEnoughData(RuntimeError):
    """Training needs labelled images in every split."""


def _predict_eval(
    model: RetinaClassifier, val: SplitArrays, test: SplitArrays, settings: Settings, device: Any
) -> tuple[EvaluationResult, dict[str, Any]]:
    """Evaluate on the fixed test split; temperature/thresholds are fitted on validation only."""
    task = TaskSpec.for_modality(model.spec.modality)
    batch = settings.train_for(model.spec.modality).batch_size * 2
    amp, workers = settings.train.amp, settings.train.num_workers
    val_logits = predict_logits(model, val.images, device, batch_size=batch, amp=amp, num_workers=workers)
    test_logits = predict_logits(model, test.images, device, batch_size=batch, amp=amp, num_workers=workers)
    extras: dict[str, Any] = {}
    if model.spec.task == "regression":
        thresholds = optimise_thresholds(val.labels, val_logits[:, 0], len(task.label_names))
        scale = fit_ordinal_scale(val.labels, val_logits[:, 0], thresholds)
        probs = regression_scores_to_probs(test_logits[:, 0], thresholds, scale)
        extras = {"thresholds": thresholds.tolist(), "ordinal_scale": scale}
        result = evaluate_predictions(
            task,
            test.labels,
            probs,
            test.patient_ids,
            settings=settings.evaluation,
            y_pred=apply_thresholds(test_logits[:, 0], thresholds),
        )
    else:
        result = evaluate_predictions(
            task,
            test.labels,
            softmax(test_logits),
            test.patient_ids,
            logits=test_logits,
            val_logits=val_logits,
            val_y=val.labels,
            settings=settings.evaluation,
        )
    return result, extras


@reports_stage("train {modality}")
def train_modality(
    settings: Settings,
    modality: Modality,
    *,
    engine: Any,
    store: ObjectStore,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
) -> TrainReport:
    started = time.perf_counter()
    ms = settings.train_for(modality)
    name = model_for_modality(modality)
    data_version = latest_dataset_version(engine)
    key = run_key(
        {
            "model": name,
            "train": ms.model_dump(),
            "data_version": data_version,
            "code": TRAINING_CODE_VERSION,
            "eval": settings.evaluation.model_dump(),
        }
    )
    device = select_device(settings.train.device)

    records = cap_records(image_records(engine, modality), ms.max_train_images, ms.seed)
    held_out = 0
    if ms.hold_out_pairs:
        kept = hold_out_paired(records, {p[modality.value] for p in pair_rows(engine)})
        held_out, records = len(records) - len(kept), kept
        log.info("%s: %d paired-cohort images held out of the training split for fusion", modality, held_out)
    counts = {s.value: sum(r.split is s for r in records) for s in Split}
    if min(counts.values()) == 0:
        raise NotEnoughData(f"{modality}: every split needs labelled images, got {counts}")
    cache = cache_for(store, modality, ms.image_size, ms.ben_graham)
    stats = ensure_preprocessed(cache, store, records)
    log.info("%s preprocessed cache: %d computed, %d reused", modality, stats.computed, stats.reused)
    arrays = split_arrays(cache, records)
    train, val, test = arrays[Split.TRAIN], arrays[Split.VAL], arrays[Split.TEST]

    existing = find_by_run_key(engine, name, key)
    if existing is not None:
        log.info("%s: inputs unchanged since version %d; reusing it", name, existing.version)
        ckpt.discard_checkpoints(store, key)  # a kill after registering may have left it
        metrics = read_json(store, existing.object_prefix, "metrics.json")
        decision = None
        if decision_pending(engine, name, existing.version):
            decision = champion_decision(settings, engine, store, existing, val, test, device)
            existing = get_version(engine, name, existing.version)
        return TrainReport(
            modality=modality.value,
            model_name=name,
            version=existing.version,
            status=existing.status,
            reused=True,
            run_key=key,
            data_version=data_version,
            counts=counts,
            history=metrics["history"],
            best_epoch=metrics["best_epoch"],
            resumed_from=None,
            evaluation=EvaluationResult.model_validate(metrics["evaluation"]),
            decision=decision,
            extras=metrics.get("extras", {}),
            seconds=time.perf_counter() - started,
        )

    seed_everything(ms.seed)  # weight initialisation is part of what a seed reproduces
    task = "regression" if ms.loss == "regression" else "classification"
    options = {"task": task} if modality is Modality.FUNDUS else {}
    model = create_model(
        name, architecture=ms.architecture, image_size=ms.image_size, pretrained=ms.pretrained, **options
    )
    result = fit(
        model,
        train,
        val,
        ms,
        device=device,
        store=store,
        run_key=key,
        amp=settings.train.amp,
        num_workers=settings.train.num_workers,
        data_version=data_version,
        on_epoch=on_epoch,
        on_batch=on_batch,
    )
    evaluation, extras = _predict_eval(result.model, val, test, settings, device)
    extras |= {
        "held_out_paired": held_out,
        "preprocess_fingerprint": cache.fingerprint,
        "cache": {"computed": stats.computed, "reused": stats.reused},
    }
    history = [vars(h) for h in result.history]
    files = model_files(
        result.model,
        result.model.spec.to_dict(),
        {"train": ms.model_dump(), "data_version": data_version, "run_key": key, "device": str(device)},
        {
            "evaluation": evaluation.model_dump(mode="json"),
            "history": history,
            "best_epoch": result.best_epoch,
            "extras": extras,
            "counts": counts,
        },
    )
    primary = evaluation.primary
    version = register_version(
        engine,
        store,
        name=name,
        key=key,
        files=files,
        primary_metric=evaluation.primary_metric,
        primary=(primary.value, primary.low, primary.high),
        data_version=data_version,
        summary={
            "counts": counts,
            "best_epoch": result.best_epoch,
            "architecture": ms.architecture,
            "image_size": ms.image_size,
        },
    )
    ckpt.discard_checkpoints(store, key)
    decision = champion_decision(settings, engine, store, version, val, test, device)
    return TrainReport(
        modality=modality.value,
        model_name=name,
        version=version.version,
        status="champion" if decision.promoted else "candidate",
        reused=False,
        run_key=key,
        data_version=data_version,
        counts=counts,
        history=history,
        best_epoch=result.best_epoch,
        resumed_from=result.resumed_from,
        evaluation=evaluation,
        decision=decision,
        extras=extras,
        seconds=time.perf_counter() - started,
    )


def champion_decision(
    settings: Settings,
    engine: Any,
    store: ObjectStore,
    candidate: ModelVersion,
    val: SplitArrays,
    test: SplitArrays,
    device: Any,
) -> Decision:
    """Re-measure the champion on today's test split, then apply the champion/challenger rule.

    Only a champion trained on the same inputs (size, Ben Graham) can be scored on today's
    arrays; any other is judged on its registered figure, and the reason says so.
    """
    current = champion(engine, candidate.name)
    champion_value = champion_ci = None
    note = ""
    if current is not None and current.version != candidate.version:
        try:
            # Decided from the small JSON files, so a champion that cannot be scored on
            # today's arrays never has its weights read and hashed.
            spec = ModelSpec.from_dict(read_json(store, current.object_prefix, "spec.json"))
            same_inputs = spec.input_size == test.images.shape[1] and trained_ben_graham(
                store, current.object_prefix
            ) == trained_ben_graham(store, candidate.object_prefix)
            if same_inputs:  # today's arrays are preprocessed as the candidate was trained
                old = load_classifier(store, current.object_prefix, sha256=current.weights_sha256)
                old_eval, _ = _predict_eval(old, val, test, settings, device)
                champion_value = old_eval.primary.value
                champion_ci = (old_eval.primary.low, old_eval.primary.high)
            else:
                note = "champion was trained on other inputs; its registered figure was compared"
        except Exception:  # an unreadable champion must not block registering the candidate
            log.exception("could not re-evaluate champion %s v%d", current.name, current.version)
            note = "champion could not be re-evaluated; its registered figure was compared"
    decision = decide(
        candidate,
        current,
        margin=settings.registry.margin,
        champion_value=champion_value,
        champion_ci=champion_ci,
    )
    if note:
        log.info("%s v%d: %s", candidate.name, candidate.version, note)
        decision = decision.model_copy(update={"reason": f"{decision.reason} ({note})"})
    apply_decision(engine, decision)
    return decision
