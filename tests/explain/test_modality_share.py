"""Modality share: IG over the two embeddings splits the fused margin, checked where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from retina_core.explain.modality_share import (
    Baseline,
    agreement,
    attribute_modalities,
    complementary_check,
    recombined_cases,
)
from retina_core.models.fusion import ConcatMLPFusion

FD, OD = 6, 4


class LinearHead(nn.Module):
    """margin = w_f·f + w_o·o: IG's per-modality parts are known in closed form, w·(x - baseline)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.wf, self.wo = nn.Parameter(torch.randn(FD)), nn.Parameter(torch.randn(OD))

    def forward(self, f: Tensor | None, o: Tensor | None) -> Tensor:
        n = (f if f is not None else o).shape[0]  # type: ignore[union-attr]
        margin = torch.zeros(n)
        if f is not None:
            margin = margin + f @ self.wf
        if o is not None:
            margin = margin + o @ self.wo
        return torch.stack([torch.zeros(n), margin], dim=1)


def test_linear_head_parts_are_the_closed_form_and_occlusion_agrees() -> None:
    rng = np.random.default_rng(0)
    f, o = rng.normal(size=(20, FD)).astype(np.float32), rng.normal(size=(20, OD)).astype(np.float32)
    baseline = Baseline(fundus=np.zeros(FD, np.float32), oct=np.zeros(OD, np.float32))
    head = LinearHead()
    a = attribute_modalities(head, f, o, baseline)
    wf, wo = head.wf.detach().numpy(), head.wo.detach().numpy()
    np.testing.assert_allclose(a.fundus, f @ wf, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.oct, o @ wo, rtol=1e-4, atol=1e-5)
    # with a zero baseline and a zero "missing" input, occlusion measures the same thing exactly
    np.testing.assert_allclose(a.occlusion_fundus, a.fundus, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.baseline_occlusion_oct, a.oct, rtol=1e-4, atol=1e-5)
    assert agreement(a) == 1.0 and agreement(a, to_baseline=True) == 1.0


def test_completeness_on_a_fusion_head_with_layernorm() -> None:
    """Sum of IG attributions = F(x) - F(baseline) within a small tolerance, on the real head class."""
    torch.manual_seed(1)
    head = ConcatMLPFusion(FD, OD, hidden=16).eval()
    rng = np.random.default_rng(1)
    f, o = rng.normal(size=(30, FD)).astype(np.float32), rng.normal(size=(30, OD)).astype(np.float32)
    baseline = Baseline.from_training(f, o, np.arange(30) % 2)
    a = attribute_modalities(head, f, o, baseline)
    target = a.margin - a.baseline_margin
    np.testing.assert_allclose(a.fundus + a.oct, target, atol=1e-3 + 1e-3 * np.abs(target).max())
    assert np.abs(a.completeness_error).max() < 1e-3 + 1e-3 * np.abs(target).max()


def _trained_head_on_complementary_world(seed: int) -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A head trained on embeddings where disease shifts one modality, the other, or both."""
    rng = np.random.default_rng(seed)
    n = 600
    fundus_d = rng.random(n) < 0.4
    oct_d = rng.random(n) < 0.4
    f = rng.normal(size=(n, FD)) + 2.0 * fundus_d[:, None] * np.eye(FD)[0]
    o = rng.normal(size=(n, OD)) + 2.0 * oct_d[:, None] * np.eye(OD)[0]
    y = (fundus_d | oct_d).astype(np.int64)
    torch.manual_seed(seed)
    head = ConcatMLPFusion(FD, OD, hidden=16, modality_dropout=0.2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    ft, ot, yt = torch.tensor(f, dtype=torch.float32), torch.tensor(o, dtype=torch.float32), torch.tensor(y)
    for _ in range(150):
        loss = nn.functional.cross_entropy(head(ft, ot), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval(), {"f": f, "o": o, "y": y, "fd": fundus_d, "od": oct_d}


def test_diseased_modality_carries_the_larger_share_on_complementary_cases() -> None:
    head, w = _trained_head_on_complementary_world(2)
    baseline = Baseline.from_training(w["f"], w["o"], w["y"])
    concordant = w["fd"] == w["od"]
    cases = recombined_cases(
        w["f"][concordant],
        w["o"][concordant],
        w["fd"][concordant],
        w["od"][concordant],
        np.arange(concordant.sum()),
        seed=0,
    )
    assert set(cases.diseased) == {"fundus", "oct"}
    check = complementary_check(head, cases, baseline, n_boot=200, seed=0)
    assert check is not None and check.n == len(cases)
    assert check.diseased_larger["low"] > 0.65, check  # a clear majority, CI included
    # occlusion by the "missing" input also removes a normal view's reassurance, so it agrees less
    # sharply than IG from a normal-eye baseline, but still names the diseased side in most cases
    assert check.occlusion_diseased_larger > 0.55
    assert check.baseline_occlusion_diseased_larger > 0.75  # the same question as IG, in one step

    # the same check on cases whose diseased side is mislabelled must fail: it is not vacuous
    swapped = type(cases)(
        cases.fundus,
        cases.oct,
        np.where(cases.diseased == "fundus", "oct", "fundus"),
        cases.groups,
        cases.source,
    )
    wrong = complementary_check(head, swapped, baseline, n_boot=200, seed=0)
    assert wrong is not None and wrong.diseased_larger["high"] < 0.35


def test_too_few_cases_give_no_check() -> None:
    head, w = _trained_head_on_complementary_world(3)
    baseline = Baseline.from_training(w["f"], w["o"], w["y"])
    cases = recombined_cases(w["f"][:6], w["o"][:6], w["fd"][:6], w["od"][:6], np.arange(6), seed=0)
    assert len(cases) < 10 and complementary_check(head, cases, baseline, n_boot=50, seed=0) is None
    with pytest.raises(ValueError):
        Baseline.from_training(w["f"], w["o"], np.ones(len(w["y"])))
