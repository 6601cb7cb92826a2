"""Heads on the two frozen encoders' embeddings: the fusion heads and the single-modality probes.

Every head normalises each embedding with its own LayerNorm first: the two encoders'
embeddings live on unrelated scales, and a probe gets the same normalisation as the
fusion head so that the comparison isolates what *combining* adds.

Modality dropout (training only) replaces one modality's embedding by a learned
"missing" vector with probability ``p``. The head then also learns to predict from one
modality alone, so an eye with only a fundus photo (or only an OCT scan) still gets a
prediction, through ``present_mask`` or by passing ``None``.

A head is stored like an encoder: safetensors weights plus a spec dict (``kind``, dims,
hidden) from :func:`head_spec`, and rebuilt with :func:`build_head`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from retina_core.models.persist import read_weights
from retina_core.models.weights import bytes_to_state_dict
from retina_core.storage import ObjectStore


def _present(mask: Tensor | None, n: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(n, 2, dtype=torch.bool, device=device)
    if mask.shape != (n, 2):
        raise ValueError(f"present_mask must have shape ({n}, 2), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def _batch(fundus_emb: Tensor | None, oct_emb: Tensor | None) -> tuple[int, torch.device]:
    ref = fundus_emb if fundus_emb is not None else oct_emb
    if ref is None:
        raise ValueError("a fusion head needs at least one modality's embedding")
    return ref.shape[0], ref.device


class TwoModalityHead(nn.Module):
    """Per-modality LayerNorm, the learned "missing" vectors and modality dropout."""

    kind = "base"

    def __init__(self, fundus_dim: int, oct_dim: int, hidden: int, modality_dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must lie in [0, 1), got {modality_dropout}")
        self.fundus_dim, self.oct_dim, self.hidden = fundus_dim, oct_dim, hidden
        self.modality_dropout = modality_dropout
        self.norm_fundus = nn.LayerNorm(fundus_dim)
        self.norm_oct = nn.LayerNorm(oct_dim)
        self.missing_fundus = nn.Parameter(torch.zeros(fundus_dim))
        self.missing_oct = nn.Parameter(torch.zeros(oct_dim))

    def inputs(
        self, fundus_emb: Tensor | None, oct_emb: Tensor | None, present_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Normalised embeddings with absent (or dropped) ones replaced by the missing vectors."""
        n, device = _batch(fundus_emb, oct_emb)
        present = _present(present_mask, n, device).clone()
        if fundus_emb is None:
            present[:, 0] = False
        if oct_emb is None:
            present[:, 1] = False
        if self.training and self.modality_dropout > 0:
            drop = torch.rand(n, device=device) < self.modality_dropout
            which = torch.rand(n, device=device) < 0.5  # never both: one view always remains
            present[:, 0] &= ~(drop & which)
            present[:, 1] &= ~(drop & ~which)
        dtype = self.missing_fundus.dtype
        f = (
            self.norm_fundus(fundus_emb.to(dtype))
            if fundus_emb is not None
            else self.missing_fundus.expand(n, -1)
        )
        o = self.norm_oct(oct_emb.to(dtype)) if oct_emb is not None else self.missing_oct.expand(n, -1)
        f = torch.where(present[:, :1], f, self.missing_fundus.expand_as(f))
        o = torch.where(present[:, 1:], o, self.missing_oct.expand_as(o))
        return f, o

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fundus_dim": self.fundus_dim,
            "oct_dim": self.oct_dim,
            "hidden": self.hidden,
            "modality_dropout": self.modality_dropout,
            "outputs": ["normal", "disease"],
        }


