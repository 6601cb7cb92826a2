"""Pairs as aligned arrays: row i of every array is pair i (fundus embedding, OCT embedding, label, unit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retina_core.data.pairing import Pair
from retina_core.domain import Split


@dataclass(frozen=True)
class EmbeddingTable:
    """One modality's embeddings by image: ``matrix[i]`` belongs to ``shas[i]``."""

    shas: list[str]
    matrix: np.ndarray

    def rows(self, shas: Sequence[str]) -> np.ndarray:
        index = {sha: i for i, sha in enumerate(self.shas)}
        return self.matrix[[index[s] for s in shas]]


@dataclass(frozen=True)
class PairArrays:
    pairs: list[Pair]
    fundus: np.ndarray
    oct: np.ndarray
    y: np.ndarray
    """Binary screening label, 1 = disease."""
    groups: np.ndarray
    """Bootstrap units (``Pair.patient_id``)."""

    def __len__(self) -> int:
        return len(self.pairs)


def pair_arrays(pairs: Sequence[Pair], fundus: EmbeddingTable, oct: EmbeddingTable) -> PairArrays:
    pairs = list(pairs)
    return PairArrays(
        pairs=pairs,
        fundus=fundus.rows([p.fundus_sha for p in pairs]),
        oct=oct.rows([p.oct_sha for p in pairs]),
        y=np.array([p.label01 for p in pairs], dtype=np.int64),
        groups=np.array([p.patient_id for p in pairs], dtype=object),
    )


def split_pair_arrays(
    pairs: Sequence[Pair], fundus: EmbeddingTable, oct: EmbeddingTable
) -> dict[Split, PairArrays]:
    """Per split, keeping the pairs' order (so a shuffled control aligns row by row with its source)."""
    return {s: pair_arrays([p for p in pairs if p.split is s], fundus, oct) for s in Split}
