from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from retina_core.explain.cam import CamMethod, compute_cams
from retina_core.explain.fusion import fusion_cams
from retina_core.explain.pointing import pointing_game_hit, score_pointing, summarise_pointing
from retina_core.models import RetinaClassifier, create_model
from retina_core.models.cam_layer import get_module

ARCHITECTURES: list[tuple[str, int, dict[str, Any]]] = [
    ("resnet18", 64, {}),
    ("tf_efficientnet_b0", 64, {}),
    ("convnext_atto", 64, {}),
    ("mobilenetv3_small_050", 64, {}),
    ("densenet121", 64, {}),
    ("vit_tiny_patch16_224", 32, {"img_size": 32, "global_pool": "avg"}),  # tokens (N, 1 + 4, C)
    ("swin_tiny_patch4_window7_224", 64, {"img_size": 64}),  # channels-last (N, H, W, C)
]


def assert_valid_maps(maps: np.ndarray, n: int, size: int, *, peaks: bool = True) -> None:
    """Shape, dtype, range; and with ``peaks`` a clear maximum in every map.

    Randomly initialised models may legitimately give blank Grad-CAM maps (no positive
    evidence for a class anywhere), so ``peaks`` is only asked of models that have evidence.
    """
    assert maps.shape == (n, size, size)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    if peaks:
        assert (maps.reshape(n, -1).max(axis=1) > 0.5).all(), "every map should have a clear peak"


@pytest.mark.parametrize(
    ("architecture", "size", "timm_kwargs"), ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES]
)
def test_spec_layer_gives_valid_maps_for_each_architecture(
    make_classifier: Callable[..., RetinaClassifier],
    architecture: str,
    size: int,
    timm_kwargs: dict[str, Any],
) -> None:
    model = make_classifier(architecture, image_size=size, **timm_kwargs)
    assert isinstance(get_module(model, model.spec.cam_layer), nn.Module)
    images = torch.randn(2, 3, size, size)

    result = compute_cams(model, images)

    assert_valid_maps(result.maps, 2, size, peaks=False)
    assert result.maps.max() > 0.5, "a random model may leave one map blank, but not every map"
    assert result.layer == model.spec.cam_layer and result.method is CamMethod.GRADCAM
    with torch.no_grad():
        probs = model.eval()(images).softmax(dim=1)
    assert result.targets == probs.argmax(dim=1).tolist()
    np.testing.assert_allclose(result.scores, probs.max(dim=1).values.numpy(), rtol=1e-4)


def test_vit_pooling_the_class_token_needs_a_layer_before_the_last_block(
    make_classifier: Callable[..., RetinaClassifier], caplog: pytest.LogCaptureFixture
) -> None:
    """After the last block only the class token reaches the head, so its patch tokens get no gradient."""
    model = make_classifier("vit_tiny_patch16_224", image_size=32, img_size=32)
    images = torch.randn(2, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="retina_core.explain.cam"):
        blank = compute_cams(model, images, layer="backbone.blocks.11")
    assert blank.maps.max() == 0.0 and "blank" in caplog.text
    useful = compute_cams(model, images, layer="backbone.blocks.11.norm1")
    assert_valid_maps(useful.maps, 2, 32)


@pytest.fixture(scope="module")
def oct_model() -> RetinaClassifier:
    torch.manual_seed(0)
    return create_model("oct_cnn", architecture="resnet18", image_size=64)


PLANTED_SIDE = 12
PLANTED_AT = ((6, 40), (38, 10))
"""Top-left corners of the bright square planted in each test image (64 px, far apart)."""


@pytest.fixture(scope="module")
def planted_oct_model() -> RetinaClassifier:
    """The registry's OCT model, made so that class 3 is plainly "something is there".

    Everything up to the CAM layer (``layer2``) keeps its random weights. After it, resnet18's
    ``layer3``/``layer4`` get non-negative conv weights and unit BatchNorm scales (timm
    zero-initialises each block's last one) and the head's class-3 row is made non-negative,
    so the class-3 logit grows with every activation at the CAM layer. On a blank image
    with one bright square, the only activations are the square's, so a faithful map of any
    method peaks on the square, and an all-zero or constant map cannot pass.
    """
    torch.manual_seed(0)
    model = create_model("oct_cnn", architecture="resnet18", image_size=64)
    backbone = model.backbone
    with torch.no_grad():
        for stage in (backbone.layer3, backbone.layer4):
            for module in stage.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.abs_()
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.fill_(1.0)
        backbone.get_classifier().weight[3].abs_()
    return model


def planted_images() -> tuple[Tensor, np.ndarray]:
    """Blank one-channel images, each with one bright square at ``PLANTED_AT``; images and masks."""
    images = torch.zeros(len(PLANTED_AT), 1, 64, 64)
    masks = np.zeros((len(PLANTED_AT), 64, 64), dtype=bool)
    for i, (top, left) in enumerate(PLANTED_AT):
        images[i, :, top : top + PLANTED_SIDE, left : left + PLANTED_SIDE] = 3.0
        masks[i, top : top + PLANTED_SIDE, left : left + PLANTED_SIDE] = True
    return images, masks


