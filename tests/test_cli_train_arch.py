"""``leuk train --arch NAME``: any timm architecture, checked before any data is read."""

import argparse

import pytest


def _args(**kw):
    base = dict(
        config="all-binary", out=None, resume=False, no_eval=True, device=None, arch=None, debug=False, corrections=[]
    )
    base.update(kw)
    return argparse.Namespace(**base)


def test_arch_overrides_config_and_drops_offline_init(monkeypatch, tmp_path):
    import leukcore.train.loop as loop
    from leukcore.cli import train as cli_train

    seen = {}
    monkeypatch.setattr(loop, "train_classifier", lambda cfg, out, **kw: seen.update(cfg=cfg, out=out))
    cli_train.run(_args(arch="resnet18", out=str(tmp_path / "r")))
    assert seen["cfg"]["model"]["architecture"] == "resnet18"
    assert seen["cfg"]["model"]["imagenet"] == "none"  # no offline ImageNet weights for it
    cli_train.run(_args(arch="tf_efficientnet_lite1", out=str(tmp_path / "r1")))
    assert seen["cfg"]["model"]["architecture"] == "tf_efficientnet_lite1"
    assert seen["cfg"]["model"]["imagenet"] == "auto"


def test_unknown_arch_fails_fast(monkeypatch):
    import leukcore.train.loop as loop
    from leukcore.cli import train as cli_train

    monkeypatch.setattr(loop, "train_classifier", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(ValueError, match="unknown timm architecture"):
        cli_train.run(_args(arch="no_such_net_42"))
