"""One eye's uploads in, the service's answer out: quality gate, prediction, refusals, overlays.

No HTTP here (the routes in :mod:`retina_core.serving.app` only translate), so the same
steps can be called in-process and benchmarked against the bare :class:`Predictor`.
Every input goes through the ingestion's :func:`validate_image` inside the predictor
(header checked against the pixel budget before any decoding); a refusal carries the
ingestion's reason code. An image that fails the quality gate is *withheld*, and the other
modality still answers.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

from PIL import Image

from retina_core.config import Settings
from retina_core.data.rejections import Reason, Rejection
from retina_core.data.validation import sniff_format, validate_image
from retina_core.domain import Modality, is_disease, is_referable
from retina_core.predict import InvalidImage, ModalityPrediction, PredictResult
from retina_core.serving.cards import ServedModel, scale_binary, scale_probabilities
from retina_core.serving.models import Loaded, ServingModels
from retina_core.serving.overlays import OverlayCache
from retina_core.serving.quality import QUALITY_TEXT, QualityFlag, quality_flags
from retina_core.serving.schemas import FusionAnswer, ModalityAnswer, MultiTaskAnswer, PredictAnswer, Referral
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
"""Used for a referral probability when the model card records no operating threshold."""
OVERLAY_NAMES = {
    "fundus": "fundus-gradcam.png",
    "oct": "oct-gradcam.png",
    "fusion_fundus": "fusion-fundus-gradcam.png",
    "fusion_oct": "fusion-oct-gradcam.png",
}
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
"""Where the predictor writes its overlays for the moment it takes to read them back: memory
(tmpfs) where the system has it, so an overlay of a patient's image never touches a disk."""
REFERRAL_KIND = {Modality.FUNDUS: "referable DR", Modality.OCT: "urgent OCT referral"}


class ServiceError(Exception):
    """A request the service refuses; ``status`` and ``code`` become the HTTP answer."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def overlay_key(prediction_id: str, name: str) -> str:
    """Store key of a kept upload or overlay: built from the id and fixed names, never an upload's name."""
    return f"serve/uploads/{prediction_id}/{name}"