class ConcatMLPFusion(TwoModalityHead):
    """LayerNorm per modality → concatenate → MLP → 2 logits (normal, disease)."""

    kind = "concat_mlp"

    def __init__(
        self,
        fundus_dim: int,
        oct_dim: int,
        hidden: int = 128,
        modality_dropout: float = 0.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(fundus_dim, oct_dim, hidden, modality_dropout)
        self.mlp = nn.Sequential(
            nn.Linear(fundus_dim + oct_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 2)
        )

    def forward(
        self, fundus_emb: Tensor | None, oct_emb: Tensor | None, present_mask: Tensor | None = None
    ) -> Tensor:
        f, o = self.inputs(fundus_emb, oct_emb, present_mask)
        return self.mlp(torch.cat([f, o], dim=1))


class GatedFusion(TwoModalityHead):
    """Each modality projected to ``hidden``; a learned per-feature gate mixes them → 2 logits.

    The gate lets the head lean on whichever view is informative for a given eye, which a
    concatenation can learn too but less directly.
    """

    kind = "gated"

    def __init__(
        self,
        fundus_dim: int,
        oct_dim: int,
        hidden: int = 128,
        modality_dropout: float = 0.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(fundus_dim, oct_dim, hidden, modality_dropout)
        self.proj_fundus = nn.Sequential(nn.Linear(fundus_dim, hidden), nn.GELU())
        self.proj_oct = nn.Sequential(nn.Linear(oct_dim, hidden), nn.GELU())
        self.gate = nn.Linear(2 * hidden, hidden)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 2))

    def forward(
        self, fundus_emb: Tensor | None, oct_emb: Tensor | None, present_mask: Tensor | None = None
    ) -> Tensor:
        f, o = self.inputs(fundus_emb, oct_emb, present_mask)
        hf, ho = self.proj_fundus(f), self.proj_oct(o)
        g = torch.sigmoid(self.gate(torch.cat([hf, ho], dim=1)))
        return self.out(g * hf + (1 - g) * ho)


class LinearProbe(nn.Module):
    """One modality's baseline: LayerNorm (as the fusion heads have) → linear → 2 logits."""

    kind = "linear_probe"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, 2)

    def forward(self, emb: Tensor) -> Tensor:
        return self.linear(self.norm(emb.to(self.linear.weight.dtype)))

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "outputs": ["normal", "disease"]}


HEADS: dict[str, type[TwoModalityHead]] = {
    ConcatMLPFusion.kind: ConcatMLPFusion,
    GatedFusion.kind: GatedFusion,
}


def create_fusion_head(
    kind: str, fundus_dim: int, oct_dim: int, *, hidden: int, modality_dropout: float
) -> TwoModalityHead:
    if kind not in HEADS:
        raise KeyError(f"unknown fusion head {kind!r}; known: {', '.join(sorted(HEADS))}")
    return HEADS[kind](fundus_dim, oct_dim, hidden=hidden, modality_dropout=modality_dropout)


def head_spec(head: nn.Module) -> dict[str, Any]:
    """The spec.json of a stored head: enough to rebuild the module before loading weights."""
    return head.spec()  # type: ignore[operator]


def build_head(spec: dict[str, Any]) -> nn.Module:
    """An untrained head matching a stored spec (the way back from spec.json to a module)."""
    kind = spec["kind"]
    if kind == LinearProbe.kind:
        return LinearProbe(int(spec["dim"]))
    return create_fusion_head(
        kind,
        int(spec["fundus_dim"]),
        int(spec["oct_dim"]),
        hidden=int(spec["hidden"]),
        modality_dropout=float(spec.get("modality_dropout", 0.0)),
    )


def load_head(
    store: ObjectStore, prefix: str, name: str = "weights", *, sha256: str | None = None
) -> nn.Module:
    """A stored head, in eval mode: ``{prefix}/{name}.safetensors`` with the spec in its metadata file.

    The fusion head's spec is ``spec.json``; the probes stored beside it use ``{name}.json``.
    With ``sha256`` (the registry's record of the head's weights) changed bytes are refused.
    """
    spec_file = "spec.json" if name == "weights" else f"{name}.json"
    spec = json.loads(store.get_bytes(f"{prefix}/{spec_file}"))
    head = build_head(spec)
    file = f"{name}.safetensors"
    weights = (
        read_weights(store, prefix, sha256=sha256, file=file)
        if sha256 is not None
        else bytes_to_state_dict(store.get_bytes(f"{prefix}/{file}"))
    )
    head.load_state_dict(weights)
    return head.eval()


def late_fusion(p_fundus: np.ndarray, p_oct: np.ndarray) -> np.ndarray:
    """Mean of two calibrated disease probabilities: the simplest combination, no training.

    Only meaningful when each input is calibrated (temperature-scaled on validation):
    averaging an over-confident and a timid model lets the former dominate.
    """
    a, b = np.asarray(p_fundus, dtype=np.float64), np.asarray(p_oct, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"probabilities must align, got {a.shape} and {b.shape}")
    return (a + b) / 2.0
