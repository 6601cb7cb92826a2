"""``train``: one single-modality model from the catalog to a registered, evaluated version.

catalog records → preprocessed cache → fit (checkpointed, resumable) → evaluation on the
fixed test split (patient-level CIs, calibration) → registry version → champion rule,
with the champion re-measured on the same test images so the comparison is fair.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from retina_core.catalog.challenge import NewVersion, Remeasured, register_or_reuse
from retina_core.catalog.registry import Decision, ModelVersion, find_by_run_key, latest_decision, run_key
from retina_core.catalog.repository import image_records, latest_dataset_version, pair_rows
from retina_core.config import FundusTrainSettings, ModalityTrainSettings, OctTrainSettings, Settings
from retina_core.data.image_cache import PreprocessedCache, ensure_preprocessed
from retina_core.data.preprocess import Preprocessing
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
from retina_core.evaluation.volume import volume_level
from retina_core.models import RetinaClassifier, create_model
from retina_core.models.architectures import model_for_modality
from retina_core.models.device import seed_everything, select_device
from retina_core.models.inference import predict_logits
from retina_core.models.persist import load_classifier, model_files, read_json, read_spec
from retina_core.models.pretrained import StartingWeights, resolve_starting_weights
from retina_core.progress import reports_stage
from retina_core.results import TrainReport
from retina_core.storage import ObjectStore
from retina_core.training import checkpoint as ckpt
from retina_core.training import distributed as ddp
from retina_core.training.data import cap_records, hold_out_paired, preprocessing_for, split_arrays
from retina_core.training.loop import (
    BatchCallback,
    EpochCallback,
    SplitArrays,
    fit,
)

log = logging.getLogger(__name__)
TRAIN_SETTINGS = {Modality.FUNDUS: FundusTrainSettings, Modality.OCT: OctTrainSettings}
TRAINING_CODE_VERSION = "train-v1"
"""Part of the run key: bump when the loop changes meaning, so old runs are not reused."""


class NotEnoughData(RuntimeError):
    """Training needs labelled images in every split."""


def _predict_eval(
    model: RetinaClassifier,
    val: SplitArrays,
    test: SplitArrays,
    settings: Settings,
    device: Any,
    volumes: dict[str, str] | None = None,
) -> tuple[EvaluationResult, dict[str, Any]]:
    """Evaluate on the fixed test split; temperature/thresholds are fitted on validation only.

    ``volumes`` (image sha256 -> OCT volume id) adds the eye-level evaluation of the B-scans
    that came from volumes, under ``extras["volume_level"]``.
    """
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
        val_probs = regression_scores_to_probs(val_logits[:, 0], thresholds, scale)
    else:
        probs, val_probs = softmax(test_logits), softmax(val_logits)
        result = evaluate_predictions(
            task,
            test.labels,
            probs,
            test.patient_ids,
            logits=test_logits,
            val_logits=val_logits,
            val_y=val.labels,
            settings=settings.evaluation,
        )
    if volumes:
        level = volume_level(task, volumes, (val, val_probs), (test, probs), settings.evaluation)
        if level is not None:
            extras["volume_level"] = level.model_dump(mode="json")
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
    """records → arrays → fit → evaluate → register (or reuse the version these inputs made)."""
    started = time.perf_counter()
    ms = settings.train_for(modality)
    name = model_for_modality(modality)
    weights, data_version, key = training_identity(settings, modality, engine)  # fails before any work
    device = select_device(settings.train.device)
    data = training_data(engine, store, modality, ms, data_version=settings.train.data_version)
    outcome = register_or_reuse(
        engine,
        store,
        name=name,
        key=key,
        margin=settings.registry.margin,
        fit=lambda: _fit_and_evaluate(
            settings, store, modality, key, data_version, data, device, on_epoch, on_batch, weights
        ),
        remeasure=lambda current: _remeasure_champion(settings, store, current, data, device),
        unreadable_note="champion could not be re-evaluated; its registered figure was compared",
        registered=lambda: ckpt.discard_checkpoints(store, key),  # a kill after registering may leave it
    )
    if outcome.payload is not None:
        metrics, evaluation = outcome.payload.metrics, outcome.payload.evaluation
        resumed_from = outcome.payload.resumed_from
    else:
        metrics = read_json(store, outcome.version.object_prefix, "metrics.json")
        evaluation, resumed_from = EvaluationResult.model_validate(metrics["evaluation"]), None
    return _report(
        modality,
        outcome.version,
        metrics,
        evaluation=evaluation,
        status=outcome.status,
        reused=outcome.reused,
        data_version=data_version,
        counts=data.counts,
        resumed_from=resumed_from,
        decision=outcome.decision,
        seconds=time.perf_counter() - started,
    )


def _report(
    modality: Modality,
    version: ModelVersion,
    metrics: dict[str, Any],
    *,
    evaluation: EvaluationResult,
    status: str,
    reused: bool,
    data_version: int | None,
    counts: dict[str, int],
    resumed_from: int | None,
    decision: Decision | None,
    seconds: float,
) -> TrainReport:
    """A training's report: the registered version and its metrics.json, plus how this run got it."""
    return TrainReport(
        modality=modality.value,
        model_name=version.name,
        version=version.version,
        status=status,
        reused=reused,
        run_key=version.run_key,
        data_version=data_version,
        counts=counts,
        history=metrics["history"],
        best_epoch=metrics["best_epoch"],
        resumed_from=resumed_from,
        evaluation=evaluation,
        decision=decision,
        extras=metrics.get("extras", {}),
        seconds=seconds,
    )


