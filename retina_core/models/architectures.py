"""The architecture registry in timm's style: named entrypoints, one builder, a factory that drops ``None``.

Each entrypoint states only what differs between the modalities (channels, labels,
normalisation, default architecture) and calls :func:`_build`, which derives the rest of
the :class:`ModelSpec` from the built timm model itself (embedding width, Grad-CAM layer),
so a new architecture needs no table of facts. :func:`build_from_spec` is the way back from
a stored spec to a module to load weights into.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from retina_core.data.preprocess import Preprocessing
from retina_core.domain import Modality, class_names
from retina_core.models.cam_layer import get_module, resolve_cam_layer
from retina_core.models.classifier import RetinaClassifier, create_backbone, embedding_dim_of
from retina_core.models.spec import ModelSpec
from retina_core.models.weights import load_backbone_weights, load_state_dict_file

logger = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
Entrypoint = Callable[..., RetinaClassifier]

OCT_MEAN: tuple[float, ...] = (0.5,)
OCT_STD: tuple[float, ...] = (0.25,)
"""Fixed single-channel constants rather than dataset statistics: B-scans vary a lot in
overall brightness between devices, and constants keep the spec (and so the embedding
cache) independent of which images happened to be ingested. 0.5/0.25 maps [0, 1] to [-2, 2]."""

_model_entrypoints: dict[str, Entrypoint] = {}
_modality_models: dict[Modality, str] = {}


def register_model(modality: Modality) -> Callable[[Entrypoint], Entrypoint]:
    """Add an entrypoint under its function name, as the default model for ``modality``."""

    def wrap(fn: Entrypoint) -> Entrypoint:
        _model_entrypoints[fn.__name__] = fn
        _modality_models.setdefault(modality, fn.__name__)
        return fn

    return wrap


def create_model(name: str, **kwargs: Any) -> RetinaClassifier:
    """Build a registered model; ``None`` kwargs are dropped so the entrypoint defaults apply."""
    if name not in _model_entrypoints:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _model_entrypoints[name](**{k: v for k, v in kwargs.items() if v is not None})


def list_models() -> list[str]:
    return sorted(_model_entrypoints)


def model_for_modality(modality: Modality | str) -> str:
    return _modality_models[Modality(modality)]


def build_from_spec(spec: ModelSpec) -> RetinaClassifier:
    """The same architecture with fresh weights, to load a stored checkpoint into."""
    model = RetinaClassifier(spec)
    get_module(model, spec.cam_layer)  # a spec from another timm version must fail here, not in Grad-CAM
    return model


@register_model(Modality.FUNDUS)
def fundus_cnn(
    *,
    architecture: str = "efficientnet_b0",
    image_size: int = 128,
    task: Task = "classification",
    ben_graham: bool = False,
    pretrained: str | Path | None = None,
) -> RetinaClassifier:
    """Colour fundus photo → DR grade (5 logits), or one output for threshold regression.

    The photo is cropped to the field, and Ben Graham-normalised with ``ben_graham``.
    """
    return _build(
        "fundus_cnn", Preprocessing.for_modality(Modality.FUNDUS, image_size, ben_graham=ben_graham),
        architecture, in_chans=3, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, task=task,
        pretrained=pretrained,
    )  # fmt: skip


@register_model(Modality.OCT)
def oct_cnn(
    *, architecture: str = "resnet18", image_size: int = 128, pretrained: str | Path | None = None
) -> RetinaClassifier:
    """Greyscale OCT B-scan → CNV/DME/DRUSEN/NORMAL; one input channel through timm's ``in_chans``."""
    return _build(
        "oct_cnn", Preprocessing.for_modality(Modality.OCT, image_size), architecture, in_chans=1,
        mean=OCT_MEAN, std=OCT_STD, task="classification", pretrained=pretrained,
    )  # fmt: skip


def _build(
    name: str,
    preprocessing: Preprocessing,
    architecture: str,
    *,
    in_chans: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    task: Task,
    pretrained: str | Path | None,
) -> RetinaClassifier:
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
    modality, image_size = preprocessing.modality, preprocessing.image_size
    labels = tuple(class_names(modality))
    num_outputs = 1 if task == "regression" else len(labels)
    backbone = create_backbone(architecture, num_outputs=num_outputs, in_chans=in_chans)
    spec = ModelSpec(
        name=name,
        modality=modality,
        architecture=architecture,
        in_chans=in_chans,
        image_size=image_size,
        mean=tuple(mean),
        std=tuple(std),
        label_names=labels,
        num_outputs=num_outputs,
        embedding_dim=embedding_dim_of(backbone),
        cam_layer="backbone." + resolve_cam_layer(backbone, in_chans, image_size=image_size),
        task=task,
        field_crop=preprocessing.field_crop,
        ben_graham=preprocessing.ben_graham,
    )
    model = RetinaClassifier(spec, backbone)
    if pretrained is not None:
        dropped = load_backbone_weights(backbone, load_state_dict_file(pretrained), in_chans=in_chans)
        logger.info(
            "%s: started from %s (%d tensors re-initialised)", name, Path(pretrained).name, len(dropped)
        )
    return model
