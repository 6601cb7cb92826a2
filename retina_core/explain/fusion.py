"""Where the *fusion* decision looks, in each modality's image.

The fusion head sees only embeddings, so it has no map of its own. Its decision can still
be traced back through a frozen encoder: hold the other modality's embedding fixed and
view ``x -> fusion_head(encoder.embed(x), fixed)`` as one network. Grad-CAM then hooks the
encoder's usual target layer while the target is the fusion head's disease logit, which
answers "what in this fundus photo made the *combined* model call it disease" rather than
what made the fundus model alone call it a grade.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from retina_core.explain.activations import layout_of
from retina_core.explain.cam import CamMethod, cam_maps
from retina_core.explain.state import borrowed_for_explanation
from retina_core.models.cam_layer import get_module


class _FusionThroughEncoder(nn.Module):
    """One modality's image in, fusion logits out; the other modality's embedding is a constant."""

    def __init__(
        self, encoder: nn.Module, head: nn.Module, other_embedding: Tensor, encoder_is_fundus: bool
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.register_buffer("other_embedding", other_embedding, persistent=False)
        self.encoder_is_fundus = encoder_is_fundus

    def forward(self, x: Tensor) -> Tensor:
        embedding = self.encoder.embed(x)
        other = self.other_embedding.to(embedding.dtype)
        if self.encoder_is_fundus:
            return self.head(embedding, other)
        return self.head(other, embedding)


def fusion_cams(
    fusion_head: nn.Module,
    fundus_model: nn.Module,
    oct_model: nn.Module,
    fundus_img: Tensor,
    oct_img: Tensor,
    target: int = 1,
    method: CamMethod | str = CamMethod.GRADCAM,
    *,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Fundus and OCT maps, each for fusion logit ``target`` (1 = disease) of the same pairs.

    Images are paired by position: (N, C, H, W) each, or one (C, H, W) pair, in which case
    the maps are (H, W) rather than (N, H, W). ``fusion_head(fundus_emb, oct_emb)`` must
    return logits (N, K) with ``target < K``.
    """
    single = fundus_img.ndim == 3
    if single != (oct_img.ndim == 3):
        raise ValueError("fundus_img and oct_img must both be single images or both be batches")
    if single:
        fundus_img, oct_img = fundus_img.unsqueeze(0), oct_img.unsqueeze(0)
    if fundus_img.shape[0] != oct_img.shape[0]:
        raise ValueError(f"{fundus_img.shape[0]} fundus images but {oct_img.shape[0]} OCT images")

    fundus_emb = _embeddings(fundus_model, fundus_img, batch_size)
    oct_emb = _embeddings(oct_model, oct_img, batch_size)
    fundus_map = _maps_through(
        fundus_model, fusion_head, fundus_img, oct_emb, True, target, method, batch_size
    )
    oct_map = _maps_through(oct_model, fusion_head, oct_img, fundus_emb, False, target, method, batch_size)
    if single:
        return fundus_map[0], oct_map[0]
    return fundus_map, oct_map


def _embeddings(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    device = next(model.parameters()).device
    with borrowed_for_explanation(model), torch.no_grad():
        parts = [
            model.embed(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)
        ]
    return torch.cat(parts)


def _maps_through(
    encoder: nn.Module,
    head: nn.Module,
    images: Tensor,
    other_embeddings: Tensor,
    encoder_is_fundus: bool,
    target: int,
    method: CamMethod | str,
    batch_size: int,
) -> np.ndarray:
    """The fixed embedding differs per pair, so each chunk gets its own wrapped network."""
    layer = get_module(encoder, encoder.spec.cam_layer)
    layout = layout_of(encoder, (images.shape[-2], images.shape[-1]))
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        network = _FusionThroughEncoder(
            encoder, head, other_embeddings[start : start + batch_size], encoder_is_fundus
        )
        targets = [ClassifierOutputTarget(target)] * batch.shape[0]
        chunks.append(cam_maps(network, layer, batch, targets, method, layout=layout, batch_size=batch_size))
    return np.concatenate(chunks)
