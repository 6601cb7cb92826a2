"""Fusion: the embedding cache filled from the frozen encoders, and heads trained on it.

The verbs: :func:`embed_all` (fill the cache for the encoders to use), :func:`train_fusion`
(probes, late fusion, fusion head and shuffled control on the same test pairs, registered as
``fusion_head``).
"""

from retina_core.fusion.embed import (
    NoEncoder,
    compute_embeddings,
    embed_all,
    embed_modality,
)
from retina_core.fusion.train import NotEnoughPairs, train_fusion
from retina_core.results import EmbedReport, EmbedStats, FusionReport

__all__ = [
    "EmbedReport",
    "EmbedStats",
    "FusionReport",
    "NoEncoder",
    "NotEnoughPairs",
    "compute_embeddings",
    "embed_all",
    "embed_modality",
    "train_fusion",
]
