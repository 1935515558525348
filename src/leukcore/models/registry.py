"""Registry of shipped models and their model cards.

Each shipped model is two files in ``leukcore/models/weights/``:

``<name>.safetensors``
    The weights (no pickled code).
``<name>.yaml``
    The model card (TIAToolbox ``pretrained_model.yaml`` style)::

        name: wbc-stardist
        task: detection            # or classification
        version: 1
        architecture: {...}        # enough to rebuild the network
        input: {mpp: 0.5, patch: 256, normalization: {...}}
        classes: [...]             # classification only
        thresholds: {...}
        weights: {file: wbc-stardist.safetensors, sha256: ...}
        training: {data: ..., split: ..., command: ...}
        metrics: {...}             # every number with its split type

A user model is the same pair anywhere on disk: pass the ``.yaml`` path, or put the pair in a
folder named by the ``LEUK_MODEL_PATH`` environment variable (several folders separated by
``os.pathsep``) and use its name like a shipped one.  Those folders are searched before the
shipped weights, so a user model of the same name takes precedence.

Provenance: :func:`load_card` records the card's path (``_card_path``) and the sha256 of the card
file's bytes (``_card_sha256``); :func:`load_state_dict` records the sha256 of the weights as read
(``_weights_sha256``).  A card whose ``weights`` carry no ``sha256`` is refused unless it was loaded
with ``trust_unverified=True`` (``--trust-unverified`` on the command line): its weights could be
anything.  :func:`save_model` always writes the hash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import paths as _paths
from ..hashing import sha256_bytes, sha256_file

__all__ = [
    "ModelError",
    "WEIGHTS_DIR",
    "MODEL_PATH_ENV",
    "model_dirs",
    "list_models",
    "load_card",
    "load_state_dict",
    "save_model",
    "sha256_file",
    "card_path",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: environment variable naming extra model folders (searched before the shipped weights)
MODEL_PATH_ENV = _paths.MODEL_PATH_ENV


def model_dirs() -> list[Path]:
    """Folders searched for models by name: ``$LEUK_MODEL_PATH`` entries (:func:`leukcore.paths.model_path`),
    then the shipped weights.
    """
    return _paths.model_path() + [WEIGHTS_DIR]


class ModelError(Exception):
    """A model card or weights file is missing, malformed or fails its hash check."""


def list_models(task: str | None = None) -> list[str]:
    """Names of the shipped models (optionally only ``task`` = detection/classification)."""
    out = []
    for d in model_dirs():
        for p in sorted(d.glob("*.yaml")):
            if p.stem in out:
                continue
            try:
                card = load_card(p)
            except ModelError:
                continue  # not a model card: ignore stray yaml files
            if card.get("task") and (task is None or card.get("task") == task):
                out.append(p.stem)
    return out


def card_path(name_or_path: str | os.PathLike) -> Path:
    """The card file of a model name, card path or run folder (names searched in the model folders).

    Raises ``ModelError`` when there is none.
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    if p.is_dir() and (p / "model.yaml").exists():
        return p / "model.yaml"
    for d in model_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.exists():
            return cand
    raise ModelError(
        f"unknown model {str(name_or_path)!r}: not a known model "
        f"({', '.join(list_models()) or 'none found'}; folders searched: shipped weights"
        f"{' and $' + MODEL_PATH_ENV if os.environ.get(MODEL_PATH_ENV) else ''}) "
        f"and not a model card .yaml file"
    )


def load_card(name_or_path: str | os.PathLike, *, trust_unverified: bool = False) -> dict[str, Any]:
    """Read a model card (shipped name, card path, or run directory holding ``model.yaml``).

    The card's path and the sha256 of its bytes are recorded (``_card_path``, ``_card_sha256``).
    ``trust_unverified=True`` lets :func:`load_state_dict` load weights the card gives no sha256 for.
    """
    import yaml

    p = card_path(name_or_path)
    try:
        raw = p.read_bytes()
        card = yaml.safe_load(raw.decode("utf-8"))
    except Exception as e:
        raise ModelError(f"{p}: cannot parse model card: {e}") from None
    if not isinstance(card, dict) or "weights" not in card or "task" not in card:
        raise ModelError(f"{p}: model card lacks 'task' or 'weights'")
    card["_card_path"] = str(p)
    card["_card_sha256"] = sha256_bytes(raw)
    if trust_unverified:
        card["_trust_unverified"] = True
    return card


def load_state_dict(card: dict[str, Any], verify: bool = True, *, trust_unverified: bool | None = None) -> dict:
    """Load the card's weights with safetensors (no pickled code), checking the sha256.

    Raises :class:`ModelError` when the file's sha256 differs from the card's, and when the card
    gives none (the weights cannot be verified) unless ``trust_unverified`` (default: the flag
    :func:`load_card` recorded) or ``verify=False``.  Records ``card["_weights_sha256"]``.
    """
    from safetensors.torch import load_file

    wfile = Path(card["_card_path"]).parent / card["weights"]["file"]
    if not wfile.exists():
        raise ModelError(f"{wfile}: weights file missing for model {card.get('name')!r}")
    got = sha256_file(wfile)
    card["_weights_sha256"] = got
    if trust_unverified is None:
        trust_unverified = bool(card.get("_trust_unverified"))
    if verify and card["weights"].get("sha256"):
        if got != card["weights"]["sha256"]:
            raise ModelError(
                f"{wfile}: sha256 {got[:12]}... does not match the model card "
                f"({card['weights']['sha256'][:12]}...); the file is corrupt or was replaced"
            )
    elif verify and not trust_unverified:
        raise ModelError(
            f"{card['_card_path']}: model card gives no sha256 for its weights "
            f"({wfile.name}), so they cannot be verified; add weights.sha256 "
            f"(leukcore.models.save_model writes it) or, if you trust the file, pass "
            f"trust_unverified=True (--trust-unverified)"
        )
    try:
        return load_file(str(wfile))
    except Exception as e:
        raise ModelError(f"{wfile}: cannot read weights: {e}") from None


def save_model(state_dict: dict, card: dict[str, Any], directory: str | os.PathLike, name: str) -> Path:
    """Write ``<name>.safetensors`` + ``<name>.yaml`` (hash filled in); returns the card path."""
    import yaml
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wfile = directory / f"{name}.safetensors"
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(sd, str(wfile))
    card = {k: v for k, v in card.items() if not k.startswith("_")}
    card["name"] = card.get("name", name)
    card["weights"] = {
        **card.get("weights", {}),
        "file": wfile.name,
        "sha256": sha256_file(wfile),
        "bytes": wfile.stat().st_size,
        "format": "safetensors",
    }
    cpath = directory / f"{name}.yaml"
    cpath.write_text(yaml.safe_dump(card, sort_keys=False))
    return cpath
