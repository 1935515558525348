"""The shipped wbc-stardist model on bundled real fields, and the ``leuk detect`` command."""

import csv
from pathlib import Path

import numpy as np
import pytest

from leukcore.models.registry import WEIGHTS_DIR

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample"
SHIPPED = (WEIGHTS_DIR / "wbc-stardist.yaml").exists()
pytestmark = pytest.mark.skipif(not SHIPPED, reason="wbc-stardist weights not shipped yet")


@pytest.fixture(scope="module")
def det():
    from leukcore.detect import Detector

    return Detector.load("wbc-stardist", device="cpu")


def test_card_is_complete(det):
    c = det.card
    assert c["task"] == "detection" and c["input"]["mpp"] > 0
    assert 0 < c["thresholds"]["prob"] < 1 and 0 < c["thresholds"]["nms"] < 1
    assert c["architecture"]["n_rays"] >= 8
    assert "training" in c and "command" in c["training"] and "wbc_masks_zheng2018" in c["training"]["excluded"]
    assert c["weights"]["bytes"] < 30e6


def test_finds_the_wbc_in_bundled_bccd_fields(det):
    """BCCD fields hold one annotated WBC each: it is found, and red cells are not."""
    import xml.etree.ElementTree as ET

    from leukcore.detect import detect_cells
    from leukcore.detect.data import read_rgb
    from leukcore.detect.train import match_points_to_boxes

    tp = n_gt = n_pred = 0
    for jpg in sorted((SAMPLE / "bccd").glob("*.jpg")):
        root = ET.parse(jpg.with_suffix(".xml")).getroot()
        boxes = np.array(
            [
                [int(o.find("bndbox").findtext(k)) for k in ("ymin", "xmin", "ymax", "xmax")]
                for o in root.iter("object")
                if o.findtext("name") == "WBC"
            ]
        ).reshape(-1, 4)
        t = detect_cells(read_rgb(jpg), det, mpp=0.092)
        tp += match_points_to_boxes(t.df[["centroid_y", "centroid_x"]].to_numpy(), t.df["score"].to_numpy(), boxes)
        n_gt += len(boxes)
        n_pred += len(t)
    assert tp >= 0.75 * n_gt
    assert n_pred <= 2 * n_gt


def test_four_class_field_with_estimated_mpp(det):
    from leukcore.detect import detect_cells
    from leukcore.detect.data import read_rgb

    img = read_rgb(SAMPLE / "all4class" / "Benign" / "WBC-Benign-125.jpg")
    t = detect_cells(img, det)
    assert t.meta["mpp_source"] == "estimated" and t.meta["mpp_estimate"]["spread"] is not None
    assert 1 <= len(t) <= 40
    # cells are purple: mean (B - G) inside detected bounding boxes beats the field's
    bmg = img[..., 2].astype(float) - img[..., 1]
    inside = [
        bmg[max(0, int(r.bbox_y0)) : int(r.bbox_y1), max(0, int(r.bbox_x0)) : int(r.bbox_x1)].mean()
        for r in t.df.itertuples()
    ]
    assert np.mean(inside) > bmg.mean() + 10


def test_cli_detect_writes_cells_csv(tmp_path):
    from leukcore.cli import main

    out = tmp_path / "out"
    rc = main(
        [
            "detect",
            str(SAMPLE / "bccd" / "BloodImage_00005.jpg"),
            "-o",
            str(out),
            "--mpp",
            "0.092",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    with open(out / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"centroid_y", "centroid_x", "score", "polygon"} <= set(rows[0])
    assert (out / "cells.parquet").exists() and (out / "detect_meta.json").exists()


def test_cli_detect_backend_and_threads(tmp_path, capsys):
    """--backend and --threads reach the detector (recorded in detect_meta.json); --threads 0 is refused."""
    import json

    from leukcore.cli import main

    img = str(SAMPLE / "bccd" / "BloodImage_00005.jpg")
    cells = {}
    for backend in ("onnx", "torch"):
        out = tmp_path / backend
        rc = main(
            [
                "detect",
                img,
                "-o",
                str(out),
                "--mpp",
                "0.092",
                "--device",
                "cpu",
                "--quiet",
                "--backend",
                backend,
                "--threads",
                "1",
            ]
        )
        assert rc == 0
        meta = json.loads((out / "detect_meta.json").read_text())
        assert meta["detector"]["backend"] == backend
        with open(out / "cells.csv") as f:
            cells[backend] = len(list(csv.DictReader(f)))
    assert cells["onnx"] == cells["torch"] > 0
    from leukcore.cli import build_parser

    args = build_parser().parse_args(["detect", img, "-o", "x", "--threads", "2", "--backend", "torch"])
    assert (args.threads, args.backend) == (2, "torch")
    assert build_parser().parse_args(["detect", img, "-o", "x"]).threads is None  # every core
    with pytest.raises(SystemExit):
        main(["detect", img, "-o", str(tmp_path / "x"), "--threads", "0"])
    assert "--threads" in capsys.readouterr().err


def test_cli_detect_labels_image_matches_the_table(tmp_path):
    """--labels writes an OME-NGFF label pyramid aligned with level 0: each cell's centroid pixel holds its id."""
    import zarr

    from leukcore.cli import main

    out = tmp_path / "out"
    img = SAMPLE / "bccd" / "BloodImage_00005.jpg"
    rc = main(["detect", str(img), "-o", str(out), "--mpp", "0.092", "--device", "cpu", "--quiet", "--labels"])
    assert rc == 0
    with open(out / "cells.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows
    root = zarr.open_group(str(out / "labels.ome.zarr"), mode="r")
    lab0 = np.asarray(root["0"])
    assert lab0.shape[-2:] == (480, 640)
    lab0 = lab0.reshape(480, 640)
    for r in rows:
        y, x = int(round(float(r["centroid_y"]))), int(round(float(r["centroid_x"])))
        assert lab0[y, x] == int(r["cell_id"])
    assert set(np.unique(lab0)) == {0} | {int(r["cell_id"]) for r in rows}


def test_cli_detect_bad_file(tmp_path, capsys):
    from leukcore.cli import main

    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    rc = main(["detect", str(bad), "-o", str(tmp_path / "o"), "--device", "cpu", "--quiet"])
    assert rc != 0
    assert "x.png" in capsys.readouterr().err
