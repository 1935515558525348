"""Function-preserving widening of the detector network (leukcore.detect.widen)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from leukcore.detect.net import build_network  # noqa: E402
from leukcore.detect.widen import widen_state  # noqa: E402
from leukcore.models.registry import load_card, load_state_dict  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    card = load_card("wbc-stardist")
    return dict(card["architecture"]), load_state_dict(card)


def _outputs(arch, state, x):
    net = build_network(arch)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("grow", [lambda c: 2 * c, lambda c: c + 8])
def test_widened_network_computes_what_the_shipped_one_does(shipped, grow):
    arch, state = shipped
    channels = [grow(int(c)) for c in arch["channels"]]
    wide = dict(arch, channels=channels)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    p0, d0 = _outputs(arch, state, x)
    p1, d1 = _outputs(wide, widen_state(state, arch, wide), x)
    assert torch.allclose(p0, p1, atol=1e-5) and torch.allclose(d0, d1, atol=1e-4)
    assert widen_state(state, arch, wide)["down.2.0.weight"].shape == (channels[2], channels[1], 3, 3)


def test_new_channels_learn(shipped):
    """The readers of the new channels get gradients at once (they start at zero, not frozen)."""
    arch, state = shipped
    c0 = int(arch["channels"][0])
    wide = dict(arch, channels=[2 * int(c) for c in arch["channels"]])
    net = build_network(wide)
    net.load_state_dict(widen_state(state, arch, wide))
    prob, dist = net(torch.rand(2, 3, 64, 64))
    (prob.mean() + dist.mean()).backward()
    assert float(net.down[1][0].weight.grad[:, c0:].abs().sum()) > 0
    assert float(net.down[1][0].weight[:, c0:].abs().sum()) == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda a: {"channels": [a["channels"][0] // 2, *a["channels"][1:]]},
        lambda a: {"channels": a["channels"][:2]},
        lambda a: {"n_rays": a["n_rays"] // 2},
        lambda a: {"head_channels": a["head_channels"] // 2},
    ],
)
def test_refuses_what_cannot_be_widened(shipped, change):
    arch, state = shipped
    with pytest.raises(ValueError):
        widen_state(state, arch, dict(arch, **change(arch)))


def test_train_options_widen_the_init_network_and_record_it(shipped):
    from leukcore.detect.train import DetectorTrainOptions, _architecture, _channels_flag

    arch, _ = shipped
    channels = [2 * int(c) for c in arch["channels"]]
    o = DetectorTrainOptions(init_from="wbc-stardist", channels=channels)
    wide, card, state = _architecture(o)
    assert wide["channels"] == channels and wide["head_channels"] == arch["head_channels"]
    assert state["down.0.0.weight"].shape[0] == channels[0]
    assert _channels_flag(o, wide, card) == channels
    same, card, _ = _architecture(DetectorTrainOptions(init_from="wbc-stardist"))
    assert same == arch and _channels_flag(o, same, card) is None
