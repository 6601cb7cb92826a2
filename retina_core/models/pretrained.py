"""Where a model's starting weights come from: nothing, a local file, or timm's ImageNet weights.

``imagenet`` means timm's own pretrained configuration for the architecture (its default tag,
e.g. ``timm/resnet18.a1_in1k``), fetched the way timm fetches it: ``hf_hub_download`` into the
Hugging Face cache, so ``HF_HOME`` / ``HF_HUB_CACHE`` say where it is and ``HF_HUB_OFFLINE``
keeps it from the network (huggingface_hub reads those itself). A machine that has the weights
cached, or is online, gets them; an offline one without them gets :class:`PretrainedUnavailable`
*before* any data is read or any epoch run, never a silent from-scratch model.

The file is then loaded by ``weights.load_backbone_weights``, which adapts the RGB stem to a
one-channel OCT input with timm's ``adapt_input_conv`` and drops the ImageNet classifier, as
timm's ``load_pretrained`` does. Its name and SHA-256 travel into the run key, the registry,
the model card and the report, so two runs from different weights never pass for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retina_core.storage.atomic import file_sha256

IMAGENET = "imagenet"
_NONE = {"", "none"}
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""What timm looks for in a hub repo, safetensors first (``timm.models._hub.load_state_dict_from_hf``)."""


class PretrainedUnavailable(RuntimeError):
    """The requested starting weights cannot be had here; training must not start without them."""


@dataclass(frozen=True)
class StartingWeights:
    source: str
    """``imagenet:timm/resnet18.a1_in1k`` or ``file:name.safetensors``."""
    path: Path
    sha256: str

    def record(self) -> dict[str, str]:
        """What the registry, model card and report show (the file name, never its folder)."""
        return {"source": self.source, "sha256": self.sha256}


def resolve_starting_weights(architecture: str, pretrained: str | None) -> StartingWeights | None:
    """``None``/``none``: from scratch; ``imagenet``: timm's weights from the hub cache; else a file."""
    if pretrained is None or pretrained.strip().lower() in _NONE:
        return None
    if pretrained.strip().lower() == IMAGENET:
        return imagenet_weights(architecture)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedUnavailable(f"pretrained weights file not found: {path}")
    return StartingWeights(f"file:{path.name}", path, _sha256(path))


def imagenet_weights(architecture: str) -> StartingWeights:
    """timm's default pretrained weights for ``architecture``, from the Hugging Face cache or hub."""
    import timm
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled
    from timm.models._hub import hf_split

    cfg = timm.models.get_pretrained_cfg(architecture)
    if cfg is None or not cfg.hf_hub_id:
        raise PretrainedUnavailable(f"timm has no hub-hosted ImageNet weights for {architecture!r}")
    repo, revision = hf_split(cfg.hf_hub_id)
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES
    problem = ""
    for name in names:
        try:
            path = Path(hf_hub_download(repo_id=repo, filename=name, revision=revision))
        except (EntryNotFoundError, OfflineModeIsEnabled, OSError, ValueError) as exc:
            problem = type(exc).__name__  # LocalEntryNotFoundError offline, a connection error online
            continue
        return StartingWeights(f"{IMAGENET}:{repo}", path, _sha256(path))
    raise PretrainedUnavailable(
        f"ImageNet weights for {architecture} ({repo}) are neither in the Hugging Face cache nor "
        f"downloadable here ({problem}). Fill the cache on a connected machine "
        f"(`hf download {repo}`, then copy HF_HOME across), or set pretrained to a local weights "
        "file, or to none to train from scratch."
    )


def _sha256(path: Path) -> str:
    return file_sha256(path).hex()
