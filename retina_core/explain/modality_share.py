"""Which modality decided a fused prediction: Integrated Gradients over the head's two embeddings.

The fusion head reads one fundus embedding and one OCT embedding. Integrated Gradients
(captum) over their concatenation, summed over each modality's slice, splits the fused
disease margin ``logit(disease) - logit(normal)`` into a fundus part and an OCT part; the
share of a modality is ``|its part| / (|fundus part| + |OCT part|)``.

**Baseline: the mean embedding of the training split's normal eyes, per modality.** IG
explains ``F(x) - F(baseline)``, so the baseline fixes the question asked. A clinician asks
"what made this eye look diseased?", i.e. how far each view departs from a *normal* eye;
the normal-eye mean answers that with a point the head has seen many times (on the data
manifold, unlike a zero vector, which after the head's LayerNorm means nothing). An image
baseline (black field, blurred photo) does not apply here: the inputs are embeddings, and a
black image's embedding is far off the manifold of real eyes.

**Check by occlusion.** Independently of IG's path integral, each modality is occluded in
two ways and the drop of the margin is that modality's occlusion effect: replaced by the
baseline (the normal-eye mean: the same question as IG, answered by one step instead of a
path, so the two should agree unless the head's interactions matter), and replaced by the
head's own learned "missing modality" input (what modality dropout trained it on; this asks
a different question, "what does this view add over none?", which also credits a *normal*
view for its reassurance, so it agrees less). :func:`agreement` says how often a method
names the same modality as IG.

**Check where the answer is known.** On complementary pairs (disease visible in one modality
only) the diseased modality must carry the larger share: :func:`complementary_check` gives
the fraction of such pairs where it does, with a patient-level bootstrap CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from retina_core.evaluation import Estimate, bootstrap_ci
from retina_core.reporting.modality_share import ModalityShareSummary, ShareCheck

IG_STEPS = 64
"""Gauss-Legendre steps: the head is a small smooth MLP, so 64 steps put the completeness
error several orders below the margin (measured in the tests)."""
MIN_CASES = 10
"""Fewer complementary cases than this make a CI too wide to mean anything: the check is skipped."""


class _MarginOfConcat(nn.Module):
    """The head seen as one function of the concatenated ``[fundus | oct]`` embedding → disease margin."""

    def __init__(self, head: nn.Module, fundus_dim: int) -> None:
        super().__init__()
        self.head, self.fundus_dim = head, fundus_dim

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(x[:, : self.fundus_dim], x[:, self.fundus_dim :]).float()
        return logits[:, 1] - logits[:, 0]


@dataclass(frozen=True)
class Baseline:
    """IG's reference point: the training split's mean embedding of normal eyes, per modality."""

    fundus: np.ndarray
    oct: np.ndarray

    @classmethod
    def from_training(cls, fundus: np.ndarray, oct: np.ndarray, y: np.ndarray) -> Baseline:
        normal = np.asarray(y) == 0
        if not normal.any():
            raise ValueError("the baseline needs normal training pairs")
        return cls(
            fundus=np.asarray(fundus, np.float32)[normal].mean(0),
            oct=np.asarray(oct, np.float32)[normal].mean(0),
        )

    def tensors(self) -> dict[str, Tensor]:
        return {"fundus": torch.as_tensor(self.fundus), "oct": torch.as_tensor(self.oct)}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> Baseline:
        return cls(fundus=tensors["fundus"].float().numpy(), oct=tensors["oct"].float().numpy())


@dataclass(frozen=True)
class ModalityAttribution:
    """Per pair: each modality's IG part of the margin, IG's completeness error, the occlusion effects."""

    fundus: np.ndarray
    oct: np.ndarray
    margin: np.ndarray
    """The fused margin of the pair itself."""
    baseline_margin: np.ndarray
    completeness_error: np.ndarray
    """``sum(attributions) - (F(x) - F(baseline))``: ~0 when IG's path integral is accurate."""
    occlusion_fundus: np.ndarray
    """``F(x) - F(x with the fundus embedding replaced by the head's missing input)``."""
    occlusion_oct: np.ndarray
    baseline_occlusion_fundus: np.ndarray
    """``F(x) - F(x with the fundus embedding replaced by the baseline's)``."""
    baseline_occlusion_oct: np.ndarray

    @property
    def fundus_share(self) -> np.ndarray:
        return _share(self.fundus, self.oct)

    @property
    def occlusion_fundus_share(self) -> np.ndarray:
        return _share(self.occlusion_fundus, self.occlusion_oct)

    @property
    def baseline_occlusion_fundus_share(self) -> np.ndarray:
        return _share(self.baseline_occlusion_fundus, self.baseline_occlusion_oct)


