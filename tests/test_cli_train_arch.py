"""``leuk train --arch NAME``: any timm architecture, checked before any data is read."""

import argparse

import pytest


def _args(*argv):
    """The real ``leuk train`` parser's namespace for ``argv`` (the flags as a user types them)."""
    from leukcore.cli import train as cli_train

    sub = argparse.ArgumentParser().add_subparsers()
    cli_train.register(sub)
    return sub.choices["train"].parse_args([*argv, "--no-eval"])


def test_arch_overrides_config_and_drops_offline_init(monkeypatch, tmp_path):
    import leukcore.train.loop as loop
    from leukcore.cli import train as cli_train

    seen = {}
    monkeypatch.setattr(loop, "train_classifier", lambda cfg, out, **kw: seen.update(cfg=cfg, out=out))
    cli_train.run(_args("all-binary", "--arch", "resnet18", "-o", str(tmp_path / "r")))
    assert seen["cfg"]["model"]["architecture"] == "resnet18"
    assert seen["cfg"]["model"]["imagenet"] == "none"  # no offline ImageNet weights for it
    cli_train.run(_args("all-binary", "--arch", "tf_efficientnet_lite1", "-o", str(tmp_path / "r1")))
    assert seen["cfg"]["model"]["architecture"] == "tf_efficientnet_lite1"
    assert seen["cfg"]["model"]["imagenet"] == "auto"


def test_unknown_arch_fails_fast(monkeypatch):
    import leukcore.train.loop as loop
    from leukcore.cli import train as cli_train

    monkeypatch.setattr(loop, "train_classifier", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(ValueError, match="unknown timm architecture"):
        cli_train.run(_args("all-binary", "--arch", "no_such_net_42"))


def test_set_overrides_a_dotted_config_value_as_yaml(monkeypatch, tmp_path):
    import leukcore.train.loop as loop
    from leukcore.cli import train as cli_train

    seen = {}
    monkeypatch.setattr(loop, "train_classifier", lambda cfg, out, **kw: seen.update(cfg=cfg))
    sets = ["--set", "train.phase2.minutes=45", "--set", "train.phase2.finetune_stages=all", "--set", "data.seed=3"]
    cli_train.run(_args("all-4class-scratch", "-o", str(tmp_path / "r"), "--arch", "resnet18", *sets))
    p2 = seen["cfg"]["train"]["phase2"]
    assert p2["minutes"] == 45 and p2["finetune_stages"] == "all" and seen["cfg"]["data"]["seed"] == 3
    assert seen["cfg"]["model"]["architecture"] == "resnet18" and seen["cfg"]["_config_path"].endswith(".yaml")


@pytest.mark.parametrize(
    "bad, match",
    [
        ("train.phase2.minutes", "not KEY=VALUE"),
        ("trian.phase2.minutes=4", "no config section 'trian'"),
        ("train.phase2.finetune_stages=some", "finetune_stages"),
    ],
)
def test_bad_overrides_fail_before_training(monkeypatch, bad, match):
    import leukcore.train.loop as loop
    from leukcore.cli import train as cli_train

    monkeypatch.setattr(loop, "train_classifier", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(ValueError, match=match) as e:
        cli_train.run(_args("all-4class", "--set", bad))
    assert "all-4class" in str(e.value)  # names the config
