"""The explain stage of the pipeline: CAMs for one trained model on its test split.

Produces what the report shows: the pointing game against lesion masks (where the data
has them) next to a random-map baseline, ROAD faithfulness next to a random map (works
without masks, so also on real data), and galleries of overlays per class — correct,
misclassified, most confident, most uncertain — with true and predicted labels in the
caption and the file name.

The pointing game explains the *true* class (does the map find the lesion that defines
the label?); galleries explain the *predicted* class (why did the model say this?).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import Engine

from retina_core.config import ExplainSettings, Settings
from retina_core.data.ingest import mask_key
from retina_core.data.preprocess import preprocess_mask
from retina_core.data.transforms import build_eval_transform
from retina_core.domain import Split
from retina_core.evaluation.task_spec import TaskSpec
from retina_core.evaluation.volume import DECISION_RULE, volume_scores
from retina_core.explain.cam import compute_cams
from retina_core.explain.integrated_gradients import IG_METHOD, ig_maps
from retina_core.explain.overlay import overlay, save_png, side_by_side
from retina_core.explain.pointing import score_pointing, summarise_pointing
from retina_core.explain.road import road_scores
from retina_core.models.classifier import RetinaClassifier
from retina_core.models.persist import read_json
from retina_core.progress import reports_stage
from retina_core.reporting.data import (
    ExplainSection,
    GalleryItem,
    MethodScores,
    PointingRow,
    RoadRow,
    pointing_rows,
    road_rows,
)
from retina_core.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)
ROAD_IMAGES = 16
"""ROAD re-runs the model at several perturbation levels per image: bounded for CPU runs."""


@dataclass
class TestPredictions:
    images: np.ndarray
    """uint8 model-input images (N, S, S[, C]) from the preprocessed cache."""
    labels: np.ndarray
    probs: np.ndarray
    shas: list[str]
    object_keys: list[str]
    volumes: list[tuple[str, int] | None] | None = None
    """Per image, ``(volume id, frame index)`` when it is a B-scan of an OCT volume."""


def to_tensor(model: RetinaClassifier, images: np.ndarray) -> torch.Tensor:
    transform = build_eval_transform(model.spec)
    return torch.stack([transform(image=img)["image"] for img in images])


def _masks(
    store: ObjectStore, model: RetinaClassifier, preds: TestPredictions, idx: list[int]
) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for i in idx:
        try:
            if not store.exists(mask_key(preds.shas[i])):
                continue
            mask = preprocess_mask(
                store.get_bytes(preds.object_keys[i]),
                store.get_bytes(mask_key(preds.shas[i])),
                model.spec.preprocessing,
            )
        except (StorageError, ValueError, OSError) as exc:
            log.warning("mask for %s unusable: %s", preds.shas[i][:12], exc)
            continue
        if mask.any():
            out[i] = mask
    return out


def gallery_picks(preds: TestPredictions, per_class: int) -> list[tuple[int, str]]:
    """Which test images a gallery shows: per class the most confident right and wrong ones,
    then the most confident and most uncertain overall, so that a reader sees failures as
    prominently as successes (a gallery of hits alone says nothing about the model)."""
    predicted = preds.probs.argmax(1)
    confidence = preds.probs.max(1)
    picks: list[tuple[int, str]] = []
    for label in np.unique(preds.labels):
        rows = np.flatnonzero(preds.labels == label)
        right = rows[predicted[rows] == label]
        wrong = rows[predicted[rows] != label]
        picks += [(int(i), "correct") for i in right[np.argsort(-confidence[right])][:per_class]]
        picks += [(int(i), "misclassified") for i in wrong[np.argsort(-confidence[wrong])][:per_class]]
    order = np.argsort(-confidence)
    picks += [(int(i), "most-confident") for i in order[:per_class]]
    picks += [(int(i), "most-uncertain") for i in order[::-1][:per_class]]
    return picks


def volume_driver_picks(preds: TestPredictions, normal_class: int, count: int) -> list[tuple[int, str]]:
    """The driving B-scan (highest disease probability) of the ``count`` highest-scoring volumes:
    the scans behind the eye-level decisions the report's volume table summarises."""
    if not preds.volumes:
        return []
    disease = 1.0 - preds.probs[:, normal_class]
    rows_of: dict[str, list[int]] = {}
    for i, volume in enumerate(preds.volumes):
        if volume is not None:
            rows_of.setdefault(volume[0], []).append(i)
    scored = []
    for rows in rows_of.values():
        score = volume_scores(disease[rows])[DECISION_RULE]
        scored.append((score, rows[int(np.argmax(disease[rows]))]))
    return [(i, "volume-driver") for _, i in sorted(scored, reverse=True)[:count]]


MapsFor = Callable[[RetinaClassifier, torch.Tensor, list[int]], np.ndarray]
"""A map method: model, normalised images and targets → (N, H, W) maps in [0, 1]."""


def _map_method(name: str, settings: ExplainSettings) -> MapsFor:
    if name == IG_METHOD:
        return lambda model, x, targets: ig_maps(model, x, targets)
    return lambda model, x, targets: compute_cams(model, x, targets=targets, method=settings.method).maps


