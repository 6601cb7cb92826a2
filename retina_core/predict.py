"""``retina predict``: one fundus photo and/or one OCT scan in, calibrated-as-stored predictions out.

The fusion head is only meaningful on the encoders it was trained with, so when a fusion
head is registered its recorded parent versions choose the encoders; otherwise the
champions (or newest versions) of the single-modality models are used. Either image may
be missing: the single-modality models still answer and the fusion head falls back to its
learned "missing modality" input.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from retina_core.catalog.registry import ModelVersion, champion, get_version, list_versions
from retina_core.config import Settings
from retina_core.data.dicom import dicom_images, is_dicom
from retina_core.data.preprocess import preprocess
from retina_core.data.rejections import Rejection
from retina_core.data.transforms import build_eval_transform
from retina_core.data.validation import validate_image
from retina_core.domain import Modality, is_disease, is_referable
from retina_core.evaluation.calibration import softmax
from retina_core.evaluation.thresholds import regression_scores_to_probs
from retina_core.evaluation.volume import VolumePrediction, predict_volume
from retina_core.fusion.multitask import MultiTaskPrediction
from retina_core.models.classifier import RetinaClassifier
from retina_core.models.persist import load_classifier, read_json
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)
NAMES = {Modality.FUNDUS: "fundus_cnn", Modality.OCT: "oct_cnn"}
MULTITASK_NAME = "fusion_multitask"


class InvalidImage(ValueError):
    """The file given to predict is not a usable image; the message says why."""


def read_input(path: Path, modality: Modality, settings: Settings) -> bytes:
    """An input file's bytes, refused *before* reading when over the modality's limit
    (``RETINA_INGEST__MAX_{FUNDUS,OCT}_BYTES``): a 1.5 GB file must not cost 1.5 GB first."""
    limit = settings.ingest.max_bytes(modality)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise InvalidImage(f"{path}: {size} bytes exceeds the {limit}-byte {modality} limit")
        data = fh.read(size + 1)  # never read(limit): that allocates the whole limit up front
    if len(data) > limit:
        raise InvalidImage(f"{path}: grew past the {limit}-byte {modality} limit while read")
    return data


class ModalityPrediction(BaseModel):
    model: str
    version: int
    predicted: str
    probabilities: dict[str, float]
    disease_probability: float
    referable_probability: float
    gradcam: str | None = None
    volume: VolumePrediction | None = None
    """For an OCT volume (multi-frame DICOM): the eye-level scores; the fields above then
    describe the driving B-scan, the one Grad-CAM explains."""


class FusionPrediction(BaseModel):
    model: str
    version: int
    inputs: str
    disease_probability: float
    modality_share: dict[str, float] | None = Field(
        None,
        description="Share of the fused disease margin owed to each modality (Integrated Gradients over "
        "the two embeddings); None unless both images were given and the head stores its baseline.",
    )
    gradcam: dict[str, str] | None = None


class PredictResult(BaseModel):
    fundus: ModalityPrediction | None
    oct: ModalityPrediction | None
    fusion: FusionPrediction | None
    multitask: MultiTaskPrediction | None = Field(
        None, description="The multi-task fusion head (grade, OCT class, disease) when it is the champion."
    )
    seconds: float


def class_probabilities(task: str, outputs: np.ndarray, extras: dict[str, Any]) -> np.ndarray:
    """A classifier's outputs as class probabilities: softmax of the logits, or for a regression
    model its scores through the ordinal thresholds stored in its ``metrics.json`` extras."""
    if task == "regression":
        return regression_scores_to_probs(
            outputs[:, 0], np.asarray(extras["thresholds"]), extras["ordinal_scale"]
        )
    return softmax(outputs)


def _preferred(engine: Engine, name: str) -> ModelVersion | None:
    found = champion(engine, name)
    if found is None:
        versions = list_versions(engine, name)
        found = versions[-1] if versions else None
    return found


@dataclass
class _Loaded:
    version: ModelVersion
    model: RetinaClassifier
    thresholds: dict[str, Any]


class Predictor:
    """Models loaded once (load time is measured); ``predict`` may then be called many times."""

    def __init__(self, settings: Settings, engine: Engine, store: ObjectStore) -> None:
        started = time.perf_counter()
        self.settings, self.store = settings, store
        self.fusion_version = _preferred(engine, "fusion_head")
        self.fusion_head = None
        self.share_baseline = None
        wanted: dict[Modality, ModelVersion | None] = {m: _preferred(engine, n) for m, n in NAMES.items()}
        if self.fusion_version is not None:
            from retina_core.models.fusion import load_head

            parents = self.fusion_version.parents
            wanted = {m: get_version(engine, n, int(parents[n])) for m, n in NAMES.items()}
            self.fusion_head = load_head(
                store, self.fusion_version.object_prefix, sha256=self.fusion_version.weights_sha256
            )
            from retina_core.fusion.attribution import load_baseline

            self.share_baseline = load_baseline(store, self.fusion_version.object_prefix)
        self.models: dict[Modality, _Loaded] = {}
        for modality, version in wanted.items():
            if version is None:
                continue
            model = load_classifier(store, version.object_prefix, sha256=version.weights_sha256)
            extras = read_json(store, version.object_prefix, "metrics.json").get("extras", {})
            self.models[modality] = _Loaded(version, model, extras)
        self.multitask = self._champion_multitask(engine, store)
        self.load_seconds = time.perf_counter() - started

    def _champion_multitask(self, engine: Engine, store: ObjectStore) -> tuple[ModelVersion, Any] | None:
        """The champion multi-task head, when it was trained on the encoders loaded here."""
        found = champion(engine, MULTITASK_NAME)
        if found is None or any(
            m not in self.models or int(found.parents.get(n, -1)) != self.models[m].version.version
            for m, n in NAMES.items()
        ):
            return None
        from retina_core.fusion.multitask import load_multitask

        return found, load_multitask(store, found)

    def _multitask(
        self, tensors: dict[Modality, tuple[torch.Tensor, np.ndarray]]
    ) -> MultiTaskPrediction | None:
        if self.multitask is None:
            return None
        from retina_core.fusion.multitask import predict_one

        version, head = self.multitask
        with torch.inference_mode():
            emb = {m: self.models[m].model.embed(t[0]) for m, t in tensors.items()}
        return predict_one(head, version, emb.get(Modality.FUNDUS), emb.get(Modality.OCT))

    def _tensor(self, modality: Modality, data: bytes) -> tuple[torch.Tensor, np.ndarray]:
        checked = validate_image(data, modality, self.settings.ingest)
        if isinstance(checked, Rejection):
            raise InvalidImage(str(checked))
        loaded = self.models[modality]
        image = preprocess(data, loaded.model.spec.preprocessing)  # as trained, not as today's settings say
        return build_eval_transform(loaded.model.spec)(image=image)["image"][None], image

    def _images(self, modality: Modality, data: bytes) -> list[bytes]:
        """The image(s) in an input: a DICOM file is decoded first, an OCT one may be a whole volume."""
        if not is_dicom(data):
            return [data]
        try:
            facts, frames = dicom_images(data, self.settings.ingest)
        except ValueError as exc:
            raise InvalidImage(str(exc)) from exc
        if facts.modality is not modality:
            raise InvalidImage(f"the DICOM file holds {facts.modality.value} images, not {modality.value}")
        return frames if modality is Modality.OCT else frames[:1]

    def _probs(self, loaded: _Loaded, x: torch.Tensor) -> np.ndarray:
        """Class probabilities, one row per image of the batch."""
        with torch.inference_mode():
            out = loaded.model(x).float().numpy()
        return class_probabilities(loaded.model.spec.task, out, loaded.thresholds)

    def predict(
        self, fundus: bytes | None = None, oct: bytes | None = None, *, gradcam_dir: Path | None = None
    ) -> PredictResult:
        started = time.perf_counter()
        if fundus is None and oct is None:
            raise ValueError("give a fundus photo, an OCT scan, or both")
        inputs = {Modality.FUNDUS: fundus, Modality.OCT: oct}
        results: dict[Modality, ModalityPrediction] = {}
        tensors: dict[Modality, tuple[torch.Tensor, np.ndarray]] = {}
        for modality, data in inputs.items():
            if data is None:
                continue
            if modality not in self.models:
                raise LookupError(f"no {NAMES[modality]} is registered: train it first")
            loaded = self.models[modality]
            prepared = [self._tensor(modality, image) for image in self._images(modality, data)]
            all_probs = self._probs(loaded, torch.cat([x for x, _ in prepared]))
            disease = all_probs[:, [i for i in range(all_probs.shape[1]) if is_disease(modality, i)]].sum(1)
            volume = predict_volume(disease) if len(prepared) > 1 else None
            driving = volume.driving_b_scan if volume is not None else 0
            tensors[modality], probs = prepared[driving], all_probs[driving]
            names = list(loaded.model.spec.label_names)
            results[modality] = ModalityPrediction(
                model=loaded.version.name,
                version=loaded.version.version,
                predicted=names[int(probs.argmax())],
                probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
                disease_probability=float(sum(p for i, p in enumerate(probs) if is_disease(modality, i))),
                referable_probability=float(sum(p for i, p in enumerate(probs) if is_referable(modality, i))),
                volume=volume,
            )
        fusion = self._fusion(tensors)
        if gradcam_dir is not None:
            self._gradcam(gradcam_dir, tensors, results, fusion)
        return PredictResult(
            fundus=results.get(Modality.FUNDUS),
            oct=results.get(Modality.OCT),
            fusion=fusion,
            multitask=self._multitask(tensors),
            seconds=time.perf_counter() - started,
        )

    def _fusion(self, tensors: dict[Modality, tuple[torch.Tensor, np.ndarray]]) -> FusionPrediction | None:
        if self.fusion_head is None or self.fusion_version is None:
            return None
        with torch.inference_mode():
            emb = {m: self.models[m].model.embed(t[0]) for m, t in tensors.items()}
            logits = self.fusion_head(emb.get(Modality.FUNDUS), emb.get(Modality.OCT))
        inputs = "both" if len(emb) == 2 else f"{next(iter(emb)).value}-only"
        share = None
        if len(emb) == 2 and self.share_baseline is not None:
            from retina_core.explain.modality_share import pair_share

            share = pair_share(self.fusion_head, emb[Modality.FUNDUS], emb[Modality.OCT], self.share_baseline)
        return FusionPrediction(
            model="fusion_head",
            version=self.fusion_version.version,
            inputs=inputs,
            disease_probability=float(torch.softmax(logits.float(), 1)[0, 1]),
            modality_share=share,
        )

    def _gradcam(
        self,
        folder: Path,
        tensors: dict[Modality, tuple[torch.Tensor, np.ndarray]],
        results: dict[Modality, ModalityPrediction],
        fusion: FusionPrediction | None,
    ) -> None:
        from retina_core.explain.cam import compute_cams
        from retina_core.explain.overlay import overlay, save_png

        folder.mkdir(parents=True, exist_ok=True)
        for modality, (x, image) in tensors.items():
            cam = compute_cams(self.models[modality].model, x, method=self.settings.explain.method)
            path = save_png(folder / f"{modality.value}_gradcam.png", overlay(image, cam.maps[0]))
            results[modality].gradcam = str(path)
        if fusion is not None and self.fusion_head is not None and len(tensors) == 2:
            from retina_core.explain.fusion import fusion_cams

            f_map, o_map = fusion_cams(
                self.fusion_head,
                self.models[Modality.FUNDUS].model,
                self.models[Modality.OCT].model,
                tensors[Modality.FUNDUS][0],
                tensors[Modality.OCT][0],
                target=1,
            )
            fusion.gradcam = {
                "fundus": str(
                    save_png(
                        folder / "fusion_fundus_gradcam.png",
                        overlay(tensors[Modality.FUNDUS][1], np.asarray(f_map).squeeze()),
                    )
                ),
                "oct": str(
                    save_png(
                        folder / "fusion_oct_gradcam.png",
                        overlay(tensors[Modality.OCT][1], np.asarray(o_map).squeeze()),
                    )
                ),
            }
