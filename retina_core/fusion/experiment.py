"""The fusion experiment: baselines, fusion and the control, trained alike and scored on the same pairs.

Rows (all on the same test pairs, so every difference can be bootstrapped pairwise):

* fundus only, OCT only: a linear probe on each embedding (the single-modality baselines);
* late fusion: the mean of the two probes' calibrated disease probabilities (no training);
* fusion: the configured head on both embeddings;
* shuffled-pair control: the *same* head, same seed and budget, trained, validated and
  tested on pairs whose OCT was swapped for a random one from the same split. It sees the
  same images and labels, so if it matched the fusion row the gain would come from capacity
  or leakage rather than from pairing two views of one eye;
* missing modality: the fusion head given fundus only, OCT only, and both.

Every probability is temperature-scaled on validation (per row and input mode), and every
Youden threshold is chosen on validation. The best single modality is picked by *test*
AUC, which favours the baseline, so the reported gain is if anything conservative.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from torch import nn

from retina_core.config import EvalSettings, FusionSettings
from retina_core.domain import Split
from retina_core.evaluation import Estimate, evaluate_binary, paired_bootstrap_diff
from retina_core.evaluation.metrics import weighted_roc_auc
from retina_core.fusion.arrays import PairArrays
from retina_core.fusion.fit import Calibrated, HeadFit, calibrated_scores, fit_head
from retina_core.models.fusion import LinearProbe, create_fusion_head, late_fusion
from retina_core.results import PAIRING_NOTES, FusionEvaluation, FusionRow, PairingUsed

log = logging.getLogger(__name__)

HEAD_NAMES = {"concat_mlp": "concat-MLP", "gated": "gated"}


@dataclass
class TrainedHeads:
    fusion: HeadFit
    probe_fundus: HeadFit
    probe_oct: HeadFit
    control: HeadFit


class PairsMismatch(ValueError):
    """The control's test rows must be the fusion test rows with only the OCT swapped."""