def training_data_version(settings: Settings, engine: Any) -> int | None:
    """The dataset version a run trains on: the pinned one, else the catalog's latest.

    A dispatcher pins it (``train.data_version``) so that both encoders of one retrain see
    the same images even when an ingestion lands while they train, and so that it can find
    the versions its child runs registered by their run keys.
    """
    pinned, latest = settings.train.data_version, latest_dataset_version(engine)
    if pinned is None:
        return latest
    if latest is None or pinned > latest:
        raise NotEnoughData(f"dataset version {pinned} does not exist (latest: {latest})")
    return pinned


def training_identity(
    settings: Settings, modality: Modality, engine: Any
) -> tuple[StartingWeights | None, int | None, str]:
    """What makes two trainings the same one: starting weights, dataset version and their run key.

    Resolving the starting weights fails (offline, no cache) before any work is done.
    """
    ms = settings.train_for(modality)
    weights = resolve_starting_weights(ms.architecture, ms.pretrained)
    data_version = training_data_version(settings, engine)
    return weights, data_version, training_run_key(settings, modality, data_version, weights)


def training_run_key(
    settings: Settings, modality: Modality, data_version: int | None, weights: StartingWeights | None
) -> str:
    """The identity of a training run's inputs: the same key means the same model, reused."""
    ms = settings.train_for(modality)
    start = weights.record() if weights is not None else None
    return run_key(
        {
            "model": model_for_modality(modality),
            # how many processes train does not change what is trained (see distributed.py)
            "train": ms.model_dump(exclude={"distributed"}),
            "data_version": data_version,
            "code": TRAINING_CODE_VERSION,
            "eval": settings.evaluation.model_dump(),
        }
        | ({"starting_weights": start} if start is not None else {})  # same keys as before for the rest
    )


def registered_report(
    settings: Settings, modality: Modality, *, engine: Any, store: ObjectStore
) -> TrainReport:
    """What a training run with these settings registered, read back from the catalog and the store.

    How a dispatching pipeline learns what a child run on another machine produced: the
    same settings give the same run key, whose version, metrics and champion decision are
    in the catalog. Raises :class:`NotTrainedHere` when no version has that key.
    """
    name = model_for_modality(modality)
    _, data_version, key = training_identity(settings, modality, engine)
    version = find_by_run_key(engine, name, key)
    if version is None:
        raise NotTrainedHere(
            f"no {name} version has run key {key} (dataset version {data_version}): the training "
            "run ended without registering, or its worker's RETINA_TRAIN__* settings differ from this one's"
        )
    metrics = read_json(store, version.object_prefix, "metrics.json")
    return _report(
        modality,
        version,
        metrics,
        evaluation=EvaluationResult.model_validate(metrics["evaluation"]),
        status=version.status,
        reused=True,
        data_version=data_version,
        counts=metrics.get("counts", {}),
        resumed_from=None,
        decision=latest_decision(engine, name, version.version),
        seconds=0.0,
    )


