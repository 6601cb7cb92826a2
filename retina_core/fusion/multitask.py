"""A multi-task fusion head: DR grade, OCT class and normal-vs-disease from one pair of embeddings.

One trunk (per-modality LayerNorm, the learned missing vectors and modality dropout, exactly as
the binary heads have) feeds three outputs:

* DR grade, **ordinal**: four cumulative logits ``P(grade > k)``, k = 0..3 (the CORAL
  formulation), so confusing grade 0 with 4 costs four mistakes and 0 with 1 one, like QWK;
* OCT class: four-way softmax (the classes are not ordered);
* disease: two logits, the same output the binary heads give.

**Masked loss.** A pair lacking a label for a task (an OCT scan without a class, a virtual
pair's missing grade, ``-1``) adds nothing to that task's loss and still trains the other two:
each task's loss is the mean over the rows that carry its label, and a task with no labelled
row in a batch is left out of that step.

Scored with the same patient-level bootstrap as the rest of fusion: QWK for the grade,
macro-F1 for the OCT class, AUC for disease.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor, nn

from retina_core.catalog.registry import ModelVersion
from retina_core.data.pairing import Pair
from retina_core.domain import DRGrade, Modality, OctClass, class_names
from retina_core.evaluation import Estimate, bootstrap_ci
from retina_core.evaluation.metrics import macro_f1, quadratic_weighted_kappa, roc_auc_binary
from retina_core.fusion.fit import BATCH_SIZE, PATIENCE, WEIGHT_DECAY, one_thread
from retina_core.models.device import seed_everything
from retina_core.models.fusion import TwoModalityHead
from retina_core.models.persist import read_weights
from retina_core.storage import ObjectStore

GRADES = len(DRGrade)
OCT_CLASSES = len(OctClass)
TASKS = ("grade", "oct_class", "disease")
MISSING = -1


class MultiTaskFusion(TwoModalityHead):
    """LayerNorm per modality → concatenate → shared MLP trunk → grade / OCT class / disease outputs."""

    kind = "multitask"

    def __init__(
        self,
        fundus_dim: int,
        oct_dim: int,
        hidden: int = 128,
        modality_dropout: float = 0.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(fundus_dim, oct_dim, hidden, modality_dropout)
        self.trunk = nn.Sequential(nn.Linear(fundus_dim + oct_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.grade = nn.Linear(hidden, GRADES - 1)
        self.oct_class = nn.Linear(hidden, OCT_CLASSES)
        self.disease = nn.Linear(hidden, 2)

    def outputs(
        self, fundus_emb: Tensor | None, oct_emb: Tensor | None, present_mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        f, o = self.inputs(fundus_emb, oct_emb, present_mask)
        h = self.trunk(torch.cat([f, o], dim=1))
        return {"grade": self.grade(h), "oct_class": self.oct_class(h), "disease": self.disease(h)}

    def forward(
        self, fundus_emb: Tensor | None, oct_emb: Tensor | None, present_mask: Tensor | None = None
    ) -> Tensor:
        """The disease logits, so the binary tooling (calibration, modality share) applies as is."""
        return self.outputs(fundus_emb, oct_emb, present_mask)["disease"]

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "outputs": {"grade": "cumulative", "oct_class": OCT_CLASSES, "disease": 2}}


def grade_probabilities(cumulative_logits: Tensor) -> Tensor:
    """(N, K-1) logits of ``P(grade > k)`` → (N, K) grade probabilities (made monotone first)."""
    above = torch.sigmoid(cumulative_logits.float())
    above = torch.cummin(above, dim=1).values  # P(> k) cannot grow with k
    ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
    return torch.cat([ones, above], 1) - torch.cat([above, zeros], 1)


def masked_loss(outputs: Mapping[str, Tensor], labels: Mapping[str, Tensor]) -> Tensor:
    """Sum over tasks of each task's mean loss on the rows that carry its label (``-1``: none)."""
    total = outputs["disease"].new_zeros(())
    for task in TASKS:
        y = labels[task]
        rows = y != MISSING
        if not bool(rows.any()):
            continue
        out, target = outputs[task][rows], y[rows]
        if task == "grade":
            levels = torch.arange(GRADES - 1, device=target.device)
            above = (target[:, None] > levels[None]).float()
            total = total + nn.functional.binary_cross_entropy_with_logits(out, above)
        else:
            total = total + nn.functional.cross_entropy(out, target)
    return total


@dataclass(frozen=True)
class TaskLabels:
    """Per pair: DR grade, OCT class and disease, ``-1`` where unknown."""

    grade: np.ndarray
    oct_class: np.ndarray
    disease: np.ndarray

    def tensors(self, rows: Tensor | slice = slice(None)) -> dict[str, Tensor]:
        return {t: torch.as_tensor(np.asarray(getattr(self, t), np.int64))[rows] for t in TASKS}


def pair_task_labels(pairs: Sequence[Pair], image_labels: Mapping[str, tuple[Modality, int]]) -> TaskLabels:
    """Each pair's task labels from its own images' catalog labels (unlabelled images give ``-1``)."""

    def label(sha: str, modality: Modality) -> int:
        found = image_labels.get(sha)
        return int(found[1]) if found is not None and found[0] is modality and found[1] >= 0 else MISSING

    return TaskLabels(
        grade=np.array([label(p.fundus_sha, Modality.FUNDUS) for p in pairs], dtype=np.int64),
        oct_class=np.array([label(p.oct_sha, Modality.OCT) for p in pairs], dtype=np.int64),
        disease=np.array([p.label01 for p in pairs], dtype=np.int64),
    )


