"""Fusion: the embedding cache filled from the frozen encoders, and heads trained on it.

The verbs: :func:`embed_all` (fill the cache for the encoders to use), :func:`train_fusion`
(probes, late fusion, fusion head and shuffled control on the same test pairs, registered as
``fusion_head``) and :func:`fusion_stage` (the same without the registry, for benchmarks).
"""

from retina_core.fusion.embed import (
    EmbedReport,
    EmbedStats,
    NoEncoder,
    compute_embeddings,
    embed_all,
    embed_modality,
)
from retina_core.fusion.report import FusionReport
from retina_core.fusion.train import NotEnoughPairs, fusion_stage, train_fusion

__all__ = [
    "EmbedReport",
    "EmbedStats",
    "FusionReport",
    "NoEncoder",
    "NotEnoughPairs",
    "compute_embeddings",
    "embed_all",
    "embed_modality",
    "fusion_stage",
    "train_fusion",
]
