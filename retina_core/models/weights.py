"""Weights on disk and in the object store: safetensors in, safetensors out, never pickle.

Safetensors is the only format we write: it holds tensors and nothing else, so loading
one cannot run code. Plain torch state dicts are still accepted as a *starting point*
(ImageNet checkpoints are often ``.pth``), but only through ``torch.load(weights_only=True)``;
anything that needs the full unpickler is refused rather than trusted.

The fingerprint keys the embedding cache, so it must depend on the weights alone (not on
file layout, dict order or the process that computed it).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save
from timm.models import adapt_input_conv
from torch import Tensor, nn

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIX = ".safetensors"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
"""Training checkpoints often nest the weights one level down under one of these keys."""


class UnsafeWeightsError(ValueError):
    """A weights file needs the full pickle machinery (arbitrary code) to load."""


def save_weights(model: nn.Module, path: Path | str, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model's state dict as safetensors, atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = state_dict_to_bytes(model.state_dict(), metadata=metadata)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_state_dict_file(path: Path | str) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file or a tensors-only torch state dict, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        return dict(st_load_file(str(path), device="cpu"))
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafeWeightsError(
            f"{path.name} carries a pickled Python object that only the unsafe unpickler can load; "
            "refusing it. Re-save the weights as safetensors (or a plain dict of tensors)."
        ) from exc
    return _as_state_dict(payload, path)


def state_dict_to_bytes(
    state_dict: Mapping[str, Tensor], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """Safetensors bytes for the object store (contiguous CPU copies: safetensors needs them)."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    return st_save(tensors, metadata=dict(metadata) if metadata else None)


def bytes_to_state_dict(data: bytes) -> dict[str, Tensor]:
    return dict(st_load(data))


def load_backbone_weights(
    backbone: nn.Module, state_dict: Mapping[str, Tensor], *, in_chans: int
) -> list[str]:
    """Load a checkpoint into a timm backbone as a starting point; returns the keys dropped.

    Accepts both our own ``RetinaClassifier`` checkpoints (keys prefixed ``backbone.``) and
    bare timm/ImageNet ones. Like timm's ``load_pretrained``, a 3-channel stem is adapted to
    the model's ``in_chans`` and any tensor whose shape does not fit (the classifier head,
    typically) is dropped so the model keeps its fresh initialisation there. Anything else
    missing means the checkpoint is for another architecture, which is an error.
    """
    weights = _strip_prefix(dict(state_dict), "backbone.")
    target = backbone.state_dict()
    _adapt_first_conv(backbone, weights, target, in_chans)
    dropped = sorted(k for k, v in weights.items() if k in target and v.shape != target[k].shape)
    for key in dropped:
        del weights[key]
    if dropped:
        logger.info("dropped checkpoint tensors whose shape does not fit the model: %s", ", ".join(dropped))
    result = backbone.load_state_dict(weights, strict=False)
    missing = sorted(set(result.missing_keys) - set(dropped))
    if missing:
        raise ValueError(
            f"checkpoint does not match the architecture: {len(missing)} tensors missing "
            f"(first: {', '.join(missing[:5])})"
        )
    if result.unexpected_keys:
        logger.warning(
            "ignored %d checkpoint tensors the model has no place for", len(result.unexpected_keys)
        )
    return dropped


def _as_state_dict(payload: object, path: Path) -> dict[str, Tensor]:
    if isinstance(payload, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ValueError(f"{path.name} is not a state dict (a mapping of names to tensors)")
    return {str(k): v for k, v in payload.items()}


def _strip_prefix(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def _adapt_first_conv(
    backbone: nn.Module, weights: dict[str, Tensor], target: Mapping[str, Tensor], in_chans: int
) -> None:
    """Sum/repeat an RGB stem into ``in_chans`` channels, as timm does for its own checkpoints."""
    first_conv = getattr(backbone, "pretrained_cfg", {}).get("first_conv")
    names = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ())
    for name in names:
        key = f"{name}.weight"
        if key not in weights or key not in target or weights[key].shape == target[key].shape:
            continue
        source = weights[key]
        if source.ndim == 4 and source.shape[0] == target[key].shape[0]:
            weights[key] = adapt_input_conv(in_chans, source, base_chans=source.shape[1])
            logger.info("adapted %s from %d to %d input channels", key, source.shape[1], in_chans)
