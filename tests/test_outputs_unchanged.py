"""Behaviour preservation (issue 15): a results folder is byte-identical to the one recorded before the
refactor that gave the results folder, legend, rasteriser and region clip one owner each.

Every file a run writes is hashed (``labels.ome.zarr`` file by file); ``summary.json`` is compared with
what legitimately changes between runs removed (timings, the input file's fingerprint and the digest over
it; model card paths by file name).  Cases:

* ``fakes-disks`` / ``fakes-sample`` / ``fakes-mosaic``: the pipeline with contract-obeying fake models
  (``tests/test_pipeline_plumbing.py``'s) on a synthetic slide, on a region of the bundled sample slide and
  on a small mosaic of bundled real fields (fast: no network runs);
* ``real-sample`` (``slow``): ``wbc-stardist`` + ``all-binary`` on the whole bundled sample slide.

The hashes depend on the versions of the writers' libraries (and, for ``real-sample``, on the model
weights), so each case records them and is skipped, saying why, in another environment.  ``real-sample`` also
depends on the CPU's float kernels (the network's last bits differ between, e.g., an AMD AVX2 and an Intel
AVX-512 machine, and move a polygon vertex): it is recorded per CPU kind, ``real-sample@<vendor>/<capability>``
(:func:`_cpu`), with the unlabelled ``real-sample`` record (the first machine's) used where the running kind has
none.  Re-record after an intended change to an output with::

    .venv/bin/python tests/test_outputs_unchanged.py --record [CASE ...]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden" / "outputs.json"
LIBS = ("numpy", "pandas", "pyarrow", "zarr", "numcodecs", "PIL", "skimage")


# ------------------------------------------------------------------ fakes (as in test_pipeline_plumbing)
def _disk_image(n=12, size=1500, r=9, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 235, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(40, size - 40, 2)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[m] = (150, 40, 160) if i % 2 else (90, 30, 200)
    return img


class FakeDetector:
    card = {"name": "fake-det", "version": 1, "task": "detection", "weights": {"sha256": "0" * 64}}
    mpp = 0.5
    device = "cpu"


def fake_iter_detect(slide, detector, *, tile_size=512, region=None, progress=None, cancel=None, **kw):
    """Dark blobs (mean < 150) of each level-0 tile of ``region`` as cells (owned by the tile of their centroid)."""
    from skimage import measure

    from leukcore.progress import emit, is_cancelled
    from leukcore.results import CellTable

    H, W = slide.shape
    y0, x0, y1, x1 = region if region is not None else (0, 0, H, W)
    tiles = [(y, x) for y in range(y0, y1, tile_size) for x in range(x0, x1, tile_size)]
    for i, (y, x) in enumerate(tiles):
        if is_cancelled(cancel):
            return
        h, w = min(tile_size, y1 - y), min(tile_size, x1 - x)
        img = slide.read_region(0, y, x, h, w)
        lab = measure.label(img.astype(np.float32).mean(axis=2) < 150)
        cents, polys = [], []
        for rp in measure.regionprops(lab):
            if rp.area < 30:
                continue
            cy, cx = rp.centroid
            c = measure.find_contours(np.pad(lab == rp.label, 1), 0.5)[0] - 1
            cents.append((cy + y, cx + x))
            polys.append(c + [y, x])
        emit(progress, "detect", i + 1, len(tiles), cells=len(cents))
        yield CellTable.from_detections(
            np.array(cents).reshape(-1, 2),
            polys,
            np.full(len(cents), 0.9, np.float32),
            mpp=slide.mpp,
            meta={"partial": False},
        )


class FakeClassifier:
    classes = ["ALL", "normal"]
    card = {"name": "fake-clf", "version": 2, "task": "classification", "weights": {"sha256": "1" * 64}}

    def __init__(self):
        from leukcore.classify.geometry import CropSpec

        self.spec = CropSpec(size=16, crop_um=12.0, mode="rgb")

    def predict_crops(self, crops):
        b = crops[..., 2].astype(np.float32).mean(axis=(1, 2)) / 255.0
        p = np.clip((b - 0.5) * 3 + 0.5, 0.05, 0.95)
        return np.stack([p, 1 - p], axis=1).astype(np.float32)


# ------------------------------------------------------------------ running and hashing
def _versions(real: bool = False) -> dict:
    import importlib

    v = {"python": "%d.%d" % sys.version_info[:2]}
    for name in LIBS + (("torch",) if real else ()):
        try:
            v[name] = importlib.import_module(name).__version__
        except Exception:  # pragma: no cover - a missing library: the case cannot run anyway
            v[name] = None
    return v


def _cpu() -> str:
    """The CPU kind the network's float kernels depend on: ``<vendor>/<torch CPU capability>``."""
    import torch

    vendor = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover - not Linux
        pass
    return f"{vendor}/{torch.backends.cpu.get_cpu_capability()}"