def _scores(
    model: RetinaClassifier,
    preds: TestPredictions,
    candidates: list[int],
    masks: dict[int, np.ndarray],
    maps_for: MapsFor,
    seed: int,
) -> tuple[list[PointingRow] | None, list[RoadRow] | None]:
    """Pointing game (where masks exist) and ROAD, each against random maps, for one map method.

    Every method gets the same images, masks, targets and random-map seed, so their rows compare.
    """
    rng = np.random.default_rng(seed)
    names = list(model.spec.label_names)
    pointing = None
    if masks:
        idx = sorted(masks)
        maps = maps_for(model, to_tensor(model, preds.images[idx]), [int(preds.labels[i]) for i in idx])
        records = [
            score_pointing(names[int(preds.labels[i])], cam, masks[i], rng)
            for i, cam in zip(idx, maps, strict=True)
        ]
        pointing = pointing_rows(summarise_pointing(records))

    road_idx = candidates[:ROAD_IMAGES]
    road = None
    if road_idx:
        x = to_tensor(model, preds.images[road_idx])
        targets = [int(preds.labels[i]) for i in road_idx]
        comparison = road_scores(model, x, maps_for(model, x, targets), targets, seed=seed)
        road = road_rows([names[t] for t in targets], comparison.cam.combined, comparison.random.combined)
    return pointing, road


def explain_model(
    model: RetinaClassifier,
    preds: TestPredictions,
    store: ObjectStore,
    settings: ExplainSettings,
    out_dir: Path,
    *,
    seed: int = 0,
) -> ExplainSection:
    """Compute everything the report's explanation section needs for one model.

    The CAM method is scored first; with ``settings.integrated_gradients`` IG maps are scored
    on the same images beside it. The gallery draws the method ``settings.gallery_method`` names.
    """
    rng = np.random.default_rng(seed)
    names = list(model.spec.label_names)
    n = len(preds.labels)
    candidates = rng.permutation(n)[: settings.max_images].tolist()
    masks = _masks(store, model, preds, candidates)
    cam_method = _map_method(str(settings.method), settings)
    pointing, road = _scores(model, preds, candidates, masks, cam_method, seed)
    compared = []
    if settings.integrated_gradients:
        ig_pointing, ig_road = _scores(
            model, preds, candidates, masks, _map_method(IG_METHOD, settings), seed
        )
        compared.append(MethodScores(method=IG_METHOD, pointing=ig_pointing, road=ig_road))

    gallery: list[GalleryItem] = []
    normal = TaskSpec.for_modality(model.spec.modality).normal_class
    picks = gallery_picks(preds, settings.examples_per_class)
    picks += volume_driver_picks(preds, normal, 2 * settings.examples_per_class)
    gallery_method = settings.method if settings.gallery_method == "cam" else IG_METHOD
    if picks:
        idx = [i for i, _ in picks]
        predicted = preds.probs.argmax(1)
        maps = _map_method(str(gallery_method), settings)(
            model, to_tensor(model, preds.images[idx]), [int(predicted[i]) for i in idx]
        )
        folder = out_dir / "gallery" / model.spec.name
        for (i, kind), cam in zip(picks, maps, strict=True):
            true, pred = names[int(preds.labels[i])], names[int(predicted[i])]
            image = preds.images[i]
            mask = masks.get(i)
            panel = side_by_side(image, overlay(image, cam), mask)
            name = f"{kind}_true-{true}_pred-{pred}_{preds.shas[i][:10]}.png".replace(" ", "")
            caption = f"{kind}: true {true}, predicted {pred} ({preds.probs[i].max():.0%})"
            if kind == "volume-driver" and preds.volumes and (volume := preds.volumes[i]) is not None:
                caption = f"volume {volume[0][:8]}, B-scan {volume[1]}: true {true}, predicted {pred}"
            save_png(folder / name, panel)
            gallery.append(
                GalleryItem(
                    path=str((folder / name).relative_to(out_dir)),
                    kind=kind,
                    true_label=true,
                    predicted_label=pred,
                    confidence=float(preds.probs[i].max()),
                    caption=caption,
                )
            )
    return ExplainSection(
        model=model.spec.name,
        method=str(settings.method),
        pointing=pointing,
        road=road,
        compared=compared,
        gallery=gallery,
        gallery_method=str(gallery_method),
    )


@reports_stage("explain {name}")
def explain_registered(
    settings: Settings, engine: Engine, store: ObjectStore, name: str, version: int, out_dir: Path
) -> ExplainSection:
    """Explain a registered model on today's fixed test split (ids in, section out)."""
    from retina_core.catalog.registry import get_version
    from retina_core.catalog.repository import image_records
    from retina_core.data.image_cache import ensure_preprocessed
    from retina_core.evaluation.calibration import softmax
    from retina_core.models.device import select_device
    from retina_core.models.inference import cache_for, predict_logits
    from retina_core.models.persist import load_classifier

    mv = get_version(engine, name, version)
    model = load_classifier(store, mv.object_prefix, sha256=mv.weights_sha256)
    records = [r for r in image_records(engine, model.spec.modality) if r.split is Split.TEST]
    cache = cache_for(store, model.spec)  # the inputs as this model was trained on them
    ensure_preprocessed(cache, records)
    images = cache.load_many([r.sha256 for r in records], workers=2)
    logits = predict_logits(model, images, select_device(settings.train.device), amp=settings.train.amp)
    if model.spec.task == "regression":
        from retina_core.evaluation.thresholds import regression_scores_to_probs

        extras = read_json(store, mv.object_prefix, "metrics.json").get("extras", {})
        probs = regression_scores_to_probs(
            logits[:, 0], np.asarray(extras["thresholds"]), extras["ordinal_scale"]
        )
    else:
        probs = softmax(logits)
    preds = TestPredictions(
        images=images,
        labels=np.array([r.label for r in records]),
        probs=probs,
        shas=[r.sha256 for r in records],
        object_keys=[r.object_key for r in records],
        volumes=[(r.volume_id, r.frame_index or 0) if r.volume_id else None for r in records],
    )
    return explain_model(model, preds, store, settings.explain, out_dir, seed=settings.evaluation.seed)
