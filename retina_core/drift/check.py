"""``check_drift``: the newly accepted images of each modality against what its champion trained on.

Per modality: image statistics (KS test + standardised shift per feature), the champion
encoder's embedding space (MMD permutation test, embeddings through the shared cache),
the label mix (chi-square) and the champion's own metric on new labelled images (champion
watch). Holm's correction then runs over every test of both modalities, so an unshifted
batch is flagged with probability at most ``alpha``. The report is stored under
``drift/{check_id}/report.json``; :func:`latest_drift_report` reads the newest back.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime

import numpy as np
import timm
import torch
from sqlalchemy import Engine

from retina_core.catalog.registry import ModelVersion, champion
from retina_core.catalog.repository import image_versions, latest_dataset_version
from retina_core.config import DriftSettings, Settings
from retina_core.domain import Modality, class_names
from retina_core.drift.features import FEATURE_LABELS, FEATURES
from retina_core.drift.mmd import mmd_test
from retina_core.drift.result import (
    ChampionWatch,
    DriftReport,
    EmbeddingDrift,
    FeatureDrift,
    LabelDrift,
    ModalityDrift,
)
from retina_core.drift.sample import Images, compute_features, reference_features, sample, split_reference
from retina_core.drift.twosample import histogram, holm, ks_test, label_test, standardised_shift
from retina_core.drift.watch import watch_champion
from retina_core.evaluation.bootstrap import Estimate
from retina_core.evaluation.task_spec import TaskSpec
from retina_core.evaluation.thresholds import apply_thresholds
from retina_core.fusion.embed import EmbedPlan, Encoder, embed_chunk, embedding_cache, open_encoder
from retina_core.models.architectures import model_for_modality
from retina_core.models.persist import read_json
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)
DRIFT_ROOT = "drift"
WATCH_FACTOR = 10
"""New images embedded per check, as a multiple of ``DriftSettings.max_samples``."""


def feature_tests(reference: np.ndarray, new: np.ndarray) -> list[FeatureDrift]:
    """One raw (unadjusted) test per column of two feature matrices."""
    out = []
    for column, name in enumerate(FEATURES):
        ref, cur = reference[:, column], new[:, column]
        statistic, p = ks_test(ref, cur)
        edges, ref_density, new_density = histogram(ref, cur)
        out.append(
            FeatureDrift(
                feature=name,
                label=FEATURE_LABELS[name],
                statistic=statistic,
                p_value=p,
                effect=standardised_shift(ref, cur),
                reference_median=float(np.median(ref)),
                new_median=float(np.median(cur)),
                edges=edges,
                reference_density=ref_density,
                new_density=new_density,
            )
        )
    return out


def apply_holm(
    modalities: list[ModalityDrift], alpha: float, min_effect: float
) -> tuple[list[ModalityDrift], int]:
    """Adjust every p-value of the check together and decide which tests show drift."""
    raw: list[float] = []
    for m in modalities:
        raw += [f.p_value for f in m.features]
        raw += [t.p_value for t in (m.embedding, m.labels) if t is not None]
    adjusted = iter(holm(raw).tolist())
    out = []
    for m in modalities:
        features = []
        for f in m.features:
            p = next(adjusted)
            features.append(
                f.model_copy(update={"adjusted_p": p, "drifting": p < alpha and f.effect >= min_effect})
            )
        update: dict[str, object] = {"features": features}
        if m.embedding is not None:
            p = next(adjusted)
            update["embedding"] = m.embedding.model_copy(update={"adjusted_p": p, "drifting": p < alpha})
        if m.labels is not None:
            p = next(adjusted)
            drifting = p < alpha and m.labels.cramers_v >= min_effect
            update["labels"] = m.labels.model_copy(update={"adjusted_p": p, "drifting": drifting})
        out.append(m.model_copy(update=update))
    return out, len(raw)


def ensure_embeddings(
    settings: Settings, engine: Engine, store: ObjectStore, encoder: Encoder, images: Images, rows: np.ndarray
) -> np.ndarray:
    """Embeddings of ``images[rows]``: computing (and caching, for the next fusion run) those missing."""
    shas = [images.shas[i] for i in rows]
    keys = {images.shas[i]: images.keys[i] for i in rows}
    cache = embedding_cache(settings, engine, store, encoder.cache_key)
    missing = cache.missing(shas)
    if missing:
        plan = EmbedPlan(
            modality=encoder.modality,
            model_name=encoder.version.name,
            version=encoder.version.version,
            cache_key=encoder.cache_key,
            total=len(shas),
            todo={sha: keys[sha] for sha in missing},
        )
        for chunk in plan.chunks(settings.embed.shard_size):
            embed_chunk(settings, engine, store, plan, chunk, encoder=encoder)
        log.info("%s: embedded %d images for the drift check", encoder.modality, len(missing))
    return cache.get(shas)


def _classifier(encoder: Encoder) -> tuple[np.ndarray, np.ndarray] | None:
    """The final linear layer's (weight, bias) from the stored weights, without building the network.

    timm names that layer in each architecture's pretrained config; building an EfficientNet
    just to reach it costs about a second, reading two tensors from the verified weights nothing.
    """
    name = timm.models.get_pretrained_cfg_value(encoder.spec.architecture, "classifier")
    weight, bias = (encoder.weights.get(f"backbone.{name}.{p}") for p in ("weight", "bias"))
    if not isinstance(name, str) or weight is None or bias is None:
        return None
    return weight.float().numpy(), bias.float().numpy()


def champion_predictions(encoder: Encoder, embeddings: np.ndarray, store: ObjectStore) -> np.ndarray:
    """Predicted classes from cached embeddings: the classifier layer is all that is left to run.

    ``embed`` is ``forward_head(..., pre_logits=True)`` (timm), so the classifier on top of it
    gives the model's own logits; a regression model's score goes through its fitted thresholds.
    """
    layer = _classifier(encoder)
    if layer is not None:
        logits = embeddings.astype(np.float64) @ layer[0].T.astype(np.float64) + layer[1]
    else:  # an architecture whose classifier is not one named linear layer: run timm's own head
        head = encoder.model.backbone.get_classifier()
        with torch.no_grad():
            logits = head(torch.from_numpy(np.ascontiguousarray(embeddings))).float().numpy()
    if encoder.spec.task == "regression":
        thresholds = read_json(store, encoder.version.object_prefix, "metrics.json")["extras"]["thresholds"]
        return apply_thresholds(logits[:, 0], np.asarray(thresholds))
    return logits.argmax(axis=1)


def _registered(version: ModelVersion) -> Estimate:
    nan = math.nan
    value = nan if version.primary_value is None else version.primary_value
    low = nan if version.primary_low is None else version.primary_low
    high = nan if version.primary_high is None else version.primary_high
    return Estimate(value, low, high, 0)


def check_modality(
    settings: Settings, engine: Engine, store: ObjectStore, modality: Modality, upto: int | None
) -> ModalityDrift:
    """The raw tests of one modality (Holm comes after, over the whole check)."""
    ds: DriftSettings = settings.drift
    name = model_for_modality(modality)
    current = champion(engine, name)
    rows = image_versions(engine, modality)
    if current is None:
        return ModalityDrift(
            modality=modality, n_new=len(rows), note="no champion yet: nothing to compare with"
        )
    reference, new = split_reference(rows, current.data_version, upto)
    base = ModalityDrift(
        modality=modality,
        champion=f"{name} v{current.version}",
        reference_version=current.data_version,
        n_reference=len(reference),
        n_new=len(new),
        n_new_labelled=len(new.labelled()),
    )
    if len(new) < ds.min_images_to_test or len(reference) < ds.min_images_to_test:
        return base.model_copy(
            update={"note": f"{len(new)} new vs {len(reference)} reference images: too few to test"}
        )
    features = feature_tests(reference_features(store, modality, reference), compute_features(store, new))
    encoder = open_encoder(store, current)
    ref_rows = sample(len(reference), ds.max_samples, ds.seed)
    # Embeddings (and the champion watch) on a bounded sample of the new images: memory stays
    # at most WATCH_FACTOR * max_samples rows whatever lands, and the embed stage does the rest.
    new_rows = sample(len(new), WATCH_FACTOR * ds.max_samples, ds.seed + 1)
    new_emb = ensure_embeddings(settings, engine, store, encoder, new, new_rows)
    ref_emb = ensure_embeddings(settings, engine, store, encoder, reference, ref_rows)
    picked = sample(len(new_rows), ds.max_samples, ds.seed + 2)
    mmd = mmd_test(ref_emb, new_emb[picked], permutations=ds.permutations, seed=ds.seed)
    embedding = EmbeddingDrift(
        model=base.champion or name,
        mmd2=mmd.mmd2,
        p_value=mmd.p_value,
        bandwidth=mmd.bandwidth,
        n_reference=mmd.n_reference,
        n_new=mmd.n_new,
        permutations=mmd.permutations,
    )
    labelled = new.labelled()
    labels = watch = None
    if len(labelled) >= ds.min_images_to_test:
        names = class_names(modality)
        ref_labels = [label for label in reference.labels if label is not None]
        new_labels = [int(new.labels[i]) for i in labelled]
        chi2, p, v = label_test(ref_labels, new_labels, len(names))
        labels = LabelDrift(
            label_names=list(names),
            reference_counts=np.bincount(ref_labels, minlength=len(names)).tolist(),
            new_counts=np.bincount(new_labels, minlength=len(names)).tolist(),
            chi2=chi2,
            p_value=p,
            cramers_v=v,
        )
        watched = [k for k, row in enumerate(new_rows) if new.labels[row] is not None]
        watch = _watch(
            settings,
            store,
            encoder,
            current,
            new,
            new_emb[watched],
            [int(new_rows[k]) for k in watched],
            len(names),
        )
    return base.model_copy(
        update={"features": features, "embedding": embedding, "labels": labels, "watch": watch}
    )


def _watch(
    settings: Settings,
    store: ObjectStore,
    encoder: Encoder,
    current: ModelVersion,
    new: Images,
    embeddings: np.ndarray,
    labelled: list[int],
    num_classes: int,
) -> ChampionWatch:
    task = TaskSpec.for_modality(encoder.modality)
    return watch_champion(
        f"{current.name} v{current.version}",
        current.primary_metric or task.primary_metric,
        num_classes,
        np.array([new.labels[i] for i in labelled]),
        champion_predictions(encoder, embeddings, store),
        np.array([new.patients[i] for i in labelled]),
        _registered(current),
        margin=settings.drift.champion_margin,
        n_boot=settings.evaluation.bootstrap,
        seed=settings.evaluation.seed,
    )


def new_check_id() -> str:
    """Sortable by time to the microsecond (two checks in one second still order), then unique."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:6]}"


