"""``train_fusion``: the fusion head on the two frozen encoders, registered with its lineage.

encoders to use → embeddings (cache; only missing ones computed) → pairs (real when the
catalog has them and ``pairing`` allows, else virtual) → the experiment (probes, late
fusion, fusion head, shuffled control, missing-modality rows, all on the same test pairs)
→ registry version ``fusion_head`` whose parents name both encoder versions, their cache
keys, the data version and the pairing kind → champion rule on test AUC.

``benchmarks/embedding_cache.py`` runs the same computation without the registry
(:func:`gather_inputs` with ``recompute_embeddings``) to time the cache.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine

from retina_core.catalog.challenge import NewVersion, Remeasured, register_or_reuse
from retina_core.catalog.registry import ModelVersion, run_key
from retina_core.catalog.repository import image_records, latest_dataset_version, pair_rows
from retina_core.config import Settings
from retina_core.data.pairing import Pair, pair_counts, real_pairs, shuffled_pairs, virtual_pairs
from retina_core.domain import Modality, Split
from retina_core.evaluation import evaluate_binary
from retina_core.fusion.arrays import EmbeddingTable, PairArrays, split_pair_arrays
from retina_core.fusion.attribution import baseline_file, image_disease, measure_shares
from retina_core.fusion.embed import (
    catalogued_images,
    compute_embeddings,
    encoders_to_use,
    load_embeddings,
    open_encoder,
)
from retina_core.fusion.experiment import TrainedHeads, run_experiment
from retina_core.fusion.fit import calibrated_scores
from retina_core.models.device import select_device
from retina_core.models.fusion import head_spec, load_head
from retina_core.models.weights import state_dict_to_bytes
from retina_core.progress import reports_stage
from retina_core.results import (
    EmbedReport,
    EmbedStats,
    EncoderRef,
    FusionEvaluation,
    FusionReport,
    PairingUsed,
)
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

MODEL_NAME = "fusion_head"
FUSION_CODE_VERSION = "fusion-v2"  # v2: the modality share is measured and stored
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

    def fit() -> NewVersion[FusionEvaluation]:
        ev, heads = run_experiment(
            settings.fusion,
            settings.evaluation,
            inputs.arrays,
            inputs.control,
            inputs.pairing,
            inputs.counts(),
        )
        ev.modality_share, baseline = measure_shares(
            heads.fusion.head,
            inputs.arrays,
            image_disease(engine),
            settings.evaluation,
            seed=settings.fusion.seed,
        )
        auc = ev.row("fusion").result.auc
        return NewVersion(
            files=_files(settings, inputs, key, ev, heads) | baseline_file(baseline),
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
            payload=ev,
        )

    outcome = register_or_reuse(
        engine,
        store,
        name=MODEL_NAME,
        key=key,
        margin=settings.registry.margin,
        fit=fit,
        remeasure=lambda current: _remeasure_champion(settings, store, current, inputs),
        unreadable_note="champion could not be re-measured; its stored test AUC was compared",
    )
    ev = outcome.payload
    if ev is None:
        ev = FusionEvaluation.model_validate_json(
            store.get_bytes(f"{outcome.version.object_prefix}/metrics.json")
        )
    return FusionReport(
        model_name=MODEL_NAME,
        version=outcome.version.version,
        status=outcome.status,
        reused=outcome.reused,
        run_key=key,
        data_version=inputs.data_version,
        encoders=inputs.encoder_refs(),
        embeddings=inputs.embed,
        evaluation=ev,
        decision=outcome.decision,
        seconds=time.perf_counter() - started,
    )


def _remeasure_champion(
    settings: Settings, store: ObjectStore, current: ModelVersion, inputs: FusionInputs
) -> Remeasured:
    """Champion/challenger on test AUC, re-measuring the champion when that is possible.

    A fusion head only runs on embeddings of the encoders it was trained on: a champion
    with the same encoder cache keys is re-scored on today's test pairs (a fair, same-data
    comparison); otherwise its stored AUC (measured on its own test pairs) is compared, and
    the reason says so.
    """
    if not all(current.parents.get(f"{m.value}_cache_key") == inputs.cache_keys[m] for m in Modality):
        return Remeasured(
            note="champion uses other encoders, so it cannot be re-scored on these embeddings; "
            "its stored test AUC (from its own test pairs) was compared"
        )
    head = load_head(store, current.object_prefix, sha256=current.weights_sha256)
    va, te = inputs.arrays[Split.VAL], inputs.arrays[Split.TEST]
    scores = calibrated_scores(head, [va.fundus, va.oct], va.y, [te.fundus, te.oct])
    auc = evaluate_binary(
        te.y, scores.test, te.groups, settings.evaluation, val_y01=va.y, val_score=scores.val
    ).auc
    return Remeasured(
        value=auc.value,
        ci=(auc.low, auc.high),
        note="champion re-measured on today's test pairs with the same encoders",
    )