def run_experiment(
    fusion: FusionSettings,
    evaluation: EvalSettings,
    arrays: dict[Split, PairArrays],
    control: dict[Split, PairArrays],
    pairing: PairingUsed,
    counts: dict[str, dict[str, int]],
) -> tuple[FusionEvaluation, TrainedHeads]:
    tr, va, te = arrays[Split.TRAIN], arrays[Split.VAL], arrays[Split.TEST]
    ctr, cva, cte = control[Split.TRAIN], control[Split.VAL], control[Split.TEST]
    if not (np.array_equal(cte.y, te.y) and np.array_equal(cte.groups, te.groups)):
        raise PairsMismatch("shuffled test pairs do not align with the test pairs")
    fd, od = tr.fundus.shape[1], tr.oct.shape[1]

    def make_fusion() -> nn.Module:
        return create_fusion_head(
            fusion.head, fd, od, hidden=fusion.hidden, modality_dropout=fusion.modality_dropout
        )

    budget = {"epochs": fusion.epochs, "lr": fusion.lr}
    heads = TrainedHeads(
        fusion=fit_head(
            make_fusion, [tr.fundus, tr.oct], tr.y, [va.fundus, va.oct], va.y, seed=fusion.seed, **budget
        ),
        probe_fundus=fit_head(
            lambda: LinearProbe(fd), [tr.fundus], tr.y, [va.fundus], va.y, seed=fusion.seed + 1, **budget
        ),
        probe_oct=fit_head(
            lambda: LinearProbe(od), [tr.oct], tr.y, [va.oct], va.y, seed=fusion.seed + 2, **budget
        ),
        control=fit_head(
            make_fusion,
            [ctr.fundus, ctr.oct],
            ctr.y,
            [cva.fundus, cva.oct],
            cva.y,
            seed=fusion.seed,
            **budget,
        ),
    )
    scores = {
        "fundus_only": calibrated_scores(heads.probe_fundus.head, [va.fundus], va.y, [te.fundus]),
        "oct_only": calibrated_scores(heads.probe_oct.head, [va.oct], va.y, [te.oct]),
        "fusion": calibrated_scores(heads.fusion.head, [va.fundus, va.oct], va.y, [te.fundus, te.oct]),
        "shuffled_control": calibrated_scores(
            heads.control.head, [cva.fundus, cva.oct], cva.y, [cte.fundus, cte.oct]
        ),
        "fusion_fundus_only": calibrated_scores(
            heads.fusion.head, [va.fundus, None], va.y, [te.fundus, None]
        ),
        "fusion_oct_only": calibrated_scores(heads.fusion.head, [None, va.oct], va.y, [None, te.oct]),
    }
    scores["late_fusion"] = Calibrated(
        temperature=1.0,
        val=late_fusion(scores["fundus_only"].val, scores["oct_only"].val),
        test=late_fusion(scores["fundus_only"].test, scores["oct_only"].test),
    )
    scores["fusion_both"] = scores["fusion"]
    head_name = HEAD_NAMES.get(fusion.head, fusion.head)
    kind = pairing

    def row(key: str, name: str, description: str, inputs: str, pairs: str = kind) -> FusionRow:
        s = scores[key]
        result = evaluate_binary(te.y, s.test, te.groups, evaluation, val_y01=va.y, val_score=s.val)
        return FusionRow(
            key=key, name=name, description=description, inputs=inputs, pairs=pairs, result=result
        )

    rows = [
        row(
            "fundus_only",
            "Fundus only (linear probe)",
            "LayerNorm + linear on the fundus embedding.",
            "fundus",
        ),
        row("oct_only", "OCT only (linear probe)", "LayerNorm + linear on the OCT embedding.", "oct"),
        row(
            "late_fusion",
            "Late fusion (mean of probes)",
            "Mean of the two probes' temperature-scaled disease probabilities.",
            "both",
        ),
        row("fusion", f"Fusion ({head_name})", f"The {head_name} head on both embeddings.", "both"),
        row(
            "shuffled_control",
            "Shuffled-pair control",
            f"The same {head_name} head trained and tested on pairs with a random OCT from the same split.",
            "both",
            "shuffled",
        ),
    ]
    missing = [
        row(
            "fusion_fundus_only",
            "Fusion head, fundus only",
            "OCT replaced by the learned missing vector.",
            "fundus",
        ),
        row(
            "fusion_oct_only",
            "Fusion head, OCT only",
            "Fundus replaced by the learned missing vector.",
            "oct",
        ),
        row("fusion_both", "Fusion head, both", "Both embeddings present.", "both"),
    ]
    best = max(("fundus_only", "oct_only"), key=lambda k: _auc(rows, k))

    def gain(a: str, b: str) -> Estimate:
        return paired_bootstrap_diff(
            weighted_roc_auc,
            te.y,
            scores[a].test,
            scores[b].test,
            te.groups,
            n_boot=evaluation.bootstrap,
            seed=evaluation.seed,
        )

    result = FusionEvaluation(
        head=fusion.head,
        pairing=pairing,
        pairing_note=PAIRING_NOTES[pairing],
        counts=counts,
        rows=rows,
        missing_modality=missing,
        best_single=best,
        gain_vs_best_single=gain("fusion", best),
        gain_vs_late_fusion=gain("fusion", "late_fusion"),
        gain_vs_shuffled_control=gain("fusion", "shuffled_control"),
        temperatures={k: float(s.temperature) for k, s in scores.items()},
        history=heads.fusion.history,
        best_epoch=heads.fusion.best_epoch,
    )
    log.info(
        "fusion on %s pairs: AUC %s vs best single %s %s; gain %s",
        pairing,
        result.row("fusion").result.auc,
        best,
        result.row(best).result.auc,
        result.gain_vs_best_single,
    )
    return result, heads


def _auc(rows: list[FusionRow], key: str) -> float:
    value = next(r for r in rows if r.key == key).result.auc.value
    return value if np.isfinite(value) else -np.inf
