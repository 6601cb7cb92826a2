"""``train_fusion``: the fusion head on the two frozen encoders, registered with its lineage.

encoders to use → embeddings (cache; only missing ones computed) → pairs (real when the
catalog has them and ``pairing`` allows, else virtual) → the experiment (probes, late
fusion, fusion head, shuffled control, missing-modality rows, all on the same test pairs)
→ registry version ``fusion_head`` whose parents name both encoder versions, their cache
keys, the data version and the pairing kind → champion rule on test AUC.

:func:`fusion_stage` is the same computation without the registry, for ``make bench``:
it times the stage with a warm cache against recomputing every embedding.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import Engine

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
from retina_core.data.pairing import Pair, pair_counts, real_pairs, shuffled_pairs, virtual_pairs
from retina_core.domain import Modality, Split
from retina_core.evaluation import evaluate_binary
from retina_core.fusion.arrays import EmbeddingTable, PairArrays, split_pair_arrays
from retina_core.fusion.embed import (
    EmbedReport,
    EmbedStats,
    catalogued_images,
    compute_embeddings,
    encoders_to_use,
    load_embeddings,
    open_encoder,
)
from retina_core.fusion.experiment import TrainedHeads, run_experiment
from retina_core.fusion.fit import calibrated_scores
from retina_core.fusion.report import EncoderRef, FusionEvaluation, FusionReport, PairingUsed
from retina_core.models.fusion import head_spec, load_head
from retina_core.models.weights import state_dict_to_bytes
from retina_core.progress import reports_stage
from retina_core.storage import ObjectStore
from retina_core.training.device import select_device

log = logging.getLogger(__name__)

MODEL_NAME = "fusion_head"
FUSION_CODE_VERSION = "fusion-v1"
"""Part of the run key: bump when the experiment changes meaning, so old runs are not reused."""


class NotEnoughPairs(RuntimeError):
    """Every split needs pairs of both labels (train to learn, val to stop and calibrate, test to score)."""


@dataclass
class FusionInputs:
    versions: dict[Modality, ModelVersion]
    cache_keys: dict[Modality, str]
    embed: EmbedReport
    data_version: int | None
    pairing: PairingUsed
    pairs: list[Pair]
    arrays: dict[Split, PairArrays]
    control: dict[Split, PairArrays]
    embed_seconds: float
    images: int
    """Distinct images in the pairs (both modalities): what the stage needs embeddings for."""

    def counts(self) -> dict[str, dict[str, int]]:
        return pair_counts(self.pairs)

    def parents(self) -> dict[str, Any]:
        return {
            "fundus_cnn": self.versions[Modality.FUNDUS].version,
            "oct_cnn": self.versions[Modality.OCT].version,
            "fundus_cache_key": self.cache_keys[Modality.FUNDUS],
            "oct_cache_key": self.cache_keys[Modality.OCT],
            "data_version": self.data_version,
            "pairing": self.pairing,
        }

    def encoder_refs(self) -> dict[str, EncoderRef]:
        return {
            m.value: EncoderRef(
                modality=m.value, name=v.name, version=v.version, cache_key=self.cache_keys[m]
            )
            for m, v in self.versions.items()
        }


def resolve_pairing(requested: str, has_real_pairs: bool) -> PairingUsed:
    if requested == "real" and not has_real_pairs:
        raise NotEnoughPairs("pairing 'real' was asked for but no pairs manifest has been ingested")
    if requested == "auto":
        return "real" if has_real_pairs else "virtual"
    return "real" if requested == "real" else "virtual"


def build_pairs(settings: Settings, engine: Engine) -> tuple[PairingUsed, list[Pair]]:
    rows = pair_rows(engine)
    kind = resolve_pairing(settings.fusion.pairing, bool(rows))
    fundus = image_records(engine, Modality.FUNDUS)
    octs = image_records(engine, Modality.OCT)
    if kind == "real":
        pairs = real_pairs(rows, fundus, octs)
    else:
        pairs = virtual_pairs(fundus, octs, settings.fusion.pairs_per_image, settings.fusion.seed)
    for split, c in pair_counts(pairs).items():
        if c["diseased"] == 0 or c["diseased"] == c["pairs"]:
            raise NotEnoughPairs(
                f"{kind} pairs: the {split} split needs diseased and normal pairs, got {c['diseased']} of {c['pairs']}"
            )
    return kind, pairs


def _embedding_tables(
    settings: Settings,
    engine: Engine,
    store: ObjectStore,
    versions: dict[Modality, ModelVersion],
    pairs: list[Pair],
    recompute: bool,
) -> tuple[dict[Modality, EmbeddingTable], dict[Modality, EmbedStats]]:
    """Embeddings of every image in ``pairs``; ``recompute`` bypasses the cache (benchmarks only)."""
    needed = {
        Modality.FUNDUS: sorted({p.fundus_sha for p in pairs}),
        Modality.OCT: sorted({p.oct_sha for p in pairs}),
    }
    tables, stats = {}, {}
    for modality, shas in needed.items():
        if recompute:
            matrix, stats[modality] = _recompute(settings, engine, store, modality, versions[modality], shas)
        else:
            matrix, stats[modality] = load_embeddings(
                settings, engine, store, modality, versions[modality], shas
            )
        tables[modality] = EmbeddingTable(shas, matrix)
    return tables, stats


def _recompute(
    settings: Settings,
    engine: Engine,
    store: ObjectStore,
    modality: Modality,
    version: ModelVersion,
    shas: list[str],
) -> tuple[np.ndarray, EmbedStats]:
    started = time.perf_counter()
    encoder = open_encoder(store, version)
    images = catalogued_images(engine, encoder, shas)
    matrix = compute_embeddings(
        encoder.model,
        images,
        select_device(settings.train.device),
        settings.embed.batch_size,
        settings.train.amp,
        num_workers=settings.train.num_workers,
    )
    stats = EmbedStats(
        modality=modality,
        model_name=version.name,
        version=version.version,
        cache_key=encoder.cache_key,
        computed=len(shas),
        reused=0,
        seconds=time.perf_counter() - started,
    )
    return matrix, stats


def gather_inputs(
    settings: Settings, engine: Engine, store: ObjectStore, *, recompute_embeddings: bool = False
) -> FusionInputs:
    versions = encoders_to_use(engine)
    data_version = latest_dataset_version(engine)
    kind, pairs = build_pairs(settings, engine)
    started = time.perf_counter()
    tables, stats = _embedding_tables(settings, engine, store, versions, pairs, recompute_embeddings)
    embed_seconds = time.perf_counter() - started
    control = shuffled_pairs(pairs, settings.fusion.seed + 3)
    return FusionInputs(
        versions=versions,
        cache_keys={m: s.cache_key for m, s in stats.items()},
        embed=EmbedReport(fundus=stats[Modality.FUNDUS], oct=stats[Modality.OCT]),
        data_version=data_version,
        pairing=kind,
        pairs=pairs,
        arrays=split_pair_arrays(pairs, tables[Modality.FUNDUS], tables[Modality.OCT]),
        control=split_pair_arrays(control, tables[Modality.FUNDUS], tables[Modality.OCT]),
        embed_seconds=embed_seconds,
        images=sum(len(t.shas) for t in tables.values()),
    )


def fusion_run_key(settings: Settings, inputs: FusionInputs) -> str:
    return run_key(
        {
            "model": MODEL_NAME,
            "parents": inputs.parents(),
            "fusion": settings.fusion.model_dump(),
            "eval": settings.evaluation.model_dump(),
            "code": FUSION_CODE_VERSION,
        }
    )


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def _files(
    settings: Settings, inputs: FusionInputs, key: str, ev: FusionEvaluation, heads: TrainedHeads
) -> dict[str, bytes]:
    """The head (weights + spec.json) plus its two probes, so late fusion can be replayed too."""
    files = {
        "weights.safetensors": state_dict_to_bytes(heads.fusion.head.state_dict()),
        "spec.json": _json(head_spec(heads.fusion.head)),
        "config.json": _json(
            {"fusion": settings.fusion.model_dump(), "parents": inputs.parents(), "run_key": key}
        ),
        "metrics.json": ev.model_dump_json(indent=2).encode(),
    }
    for name, fit in (("probe_fundus", heads.probe_fundus), ("probe_oct", heads.probe_oct)):
        files[f"{name}.safetensors"] = state_dict_to_bytes(fit.head.state_dict())
        files[f"{name}.json"] = _json(head_spec(fit.head))
    return files


@reports_stage("train fusion")
def train_fusion(settings: Settings, engine: Engine, store: ObjectStore) -> FusionReport:
    """Train, compare and register the fusion head; the same inputs reuse the registered version."""
    started = time.perf_counter()
    inputs = gather_inputs(settings, engine, store)
    key = fusion_run_key(settings, inputs)
    existing = find_by_run_key(engine, MODEL_NAME, key)
    if existing is not None:
        log.info("%s: inputs unchanged since version %d; reusing it", MODEL_NAME, existing.version)
        ev = FusionEvaluation.model_validate_json(store.get_bytes(f"{existing.object_prefix}/metrics.json"))
        decision = None
        if decision_pending(engine, MODEL_NAME, existing.version):
            decision = champion_decision(settings, engine, store, existing, inputs)
            existing = get_version(engine, MODEL_NAME, existing.version)
        return _report(existing, key, inputs, ev, decision, reused=True, started=started)
    ev, heads = run_experiment(
        settings.fusion, settings.evaluation, inputs.arrays, inputs.control, inputs.pairing, inputs.counts()
    )
    auc = ev.row("fusion").result.auc
    version = register_version(
        engine,
        store,
        name=MODEL_NAME,
        key=key,
        files=_files(settings, inputs, key, ev, heads),
        primary_metric="auc",
        primary=(auc.value, auc.low, auc.high),
        data_version=inputs.data_version,
        parents=inputs.parents(),
        summary={
            "pairing": inputs.pairing,
            "head": settings.fusion.head,
            "counts": ev.counts,
            "gain_vs_best_single": ev.gain_vs_best_single.to_dict(),
        },
    )
    decision = champion_decision(settings, engine, store, version, inputs)
    return _report(version, key, inputs, ev, decision, reused=False, started=started)


def _report(
    version: ModelVersion,
    key: str,
    inputs: FusionInputs,
    ev: FusionEvaluation,
    decision: Decision | None,
    *,
    reused: bool,
    started: float,
) -> FusionReport:
    status = "champion" if decision is not None and decision.promoted else version.status
    return FusionReport(
        model_name=MODEL_NAME,
        version=version.version,
        status=status,
        reused=reused,
        run_key=key,
        data_version=inputs.data_version,
        encoders=inputs.encoder_refs(),
        embeddings=inputs.embed,
        evaluation=ev,
        decision=decision,
        seconds=time.perf_counter() - started,
    )


def champion_decision(
    settings: Settings, engine: Engine, store: ObjectStore, candidate: ModelVersion, inputs: FusionInputs
) -> Decision:
    """Champion/challenger on test AUC, re-measuring the champion when that is possible.

    A fusion head only runs on embeddings of the encoders it was trained on: a champion
    with the same encoder cache keys is re-scored on today's test pairs (a fair, same-data
    comparison); otherwise its stored AUC (measured on its own test pairs) is compared, and
    the reason says so.
    """
    current = champion(engine, MODEL_NAME)
    value = ci = None
    note = ""
    if current is not None and current.version != candidate.version:
        same = all(current.parents.get(f"{m.value}_cache_key") == inputs.cache_keys[m] for m in Modality)
        if same:
            try:
                value, ci = _remeasure(settings, store, current, inputs)
                note = "champion re-measured on today's test pairs with the same encoders"
            except Exception:  # an unreadable champion must not block registering the candidate
                log.exception("could not re-measure %s v%d", current.name, current.version)
                note = "champion could not be re-measured; its stored test AUC was compared"
        else:
            note = (
                "champion uses other encoders, so it cannot be re-scored on these embeddings; "
                "its stored test AUC (from its own test pairs) was compared"
            )
    decision = decide(
        candidate, current, margin=settings.registry.margin, champion_value=value, champion_ci=ci
    )
    if note:
        decision = decision.model_copy(update={"reason": f"{decision.reason} ({note})"})
    apply_decision(engine, decision)
    return decision


def _remeasure(
    settings: Settings, store: ObjectStore, version: ModelVersion, inputs: FusionInputs
) -> tuple[float, tuple[float, float]]:
    head = load_head(store, version.object_prefix, sha256=version.weights_sha256)
    va, te = inputs.arrays[Split.VAL], inputs.arrays[Split.TEST]
    scores = calibrated_scores(head, [va.fundus, va.oct], va.y, [te.fundus, te.oct])
    auc = evaluate_binary(
        te.y, scores.test, te.groups, settings.evaluation, val_y01=va.y, val_score=scores.val
    ).auc
    return auc.value, (auc.low, auc.high)


class FusionStageTiming(BaseModel):
    """What ``make bench`` records for the fusion stage."""

    recompute_embeddings: bool
    images: int
    embed_seconds: float
    fit_seconds: float
    seconds: float
    computed: int = Field(
        description="Embeddings computed (cache: new catalog images; recompute: every image)."
    )
    reused: int = Field(description="Embeddings read from the cache (the whole catalog's, when warm).")
    pairs: int
    pairing: PairingUsed
    fusion_auc: float


def fusion_stage(
    settings: Settings, engine: Engine, store: ObjectStore, *, recompute_embeddings: bool
) -> FusionStageTiming:
    """The fusion stage without the registry: embeddings, pairs, the full experiment.

    With ``recompute_embeddings=False`` embeddings come from the cache (computing only what
    is missing); with ``True`` every embedding is computed again in memory and nothing is
    written, so the two timings differ exactly by the cache.
    """
    started = time.perf_counter()
    inputs = gather_inputs(settings, engine, store, recompute_embeddings=recompute_embeddings)
    fit_started = time.perf_counter()
    ev, _ = run_experiment(
        settings.fusion, settings.evaluation, inputs.arrays, inputs.control, inputs.pairing, inputs.counts()
    )
    done = time.perf_counter()
    return FusionStageTiming(
        recompute_embeddings=recompute_embeddings,
        images=inputs.images,
        embed_seconds=inputs.embed_seconds,
        fit_seconds=done - fit_started,
        seconds=done - started,
        computed=inputs.embed.computed,
        reused=inputs.embed.reused,
        pairs=len(inputs.pairs),
        pairing=inputs.pairing,
        fusion_auc=ev.row("fusion").result.auc.value,
    )