class NotTrainedHere(LookupError):
    """The catalog holds no version for the run key these settings give."""


@dataclass
class TrainingData:
    """What a run learns from and is judged on: one modality's split arrays, and where they came from."""

    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    counts: dict[str, int]
    held_out: int
    """Paired-cohort images left out of the training split (``hold_out_pairs``)."""
    preprocessing: Preprocessing
    """What the arrays went through (size, field crop, Ben Graham): what the trained model's spec records."""
    cache: dict[str, int]
    """Preprocessed-cache images computed and reused for this run."""
    volumes: dict[str, str] = field(default_factory=dict)
    """Image sha256 -> OCT volume id, for the B-scans that came from volumes (eye-level evaluation)."""


def training_data(
    engine: Any,
    store: ObjectStore,
    modality: Modality,
    ms: ModalityTrainSettings,
    *,
    data_version: int | None = None,
) -> TrainingData:
    """Catalog records (capped for quick runs, paired cohort held out if asked) → preprocessed arrays.

    ``data_version`` keeps only the images of that dataset version and earlier; None keeps all.
    """
    records = cap_records(image_records(engine, modality, up_to=data_version), ms.max_train_images, ms.seed)
    held_out = 0
    if ms.hold_out_pairs:
        kept = hold_out_paired(records, {p[modality.value] for p in pair_rows(engine)})
        held_out, records = len(records) - len(kept), kept
        log.info("%s: %d paired-cohort images held out of the training split for fusion", modality, held_out)
    counts = {s.value: sum(r.split is s for r in records) for s in Split}
    if min(counts.values()) == 0:
        raise NotEnoughData(f"{modality}: every split needs labelled images, got {counts}")
    cache = PreprocessedCache(store, preprocessing_for(modality, ms))
    stats = ensure_preprocessed(cache, records)
    log.info("%s preprocessed cache: %d computed, %d reused", modality, stats.computed, stats.reused)
    arrays = split_arrays(cache, records)
    return TrainingData(
        train=arrays[Split.TRAIN],
        val=arrays[Split.VAL],
        test=arrays[Split.TEST],
        counts=counts,
        held_out=held_out,
        preprocessing=cache.preprocessing,
        cache={"computed": stats.computed, "reused": stats.reused},
        volumes={r.sha256: r.volume_id for r in records if r.volume_id is not None},
    )


@dataclass
class FitResult:
    """What a new version's training produced beyond its files: kept for the report."""

    metrics: dict[str, Any]
    evaluation: EvaluationResult
    resumed_from: int | None