class PredictionService:
    def __init__(self, settings: Settings, models: ServingModels, store: ObjectStore) -> None:
        self.settings, self.models, self.store = settings, models, store
        self.overlays = OverlayCache(settings.serve.overlay_cache)
        self._infer = threading.Lock()
        """Grad-CAM hooks the shared model; one inference at a time keeps answers from mixing."""

    def refusal(self, modality: Modality, data: bytes) -> ServiceError | None:
        """The ingestion's verdict on an upload: 413 (too large) or 415 with its reason code, or None."""
        checked = validate_image(data, modality, self.settings.ingest)
        if not isinstance(checked, Rejection):
            return None
        status = 413 if checked.reason is Reason.TOO_LARGE else 415
        return ServiceError(status, checked.reason.value, checked.detail, modality.value)

    def quality(self, modality: Modality, data: bytes) -> list[QualityFlag]:
        """The quality gate's flags; none when the image cannot even be judged (then validation,
        which the predictor runs on every input, refuses it with the reason)."""
        fmt = sniff_format(data)
        if fmt is None:
            return []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=[fmt])
                if image.width * image.height > self.settings.ingest.max_pixels:
                    return []  # never decoded: validation refuses it as too_many_pixels
                return quality_flags(image, modality, min_side=self.settings.serve.min_side)
        except Exception:  # hostile or broken bytes: validation names the reason
            return []

    def predict(self, uploads: dict[Modality, bytes], *, gradcam: bool = True) -> PredictAnswer:
        started = time.perf_counter()
        if not uploads:
            raise ServiceError(422, "no_image", "give a fundus photo, an OCT scan, or both")
        state = self.models.current()
        if not state.ready or state.predictor is None:
            raise ServiceError(503, "not_ready", state.error or "models are not loaded")
        for modality in uploads:
            if modality not in state.predictor.models:
                raise ServiceError(
                    503, "no_model", f"no {modality.value} model is registered", modality.value
                )
        # The predictor validates every input itself (the ingestion's checks, pixel budget
        # before decoding): the service validates again only when a prediction failed, to name
        # the refusal's reason. Running the gate beside a speculative prediction was measured
        # slower on 2 busy cores (service overhead 0.36 s vs 0.23 s per full-size pair): the
        # extra thread stalls torch's own.
        flags = {m: self.quality(m, data) for m, data in uploads.items()}
        usable = {m: d for m, d in uploads.items() if not flags[m]}
        for modality, data in uploads.items():
            if modality not in usable and (refused := self.refusal(modality, data)) is not None:
                raise refused  # a withheld upload must still be a valid image
        prediction_id = uuid.uuid4().hex
        result, overlays = None, {}
        if usable:
            try:
                result, overlays = self._run(state, usable, gradcam)
            except Exception:
                for modality, data in usable.items():
                    if (refused := self.refusal(modality, data)) is not None:
                        raise refused from None
                raise
        answer = self._answer(prediction_id, state, uploads, flags, result, overlays, started)
        self.overlays.put(prediction_id, overlays)
        if self.settings.serve.keep_uploads:
            self._keep(prediction_id, uploads, overlays)
        log.info(
            "prediction %s: %s; %s in %.3f s",
            prediction_id,
            ", ".join(f"{m.value} {sniff_format(d)} {len(d)} bytes" for m, d in uploads.items()),
            answer.referral.decision,
            answer.seconds,
        )
        return answer

    def overlay(self, prediction_id: str, name: str) -> bytes | None:
        if name not in OVERLAY_NAMES.values():
            return None
        found = self.overlays.get(prediction_id, name)
        if found is None and self.settings.serve.keep_uploads:
            key = overlay_key(prediction_id, name)
            found = self.store.get_bytes(key) if self.store.exists(key) else None
        return found

    def _run(
        self, state: Loaded, usable: dict[Modality, bytes], gradcam: bool
    ) -> tuple[PredictResult, dict[str, bytes]]:
        assert state.predictor is not None
        with tempfile.TemporaryDirectory(prefix="retina-serve-", dir=SCRATCH) as tmp, self._infer:
            try:
                result = state.predictor.predict(
                    usable.get(Modality.FUNDUS),
                    usable.get(Modality.OCT),
                    gradcam_dir=Path(tmp) if gradcam else None,
                )
            except InvalidImage as exc:  # the checks name the ingestion's reason; this is the fallback
                raise ServiceError(415, "not_an_image", str(exc)) from exc
            files = {
                "fundus": result.fundus.gradcam if result.fundus else None,
                "oct": result.oct.gradcam if result.oct else None,
                "fusion_fundus": (result.fusion.gradcam or {}).get("fundus") if result.fusion else None,
                "fusion_oct": (result.fusion.gradcam or {}).get("oct") if result.fusion else None,
            }
            overlays = {OVERLAY_NAMES[k]: Path(p).read_bytes() for k, p in files.items() if p}
        return result, overlays

    def _answer(
        self,
        prediction_id: str,
        state: Loaded,
        uploads: dict[Modality, bytes],
        flags: dict[Modality, list[QualityFlag]],
        result: PredictResult | None,
        overlays: dict[str, bytes],
        started: float,
    ) -> PredictAnswer:
        def url(name: str) -> str | None:
            return f"/v1/predictions/{prediction_id}/{name}" if name in overlays else None

        parts: dict[Modality, ModalityAnswer] = {}
        for modality in uploads:
            if flags[modality]:
                parts[modality] = ModalityAnswer(
                    status="withheld", quality=[f.value for f in flags[modality]]
                )
                continue
            assert result is not None
            raw = result.fundus if modality is Modality.FUNDUS else result.oct
            assert raw is not None
            served = state.served.get(raw.model)
            parts[modality] = _modality(modality, raw, served, url(OVERLAY_NAMES[modality.value]))
        fusion = None
        if result is not None and result.fusion is not None:
            f = result.fusion
            point = state.served[f.model].operating.get(f.inputs) if f.model in state.served else None
            temperature = point.temperature if point else None
            threshold = point.threshold if point else None
            calibrated = scale_binary(f.disease_probability, temperature)
            gradcams = {k: u for k in ("fundus", "oct") if (u := url(OVERLAY_NAMES[f"fusion_{k}"]))}
            fusion = FusionAnswer(
                fusion=f.inputs,  # type: ignore[arg-type]
                model=f.model,
                version=f.version,
                disease_probability=f.disease_probability,
                calibrated_disease_probability=calibrated,
                temperature=temperature,
                operating_threshold=threshold,
                threshold_source=point.threshold_source if point else None,
                above_threshold=None if threshold is None else calibrated >= threshold,
                gradcam=gradcams or None,
                modality_share=f.modality_share,
            )
        multitask = None
        if result is not None and result.multitask is not None:
            multitask = MultiTaskAnswer.model_validate(result.multitask.model_dump())
        models = {p.model: p.version for p in parts.values() if p.model and p.version is not None}
        for answered in (fusion, multitask):
            if answered is not None:
                models[answered.model] = answered.version
        return PredictAnswer(
            id=prediction_id,
            models=models,
            fundus=parts.get(Modality.FUNDUS),
            oct=parts.get(Modality.OCT),
            fusion=fusion,
            multitask=multitask,
            referral=referral(parts, fusion),
            seconds=time.perf_counter() - started,
        )

    def _keep(self, prediction_id: str, uploads: dict[Modality, bytes], overlays: dict[str, bytes]) -> None:
        for modality, data in uploads.items():
            ext = str(sniff_format(data)).lower()  # png, jpeg, tiff, bmp: the curated store's names
            self.store.put_bytes(overlay_key(prediction_id, f"{modality.value}.{ext}"), data)
        for name, png in overlays.items():
            self.store.put_bytes(overlay_key(prediction_id, name), png)


