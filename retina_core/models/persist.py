"""A registered model's files: safetensors weights plus JSON spec/config/metrics.

JSON and safetensors only, never pickle, so loading a model from a shared store cannot
execute code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from retina_core.domain import Modality
from retina_core.models.architectures import build_from_spec
from retina_core.models.classifier import RetinaClassifier
from retina_core.models.spec import ModelSpec
from retina_core.models.weights import bytes_to_state_dict, state_dict_to_bytes
from retina_core.storage import ObjectStore

WEIGHTS_FILE = "weights.safetensors"


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def model_files(
    model: nn.Module, spec: Mapping[str, Any], config: Mapping[str, Any], metrics: Mapping[str, Any]
) -> dict[str, bytes]:
    return {
        WEIGHTS_FILE: state_dict_to_bytes(model.state_dict()),
        "spec.json": _json(dict(spec)),
        "config.json": _json(dict(config)),
        "metrics.json": _json(dict(metrics)),
    }


def read_json(store: ObjectStore, prefix: str, name: str) -> dict[str, Any]:
    return json.loads(store.get_bytes(f"{prefix}/{name}"))


def read_spec(store: ObjectStore, prefix: str) -> ModelSpec:
    """The spec of the model under ``prefix``, preprocessing included: how its inputs must be prepared.

    Inputs must be preprocessed as the model was trained, whatever today's settings say:
    a model trained on Ben Graham-normalised photos fed raw ones (or the reverse) gives
    confident nonsense. Versions registered before the spec carried Ben Graham recorded it
    only in their training settings (``config.json``), so it is read from there for them.
    """
    data = read_json(store, prefix, "spec.json")
    if "ben_graham" not in data:
        trained = read_json(store, prefix, "config.json").get("train", {}).get("ben_graham", False)
        data["ben_graham"] = bool(trained) and data.get("modality") == Modality.FUNDUS.value
    return ModelSpec.from_dict(data)


class DamagedWeights(ValueError):
    """A registered model's weights no longer hash to what the registry recorded."""


def read_weights(
    store: ObjectStore, prefix: str, *, sha256: str, file: str = WEIGHTS_FILE
) -> dict[str, Tensor]:
    """The weights under ``prefix``, checked against the SHA-256 the registry recorded for them.

    A model version is immutable: bytes that changed after registration (a damaged or
    overwritten object) must fail loudly, not predict, embed or explain under its name.
    """
    data = store.get_bytes(f"{prefix}/{file}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DamagedWeights(
            f"{prefix}/{file} hashes to {actual[:12]}…, but the registry recorded {sha256[:12]}… "
            "for this version: the stored weights changed after registration; restore them or "
            "register a new version"
        )
    return bytes_to_state_dict(data)


def load_classifier(store: ObjectStore, prefix: str, *, sha256: str) -> RetinaClassifier:
    model = build_from_spec(read_spec(store, prefix))
    model.load_state_dict(read_weights(store, prefix, sha256=sha256))
    return model.eval()
