"""Weights files: safetensors round trips, safe torch loading, and a process-stable fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from retina_core.models.weights import (
    UnsafeWeightsError,
    bytes_to_state_dict,
    load_state_dict_file,
    save_weights,
    state_dict_to_bytes,
)


class Payload:
    """Any class outside torch's allow-list: unpickling it could run arbitrary code."""


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "bn.running_mean": torch.randn(4),
        "step": torch.tensor(7),
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_save_weights_round_trip_as_safetensors(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    path = save_weights(model, tmp_path / "sub" / "m.safetensors", metadata={"spec": "{}"})
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then JSON
    _assert_same(load_state_dict_file(path), model.state_dict())
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_bytes_round_trip() -> None:
    state = _state()
    _assert_same(bytes_to_state_dict(state_dict_to_bytes(state)), state)


def test_plain_and_nested_torch_state_dicts_load(tmp_path: Path) -> None:
    state = _state()
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "nested.pt")
    _assert_same(load_state_dict_file(tmp_path / "plain.pth"), state)
    _assert_same(load_state_dict_file(tmp_path / "nested.pt"), state)


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(UnsafeWeightsError, match=r"evil\.pt.*refusing"):
        load_state_dict_file(path)


def test_non_tensor_payload_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"weight": [1.0, 2.0]}, tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_state_dict_file(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError):
        load_state_dict_file(tmp_path / "missing.safetensors")
