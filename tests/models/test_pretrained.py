"""`pretrained: none | FILE | imagenet`: ImageNet weights come from timm's Hugging Face cache, offline.

Each test writes a small checkpoint into the cache layout ``hf_hub_download`` reads
(``models--{org}--{name}/refs/main`` naming a snapshot that holds ``model.safetensors``);
nothing touches the network (``HF_HUB_OFFLINE`` is on).
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants as hub_constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from retina_core.catalog.registry import get_version
from retina_core.data.synthetic import SynthSpec
from retina_core.domain import Modality
from retina_core.models import create_model
from retina_core.models.persist import read_json
from retina_core.models.pretrained import PretrainedUnavailable, resolve_starting_weights
from retina_core.reporting.model_card import build_model_card
from retina_core.storage.atomic import file_sha256
from retina_core.training.run import train_modality
from tests.fusion.world import build_world

ARCH = "test_resnet"
REPO = "timm/test_resnet.r160_in1k"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline (what HF_HOME + HF_HUB_OFFLINE=1 give huggingface_hub)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def imagenet_checkpoint(cache: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 1000-class checkpoint with recognisable values, where timm's hub loader looks for it."""
    torch.manual_seed(123)
    state = {k: v.clone() for k, v in timm.create_model(ARCH, num_classes=1000).state_dict().items()}
    repo = cache / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    path = repo / "snapshots" / SNAPSHOT / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(state, str(path))
    return path, state


def test_none_and_local_file_sources(tmp_path: Path) -> None:
    assert resolve_starting_weights(ARCH, None) is None
    assert resolve_starting_weights(ARCH, "none") is None
    with pytest.raises(PretrainedUnavailable, match="not found"):
        resolve_starting_weights(ARCH, str(tmp_path / "absent.safetensors"))
    path = tmp_path / "mine.safetensors"
    save_file(timm.create_model(ARCH).state_dict(), str(path))
    found = resolve_starting_weights(ARCH, str(path))
    assert found is not None and found.record() == {
        "source": "file:mine.safetensors",
        "sha256": file_sha256(path).hex(),
    }


def test_imagenet_comes_from_the_cache_and_loads_as_timm_loads_it(hub_cache: Path) -> None:
    path, state = imagenet_checkpoint(hub_cache)
    found = resolve_starting_weights(ARCH, "imagenet")
    assert found is not None and found.path.resolve() == path.resolve()
    assert found.record() == {"source": f"imagenet:{REPO}", "sha256": file_sha256(path).hex()}
    ours = create_model("oct_cnn", architecture=ARCH, image_size=64, pretrained=found.path)
    theirs = timm.create_model(ARCH, pretrained=True, in_chans=1, num_classes=4)  # timm, same cache
    ours_sd, theirs_sd = ours.backbone.state_dict(), theirs.state_dict()
    stem = "conv1.0.weight"
    assert ours_sd[stem].shape[1] == 1 and torch.equal(ours_sd[stem], theirs_sd[stem])
    assert torch.allclose(ours_sd[stem], state[stem].sum(dim=1, keepdim=True))  # RGB stem summed to grey
    body = [k for k in theirs_sd if not k.startswith(("fc.", "conv1.0")) and "num_batches" not in k]
    assert all(torch.equal(ours_sd[k], theirs_sd[k]) for k in body)
    assert not torch.equal(ours_sd["fc.weight"][:4], state["fc.weight"][:4])  # the ImageNet head is dropped


def test_offline_without_cached_weights_fails_clearly_before_training(
    hub_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(PretrainedUnavailable, match=f"{REPO}.*neither in the Hugging Face cache"):
        resolve_starting_weights(ARCH, "imagenet")
    with pytest.raises(PretrainedUnavailable, match="no hub-hosted ImageNet weights"):
        resolve_starting_weights("not_a_timm_model", "imagenet")
    world = build_world(tmp_path, SynthSpec(fundus=0, oct=24, pairs=0, size=48, seed=3), train=False)
    world.settings.train.oct.pretrained = "imagenet"
    before = sorted(info.key for info in world.store.list(""))
    with pytest.raises(PretrainedUnavailable):
        train_modality(world.settings, Modality.OCT, engine=world.engine, store=world.store)
    assert sorted(info.key for info in world.store.list("")) == before  # not even a cache entry


def test_registry_and_model_card_record_the_starting_weights(hub_cache: Path, tmp_path: Path) -> None:
    path, _ = imagenet_checkpoint(hub_cache)
    world = build_world(tmp_path, SynthSpec(fundus=0, oct=40, pairs=0, size=48, seed=3), train=False)
    oct_settings = world.settings.train.oct
    oct_settings.epochs, oct_settings.image_size, oct_settings.pretrained = 1, 32, "imagenet"
    report = train_modality(world.settings, Modality.OCT, engine=world.engine, store=world.store)
    record = {"source": f"imagenet:{REPO}", "sha256": file_sha256(path).hex()}
    version = get_version(world.engine, "oct_cnn", report.version)
    assert version.summary["starting_weights"] == record
    assert read_json(world.store, version.object_prefix, "config.json")["starting_weights"] == record
    assert report.extras["starting_weights"] == record
    spec = read_json(world.store, version.object_prefix, "spec.json")
    card = build_model_card(
        report.evaluation, spec, {}, version="1", dataset_version="1", starting_weights=record
    )
    assert f"imagenet:{REPO} (SHA-256 {record['sha256']})" in card.to_markdown()

    oct_settings.pretrained = None  # from scratch is another recipe: another version, never a reuse
    scratch = train_modality(world.settings, Modality.OCT, engine=world.engine, store=world.store)
    assert not scratch.reused and scratch.extras["starting_weights"] is None