@pytest.mark.parametrize("method", list(CamMethod))
def test_each_method_runs_on_a_registry_model(planted_oct_model: RetinaClassifier, method: CamMethod) -> None:
    images, masks = planted_images()
    result = compute_cams(planted_oct_model, images, targets=[3, 3], method=str(method))

    assert_valid_maps(result.maps, 2, 64)
    assert result.method is method and result.targets == [3, 3]
    assert result.layer == planted_oct_model.spec.cam_layer
    for cam, mask in zip(result.maps, masks, strict=True):
        assert cam.max() - cam.min() > 0.9, "a map must not be constant"
        inside, outside = float(cam[mask].mean()), float(cam[~mask].mean())
        if method is CamMethod.EIGENCAM:
            # a principal component's sign is arbitrary: the square must stand out, either way
            assert abs(inside - outside) > 0.4, (inside, outside)
            continue
        # within one cell of the CAM layer (stride 8): the map is upsampled from an 8 x 8 grid
        assert pointing_game_hit(cam, mask, tolerance_px=8), "the peak must be on the planted square"
        assert inside > 5 * outside, (inside, outside)


@pytest.mark.parametrize("method", list(CamMethod))
def test_each_method_finds_a_planted_lesion(
    lesion_detector: nn.Module, lesion_batch: tuple[Tensor, np.ndarray], method: CamMethod
) -> None:
    images, masks = lesion_batch
    result = compute_cams(lesion_detector, images[:4], targets=[1] * 4, method=method, layer="features")
    assert_valid_maps(result.maps, 4, 64)
    hits = [pointing_game_hit(cam, mask) for cam, mask in zip(result.maps, masks[:4], strict=True)]
    assert all(hits)


