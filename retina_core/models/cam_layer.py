"""Where Grad-CAM looks: the target layer, derived from timm's own structure.

Every timm model built through ``build_model_with_cfg`` carries ``feature_info``: one
entry per stage with the module that produces it. The deepest stage is the right CAM
target (highest-level features that still have a spatial grid), so reading it from
``feature_info`` works for any architecture without a table of names. Models without
``feature_info`` fall back to the last module whose output is a 4-D grid.
"""

from __future__ import annotations

import torch
from torch import nn


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path (``backbone.blocks.6``) to a sub-module, with a clear error."""
    try:
        return root.get_submodule(path)
    except AttributeError as exc:
        raise KeyError(f"model has no module {path!r}") from exc


def resolve_cam_layer(backbone: nn.Module, in_chans: int = 3, probe_size: int = 64) -> str:
    """Dotted path, relative to ``backbone``, of the layer Grad-CAM should hook."""
    info = getattr(backbone, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        module = last.get("module")
        if module:
            get_module(backbone, module)
            return str(module)
    return _last_spatial_module(backbone, in_chans, probe_size)


def _last_spatial_module(backbone: nn.Module, in_chans: int, probe_size: int) -> str:
    """Run one probe batch and keep the last leaf-ish module whose output is (N, C, H, W)."""
    seen: list[str] = []
    hooks = []
    for name, module in backbone.named_modules():
        if not name or isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict):
            continue

        def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[-2:]) > 1:
                seen.append(name)

        hooks.append(module.register_forward_hook(hook))
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, in_chans, probe_size, probe_size))
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    if not seen:
        raise ValueError("no layer with a spatial output found: Grad-CAM needs a convolutional grid")
    return seen[-1]
