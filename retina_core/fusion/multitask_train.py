"""``train_multitask_fusion``: the multi-task head on the same pairs as the binary fusion run, registered.

Same inputs as :func:`retina_core.fusion.train.gather_inputs` (encoders, cached embeddings,
real or virtual pairs, the shuffled control), labels per pair from each image's own catalog
label, then on the same test pairs: the head with both embeddings, with one (missing-modality
rows), the same head trained on shuffled pairs (the control), and the two encoders' own
predictions (:mod:`retina_core.fusion.own_predictions`: the versions the embeddings came from).
Each row gives QWK (grade), macro-F1 (OCT class) and AUC (disease) with patient-level CIs. The version is registered as
``fusion_multitask`` through the project's one register-or-reuse helper; the champion rule
compares disease AUC (the metric every fusion head has), the champion re-scored on today's
test pairs when it reads the same embeddings.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Engine

from retina_core.catalog.challenge import NewVersion, Remeasured, register_or_reuse
from retina_core.catalog.registry import ModelVersion, run_key
from retina_core.catalog.repository import image_records
from retina_core.config import Settings
from retina_core.domain import Modality, Split
from retina_core.evaluation import Estimate
from retina_core.fusion.arrays import PairArrays
from retina_core.fusion.multitask import (
    MultiTaskFusion,
    TaskLabels,
    evaluate_multitask,
    fit_multitask,
    load_multitask,
    pair_task_labels,
    predict_outputs,
)
from retina_core.fusion.own_predictions import own_outputs
from retina_core.fusion.train import gather_inputs
from retina_core.models.weights import state_dict_to_bytes
from retina_core.results import MultiTaskReport, TaskRow
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

MODEL_NAME = "fusion_multitask"
CODE_VERSION = "multitask-v2"  # v2: the encoders' own rows
PRIMARY = "disease_auc"


def _labels(arrays: dict[Split, PairArrays], engine: Engine) -> dict[Split, TaskLabels]:
    images = {r.sha256: (r.modality, r.label) for m in Modality for r in image_records(engine, m)}
    return {s: pair_task_labels(a.pairs, images) for s, a in arrays.items()}


def _row(key: str, inputs: str, scores: dict[str, Estimate], source: str | None = None) -> TaskRow:
    return TaskRow(key=key, inputs=inputs, metrics={k: v.to_dict() for k, v in scores.items()}, source=source)


def train_multitask_fusion(settings: Settings, engine: Engine, store: ObjectStore) -> MultiTaskReport:
    """Train, score and register the multi-task head; the same inputs reuse the registered version."""
    fusion, evaluation = settings.fusion, settings.evaluation
    inputs = gather_inputs(settings, engine, store)
    key = run_key(
        {
            "model": MODEL_NAME,
            "parents": inputs.parents(),
            "fusion": fusion.model_dump(),
            "eval": evaluation.model_dump(),
            "code": CODE_VERSION,
        }
    )
    arrays, control = inputs.arrays, inputs.control
    labels = _labels(arrays, engine)
    te = arrays[Split.TEST]
    boot = {"n_boot": evaluation.bootstrap, "seed": evaluation.seed}

    def scored(
        head: MultiTaskFusion, f: Any, o: Any, lab: TaskLabels | None = None, groups: Any = None
    ) -> dict[str, Estimate]:
        lab = labels[Split.TEST] if lab is None else lab
        groups = te.groups if groups is None else groups
        return evaluate_multitask(predict_outputs(head, f, o), lab, groups, **boot)

    def fit() -> NewVersion[list[TaskRow]]:
        control_labels = _labels(control, engine)
        tr, va = arrays[Split.TRAIN], arrays[Split.VAL]
        fd, od = tr.fundus.shape[1], tr.oct.shape[1]

        def make() -> MultiTaskFusion:
            return MultiTaskFusion(fd, od, hidden=fusion.hidden, modality_dropout=fusion.modality_dropout)

        budget = {"epochs": fusion.epochs, "lr": fusion.lr, "seed": fusion.seed}
        fitted = fit_multitask(
            make, (tr.fundus, tr.oct, labels[Split.TRAIN]), (va.fundus, va.oct, labels[Split.VAL]), **budget
        )
        ctr, cva, cte = (control[s] for s in (Split.TRAIN, Split.VAL, Split.TEST))
        control_fit = fit_multitask(
            make,
            (ctr.fundus, ctr.oct, control_labels[Split.TRAIN]),
            (cva.fundus, cva.oct, control_labels[Split.VAL]),
            **budget,
        )
        rows = [
            _row("fusion", "both", scored(fitted.head, te.fundus, te.oct)),
            _row("fusion_fundus_only", "fundus", scored(fitted.head, te.fundus, None)),
            _row("fusion_oct_only", "oct", scored(fitted.head, None, te.oct)),
            _row(
                "shuffled_control",
                "both",
                scored(control_fit.head, cte.fundus, cte.oct, control_labels[Split.TEST], cte.groups),
            ),
        ]
        for modality, version in inputs.versions.items():
            own = own_outputs(settings, engine, store, modality, version, te)
            scores = evaluate_multitask(own, labels[Split.TEST], te.groups, **boot)
            rows.append(
                _row(f"{version.name}_own", modality.value, scores, f"{version.name} v{version.version}")
            )
        auc = rows[0].metrics[PRIMARY]
        metrics = {
            "rows": [r.model_dump() for r in rows],
            "history": fitted.history,
            "best_epoch": fitted.best_epoch,
        }
        config = {"fusion": fusion.model_dump(), "parents": inputs.parents(), "run_key": key}
        return NewVersion(
            files={
                "weights.safetensors": state_dict_to_bytes(fitted.head.state_dict()),
                "spec.json": json.dumps(fitted.head.spec(), indent=2).encode(),
                "config.json": json.dumps(config, default=str).encode(),
                "metrics.json": json.dumps(metrics).encode(),
            },
            primary_metric=PRIMARY,
            primary=(auc["value"], auc["low"], auc["high"]),
            data_version=inputs.data_version,
            parents=inputs.parents(),
            summary={"pairing": inputs.pairing, "metrics": rows[0].metrics},
            payload=rows,
        )

    def remeasure(current: ModelVersion) -> Remeasured:
        """The champion re-scored on today's test pairs when it reads the same embeddings."""
        if any(current.parents.get(f"{m.value}_cache_key") != inputs.cache_keys[m] for m in Modality):
            return Remeasured(
                note="champion uses other encoders, so its stored disease AUC (own test pairs) was compared"
            )
        auc = scored(load_multitask(store, current), te.fundus, te.oct)[PRIMARY]
        return Remeasured(auc.value, (auc.low, auc.high), "champion re-measured on today's test pairs")

    outcome = register_or_reuse(
        engine,
        store,
        name=MODEL_NAME,
        key=key,
        margin=settings.registry.margin,
        fit=fit,
        remeasure=remeasure,
        unreadable_note="champion could not be re-measured; its stored disease AUC was compared",
    )
    if outcome.payload is not None:
        rows = outcome.payload
    else:
        stored = json.loads(store.get_bytes(f"{outcome.version.object_prefix}/metrics.json"))
        rows = [TaskRow.model_validate(r) for r in stored["rows"]]
    log.info("%s v%d on %s pairs: %s", MODEL_NAME, outcome.version.version, inputs.pairing, outcome.status)
    return MultiTaskReport(
        version=outcome.version.version,
        status=outcome.status,
        reused=outcome.reused,
        pairing=inputs.pairing,
        rows=rows,
        decision=outcome.decision,
    )