def _key(name: str) -> str:
    """The golden record's key: real-model cases per CPU kind (:func:`_cpu`)."""
    return f"{name}@{_cpu()}" if name.startswith("real") else name


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _stable_summary(s: dict) -> dict:
    s = json.loads(json.dumps(s))
    s.pop("timings", None)
    sl = s.get("slide") or {}
    if sl.get("path"):
        sl["path"] = Path(sl["path"]).name
    prov = s.get("provenance") or {}
    prov.pop("digest", None)
    prov.pop("input", None)  # the input file's identity (a mosaic's TIFF bytes carry the time it was written)

    def _names(o):  # model cards by file name: where the checkout lies is not an output
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "card_path" and isinstance(v, str):
                    o[k] = Path(v).name
                else:
                    _names(v)

    _names(s)
    return s


def folder_hashes(folder: Path) -> dict:
    """``{relative path: sha256}`` of every file under ``folder``; summary.json as its stable part."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if rel == "summary.json":
            s = _stable_summary(json.loads(p.read_text(encoding="utf-8")))
            out[rel] = _sha(json.dumps(s, sort_keys=True).encode())
        else:
            out[rel] = _sha(p.read_bytes())
    return out


def _run_fakes(slide, out: Path, **kw):
    import leukcore.detect
    from leukcore.pipeline import analyze_slide

    saved = leukcore.detect.__dict__.get("iter_detect")
    leukcore.detect.iter_detect = fake_iter_detect
    try:
        analyze_slide(
            slide, FakeDetector(), FakeClassifier(), device="cpu", tile_size=512, batch_size=4, out_dir=out, **kw
        )
    finally:
        if saved is None:
            del leukcore.detect.iter_detect
        else:
            leukcore.detect.iter_detect = saved


def case_fakes_disks(out: Path) -> dict:
    from leukcore.io.slide import Slide

    s = Slide.from_array(_disk_image(), mpp=0.5, chunk=512)
    s.path = "fake-slide.ome.tif"
    _run_fakes(s, out)
    return {}


def case_fakes_sample(out: Path) -> dict:
    from leukcore.io import open_slide
    from leukcore.sample import sample_slide_path

    with open_slide(sample_slide_path()) as s:
        _run_fakes(s, out, region=(300, 0, 1400, 1700))
    return {}


def case_fakes_mosaic(out: Path) -> dict:
    from leukcore.io import open_slide
    from leukcore.sample import MosaicOptions, build_mosaic, bundled_fields

    src = out.parent / f"{out.name}-mosaic.ome.tif"
    build_mosaic(bundled_fields()[:4], src, grid=(2, 2), options=MosaicOptions(write_layout=False))
    with open_slide(src) as s:
        _run_fakes(s, out)
    return {}


def case_real_sample(out: Path) -> dict:
    from leukcore.models import load_card
    from leukcore.pipeline import analyze_slide
    from leukcore.sample import sample_slide_path

    analyze_slide(sample_slide_path(), "wbc-stardist", "all-binary", device="cpu", out_dir=out)
    return {m: load_card(m)["weights"]["sha256"] for m in ("wbc-stardist", "all-binary")}


CASES = {
    "fakes-disks": case_fakes_disks,
    "fakes-sample": case_fakes_sample,
    "fakes-mosaic": case_fakes_mosaic,
    "real-sample": case_real_sample,
}


def run_case(name: str, tmp: Path) -> dict:
    out = tmp / name
    models = CASES[name](out)
    summary = _stable_summary(json.loads((out / "summary.json").read_text(encoding="utf-8")))
    return {
        "versions": _versions(real=name.startswith("real")),
        "models": models,
        "files": folder_hashes(out),
        "summary": summary,
    }


def _dict_diff(a, b, path="") -> list:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _dict_diff(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def _golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.is_file() else {}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n.startswith("real") else []) for n in CASES]
)
def test_outputs_byte_identical_to_recorded(name, tmp_path):
    golden = _golden()
    rec = golden.get(_key(name)) or golden.get(name)
    if rec is None:
        pytest.skip(f"no recorded outputs for {name} in {GOLDEN}")
    if name.startswith("real"):
        from leukcore.models import load_card

        for m, sha in rec["models"].items():
            if load_card(m)["weights"]["sha256"] != sha:
                pytest.skip(f"{m}: weights changed since the outputs were recorded")
    got = run_case(name, tmp_path)
    if got["versions"] != rec["versions"]:
        pytest.skip(f"recorded with {rec['versions']}, running {got['versions']}")
    diff = sorted(set(got["files"]) ^ set(rec["files"])) + sorted(
        f for f in set(got["files"]) & set(rec["files"]) if got["files"][f] != rec["files"][f]
    )
    assert not diff, f"{name}: output files differ from the recorded run: {diff}" + (
        "; summary: " + "; ".join(_dict_diff(rec.get("summary"), got["summary"]))[:3000]
        if "summary.json" in diff
        else ""
    )


if __name__ == "__main__":  # --record [CASE ...]
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="record the output hashes of the cases")
    ap.add_argument("--record", action="store_true", required=True)
    ap.add_argument("cases", nargs="*", default=list(CASES))
    a = ap.parse_args()
    golden = _golden()
    with tempfile.TemporaryDirectory() as d:
        for n in a.cases:
            golden[_key(n)] = run_case(n, Path(d))
            print(_key(n), len(golden[_key(n)]["files"]), "files")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
