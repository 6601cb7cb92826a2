"""Fusion heads: missing modalities, modality dropout, stored specs, and the Grad-CAM contract."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retina_core.explain.fusion import fusion_cams
from retina_core.models import create_model
from retina_core.models.fusion import (
    ConcatMLPFusion,
    GatedFusion,
    LinearProbe,
    build_head,
    head_spec,
    late_fusion,
    load_head,
)
from retina_core.models.persist import DamagedWeights
from retina_core.models.weights import state_dict_to_bytes
from retina_core.storage import LocalObjectStore

HEADS = [ConcatMLPFusion, GatedFusion]


def embeddings(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randn(n, 8, generator=g)


@pytest.mark.parametrize("cls", HEADS)
def test_absent_modality_is_the_learned_missing_vector(cls: type) -> None:
    torch.manual_seed(0)
    head = cls(12, 8, hidden=16, modality_dropout=0.3).eval()
    with torch.no_grad():
        head.missing_fundus.normal_()
        head.missing_oct.normal_()
    f, o = embeddings()
    both = head(f, o)
    assert both.shape == (6, 2)
    mask = torch.tensor([[True, False]] * 3 + [[False, True]] * 3)
    masked = head(f, o, present_mask=mask)
    torch.testing.assert_close(masked[:3], head(f[:3], None))
    torch.testing.assert_close(masked[3:], head(None, o[3:]))
    assert not torch.allclose(masked, both)
    # an absent modality's values are ignored entirely
    torch.testing.assert_close(head(f, o * 100, present_mask=mask)[:3], masked[:3])
    with pytest.raises(ValueError, match="at least one"):
        head(None, None)


def test_modality_dropout_blanks_one_modality_at_rate_p_in_training_only() -> None:
    torch.manual_seed(1)
    head = ConcatMLPFusion(12, 8, hidden=16, modality_dropout=0.4)
    with torch.no_grad():
        head.missing_fundus.fill_(7.0)
        head.missing_oct.fill_(-7.0)
    f, o = embeddings(n=4000)
    head.train()
    nf, no = head.inputs(f, o, None)
    fundus_dropped = (nf == 7.0).all(dim=1)
    oct_dropped = (no == -7.0).all(dim=1)
    assert not (fundus_dropped & oct_dropped).any()  # one view always remains
    assert abs(float((fundus_dropped | oct_dropped).float().mean()) - 0.4) < 0.03
    assert abs(float(fundus_dropped.float().mean()) - 0.2) < 0.03
    head.eval()
    nf, no = head.inputs(f, o, None)
    assert not (nf == 7.0).all(dim=1).any() and not (no == -7.0).all(dim=1).any()


@pytest.mark.parametrize("cls", HEADS)
def test_spec_round_trip_through_the_store(cls: type, tmp_path: Path) -> None:
    torch.manual_seed(2)
    head = cls(12, 8, hidden=16, modality_dropout=0.2).eval()
    spec = head_spec(head)
    assert spec["kind"] == cls.kind and (spec["fundus_dim"], spec["oct_dim"], spec["hidden"]) == (12, 8, 16)
    store = LocalObjectStore(tmp_path)
    store.put_bytes("models/fusion_head/1/weights.safetensors", state_dict_to_bytes(head.state_dict()))
    store.put_bytes("models/fusion_head/1/spec.json", json.dumps(spec).encode())
    recorded = hashlib.sha256(store.get_bytes("models/fusion_head/1/weights.safetensors")).hexdigest()
    loaded = load_head(store, "models/fusion_head/1", sha256=recorded)
    f, o = embeddings()
    torch.testing.assert_close(loaded(f, o), head(f, o))
    assert type(build_head(spec)) is cls
    with pytest.raises(DamagedWeights):
        load_head(store, "models/fusion_head/1", sha256="0" * 64)


def test_linear_probe_and_late_fusion() -> None:
    probe = LinearProbe(12)
    assert probe(embeddings()[0]).shape == (6, 2)
    assert head_spec(probe) == {"kind": "linear_probe", "dim": 12, "outputs": ["normal", "disease"]}
    np.testing.assert_allclose(late_fusion(np.array([0.2, 0.9]), np.array([0.4, 0.1])), [0.3, 0.5])
    with pytest.raises(ValueError):
        late_fusion(np.zeros(2), np.zeros(3))


def test_fusion_head_plugs_into_fusion_grad_cam() -> None:
    torch.manual_seed(3)
    fundus = create_model("fundus_cnn", architecture="test_resnet", image_size=32).eval()
    octm = create_model("oct_cnn", architecture="test_resnet", image_size=32).eval()
    head = ConcatMLPFusion(fundus.spec.embedding_dim, octm.spec.embedding_dim, hidden=16).eval()
    f_map, o_map = fusion_cams(head, fundus, octm, torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))
    assert f_map.shape == (2, 32, 32) and o_map.shape == (2, 32, 32)
    assert np.isfinite(f_map).all() and np.isfinite(o_map).all()