def _modality(
    modality: Modality, raw: ModalityPrediction, served: ServedModel | None, gradcam: str | None
) -> ModalityAnswer:
    point = served.operating.get("default") if served else None
    temperature = point.temperature if point else None
    calibrated = scale_probabilities(raw.probabilities, temperature)
    values = list(calibrated.values())
    return ModalityAnswer(
        status="predicted",
        model=raw.model,
        version=raw.version,
        predicted=raw.predicted,
        probabilities=raw.probabilities,
        calibrated_probabilities=calibrated,
        temperature=temperature,
        disease_probability=sum(p for i, p in enumerate(values) if is_disease(modality, i)),
        referral_probability=sum(p for i, p in enumerate(values) if is_referable(modality, i)),
        referral_kind=REFERRAL_KIND[modality],  # type: ignore[arg-type]
        gradcam=gradcam,
    )


def referral(parts: dict[Modality, ModalityAnswer], fusion: FusionAnswer | None) -> Referral:
    """The advice in words, most urgent finding first; withheld images are named, never guessed at."""
    notes = [
        f"The {m.value} image was not graded: {'; '.join(QUALITY_TEXT[QualityFlag(q)] for q in p.quality)}. "
        "Retake it."
        for m, p in parts.items()
        if p.status == "withheld"
    ]
    oct_part, fundus_part = parts.get(Modality.OCT), parts.get(Modality.FUNDUS)
    if all(p.status == "withheld" for p in parts.values()):
        return Referral(decision="no prediction", advice=" ".join(notes))
    if oct_part and oct_part.referral_probability is not None and oct_part.referral_probability >= 0.5:
        head = (
            f"Urgent referral: the OCT scan suggests CNV or DME "
            f"(probability {oct_part.referral_probability:.0%})."
        )
        return Referral(decision="urgent", advice=" ".join([head, *notes]))
    reasons = []
    if fusion is not None and fusion.calibrated_disease_probability >= (
        fusion.operating_threshold if fusion.operating_threshold is not None else DEFAULT_THRESHOLD
    ):
        threshold = (
            fusion.operating_threshold if fusion.operating_threshold is not None else DEFAULT_THRESHOLD
        )
        reasons.append(
            f"the fused probability of disease ({fusion.calibrated_disease_probability:.0%}) is at or above "
            f"the model's operating threshold ({threshold:.0%})"
        )
    if (
        fundus_part
        and fundus_part.referral_probability is not None
        and fundus_part.referral_probability >= 0.5
    ):
        reasons.append(f"referable diabetic retinopathy is likely ({fundus_part.referral_probability:.0%})")
    if reasons:
        head = f"Refer to an eye-care professional: {' and '.join(reasons)}."
        return Referral(decision="refer", advice=" ".join([head, *notes]))
    head = "No referral suggested by the models: keep the routine screening interval."
    return Referral(decision="routine", advice=" ".join([head, *notes]))
