"""The fusion model's gallery: where the *combined* decision looks in each image of a test pair.

A registered fusion head is explained through the encoder versions it was trained on (its
registry parents), on the same test pairs its comparison table was scored on: each panel
shows the fundus photo and the OCT scan of one pair with the map of the fusion decision
through that modality's encoder (:func:`retina_core.explain.fusion.fusion_cams`). There are
no lesion masks for a *pair* decision, so no pointing game here: the per-modality sections
carry that check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sqlalchemy import Engine

from retina_core.catalog.registry import get_version
from retina_core.config import Settings
from retina_core.domain import Modality, Split
from retina_core.explain.fusion import fusion_cams
from retina_core.explain.overlay import overlay, save_png, side_by_side
from retina_core.explain.stage import TestPredictions, gallery_picks, to_tensor
from retina_core.fusion.embed import Encoder, catalogued_images, embedding_cache, open_encoder
from retina_core.fusion.train import MODEL_NAME, build_pairs
from retina_core.models.architectures import model_for_modality
from retina_core.models.fusion import load_head
from retina_core.progress import reports_stage
from retina_core.reporting.data import ExplainSection, GalleryItem
from retina_core.storage import ObjectStore

LABELS = ("normal", "disease")
NOTE = (
    "Maps of the fusion decision (the predicted class) traced through each frozen encoder, on test "
    "pairs: fundus photo | its map | OCT scan | its map. A pair decision has no lesion mask, so the "
    "pointing game and ROAD are reported per modality above, not here."
)


@reports_stage("explain fusion_head")
def explain_fusion_registered(
    settings: Settings, engine: Engine, store: ObjectStore, version: int, out_dir: Path
) -> ExplainSection:
    """Gallery of fusion decisions on today's test pairs (correct, misclassified, confident, uncertain)."""
    mv = get_version(engine, MODEL_NAME, version)
    head = load_head(store, mv.object_prefix, sha256=mv.weights_sha256)
    parents = {m: model_for_modality(m) for m in Modality}  # the encoder versions this head was trained on
    encoders = {
        m: open_encoder(store, get_version(engine, n, int(mv.parents[n]))) for m, n in parents.items()
    }
    _, pairs = build_pairs(settings, engine)
    test = [p for p in pairs if p.split is Split.TEST]
    rng = np.random.default_rng(settings.evaluation.seed)
    test = [test[i] for i in sorted(rng.permutation(len(test))[: settings.explain.max_images])]
    shas = {Modality.FUNDUS: [p.fundus_sha for p in test], Modality.OCT: [p.oct_sha for p in test]}
    images = {m: catalogued_images(engine, encoders[m], shas[m]) for m in Modality}
    # The embeddings the head was scored on, from the cache (checksummed on read), not recomputed.
    emb = {m: embedding_cache(settings, engine, store, encoders[m].cache_key).get(shas[m]) for m in Modality}
    with torch.no_grad():
        logits = head(torch.from_numpy(emb[Modality.FUNDUS]), torch.from_numpy(emb[Modality.OCT]))
    probs = logits.float().softmax(dim=1).numpy()
    preds = TestPredictions(
        images=images[Modality.FUNDUS],
        labels=np.array([p.label01 for p in test]),
        probs=probs,
        shas=shas[Modality.FUNDUS],
        object_keys=[],
    )
    gallery = [
        _panel(i, kind, test[i].oct_sha, preds, images, encoders, head, settings, out_dir)
        for i, kind in gallery_picks(preds, settings.explain.examples_per_class)
    ]
    return ExplainSection(model=MODEL_NAME, method=str(settings.explain.method), gallery=gallery, note=NOTE)


def _panel(
    i: int,
    kind: str,
    oct_sha: str,
    preds: TestPredictions,
    images: dict[Modality, np.ndarray],
    encoders: dict[Modality, Encoder],
    head: torch.nn.Module,
    settings: Settings,
    out_dir: Path,
) -> GalleryItem:
    fundus, oct_ = encoders[Modality.FUNDUS].model, encoders[Modality.OCT].model
    f_img, o_img = images[Modality.FUNDUS][i], images[Modality.OCT][i]
    predicted = int(preds.probs[i].argmax())
    f_map, o_map = fusion_cams(
        head,
        fundus,
        oct_,
        to_tensor(fundus, f_img[None])[0],
        to_tensor(oct_, o_img[None])[0],
        target=predicted,
        method=settings.explain.method,
    )
    strips = [
        side_by_side(f_img, overlay(f_img, np.asarray(f_map))),
        side_by_side(o_img, overlay(o_img, np.asarray(o_map))),
    ]
    true, pred = LABELS[int(preds.labels[i])], LABELS[predicted]
    name = f"{kind}_true-{true}_pred-{pred}_{preds.shas[i][:8]}-{oct_sha[:8]}.png"
    path = save_png(out_dir / "gallery" / MODEL_NAME / name, _hstack(strips))
    confidence = float(preds.probs[i].max())
    return GalleryItem(
        path=str(path.relative_to(out_dir)),
        kind=kind,  # type: ignore[arg-type]
        true_label=true,
        predicted_label=pred,
        confidence=confidence,
        caption=f"{kind}: true {true}, predicted {pred} ({confidence:.0%}); fundus | map | OCT | map",
    )


def _hstack(strips: list[np.ndarray]) -> np.ndarray:
    """Side by side, the shorter strip padded with black at the bottom (modalities may differ in size)."""
    height = max(s.shape[0] for s in strips)
    padded = [np.pad(s, ((0, height - s.shape[0]), (0, 0), (0, 0))) for s in strips]
    return np.hstack(padded)