def _fit_and_evaluate(
    settings: Settings,
    store: ObjectStore,
    modality: Modality,
    key: str,
    data_version: int | None,
    data: TrainingData,
    device: Any,
    on_epoch: EpochCallback | None,
    on_batch: BatchCallback | None,
    weights: StartingWeights | None = None,
) -> NewVersion[FitResult]:
    """A new model: seeded init, checkpointed fit, evaluation on the fixed test split, its files."""
    ms = settings.train_for(modality)
    start = weights.record() if weights is not None else None
    name = model_for_modality(modality)
    seed_everything(ms.seed)  # weight initialisation is part of what a seed reproduces
    task = "regression" if ms.loss == "regression" else "classification"
    options = {"task": task, "ben_graham": ms.ben_graham} if modality is Modality.FUNDUS else {}
    model_kwargs = {
        "architecture": ms.architecture,
        "image_size": ms.image_size,
        "pretrained": weights.path if weights is not None else None,
        **options,
    }
    model = create_model(name, **model_kwargs)
    dist_ctx = _data_parallel(ms.distributed, device)
    if dist_ctx is not None:  # the other ranks wait in retina_cli.torchrun for this
        ddp.announce(
            dist_ctx,
            ddp.TrainJob(
                modality=modality.value,
                model_name=name,
                model_kwargs=model_kwargs,
                train_settings=ms.model_dump(),
                shas=data.train.shas,
                labels=data.train.labels.tolist(),
                run_key=key,
                data_version=data_version,
                amp=settings.train.amp,
                num_workers=settings.train.num_workers,
                device=str(device),
            ),
        )
    result = fit(
        model,
        data.train,
        data.val,
        ms,
        device=device,
        store=store,
        run_key=key,
        amp=settings.train.amp,
        num_workers=settings.train.num_workers,
        data_version=data_version,
        on_epoch=on_epoch,
        on_batch=on_batch,
        dist_ctx=dist_ctx,
    )
    evaluation, extras = _predict_eval(result.model, data.val, data.test, settings, device, data.volumes)
    extras |= {
        "starting_weights": start,
        "held_out_paired": data.held_out,
        "training_processes": 1 if dist_ctx is None else dist_ctx.world_size,
        "preprocess_fingerprint": data.preprocessing.fingerprint,
        "cache": data.cache,
    }
    metrics = {
        "evaluation": evaluation.model_dump(mode="json"),
        "history": [vars(h) for h in result.history],
        "best_epoch": result.best_epoch,
        "extras": extras,
        "counts": data.counts,
    }
    files = model_files(
        result.model,
        result.model.spec.to_dict(),
        {
            "train": ms.model_dump(),
            "starting_weights": start,
            "data_version": data_version,
            "run_key": key,
            "device": str(device),
        },
        metrics,
    )
    primary = evaluation.primary
    return NewVersion(
        files=files,
        primary_metric=evaluation.primary_metric,
        primary=(primary.value, primary.low, primary.high),
        data_version=data_version,
        summary={
            "counts": data.counts,
            "best_epoch": result.best_epoch,
            "architecture": ms.architecture,
            "image_size": ms.image_size,
            "starting_weights": start,
        },
        payload=FitResult(metrics=metrics, evaluation=evaluation, resumed_from=result.resumed_from),
    )


def _data_parallel(wanted: bool, device: Any) -> ddp.DistributedContext | None:
    """The process group to train over, when asked for and started (by torchrun)."""
    ctx = ddp.DistributedContext.current(torch.cuda.current_device() if device.type == "cuda" else 0)
    if wanted and ctx is None:
        log.info("distributed training asked for, but this is a single process: training in it")
    return ctx if wanted else None


def follow_job(job: ddp.TrainJob, ctx: ddp.DistributedContext, store: ObjectStore) -> None:
    """A non-zero rank's share of a training rank 0 announced: the same model, seed and
    images (read from the preprocessed cache), no validation, checkpoints or registry."""
    modality = Modality(job.modality)
    ms = TRAIN_SETTINGS[modality].model_validate(job.train_settings)
    cache = PreprocessedCache(store, preprocessing_for(modality, ms))
    train = SplitArrays(
        images=cache.load_many(job.shas, workers=2),
        labels=np.asarray(job.labels, dtype=np.int64),
        patient_ids=np.array([""] * len(job.shas), dtype=object),
        shas=job.shas,
    )
    empty = SplitArrays(np.zeros((0, *cache.shape), dtype=np.uint8), np.zeros(0, np.int64), np.array([]), [])
    seed_everything(ms.seed)
    fit(
        create_model(job.model_name, **job.model_kwargs),
        train,
        empty,
        ms,
        device=torch.device(job.device),
        store=store,
        run_key=job.run_key,
        amp=job.amp,
        num_workers=job.num_workers,
        data_version=job.data_version,
        dist_ctx=ctx,
    )


def _remeasure_champion(
    settings: Settings,
    store: ObjectStore,
    current: ModelVersion,
    data: TrainingData,
    device: Any,
) -> Remeasured:
    """Score the champion on today's test split when it was trained on the same inputs.

    Only a champion trained on the same inputs (its spec's preprocessing) can be scored on
    today's arrays; any other is judged on its registered figure, and the reason says so.
    Decided from the small JSON files, so such a champion never has its weights read and hashed.
    """
    if read_spec(store, current.object_prefix).preprocessing != data.preprocessing:
        note = "champion was trained on other inputs; its registered figure was compared"
        log.info("%s v%d: %s", current.name, current.version, note)
        return Remeasured(note=note)
    old = load_classifier(store, current.object_prefix, sha256=current.weights_sha256)
    old_eval, _ = _predict_eval(old, data.val, data.test, settings, device)
    return Remeasured(value=old_eval.primary.value, ci=(old_eval.primary.low, old_eval.primary.high))