@dataclass
class MultiTaskFit:
    head: MultiTaskFusion
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def predict_outputs(
    head: MultiTaskFusion, fundus: np.ndarray | None, oct: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Eval-mode outputs as arrays: grade probabilities (N, 5), OCT class probabilities (N, 4), P(disease)."""
    head.eval()
    f = None if fundus is None else torch.as_tensor(np.asarray(fundus, np.float32))
    o = None if oct is None else torch.as_tensor(np.asarray(oct, np.float32))
    with torch.inference_mode():
        out = head.outputs(f, o)
    return {
        "grade": grade_probabilities(out["grade"]).numpy(),
        "oct_class": torch.softmax(out["oct_class"].float(), 1).numpy(),
        "disease": torch.softmax(out["disease"].float(), 1)[:, 1].numpy(),
    }


def fit_multitask(
    make_head: Callable[[], MultiTaskFusion],
    train: tuple[np.ndarray, np.ndarray, TaskLabels],
    val: tuple[np.ndarray, np.ndarray, TaskLabels],
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = BATCH_SIZE,
    patience: int = PATIENCE,
) -> MultiTaskFit:
    """AdamW on the masked loss, seeded; the epoch with the lowest validation masked loss is kept.

    Validation *loss* decides (not one task's metric), so no task is favoured by the stopping rule.
    """
    with one_thread():
        seed_everything(seed)
        head = make_head()
        f, o = (torch.as_tensor(np.asarray(a, np.float32)) for a in train[:2])
        vf, vo = (torch.as_tensor(np.asarray(a, np.float32)) for a in val[:2])
        labels, val_labels = train[2].tensors(), val[2].tensors()
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
        generator = torch.Generator().manual_seed(seed)
        best, best_epoch, best_state, history = math.inf, -1, None, []
        for epoch in range(epochs):
            if best_epoch >= 0 and epoch - best_epoch > patience:
                break
            head.train()
            order = torch.randperm(len(f), generator=generator)
            for start in range(0, len(f), batch_size):
                idx = order[start : start + batch_size]
                loss = masked_loss(head.outputs(f[idx], o[idx]), {t: y[idx] for t, y in labels.items()})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            head.eval()
            with torch.no_grad():
                val_loss = float(masked_loss(head.outputs(vf, vo), val_labels))
            history.append({"epoch": epoch, "val_loss": val_loss})
            if val_loss < best:
                best, best_epoch = val_loss, epoch
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        if best_state is not None:
            head.load_state_dict(best_state)
        return MultiTaskFit(head.eval(), best_epoch, history)


def evaluate_multitask(
    outputs: Mapping[str, np.ndarray], labels: TaskLabels, groups: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, Estimate]:
    """QWK (grade), macro-F1 (OCT class) and AUC (disease), each on the pairs that carry its label,
    with a patient-level bootstrap CI; a task missing from ``outputs`` is not scored (an encoder's
    own row has its own task and disease only)."""
    groups = np.asarray(groups, dtype=object)
    out: dict[str, Estimate] = {}
    specs = {
        "grade_qwk": ("grade", lambda y, p: quadratic_weighted_kappa(y, p.argmax(1), GRADES)),
        "oct_macro_f1": ("oct_class", lambda y, p: macro_f1(y, p.argmax(1), OCT_CLASSES)),
        "disease_auc": ("disease", roc_auc_binary),
    }
    for name, (task, metric) in specs.items():
        if task not in outputs:
            continue
        y = np.asarray(getattr(labels, task))
        rows = y != MISSING
        out[name] = bootstrap_ci(
            metric, y[rows], outputs[task][rows], groups=groups[rows], n_boot=n_boot, seed=seed
        )
    return out


class MultiTaskPrediction(BaseModel):
    """The multi-task head's answer for one eye, as ``predict`` returns it."""

    model: str
    version: int
    inputs: str
    grade_probabilities: dict[str, float]
    grade: str
    oct_probabilities: dict[str, float]
    oct_class: str
    disease_probability: float


def load_multitask(store: ObjectStore, version: ModelVersion) -> MultiTaskFusion:
    """A registered multi-task head in eval mode (weights checked against the registry's hash)."""
    spec = json.loads(store.get_bytes(f"{version.object_prefix}/spec.json"))
    head = MultiTaskFusion(
        int(spec["fundus_dim"]),
        int(spec["oct_dim"]),
        hidden=int(spec["hidden"]),
        modality_dropout=float(spec.get("modality_dropout", 0.0)),
    )
    head.load_state_dict(read_weights(store, version.object_prefix, sha256=version.weights_sha256))
    return head.eval()


def predict_one(
    head: MultiTaskFusion, version: ModelVersion, fundus_emb: Tensor | None, oct_emb: Tensor | None
) -> MultiTaskPrediction:
    as_array = lambda t: None if t is None else t.detach().float().numpy()  # noqa: E731
    out = predict_outputs(head, as_array(fundus_emb), as_array(oct_emb))
    grades, classes = class_names(Modality.FUNDUS), class_names(Modality.OCT)
    g, c = out["grade"][0], out["oct_class"][0]
    inputs = (
        "both"
        if fundus_emb is not None and oct_emb is not None
        else ("fundus-only" if fundus_emb is not None else "oct-only")
    )
    return MultiTaskPrediction(
        model=version.name,
        version=version.version,
        inputs=inputs,
        grade_probabilities={n: float(p) for n, p in zip(grades, g, strict=True)},
        grade=grades[int(g.argmax())],
        oct_probabilities={n: float(p) for n, p in zip(classes, c, strict=True)},
        oct_class=classes[int(c.argmax())],
        disease_probability=float(out["disease"][0]),
    )
