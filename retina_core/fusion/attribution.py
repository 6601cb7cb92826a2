"""The modality share of a trained fusion run: measured on its test pairs, stored beside its head.

Glue between a fusion run's arrays and :mod:`retina_core.explain.modality_share`: which image
of each test pair shows disease (the images' own labels, so a real pair can be diseased in one
modality only), which complementary cases exist, and the IG baseline as a file of the
registered version so ``predict`` attributes with the very reference the report used.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine
from torch import nn

from retina_core.catalog.repository import image_records
from retina_core.config import EvalSettings
from retina_core.domain import Modality, Split, is_disease
from retina_core.explain.modality_share import (
    Baseline,
    ComplementaryCases,
    ModalityShareSummary,
    real_cases,
    recombined_cases,
    summarise,
)
from retina_core.fusion.arrays import PairArrays
from retina_core.models.weights import bytes_to_state_dict, state_dict_to_bytes
from retina_core.storage import ObjectStore

BASELINE_FILE = "share_baseline.safetensors"


def image_disease(engine: Engine) -> dict[str, bool]:
    """Each labelled image's own screening label, by sha256."""
    return {
        r.sha256: is_disease(r.modality, r.label)
        for m in Modality
        for r in image_records(engine, m)
        if r.label >= 0
    }


def _sides(arrays: PairArrays, disease: dict[str, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, whether the fundus and the OCT image show disease (the pair label when unlabelled)."""
    fundus = np.array([disease.get(p.fundus_sha, bool(p.label01)) for p in arrays.pairs], dtype=bool)
    oct = np.array([disease.get(p.oct_sha, bool(p.label01)) for p in arrays.pairs], dtype=bool)
    return fundus, oct


def complementary_sets(
    arrays: PairArrays, disease: dict[str, bool], *, seed: int
) -> list[ComplementaryCases]:
    """Real complementary same-eye pairs (when the test split has any), then recombined test pairs."""
    fundus_d, oct_d = _sides(arrays, disease)
    sets = []
    real = real_cases(arrays.fundus, arrays.oct, fundus_d, oct_d, arrays.groups)
    if len(real):
        sets.append(real)
    concordant = fundus_d == oct_d  # a recombined case takes only images whose own pair agrees
    sets.append(
        recombined_cases(
            arrays.fundus[concordant],
            arrays.oct[concordant],
            fundus_d[concordant],
            oct_d[concordant],
            arrays.groups[concordant],
            seed=seed,
        )
    )
    return sets


def measure_shares(
    head: nn.Module,
    arrays: dict[Split, PairArrays],
    disease: dict[str, bool],
    evaluation: EvalSettings,
    *,
    seed: int,
) -> tuple[ModalityShareSummary, Baseline]:
    tr, te = arrays[Split.TRAIN], arrays[Split.TEST]
    baseline = Baseline.from_training(tr.fundus, tr.oct, tr.y)
    summary = summarise(
        head,
        te.fundus,
        te.oct,
        te.y,
        baseline,
        complementary_sets(te, disease, seed=seed),
        n_boot=evaluation.bootstrap,
        seed=evaluation.seed,
    )
    return summary, baseline


def baseline_file(baseline: Baseline) -> dict[str, bytes]:
    return {BASELINE_FILE: state_dict_to_bytes(baseline.tensors())}


def load_baseline(store: ObjectStore, prefix: str) -> Baseline | None:
    """The stored baseline, or ``None`` for heads registered before shares were measured."""
    key = f"{prefix}/{BASELINE_FILE}"
    if not store.exists(key):
        return None
    return Baseline.from_tensors(bytes_to_state_dict(store.get_bytes(key)))
