"""The architecture registry builds both modality CNNs with specs that match the networks they describe."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch

from retina_core.domain import Modality, class_names
from retina_core.models import ModelSpec, RetinaClassifier, build_from_spec, create_model, list_models
from retina_core.models.architectures import model_for_modality
from retina_core.models.weights import save_weights

SIZE = 32


@pytest.fixture(scope="module", params=list_models())
def model(request: pytest.FixtureRequest) -> RetinaClassifier:
    """Every registered model with its default architecture (efficientnet_b0, resnet18)."""
    torch.manual_seed(0)
    return create_model(request.param, image_size=SIZE).eval()


def _batch(spec: ModelSpec, n: int = 2) -> torch.Tensor:
    return torch.rand(n, spec.in_chans, spec.image_size, spec.image_size)


def test_registry_lists_one_model_per_modality() -> None:
    assert list_models() == ["fundus_cnn", "oct_cnn"]
    assert model_for_modality(Modality.FUNDUS) == "fundus_cnn"
    assert model_for_modality("oct") == "oct_cnn"


def test_default_architectures_and_channels(model: RetinaClassifier) -> None:
    spec = model.spec
    expected = {
        "fundus_cnn": ("efficientnet_b0", 3, Modality.FUNDUS),
        "oct_cnn": ("resnet18", 1, Modality.OCT),
    }
    assert (spec.architecture, spec.in_chans, spec.modality) == expected[spec.name]
    assert spec.label_names == tuple(class_names(spec.modality))
    assert spec.num_outputs == len(spec.label_names)
    assert len(spec.mean) == len(spec.std) == spec.in_chans
    assert spec.image_size == SIZE
    assert model(_batch(spec)).shape == (2, spec.num_outputs)


def test_embedding_follows_timm_pre_logits_contract(model: RetinaClassifier) -> None:
    x = _batch(model.spec)
    with torch.no_grad():
        emb = model.embed(x)
        reference = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
        logits, emb_once = model.forward_with_embedding(x)
        direct_logits = model(x)
    assert emb.shape == (2, model.spec.embedding_dim)
    torch.testing.assert_close(emb, reference)
    torch.testing.assert_close(emb_once, emb)
    torch.testing.assert_close(logits, direct_logits)


def test_cam_target_layer_yields_a_spatial_grid(model: RetinaClassifier) -> None:
    assert model.spec.cam_layer.startswith("backbone.")
    grids: list[torch.Tensor] = []
    handle = model.cam_target_layer().register_forward_hook(lambda _m, _i, out: grids.append(out))
    try:
        with torch.no_grad():
            model(_batch(model.spec, n=1))
    finally:
        handle.remove()
    assert grids and grids[0].ndim == 4


def test_embedding_dim_uses_head_width_where_it_differs_from_features() -> None:
    """MobileNetV3's pre-logits pass through a head MLP wider than its feature map."""
    m = create_model("fundus_cnn", architecture="mobilenetv3_small_050", image_size=SIZE).eval()
    assert m.backbone.num_features != m.spec.embedding_dim
    with torch.no_grad():
        assert m.embed(_batch(m.spec)).shape[-1] == m.spec.embedding_dim


def test_regression_task_has_one_output() -> None:
    m = create_model("fundus_cnn", architecture="resnet10t", task="regression", image_size=SIZE).eval()
    assert m.spec.task == "regression" and m.spec.num_outputs == 1
    assert m.spec.label_names == tuple(class_names(Modality.FUNDUS))
    with torch.no_grad():
        assert m(_batch(m.spec)).shape == (2, 1)


def test_none_kwargs_keep_entrypoint_defaults() -> None:
    m = create_model("oct_cnn", architecture=None, image_size=None, pretrained=None)
    assert (m.spec.architecture, m.spec.image_size) == ("resnet18", 128)


def test_unknown_model_and_task_are_errors() -> None:
    with pytest.raises(KeyError, match="fundus_cnn"):
        create_model("vit_giant")
    with pytest.raises(ValueError, match="task"):
        create_model("fundus_cnn", architecture="resnet10t", task="ordinal")


def test_build_from_spec_round_trip() -> None:
    torch.manual_seed(1)
    original = create_model("oct_cnn", architecture="resnet10t", image_size=SIZE).eval()
    spec = ModelSpec.from_dict(original.spec.to_dict())
    rebuilt = build_from_spec(spec).eval()
    assert rebuilt.spec == original.spec
    rebuilt.load_state_dict(original.state_dict())
    x = _batch(spec)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x))


def test_pretrained_own_checkpoint_drops_mismatched_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(2)
    source = create_model("fundus_cnn", architecture="resnet10t", image_size=SIZE)
    path = save_weights(source, tmp_path / "fundus.safetensors")
    with caplog.at_level(logging.INFO, logger="retina_core.models"):
        target = create_model("fundus_cnn", architecture="resnet10t", task="regression", pretrained=str(path))
    assert "fc.bias, fc.weight" in caplog.text
    src, dst = source.state_dict(), target.state_dict()
    assert dst["backbone.fc.weight"].shape == (1, 512)
    for key in src:
        if not key.startswith("backbone.fc."):
            assert torch.equal(dst[key], src[key]), key


def test_pretrained_imagenet_style_checkpoint_adapts_stem_for_oct(tmp_path: Path) -> None:
    """A bare 3-channel, 1000-class timm state dict (.pth) is a valid start for the 1-channel OCT model."""
    torch.manual_seed(3)
    imagenet = timm.create_model("resnet10t", pretrained=False, num_classes=1000).state_dict()
    path = tmp_path / "resnet10t_imagenet.pth"
    torch.save(imagenet, path)
    m = create_model("oct_cnn", architecture="resnet10t", image_size=SIZE, pretrained=path)
    loaded = m.backbone.state_dict()
    torch.testing.assert_close(loaded["conv1.0.weight"], imagenet["conv1.0.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(loaded["layer4.0.conv1.weight"], imagenet["layer4.0.conv1.weight"])
    assert loaded["fc.weight"].shape == (4, 512)


def test_pretrained_checkpoint_of_another_architecture_is_an_error(tmp_path: Path) -> None:
    path = save_weights(timm.create_model("resnet10t", pretrained=False), tmp_path / "r10.safetensors")
    with pytest.raises(ValueError, match="does not match"):
        create_model("fundus_cnn", architecture="mobilenetv3_small_050", pretrained=path)


@pytest.mark.parametrize(
    ("architecture", "size", "layer", "grid"),
    [
        ("resnet18", 224, "backbone.layer4", 7),  # Grad-CAM's own setting: the last stage, 7x7
        ("resnet18", 128, "backbone.layer3", 8),  # the last stage would be 4x4
        ("efficientnet_b0", 128, "backbone.blocks.4", 8),
        ("efficientnet_b0", 256, "backbone.blocks.6", 8),
    ],
)
def test_cam_layer_is_the_deepest_stage_with_a_fine_enough_grid(
    architecture: str, size: int, layer: str, grid: int
) -> None:
    model = create_model("oct_cnn", architecture=architecture, image_size=size)
    assert model.spec.cam_layer == layer
    grids: list[torch.Tensor] = []
    handle = model.cam_target_layer().register_forward_hook(lambda _m, _i, out: grids.append(out))
    try:
        with torch.no_grad():
            model.eval()(_batch(model.spec, n=1))
    finally:
        handle.remove()
    assert tuple(grids[0].shape[-2:]) == (grid, grid)