def test_explicit_targets_are_explained_and_checked(oct_model: RetinaClassifier) -> None:
    images = torch.randn(3, 1, 64, 64)
    result = compute_cams(oct_model, images, targets=[1, 2, 3])
    with torch.no_grad():
        probs = oct_model.eval()(images).softmax(dim=1)
    np.testing.assert_allclose(result.scores, probs[[0, 1, 2], [1, 2, 3]].numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        compute_cams(oct_model, images, targets=[0, 1, 4])
    with pytest.raises(ValueError, match="3 images"):
        compute_cams(oct_model, images, targets=[0])
    with pytest.raises(KeyError, match="no module"):
        compute_cams(oct_model, images, layer="backbone.layer9")


def test_regression_model_explains_its_raw_score() -> None:
    torch.manual_seed(0)
    model = create_model("fundus_cnn", architecture="resnet18", image_size=64, task="regression")
    images = torch.randn(2, 3, 64, 64)
    result = compute_cams(model, images)
    assert result.targets == [0, 0]
    with torch.no_grad():
        raw = model.eval()(images)[:, 0]
    np.testing.assert_allclose(result.scores, raw.numpy(), rtol=1e-4)
    assert_valid_maps(result.maps, 2, 64, peaks=False)


def test_model_is_handed_back_as_it_was(oct_model: RetinaClassifier) -> None:
    oct_model.train()
    oct_model.backbone.layer1.eval()  # e.g. a frozen stage kept in eval mode while fine-tuning
    oct_model.backbone.conv1.weight.requires_grad_(False)
    modes = {name: m.training for name, m in oct_model.named_modules()}
    flags = {name: p.requires_grad for name, p in oct_model.named_parameters()}
    layer = oct_model.cam_target_layer()

    with torch.no_grad():  # a caller's no_grad must not stop Grad-CAM, nor be undone by it
        result = compute_cams(oct_model, torch.randn(2, 1, 64, 64))
        assert not torch.is_grad_enabled()

    assert_valid_maps(result.maps, 2, 64, peaks=False)
    assert {name: m.training for name, m in oct_model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in oct_model.named_parameters()} == flags
    assert all(p.grad is None for p in oct_model.parameters()), "no gradient may leak into the model"
    assert not layer._forward_hooks, "the CAM's hooks must be released"
    oct_model.backbone.conv1.weight.requires_grad_(True)


def test_errors_inside_the_cam_are_not_swallowed(oct_model: RetinaClassifier) -> None:
    """pytorch-grad-cam's own context manager prints and drops IndexError; ours must not."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from retina_core.explain.activations import layout_of
    from retina_core.explain.cam import cam_maps

    layer = oct_model.cam_target_layer()
    with pytest.raises(IndexError):
        cam_maps(
            oct_model,
            layer,
            torch.randn(1, 1, 64, 64),
            [ClassifierOutputTarget(9)],
            layout=layout_of(oct_model, (64, 64)),
        )
    assert not layer._forward_hooks


def test_planted_lesion_detector_beats_the_random_baseline(
    lesion_detector: nn.Module, lesion_batch: tuple[Tensor, np.ndarray]
) -> None:
    """The check can tell a map that looks at the evidence from a random one."""
    images, masks = lesion_batch
    result = compute_cams(lesion_detector, images, targets=[1] * len(images), layer="features")
    assert (result.scores > 0.9).all(), "the detector should be sure about every bright square"

    rng = np.random.default_rng(0)
    records = [
        score_pointing("lesion", cam, mask, rng, n_random=50)
        for cam, mask in zip(result.maps, masks, strict=True)
    ]
    (row, _) = summarise_pointing(records)
    assert row.n == len(images)
    assert row.hit_rate == 1.0
    assert row.random_hit_rate < 0.2
    assert row.energy > 3 * row.random_energy

    shifted = np.roll(result.maps, shift=32, axis=(1, 2))  # same maps, pointing elsewhere
    misses = [
        score_pointing("lesion", cam, mask, rng, n_random=5) for cam, mask in zip(shifted, masks, strict=True)
    ]
    assert summarise_pointing(misses)[0].hit_rate < 0.2


class LinearFusionHead(nn.Module):
    def __init__(self, fundus_dim: int, oct_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(fundus_dim + oct_dim, 2)

    def forward(self, fundus_emb: Tensor, oct_emb: Tensor) -> Tensor:
        return self.linear(torch.cat([fundus_emb, oct_emb], dim=1))


@pytest.fixture(scope="module")
def fusion_parts() -> tuple[LinearFusionHead, RetinaClassifier, RetinaClassifier]:
    """Frozen resnet18 encoders and a head whose disease logit rises with every embedding feature.

    resnet18 embeddings are averages of ReLU outputs (>= 0), so with positive head weights
    every activation is positive evidence and neither map can be blank by chance.
    """
    torch.manual_seed(0)
    fundus = create_model("fundus_cnn", architecture="resnet18", image_size=64)
    octm = create_model("oct_cnn", architecture="resnet18", image_size=48)
    for model in (fundus, octm):
        model.requires_grad_(False)  # frozen encoders, as in fusion training
    head = LinearFusionHead(fundus.spec.embedding_dim, octm.spec.embedding_dim)
    with torch.no_grad():
        head.linear.weight[1].abs_()
    return head, fundus, octm


def encoder_reading_its_slice(
    encoder: RetinaClassifier, head: LinearFusionHead, start: int
) -> RetinaClassifier:
    """A copy of ``encoder`` whose own classifier is the fusion head's weights for its embedding."""
    reference = copy.deepcopy(encoder)
    width = encoder.spec.embedding_dim
    classifier = nn.Linear(width, 2)
    with torch.no_grad():
        classifier.weight.copy_(head.linear.weight[:, start : start + width])
        classifier.bias.zero_()
    reference.backbone.fc = classifier
    return reference


def test_fusion_cams_map_both_modalities(
    fusion_parts: tuple[LinearFusionHead, RetinaClassifier, RetinaClassifier],
) -> None:
    head, fundus, octm = fusion_parts
    fundus_img, oct_img = torch.randn(3, 3, 64, 64), torch.randn(3, 1, 48, 48)

    fundus_map, oct_map = fusion_cams(head, fundus, octm, fundus_img, oct_img, target=1, batch_size=2)

    assert_valid_maps(fundus_map, 3, 64)
    assert_valid_maps(oct_map, 3, 48)
    # With a linear head, the disease logit's gradient at an encoder's layer is that of the
    # head's slice for this modality: the encoder with that slice as its own classifier,
    # explained the ordinary way, is an independent reference for each fusion map.
    fundus_ref = encoder_reading_its_slice(fundus, head, 0)
    oct_ref = encoder_reading_its_slice(octm, head, fundus.spec.embedding_dim)
    np.testing.assert_allclose(
        fundus_map, compute_cams(fundus_ref, fundus_img, targets=[1] * 3).maps, atol=1e-4
    )
    np.testing.assert_allclose(oct_map, compute_cams(oct_ref, oct_img, targets=[1] * 3).maps, atol=1e-4)
    assert (fundus_map.reshape(3, -1).std(axis=1) > 0.05).all() and (
        oct_map.reshape(3, -1).std(axis=1) > 0.05
    ).all()
    assert all(not p.requires_grad for p in fundus.parameters()), "frozen encoders stay frozen"
    single_fundus, single_oct = fusion_cams(head, fundus, octm, fundus_img[0], oct_img[0])
    assert single_fundus.shape == (64, 64) and single_oct.shape == (48, 48)
    np.testing.assert_allclose(single_fundus, fundus_map[0], atol=1e-5)


def test_fusion_map_follows_the_head_not_the_encoder(
    fusion_parts: tuple[LinearFusionHead, RetinaClassifier, RetinaClassifier],
) -> None:
    """A head that ignores the fundus embedding leaves nothing to see in the fundus photo."""
    head, fundus, octm = fusion_parts
    head = copy.deepcopy(head)
    with torch.no_grad():
        head.linear.weight[:, : fundus.spec.embedding_dim] = 0.0
    fundus_map, oct_map = fusion_cams(
        head, fundus, octm, torch.randn(2, 3, 64, 64), torch.randn(2, 1, 48, 48)
    )
    assert fundus_map.max() == 0.0
    assert (oct_map.reshape(2, -1).max(axis=1) > 0.5).all()
