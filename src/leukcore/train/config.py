"""Training configuration: one YAML or TOML file records everything about a run.

Defaults are filled in and the complete, resolved config is written into the run
directory (``config.yaml``), so a run can be reproduced from its directory alone.

Example (YAML)::

    name: all-4class
    classes: [Benign, Early, Pre, Pro]
    data:
      datasets:
        - {reader: all4class}                  # root defaults to $LEUK_DATA/all4class
        - {reader: corrections, root: results/}  # reviewed slides (docs/review.md); training split by default
      finder: detector                         # detector | segmented | centre
      detector: wbc-stardist
      test_frac: 0.2
      val_frac: 0.15
      seed: 0
    model:
      architecture: tf_efficientnet_lite0
      imagenet: auto                           # auto | timm | none | /path/to/weights
      input: {size: 96, crop_um: 20, mode: lstd, mask: false}
    train:
      seed: 0
      device: auto
      threads: 1
      views: 2                                 # augmented views per training crop (cached)
      stain_aug: {hed_sigma: 0.05, hed_bias: 0.05}
      balance: loss                            # loss | sampler | none
      phase1: {epochs: 40, lr: 0.002, batch_size: 256, weight_decay: 0.0001, patience: 8}
      phase2: {epochs: 4, lr: 0.0003, batch_size: 64, weight_decay: 0.0001, patience: 2, finetune_stages: 2,
               schedule: constant}              # constant | cosine (per-epoch decay to 0 over epochs)
    eval: {stain_swap: true, n_boot: 1000, tta: [null, flip]}   # field rule chosen on val among these TTA modes
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "load_config", "resolve_config", "dump_config", "preset_path", "PRESETS_DIR"]

#: configs of the shipped models (``leuk train all-4class`` uses ``configs/all-4class.yaml``)
PRESETS_DIR = Path(__file__).parent / "configs"


def preset_path(name_or_path: str | Path) -> Path:
    """A config path as given, or the shipped preset of that name."""
    p = Path(name_or_path)
    if p.exists() or p.suffix in (".yaml", ".yml", ".toml"):
        return p
    cand = PRESETS_DIR / f"{name_or_path}.yaml"
    return cand if cand.exists() else p


DEFAULTS: dict[str, Any] = {
    "name": "classifier",
    "version": 1,
    "classes": None,
    "data": {
        "datasets": [],
        "finder": "detector",
        "detector": "wbc-stardist",
        "test_frac": 0.2,
        "val_frac": 0.15,
        "seed": 0,
        "holdout_sources": [],
        "max_cells_per_image": 30,
        "max_train_cells_per_image": None,
        "exclude_pbc_classes": [],
        "max_images_per_class": None,
        "only_cached": False,
        "crop_mpp": "folder",
    },
    "model": {
        "architecture": "tf_efficientnet_lite0",
        "imagenet": "auto",
        "input": {"size": 96, "crop_um": 20.0, "mode": "lstd", "mask": False},
    },
    "train": {
        "seed": 0,
        "device": "auto",
        "threads": 1,
        "views": 2,
        "stain_aug": {"hed_sigma": 0.05, "hed_bias": 0.05},
        "balance": "loss",
        "num_workers": "auto",
        "phase1": {"epochs": 40, "lr": 2e-3, "batch_size": 256, "weight_decay": 1e-4, "patience": 8},
        "phase2": {
            "epochs": 4,
            "lr": 3e-4,
            "batch_size": 64,
            "weight_decay": 1e-4,
            "patience": 2,
            "finetune_stages": 2,
            "schedule": "constant",
        },
    },
    "eval": {"stain_swap": True, "n_boot": 1000, "tta": [None, "flip"]},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("stain_aug",):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


#: dataset readers a config may name (:func:`leukcore.train.prepare.read_datasets`)
READERS = ("all4class", "pbc", "bccd", "cnmc", "folder", "corrections")


def resolve_config(cfg: dict) -> dict:
    """Fill defaults and check the essentials; raises ``ValueError`` naming the problem."""
    out = _merge(DEFAULTS, cfg)
    if not out["data"]["datasets"]:
        raise ValueError("config: data.datasets is empty (e.g. [{reader: all4class}])")
    for d in out["data"]["datasets"]:
        if d.get("reader") not in READERS:
            raise ValueError(f"config: unknown reader {d.get('reader')!r} ({' | '.join(READERS)})")
        if d["reader"] in ("cnmc", "folder", "corrections") and not d.get("root"):
            raise ValueError(f"config: reader {d['reader']!r} needs a root folder")
    if out["data"]["finder"] not in ("detector", "segmented", "centre"):
        raise ValueError(f"config: data.finder must be detector | segmented | centre, got {out['data']['finder']!r}")
    from .scales import check_crop_mpp

    check_crop_mpp(out["data"]["crop_mpp"])
    if out["train"]["phase2"].get("schedule", "constant") not in ("constant", "cosine"):
        raise ValueError("config: train.phase2.schedule must be constant | cosine")
    stages = out["train"]["phase2"].get("finetune_stages", 2)
    if stages != "all" and not (isinstance(stages, int) and stages >= 0):
        raise ValueError(f"config: train.phase2.finetune_stages must be an integer >= 0 or 'all', got {stages!r}")
    if out["data"].get("max_train_cells_per_image") is not None and int(out["data"]["max_train_cells_per_image"]) < 1:
        raise ValueError("config: data.max_train_cells_per_image must be >= 1 (or null)")
    if out["train"]["balance"] not in ("loss", "sampler", "none"):
        raise ValueError("config: train.balance must be loss | sampler | none")
    return out


def apply_overrides(cfg: dict, overrides, source: str = "config") -> dict:
    """``cfg`` with ``KEY=VALUE`` overrides applied (dotted paths, values read as YAML), resolved again.

    Every parent of a path must exist and be a mapping (a misspelt section fails instead of adding one); the
    last key may be new (optional settings such as ``train.phase2.minutes``).

    Raises
    ------
    ValueError
        Naming ``source`` and the override when it has no ``=``, its path does not exist, or the result
        does not resolve.
    """
    import yaml

    out = copy.deepcopy(cfg)
    for item in overrides:
        key, eq, raw = str(item).partition("=")
        parts = [k for k in key.strip().split(".") if k]
        if not eq or not parts:
            raise ValueError(f"{source}: override {item!r} is not KEY=VALUE (e.g. train.phase2.minutes=45)")
        node = out
        for depth, k in enumerate(parts[:-1]):
            if not isinstance(node.get(k), dict):
                where = ".".join(parts[: depth + 1])
                raise ValueError(f"{source}: override {item!r}: no config section {where!r}")
            node = node[k]
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    try:
        return resolve_config(out)  # keys such as _config_path pass through the merge
    except ValueError as e:
        raise ValueError(f"{source}: {e} (after --set {' '.join(map(str, overrides))})") from None


def load_config(path: str | Path) -> dict:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config and resolve defaults."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            cfg = tomllib.loads(text)
        else:
            import yaml

            cfg = yaml.safe_load(text)
    except Exception as e:
        raise ValueError(f"{path}: cannot parse config: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: config must be a mapping")
    try:
        return resolve_config(cfg)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def dump_config(cfg: dict, path: str | Path) -> Path:
    """Write ``cfg`` as YAML to ``path`` (atomically); returns ``path``."""
    import yaml

    from ..results import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