def check_drift(
    settings: Settings, engine: Engine, store: ObjectStore, *, dataset_version: int | None = None
) -> DriftReport:
    """Run every test of both modalities, correct them together, store and return the report."""
    ds = settings.drift
    raw = [check_modality(settings, engine, store, m, dataset_version) for m in Modality]
    modalities, n_tests = apply_holm(raw, ds.alpha, ds.min_effect)
    report = DriftReport(
        check_id=new_check_id(),
        created_at=datetime.now(UTC),
        dataset_version=dataset_version if dataset_version is not None else latest_dataset_version(engine),
        alpha=ds.alpha,
        min_effect=ds.min_effect,
        n_tests=n_tests,
        modalities=modalities,
    )
    store.put_bytes(f"{DRIFT_ROOT}/{report.check_id}/report.json", report.to_json().encode())
    log.info("drift check %s: %s", report.check_id, report.summary())
    return report


def latest_drift_report(store: ObjectStore) -> DriftReport | None:
    """The newest stored check (check ids sort by time), or None when no check ran yet."""
    keys = sorted(
        i.key
        for i in store.list(f"{DRIFT_ROOT}/")
        if i.key.endswith("/report.json") and "/reference/" not in i.key
    )
    return DriftReport.from_json(store.get_bytes(keys[-1])) if keys else None