def _share(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a| / (|a| + |b|)``; 0.5 where both are zero (nothing to split)."""
    total = np.abs(a) + np.abs(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(a) / np.where(total > 0, total, 1.0), 0.5)


def attribute_modalities(
    head: nn.Module,
    fundus: np.ndarray,
    oct: np.ndarray,
    baseline: Baseline,
    *,
    n_steps: int = IG_STEPS,
    batch_size: int = 256,
) -> ModalityAttribution:
    """IG parts and occlusion effects for every row (the head is put in eval mode)."""
    head.eval()
    f = torch.as_tensor(np.asarray(fundus, np.float32))
    o = torch.as_tensor(np.asarray(oct, np.float32))
    fd = f.shape[1]
    forward = _MarginOfConcat(head, fd)
    ig = IntegratedGradients(forward)
    ref = torch.cat([torch.as_tensor(baseline.fundus), torch.as_tensor(baseline.oct)])[None].float()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("f", "o", "m", "b", "d", "of", "oo", "bf", "bo")}
    for start in range(0, len(f), batch_size):
        x = torch.cat([f[start : start + batch_size], o[start : start + batch_size]], dim=1)
        refs = ref.expand_as(x).contiguous()
        attr, delta = ig.attribute(
            x, baselines=refs, n_steps=n_steps, method="gausslegendre", return_convergence_delta=True
        )
        with torch.no_grad():
            margin = forward(x)
            n = len(x)
            no_fundus = _margin(head(None, x[:, fd:]))
            no_oct = _margin(head(x[:, :fd], None))
            parts["b"].append(forward(refs).numpy())
            parts["bf"].append((margin - forward(torch.cat([refs[:, :fd], x[:, fd:]], 1))).numpy())
            parts["bo"].append((margin - forward(torch.cat([x[:, :fd], refs[:, fd:]], 1))).numpy())
        parts["f"].append(attr[:, :fd].sum(1).detach().numpy())
        parts["o"].append(attr[:, fd:].sum(1).detach().numpy())
        parts["m"].append(margin.numpy())
        parts["d"].append(delta.detach().float().numpy().reshape(n))
        parts["of"].append((margin - no_fundus).numpy())
        parts["oo"].append((margin - no_oct).numpy())
    cat = {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}
    return ModalityAttribution(
        fundus=cat["f"],
        oct=cat["o"],
        margin=cat["m"],
        baseline_margin=cat["b"],
        completeness_error=cat["d"],
        occlusion_fundus=cat["of"],
        occlusion_oct=cat["oo"],
        baseline_occlusion_fundus=cat["bf"],
        baseline_occlusion_oct=cat["bo"],
    )


def _margin(logits: Tensor) -> Tensor:
    logits = logits.float()
    return logits[:, 1] - logits[:, 0]


def agreement(attribution: ModalityAttribution, *, to_baseline: bool = False) -> float:
    """Fraction of pairs where IG and an occlusion (by the missing input, or ``to_baseline``)
    name the same modality as the larger contributor."""
    ig = attribution.fundus_share > 0.5
    other = attribution.baseline_occlusion_fundus_share if to_baseline else attribution.occlusion_fundus_share
    return float(np.mean(ig == (other > 0.5))) if len(ig) else float("nan")


@dataclass(frozen=True)
class ComplementaryCases:
    """Pairs whose disease shows in one modality only, and which one (``"fundus"`` or ``"oct"``)."""

    fundus: np.ndarray
    oct: np.ndarray
    diseased: np.ndarray
    """``"fundus"`` or ``"oct"`` per row."""
    groups: np.ndarray
    """Bootstrap unit: the patient whose diseased image the case holds."""
    source: str
    """``"real"``: same-eye pairs from the manifest; ``"recombined"``: see :func:`recombined_cases`."""

    def __len__(self) -> int:
        return len(self.diseased)


def recombined_cases(
    fundus: np.ndarray,
    oct: np.ndarray,
    fundus_disease: np.ndarray,
    oct_disease: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int,
) -> ComplementaryCases:
    """Complementary cases built from test pairs: a diseased image beside a normal one of the other modality.

    Each diseased fundus embedding is paired with a normal OCT embedding drawn (seeded) from
    the same split, and each diseased OCT embedding with a normal fundus embedding: disease is
    then visible in exactly one modality *by construction*, whatever the pairing kind, so the
    check is available for virtual pairs too.
    """
    rng = np.random.default_rng(seed)
    fundus_disease, oct_disease = np.asarray(fundus_disease, bool), np.asarray(oct_disease, bool)
    normal_oct, normal_fundus = np.flatnonzero(~oct_disease), np.flatnonzero(~fundus_disease)
    sick_fundus = np.flatnonzero(fundus_disease) if len(normal_oct) else np.zeros(0, int)
    sick_oct = np.flatnonzero(oct_disease) if len(normal_fundus) else np.zeros(0, int)
    pick_oct = rng.choice(normal_oct, len(sick_fundus)) if len(sick_fundus) else np.zeros(0, int)
    pick_fundus = rng.choice(normal_fundus, len(sick_oct)) if len(sick_oct) else np.zeros(0, int)
    groups = np.asarray(groups, dtype=object)
    return ComplementaryCases(
        fundus=np.concatenate([fundus[sick_fundus], fundus[pick_fundus]]),
        oct=np.concatenate([oct[pick_oct], oct[sick_oct]]),
        diseased=np.array(["fundus"] * len(sick_fundus) + ["oct"] * len(sick_oct), dtype=object),
        groups=np.concatenate([groups[sick_fundus], groups[sick_oct]]),
        source="recombined",
    )


def real_cases(
    fundus: np.ndarray,
    oct: np.ndarray,
    fundus_disease: np.ndarray,
    oct_disease: np.ndarray,
    groups: np.ndarray,
) -> ComplementaryCases:
    """The same-eye pairs whose two images disagree: disease labelled in exactly one modality."""
    fundus_disease, oct_disease = np.asarray(fundus_disease, bool), np.asarray(oct_disease, bool)
    keep = fundus_disease != oct_disease
    return ComplementaryCases(
        fundus=np.asarray(fundus)[keep],
        oct=np.asarray(oct)[keep],
        diseased=np.where(fundus_disease[keep], "fundus", "oct").astype(object),
        groups=np.asarray(groups, dtype=object)[keep],
        source="real",
    )


def complementary_check(
    head: nn.Module, cases: ComplementaryCases, baseline: Baseline, *, n_boot: int, seed: int
) -> ShareCheck | None:
    """How often the diseased modality carries the larger share; ``None`` with too few cases."""
    if len(cases) < MIN_CASES:
        return None
    attribution = attribute_modalities(head, cases.fundus, cases.oct, baseline)
    on_fundus = cases.diseased == "fundus"
    diseased_share = np.where(on_fundus, attribution.fundus_share, 1.0 - attribution.fundus_share)
    occ_share = np.where(
        on_fundus, attribution.occlusion_fundus_share, 1.0 - attribution.occlusion_fundus_share
    )
    base_share = np.where(
        on_fundus,
        attribution.baseline_occlusion_fundus_share,
        1.0 - attribution.baseline_occlusion_fundus_share,
    )
    larger = (diseased_share > 0.5).astype(np.float64)
    estimate: Estimate = bootstrap_ci(np.mean, larger, groups=cases.groups, n_boot=n_boot, seed=seed)
    return ShareCheck(
        source=cases.source,
        n=len(cases),
        n_fundus_diseased=int(on_fundus.sum()),
        n_oct_diseased=int((~on_fundus).sum()),
        diseased_larger=estimate.to_dict(),
        mean_diseased_share=float(diseased_share.mean()),
        occlusion_diseased_larger=float(np.mean(occ_share > 0.5)),
        baseline_occlusion_diseased_larger=float(np.mean(base_share > 0.5)),
    )


def summarise(
    head: nn.Module,
    fundus: np.ndarray,
    oct: np.ndarray,
    y: np.ndarray,
    baseline: Baseline,
    cases: Sequence[ComplementaryCases],
    *,
    n_boot: int,
    seed: int,
) -> ModalityShareSummary:
    """Shares on the test pairs plus the complementary-set check for each source of cases."""
    attribution = attribute_modalities(head, fundus, oct, baseline)
    share = attribution.fundus_share
    diseased = np.asarray(y) == 1
    checks = [complementary_check(head, c, baseline, n_boot=n_boot, seed=seed) for c in cases]
    return ModalityShareSummary(
        n_test=len(share),
        mean_fundus_share=float(share.mean()) if len(share) else float("nan"),
        mean_fundus_share_diseased=float(share[diseased].mean()) if diseased.any() else float("nan"),
        occlusion_agreement=agreement(attribution),
        baseline_occlusion_agreement=agreement(attribution, to_baseline=True),
        max_completeness_error=float(np.abs(attribution.completeness_error).max())
        if len(share)
        else float("nan"),
        checks=[c for c in checks if c is not None],
    )


def pair_share(head: nn.Module, fundus_emb: Tensor, oct_emb: Tensor, baseline: Baseline) -> dict[str, float]:
    """One pair's shares for ``predict``: ``{"fundus": s, "oct": 1 - s}``."""
    attribution = attribute_modalities(
        head, fundus_emb.detach().float().numpy(), oct_emb.detach().float().numpy(), baseline
    )
    s = float(attribution.fundus_share[0])
    return {"fundus": s, "oct": 1.0 - s}
