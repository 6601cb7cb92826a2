"""The single-modality encoders' *own* predictions on the fusion test pairs.

The multi-task head reads the encoders' frozen embeddings; the fair question is whether it
grades and classifies better than the encoders themselves. So each encoder version the head's
embeddings came from predicts its own task on the same test pairs (the fundus CNN the DR
grade, the OCT CNN the OCT class, through its full network and the outputs it was trained
with), and its disease probability is the sum of its disease classes (``P(grade > 0)``,
``P(not NORMAL)``). Scored like the head: QWK, macro-F1, disease AUC, patient-level CIs.

Only the distinct test images are run, read from the preprocessed cache the embeddings
were computed from.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine

from retina_core.catalog.registry import ModelVersion
from retina_core.config import Settings
from retina_core.domain import Modality, is_disease
from retina_core.fusion.arrays import PairArrays
from retina_core.fusion.embed import catalogued_images, open_encoder
from retina_core.models.device import select_device
from retina_core.models.inference import predict_logits
from retina_core.models.persist import read_json
from retina_core.predict import class_probabilities
from retina_core.storage import ObjectStore

TASK_OF = {Modality.FUNDUS: "grade", Modality.OCT: "oct_class"}
"""The task each encoder was trained for, named as the multi-task head names its outputs."""


def encoder_probabilities(
    settings: Settings, engine: Engine, store: ObjectStore, version: ModelVersion, shas: list[str]
) -> np.ndarray:
    """Class probabilities (N, K) of a registered encoder on catalogued images, in ``shas`` order."""
    encoder = open_encoder(store, version)
    distinct = list(dict.fromkeys(shas))
    images = catalogued_images(engine, encoder, distinct)
    logits = predict_logits(
        encoder.model,
        images,
        select_device(settings.train.device),
        batch_size=settings.embed.batch_size,
        amp=settings.train.amp,
        num_workers=settings.train.num_workers,
    )
    extras = read_json(store, version.object_prefix, "metrics.json").get("extras", {})
    probs = class_probabilities(encoder.spec.task, logits, extras)
    row = {sha: i for i, sha in enumerate(distinct)}
    return probs[[row[s] for s in shas]]


def own_outputs(
    settings: Settings,
    engine: Engine,
    store: ObjectStore,
    modality: Modality,
    version: ModelVersion,
    test: PairArrays,
) -> dict[str, np.ndarray]:
    """One encoder's outputs on the test pairs, keyed like the head's: its own task and disease."""
    shas = [p.fundus_sha if modality is Modality.FUNDUS else p.oct_sha for p in test.pairs]
    probs = encoder_probabilities(settings, engine, store, version, shas)
    diseased = [i for i in range(probs.shape[1]) if is_disease(modality, i)]
    return {TASK_OF[modality]: probs, "disease": probs[:, diseased].sum(1)}
