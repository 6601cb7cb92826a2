"""A registered model's files: safetensors weights plus JSON spec/config/metrics.

JSON and safetensors only, never pickle, so loading a model from a shared store cannot
execute code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch import nn

from retina_core.models.classifier import RetinaClassifier
from retina_core.models.registry import build_from_spec
from retina_core.models.spec import ModelSpec
from retina_core.models.weights import bytes_to_state_dict, state_dict_to_bytes
from retina_core.storage import ObjectStore


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def model_files(
    model: nn.Module, spec: Mapping[str, Any], config: Mapping[str, Any], metrics: Mapping[str, Any]
) -> dict[str, bytes]:
    return {
        "weights.safetensors": state_dict_to_bytes(model.state_dict()),
        "spec.json": _json(dict(spec)),
        "config.json": _json(dict(config)),
        "metrics.json": _json(dict(metrics)),
    }


def read_json(store: ObjectStore, prefix: str, name: str) -> dict[str, Any]:
    return json.loads(store.get_bytes(f"{prefix}/{name}"))


def load_classifier(store: ObjectStore, prefix: str) -> RetinaClassifier:
    spec = ModelSpec.from_dict(read_json(store, prefix, "spec.json"))
    model = build_from_spec(spec)
    model.load_state_dict(bytes_to_state_dict(store.get_bytes(f"{prefix}/weights.safetensors")))
    return model.eval()
