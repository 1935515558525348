"""The DDP path of ``train_classifier`` under torchrun (2 CPU processes, gloo) on a few real four-class fields.

Asserts that both ranks end with identical weights (sha256 of the state dict, gathered across ranks
by the training loop and written by each rank here) and that only rank 0 writes into the run
directory (every write-mode open / mkdir / replace under it is recorded per rank).
"""

import json
import os
import subprocess
import sys

import pytest

from leukcore.paths import data_dir

DATA = data_dir() / "all4class"

DRIVER = r"""
import builtins, io, json, os, sys
from pathlib import Path
cfg_path, run_dir, report_dir = sys.argv[1:4]
run_dir = os.path.realpath(run_dir)
rank = int(os.environ["RANK"])
writes = []

def _under(p):
    try:
        return os.path.realpath(os.fspath(p)).startswith(run_dir)
    except TypeError:
        return False

def _wrap(fn, is_write):
    def w(*a, **k):
        if a and _under(a[0]) and is_write(*a, **k):
            writes.append(os.fspath(a[0]))
        return fn(*a, **k)
    return w

_mode_w = lambda f, mode="r", *a, **k: any(c in str(k.get("mode", mode)) for c in "wax+")
builtins.open = _wrap(builtins.open, _mode_w)
io.open = _wrap(io.open, _mode_w)
os.open = _wrap(os.open, lambda f, flags, *a, **k: bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
os.mkdir = _wrap(os.mkdir, lambda *a, **k: True)
for name in ("replace", "rename"):
    setattr(os, name, _wrap(getattr(os, name), lambda *a, **k: True))

import torch
torch.set_num_threads(1)
from leukcore.train.config import load_config
from leukcore.train.loop import train_classifier
lines = []
train_classifier(load_config(cfg_path), run_dir, evaluate=False, log=lambda *a: lines.append(" ".join(map(str, a))))
digest = [l.split()[-1] for l in lines if "weights sha256" in l]
Path(report_dir, f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world": int(os.environ["WORLD_SIZE"]),
                                                             "digest": digest, "writes": writes}))
import torch.distributed as dist
if dist.is_initialized():
    dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "Original").is_dir(), reason="four-class data not available")
def test_ddp_two_cpu_ranks_agree_and_only_rank0_writes(tmp_path):
    import torch.distributed as dist
    import yaml

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo not available")
    cfg = {
        "name": "ddp-smoke",
        "classes": ["Benign", "Early", "Pre", "Pro"],
        "data": {
            "datasets": [{"reader": "all4class"}],
            "finder": "segmented",
            "max_images_per_class": 6,
            "max_cells_per_image": 3,
            "test_frac": 0.25,
            "val_frac": 0.25,
        },
        "model": {"imagenet": "none", "input": {"size": 32, "crop_um": 20.0, "mode": "lstd"}},
        "train": {
            "views": 1,
            "threads": 1,
            "phase1": {"epochs": 2, "lr": 0.01, "batch_size": 16, "patience": 5},
            "phase2": {"epochs": 2, "lr": 0.001, "batch_size": 4, "patience": 5, "finetune_stages": 1},
        },
    }
    cpath = tmp_path / "ddp.yaml"
    cpath.write_text(yaml.safe_dump(cfg))
    (tmp_path / "driver.py").write_text(DRIVER)
    run, rep = tmp_path / "run", tmp_path / "reports"
    rep.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LEUK_CACHE": str(tmp_path / "cache"), "LEUK_DATA": str(data_dir())}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(tmp_path / "driver.py"),
            str(cpath),
            str(run),
            str(rep),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r0 = json.loads((rep / "rank0.json").read_text())
    r1 = json.loads((rep / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    # both ranks trained and ended with the same weights
    assert len(r0["digest"]) == 1 and len(r0["digest"][0]) == 64 and r0["digest"] == r1["digest"]
    # only rank 0 wrote the run directory (the recorder does see rank 0's writes)
    assert r1["writes"] == []
    assert any(w.endswith("config.yaml") or "config.yaml" in w for w in r0["writes"])
    for f in ("config.yaml", "splits.csv", "checkpoint.pt", "history.json", "model.safetensors", "model.yaml"):
        assert (run / f).exists(), f
    card = yaml.safe_load((run / "model.yaml").read_text())
    ddp = card["training"]["timings"]["ddp"]
    assert ddp == {"world_size": 2, "backend": "gloo", "ranks_agree_on_weights": True}
    hist = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in hist].count(2) == 2
    # the saved weights are the weights both ranks agreed on
    from leukcore.models.registry import load_card, load_state_dict

    sd = load_state_dict(load_card(run / "model.yaml"))
    from leukcore.classify.network import build_network

    net = build_network("tf_efficientnet_lite0", 4)
    net.load_state_dict(sd)
    from leukcore.train.loop import weights_digest

    assert weights_digest(net) == r0["digest"][0]


def test_shard_gives_every_rank_the_same_number_of_steps_and_covers_every_batch():
    from leukcore.train.ddp import shard as _shard

    batches = [f"b{i}" for i in range(5)]
    parts = [_shard(batches, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [3, 3]  # unequal step counts would hang DDP
    assert set(parts[0]) | set(parts[1]) == set(batches)
    parts = [_shard(batches[:1], r, 3) for r in range(3)]  # fewer batches than ranks
    assert [len(p) for p in parts] == [1, 1, 1]
    assert _shard(batches, 0, 1) == batches
