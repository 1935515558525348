"""Training pieces: stardist targets, NMS round trip on known shapes, a few training steps, save/load."""

import numpy as np
import pytest

from leukcore.detect.data import TrainItem
from leukcore.detect.postprocess import instances_from_maps, polygon_centroid, polygons_to_labels
from leukcore.detect.train import (
    DetectorTrainOptions,
    augment,
    make_targets,
    match_points_to_boxes,
    match_points_to_labels,
    train_network,
)


def shapes_label(shape=(160, 160)):
    """Known star-convex objects: two discs and an ellipse."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    lab[np.hypot(yy - 40, xx - 40) < 15] = 1
    lab[np.hypot(yy - 110, xx - 50) < 10] = 2
    lab[((yy - 80) / 12) ** 2 + ((xx - 120) / 25) ** 2 < 1] = 3
    return lab


def test_nms_round_trip_on_known_shapes():
    lab = shapes_label()
    prob, dist, w = make_targets(lab, 32)
    assert w.min() == 1
    pts, scores, polys = instances_from_maps(prob, dist, prob_thresh=0.5, nms_thresh=0.3)
    assert len(pts) == 3
    cents = np.array([polygon_centroid(p) for p in polys])
    truth = np.array([[40, 40], [110, 50], [80, 120]])
    for t in truth:
        assert np.min(np.hypot(*(cents - t).T)) < 1.5
    rec = polygons_to_labels(polys, lab.shape)
    for v in (1, 2, 3):
        m = lab == v
        best = max(((rec == k) & m).sum() / ((rec == k) | m).sum() for k in range(1, rec.max() + 1))
        assert best > 0.85
    # the local-maximum shortcut keeps the same objects
    pts2, _, _ = instances_from_maps(prob, dist, prob_thresh=0.5, nms_thresh=0.3, local_max=False)
    assert len(pts2) == 3


def test_ignore_label_has_zero_weight():
    lab = shapes_label()
    lab[lab == 2] = -1
    prob, dist, w = make_targets(lab, 16)
    assert (w[lab == -1] == 0).all() and (prob[lab == -1] == 0).all()
    assert dist.shape == lab.shape + (16,)


def test_augment_shapes_and_label_consistency():
    rng = np.random.default_rng(0)
    img = np.full((90, 200, 3), 240, np.uint8)
    lab = np.zeros((90, 200), np.int32)
    img[30:50, 30:50] = (120, 60, 170)
    lab[30:50, 30:50] = 1
    for _ in range(5):
        a, l = augment(img, lab, rng, size=64)
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and l.shape == (64, 64)
        if (l == 1).any():  # labelled pixels stay purple-ish (blue > green)
            assert a[l == 1][:, 2].mean() > a[l == 1][:, 1].mean()


def test_matching_helpers():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    assert (
        match_points_to_boxes(np.array([[5, 5], [6, 6], [25, 25], [50, 50]]), np.array([0.9, 0.8, 0.7, 0.6]), boxes)
        == 2
    )
    lab = np.zeros((40, 40), int)
    lab[0:10, 0:10] = 1
    lab[20:30, 20:30] = -1
    assert match_points_to_labels(np.array([[5, 5], [6, 6], [25, 25], [35, 35]]), lab) == (1, 3, 1)


def test_loss_decreases_in_a_few_steps_and_model_round_trips(tmp_path):
    import torch

    from leukcore.detect.model import Detector
    from leukcore.models.registry import save_model

    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        img = np.full((96, 96, 3), 240, np.uint8)
        lab = np.zeros((96, 96), np.int32)
        yy, xx = np.mgrid[:96, :96]
        for k in range(3):
            cy, cx = rng.uniform(15, 80, 2)
            m = np.hypot(yy - cy, xx - cx) < 9
            img[m] = (120, 60, 170)
            lab[m & (lab == 0)] = k + 1
        items.append(TrainItem(img, lab, "synthetic", f"s{i}"))
    arch = {"n_rays": 8, "channels": [8, 16], "head_channels": 8}
    opts = DetectorTrainOptions(steps=30, minutes=None, batch=4, size=64, lr=1e-2, device="cpu", threads=1)
    net, hist = train_network(items, opts, arch=arch)
    first = np.mean([h["loss"] for h in hist[:5]])
    last = np.mean([h["loss"] for h in hist[-5:]])
    assert np.isfinite(last) and last < first
    card = {"task": "detection", "architecture": arch, "input": {"mpp": 0.5}, "thresholds": {"prob": 0.5, "nms": 0.4}}
    cpath = save_model(net.state_dict(), card, tmp_path, "tiny")
    det = Detector.load(str(cpath), device="cpu")
    assert det.mpp == 0.5 and det.n_rays == 8 and det.multiple == 2
    x = np.random.default_rng(1).random((2, 32, 48, 3)).astype(np.float32)
    p, d = det.predict_maps(x)
    assert p.shape == (2, 32, 48) and d.shape == (2, 32, 48, 8)
    assert ((p >= 0) & (p <= 1)).all() and (d >= 0).all()
    with torch.no_grad():
        logit, dist = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(p, torch.sigmoid(logit)[:, 0].numpy(), atol=1e-5)


def test_loading_errors(tmp_path):
    from leukcore.detect.model import Detector
    from leukcore.models.registry import ModelError

    with pytest.raises(ModelError):
        Detector.load(str(tmp_path / "nope.yaml"))
    (tmp_path / "c.yaml").write_text("task: classification\nweights: {file: x.safetensors}\n")
    with pytest.raises(ModelError, match="detection"):
        Detector.load(str(tmp_path / "c.yaml"))


def test_tune_thresholds_picks_the_smallest_cell_that_drops_debris():
    """Two real cells (9 um across) are boxed, a 5.5 um blob is not: the grid must pick a minimum
    cell diameter that drops the blob (6 um, the first of the tied values) and keep both cells."""
    from leukcore.detect.train import tune_thresholds

    yy, xx = np.mgrid[:96, :96]
    lab = np.zeros((96, 96), np.int32)
    lab[np.hypot(yy - 30, xx - 30) < 9] = 1  # 0.5 um/px: 9 um across
    lab[np.hypot(yy - 65, xx - 60) < 9] = 2
    lab[np.hypot(yy - 70, xx - 20) < 5.5] = 3  # debris, 5.5 um across
    prob, dist, _ = make_targets(lab, 16)

    class MapsOnly:  # a detector whose maps are the exact targets
        mpp, multiple = 0.5, 4

        def predict_maps(self, x):
            return prob[None], dist[None]

    img = np.full((96, 96, 3), 230, np.uint8)
    boxes = np.array([[20, 20, 40, 40], [55, 50, 75, 70]], float)
    res = tune_thresholds(
        MapsOnly(), {"v": [(img, ("boxes", boxes))]}, probs=(0.5,), nmss=(0.4,), min_cells=(4.0, 5.0, 6.0, 7.0)
    )
    by_mc = {r["min_cell_um"]: r["sets"]["v"] for r in res["grid"]}
    assert by_mc[4.0]["precision"] == pytest.approx(2 / 3) and by_mc[5.0]["precision"] == pytest.approx(2 / 3)
    assert by_mc[6.0] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert res["best"]["min_cell_um"] == 6.0
    assert res["per_image"] == {"v": [[2, 2, 2]]}  # the best point's counts, image by image


def test_compare_tunings_paired_bootstrap():
    """A model that is better on every image wins every resample; a model against itself is a tie;
    tunings on different validation images cannot be paired."""
    from leukcore.detect.train import compare_tunings

    rng = np.random.default_rng(0)
    n = 40
    worse = {"s": [[8, 10, 10]] * n, "t": [[1, 1, 1]] * 20}
    better = {"s": [[9, 10, 10]] * n, "t": [[1, 1, 1]] * 20}
    r = compare_tunings({"per_image": better}, {"per_image": worse}, n_boot=200)
    assert r["diff"] == pytest.approx((0.9 - 0.8) / 2) and r["p_a_better"] == 1.0 and r["ci95"][0] > 0
    noisy = {"s": [[int(v), 10, 10] for v in rng.integers(7, 11, n)], "t": worse["t"]}
    same = compare_tunings({"per_image": noisy}, {"per_image": noisy}, n_boot=200)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and same["p_a_better"] == 0.0
    # one image differs: the interval must straddle zero-ish and be narrower than the whole range
    one = {"s": [list(r) for r in noisy["s"]], "t": worse["t"]}
    one["s"][0][0] = max(0, one["s"][0][0] - 1)
    r1 = compare_tunings({"per_image": noisy}, {"per_image": one}, n_boot=200)
    assert r1["diff"] > 0 and r1["ci95"][0] >= 0 and r1["p_a_better"] < 1.0
    with pytest.raises(ValueError, match="same validation sets"):
        compare_tunings({"per_image": better}, {"per_image": {"s": better["s"][:-1], "t": better["t"]}})


def test_near_tied_candidates_are_ordered_by_global_pixel():
    """Float rounding that flips two near-equal candidates must not change the kept one when the
    maps' global origin is given (seam exactness); without it, NMS follows the rounding."""
    yy, xx = np.mgrid[:64, :64]
    lab = (np.hypot(yy - 32, xx - 32) < 12).astype(np.int32)
    prob, dist, _ = make_targets(lab, 16)
    prob = prob * 0.9
    a, b = (30, 30), (34, 35)  # two non-adjacent candidates of one object
    pa, pb = prob.copy(), prob.copy()
    pa[a], pa[b] = 0.95, 0.95 + 1e-7  # tile A's rounding favours b ...
    pb[a], pb[b] = 0.95 + 1e-7, 0.95  # ... tile B's favours a
    kw = dict(prob_thresh=0.5, nms_thresh=0.3)
    ka = instances_from_maps(pa, dist, **kw)[0]
    kb = instances_from_maps(pb, dist, **kw)[0]
    assert len(ka) == len(kb) == 1 and tuple(ka[0]) != tuple(kb[0])
    # with the origin: the same global pixel wins in both, for any origin
    for origin in ((0, 0), (512, 1028), (7, 3)):
        ka = instances_from_maps(pa, dist, origin=origin, **kw)
        kb = instances_from_maps(pb, dist, origin=origin, **kw)
        assert len(ka[0]) == len(kb[0]) == 1 and tuple(ka[0][0]) == tuple(kb[0][0])
        assert abs(float(ka[1][0]) - 0.95) < 2.0**-12


def _pbc_folder_image(path, n_nuclei: int, seed: int):
    """A 120 px PBC-like image: pink background, ``n_nuclei`` purple nuclei (one centred), own noise."""
    from PIL import Image

    yy, xx = np.mgrid[:120, :120]
    img = np.empty((120, 120, 3), np.uint8)
    img[:] = (232, 222, 226)
    img[np.random.default_rng(seed).random((120, 120)) < 0.01] = (228, 218, 222)  # no two files alike
    centres = [(60, 60), (18, 20)][:n_nuclei]
    for cy, cx in centres:
        img[np.hypot(yy - cy, xx - cx) < 13] = (95, 45, 150)
    Image.fromarray(img).save(path)


def test_pbc_heldout_items_are_exactly_the_images_training_never_drew(tmp_path, monkeypatch):
    """Training draws PBC images in a seeded order, skipping unusable ones (a second nucleus in
    view), until it has enough.  The held-out replay must start right after the last image that
    training examined: with unusable images among the first draws, a naive ``order[n:]`` would hand
    back a training image."""
    import leukcore.detect.corpus as C
    import leukcore.detect.data as D

    monkeypatch.setattr(C, "folder_mpp", lambda files, n=40: 0.5)  # no red cells in these images
    for cls in D.PBC_WBC + ["platelet"]:
        d = tmp_path / "pbc" / cls
        d.mkdir(parents=True)
        for k in range(12):
            # every other white-cell image has a second nucleus in view: unusable; platelets are all usable
            _pbc_folder_image(
                d / f"{cls}_{k:02d}.jpg", 1 if (cls == "platelet" or k % 2 == 0) else 2, seed=100 * len(cls) + k
            )
    (tmp_path / "bccd" / "BCCD" / "ImageSets" / "Main").mkdir(parents=True)
    for s in ("train", "val", "test"):
        (tmp_path / "bccd" / "BCCD" / "ImageSets" / "Main" / f"{s}.txt").write_text("")

    items, _ = D.load_training_items(tmp_path, 0.5, n_pbc=2, n_platelet=3, seed=3)
    trained = {it.name for it in items}
    assert len(items) == 6 * 2 + 3
    held = D.pbc_heldout_items(tmp_path, 0.5, per_class=10, n_pbc=2, n_platelet=3, seed=3)
    names = {it.name for it in held}
    assert not names & trained
    by_src = {}
    for it in held:
        by_src.setdefault(it.source, []).append(it)
    # 6 usable white-cell images per class, 2 trained on; 12 platelet images, 3 trained on
    assert len(by_src["pbc"]) == 6 * 4 and len(by_src["pbc-platelet"]) == 9
    assert all(set(np.unique(it.labels)) == {0, 1} for it in by_src["pbc"])
    assert all(not it.labels.any() for it in by_src["pbc-platelet"])


def test_train_detector_rejects_an_unknown_source_before_reading_data(tmp_path):
    from leukcore.detect.train import train_detector

    with pytest.raises(ValueError, match="unknown training source.*'pbc-platelets'"):
        opts = DetectorTrainOptions(source_weights={"pbc-platelets": 0.2})
        train_detector(tmp_path / "no-data", tmp_path / "run", opts, log=None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", ["pbc-platelet", "pbc-platelet=x", "bccd=-1"])
def test_cli_source_weight_needs_source_equals_nonnegative_number(tmp_path, bad, capsys):
    from leukcore.cli import main

    with pytest.raises(SystemExit, match="--source-weight wants SOURCE=W"):
        main(["train-detector", "--data", str(tmp_path), "-o", str(tmp_path / "run"), "--source-weight", bad])


def test_recorded_train_command_parses_back_to_the_same_recipe():
    """The card's ``training.command`` must reproduce the run: parse it with the real CLI parser."""
    import argparse
    import shlex

    from leukcore.cli.train_detector import register
    from leukcore.detect.train import DEFAULT_SOURCE_WEIGHTS, DetectorTrainOptions, train_command

    def _train_command(data, run, minutes, seed, lr, sw, init_from, channels=None, train_ignore=None, val_ignore=7.0):
        return train_command(
            data,
            run,
            DetectorTrainOptions(
                minutes=minutes,
                seed=seed,
                lr=lr,
                source_weights=sw,
                init_from=init_from,
                channels=channels,
                train_ignore_below_um=train_ignore,
                val_ignore_below_um=val_ignore,
            ),
        )

    sw = {**DEFAULT_SOURCE_WEIGHTS, "pbc-platelet": 0.15, "pbc": 0.3}
    cmd = _train_command("DATA", "RUN", 35.0, 0, 1e-3, sw, "card.yaml")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(shlex.split(cmd)[1:])
    assert args.lr == 1e-3 and args.minutes == 35.0 and args.seed == 0 and args.init_from == "card.yaml"
    got = dict(kv.split("=") for kv in args.source_weight)
    assert {k: float(v) for k, v in got.items()} == {"pbc-platelet": 0.15, "pbc": 0.3}
    assert _train_command("DATA", "RUN", 32, 0, 3e-3, dict(DEFAULT_SOURCE_WEIGHTS), None).endswith("--seed 0")
    wide = _train_command("DATA", "RUN", 32, 0, 3e-3, dict(DEFAULT_SOURCE_WEIGHTS), None, [24, 48, 96])
    assert parser.parse_args(shlex.split(wide)[1:]).channels == [24, 48, 96]
    clean = _train_command("DATA", "RUN", 32, 0, 3e-3, dict(DEFAULT_SOURCE_WEIGHTS), None, None, 7.0)
    assert parser.parse_args(shlex.split(clean)[1:]).train_ignore_below == 7.0
    assert parser.parse_args(shlex.split(wide)[1:]).train_ignore_below is None
    assert parser.parse_args(shlex.split(wide)[1:]).val_ignore_below is None  # the default rule
    counted = _train_command("DATA", "RUN", 32, 0, 3e-3, dict(DEFAULT_SOURCE_WEIGHTS), None, None, None, 0)
    assert parser.parse_args(shlex.split(counted)[1:]).val_ignore_below == 0


def test_training_run_and_retune_tune_on_the_same_sets(tmp_path, monkeypatch):
    """``leuk train-detector`` and a later ``--retune`` of its card must build the same tuning sets:
    the same PBC replay (seed and caps read back from the card) and every four-class validation field."""
    import leukcore.detect.data as D
    import leukcore.detect.train as T
    import leukcore.detect.tuning as Tu

    calls = []
    monkeypatch.setattr(
        Tu,
        "tuning_sets",
        lambda data_dir, mpp, draws, log=None, ignore_below_um=None: calls.append((mpp, draws, ignore_below_um)) or {},
    )

    def fake_items(
        data_dir,
        mpp,
        n_fourclass,
        n_pbc,
        n_platelet,
        seed,
        log,
        fourclass_ignore_below_um=None,
    ):
        calls.append(("ignore", fourclass_ignore_below_um))
        rng = np.random.default_rng(seed)
        img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        info = {"sources": {f"pbc/{c}": {"images": n_pbc, "negative": False} for c in D.PBC_WBC}}
        info["sources"]["pbc/platelet"] = {"images": n_platelet, "negative": True}
        return [TrainItem(img, np.zeros((64, 64), np.int32), "pbc", "x.jpg")], info

    monkeypatch.setattr(D, "load_training_items", fake_items)
    opts = T.DetectorTrainOptions(
        steps=2,
        minutes=None,
        batch=2,
        size=32,
        device="cpu",
        n_pbc=7,
        n_platelet=5,
        seed=11,
        channels=[8, 16],
        train_ignore_below_um=7,
    )
    card = T.train_detector(tmp_path, tmp_path / "run", opts, log=None)
    assert calls[-1] == (0.5, {"seed": 11, "n_pbc": 7, "n_platelet": 5}, T.VAL_IGNORE_BELOW_UM)
    T.retune_detector(card, tmp_path, tmp_path / "retuned", device="cpu", log=None)
    assert calls == [("ignore", 7)] + [(0.5, {"seed": 11, "n_pbc": 7, "n_platelet": 5}, 7.0)] * 2
    import yaml

    tr = yaml.safe_load(card.read_text())["training"]
    assert tr["fourclass_ignore_below_um"] == 7.0 and tr["command"].endswith("--train-ignore-below 7")


def test_ignore_fragments_marks_small_instances_neither_found_nor_false():
    from leukcore.detect.data import ignore_fragments

    lab = np.zeros((40, 40), np.int32)
    lab[2:12, 2:12] = 1  # 100 px: a cell
    lab[20:23, 20:23] = 2  # 9 px: a fragment
    lab[30:35, 30:35] = -1  # already ignore
    out = ignore_fragments(lab, 50)
    assert set(np.unique(out).tolist()) == {-1, 0, 1} and (out[20:23, 20:23] == -1).all()
    assert (lab[20:23, 20:23] == 2).all()  # input untouched
    # a detection on the fragment is not counted; one on the cell is a true positive
    assert match_points_to_labels(np.array([[21, 21], [5, 5]]), out) == (1, 1, 1)
    assert match_points_to_labels(np.array([[21, 21], [5, 5]]), lab) == (2, 2, 2)


def _voc(path, objects):
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
        for n, (y0, x0, y1, x1) in objects
    )
    path.write_text(f"<annotation>{body}</annotation>")


def test_bccd_class_errors_flags_only_white_cell_sized_platelet_boxes(tmp_path):
    """A Platelets box as large as the training split's WBC boxes is a white cell under the wrong class;
    ordinary platelet boxes, and images without one, are left alone."""
    from leukcore.detect.data import bccd_class_errors

    ann = tmp_path / "bccd" / "BCCD" / "Annotations"
    ann.mkdir(parents=True)
    sets = tmp_path / "bccd" / "BCCD" / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    train = [f"t{k}" for k in range(20)]
    for k, i in enumerate(train):  # WBC boxes 100-139 px square
        _voc(ann / f"{i}.xml", [("WBC", (0, 0, 100 + 2 * k, 100 + 2 * k)), ("Platelets", (0, 0, 30, 30))])
    (sets / "train.txt").write_text("\n".join(train))
    _voc(ann / "a.xml", [("RBC", (0, 0, 90, 90)), ("Platelets", (10, 10, 150, 130)), ("Platelets", (0, 0, 40, 40))])
    _voc(ann / "b.xml", [("WBC", (0, 0, 120, 120)), ("Platelets", (0, 0, 60, 60))])
    got = bccd_class_errors(tmp_path, ["a", "b"])
    assert list(got) == ["a"] and got["a"].tolist() == [[10, 10, 150, 130]]


def _data():
    from leukcore.detect.data import default_data_dir

    return default_data_dir()


DATA = _data()


@pytest.mark.skipif(not (DATA / "bccd" / "BCCD").exists(), reason="real data not available")
def test_bccd_class_errors_on_the_public_set():
    from leukcore.detect.data import bccd_class_errors, bccd_split

    ids = [i for s in ("train", "val", "test") for i in bccd_split(DATA, s)]
    got = bccd_class_errors(DATA, ids)
    assert sorted(got) == ["BloodImage_00133", "BloodImage_00135"]
    assert got["BloodImage_00135"].tolist() == [[345, 42, 480, 185]]


def _field_item(source: str, colour, n_cells: int, seed: int) -> TrainItem:
    rng = np.random.default_rng(seed)
    img = np.full((120, 120, 3), 235, np.uint8)
    lab = np.zeros((120, 120), np.int32)
    for i in range(n_cells):
        y, x = rng.integers(10, 90, 2)
        img[y : y + 20, x : x + 20] = colour
        lab[y : y + 20, x : x + 20] = i + 1
    return TrainItem(image=img, labels=lab, source=source, name=f"{source}-{seed}")


def test_mosaic_patch_lays_fields_of_one_source_with_distinct_cells():
    """A mosaic patch: pieces of several fields of the source drawn first, every piece's cells kept apart."""
    from leukcore.detect.train_data import Recipe, mosaic_patch, sample_batch

    items = [_field_item("four-class", (120, 60, 170), 3, s) for s in range(4)]
    items += [_field_item("pbc", (40, 160, 40), 2, 10 + s) for s in range(4)]
    w = np.full(len(items), 1 / len(items))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        img, lab = mosaic_patch(items, w, rng, size=96)
        assert img.shape == (96, 96, 3) and lab.shape == (96, 96) and lab.dtype == np.int32
        # one source per patch: every cell purple (four-class) or every cell green (pbc), by its median colour
        kinds = {
            bool(np.median(img[lab == v][:, 2].astype(int) - img[lab == v][:, 1]) > 0) for v in np.unique(lab[lab > 0])
        }
        assert len(kinds) <= 1, kinds
        seen |= kinds
        # a label is one piece's cell: its pixels never straddle two pieces of the 2x2 or 3x3 layout
        for v in np.unique(lab[lab > 0]):
            ys, xs = np.nonzero(lab == v)
            for edges in (np.linspace(0, 96, 3).astype(int), np.linspace(0, 96, 4).astype(int)):
                py, px = np.searchsorted(edges, ys, "right"), np.searchsorted(edges, xs, "right")
                if len(set(py)) == 1 and len(set(px)) == 1:
                    break
            else:
                raise AssertionError(f"label {v} spans two pieces")
    assert seen == {True, False}
    x, p, d, wt = sample_batch(items, w, np.random.default_rng(1), 4, 64, 8, Recipe(mosaic=1.0))
    assert x.shape == (4, 3, 64, 64) and p.shape == (4, 1, 64, 64) and d.shape == (4, 8, 64, 64)


def test_mosaic_share_is_checked_and_recorded():
    import argparse
    import shlex

    from leukcore.cli.train_detector import register
    from leukcore.detect.train import DetectorTrainOptions, train_command

    with pytest.raises(ValueError, match="mosaic"):
        DetectorTrainOptions(mosaic=1.5).checked()
    cmd = train_command("DATA", "RUN", DetectorTrainOptions(mosaic=0.3, augmentation="mixed"))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(shlex.split(cmd)[1:])
    assert args.mosaic == 0.3 and args.augment == "mixed"


def test_wide_scale_share_is_checked_recorded_and_unties_scale_from_colour(monkeypatch):
    """``--wide-scale``: mild (not re-coloured) patches drawn at the strong recipe's 0.6-1.67x scale."""
    import argparse
    import shlex

    from leukcore.cli.train_detector import register
    from leukcore.detect import train_data
    from leukcore.detect.train import DetectorTrainOptions, train_command

    with pytest.raises(ValueError, match="wide_scale"):
        DetectorTrainOptions(wide_scale=-0.1).checked()
    cmd = train_command("DATA", "RUN", DetectorTrainOptions(mosaic=0.5, augmentation="mixed", wide_scale=0.5))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(shlex.split(cmd)[1:])
    assert args.wide_scale == 0.5 and args.mosaic == 0.5
    assert "--wide-scale" not in train_command("DATA", "RUN", DetectorTrainOptions())
    cmd = train_command("DATA", "RUN", DetectorTrainOptions(ignore_found_by="wbc-stardist"))
    assert parser.parse_args(shlex.split(cmd)[1:]).ignore_found_by == "wbc-stardist"

    rng = np.random.default_rng(0)
    mild = [train_data._scale_factor(rng, False, 0.2) for _ in range(400)]
    wide = [train_data._scale_factor(rng, False, 0.2, wide_scale=1.0) for _ in range(400)]
    assert 0.8 <= min(mild) and max(mild) <= 1.2
    assert min(wide) < 0.7 and max(wide) > 1.5 and 0.6 <= min(wide) and max(wide) <= 1.67
    # the colour recipe stays mild: a wide-scale mild patch never goes through the region-wise re-colouring
    called = []
    monkeypatch.setattr("leukcore.detect.augment.romanowsky_jitter", lambda *a, **k: called.append(1))
    item = _field_item("four-class", (120, 60, 170), 3, 0)
    for _ in range(20):
        img, lab = train_data.augment(item.image, item.labels, rng, size=64, strength="mild", wide_scale=1.0)
        assert img.shape == (64, 64, 3)
    assert not called


def test_cells_the_masks_lack_become_ignore_not_background():
    """``ignore_unlabelled``: a found object off every labelled instance is ignored; one touching an instance is not."""
    from leukcore.detect.masks import ignore_unlabelled

    lab = np.zeros((30, 30), np.int32)
    lab[2:8, 2:8] = 1
    lab[20:24, 20:24] = -1
    found = np.zeros_like(lab)
    found[5:10, 5:10] = 1  # overlaps instance 1: that cell or its neighbour, left alone
    found[12:18, 2:8] = 2  # a cell the masks lack
    found[19:26, 19:26] = 3  # around an ignored fragment
    out = ignore_unlabelled(lab, found)
    assert (out[12:18, 2:8] == -1).all()
    assert (out[8:10, 8:10] == 0).all() and (out[2:8, 2:8] == 1).all()
    assert (out[20:24, 20:24] == -1).all() and (out[19, 19] == -1)
    assert (lab[12:18, 2:8] == 0).all()  # a copy


def test_ignore_found_marks_the_shipped_detectors_cells_on_a_real_field():
    """On a bundled four-class field with no labels every cell the shipped detector finds becomes ignore; with the
    cells labelled, nothing does."""
    from leukcore.detect.data import read_rgb
    from leukcore.detect.masks import TrainItem, ignore_found
    from leukcore.detect.predict import detect_cells
    from leukcore.io import Slide
    from leukcore.sample import bundled_fields

    f = next(x for x in bundled_fields() if x.source == "all4class")
    img = read_rgb(f.path)
    from skimage.transform import rescale

    img = (rescale(img, f.mpp / 0.5, channel_axis=2, preserve_range=True) + 0.5).astype(np.uint8)
    n = len(detect_cells(Slide.from_array(img, mpp=0.5), "wbc-stardist", progress=None))
    assert n >= 2
    empty = TrainItem(image=img, labels=np.zeros(img.shape[:2], np.int32), source="four-class", name="f")
    out = ignore_found(empty, "wbc-stardist", 0.5)
    assert (out.labels == -1).any() and not (out.labels > 0).any()
    from scipy import ndimage as ndi

    assert ndi.label(out.labels == -1)[1] >= n - 1  # one ignored region per found cell (two may touch)
    full = TrainItem(image=img, labels=(out.labels == -1).astype(np.int32), source="four-class", name="f")
    assert not (ignore_found(full, "wbc-stardist", 0.5).labels == -1).any()


def test_ignore_found_by_touches_only_the_four_class_training_fields(monkeypatch):
    """``--ignore-found-by``: the detector's extra cells become ignore on four-class training fields only."""
    import leukcore.detect.data as D
    import leukcore.detect.masks as C
    import leukcore.detect.model as M
    from leukcore.detect.masks import TrainItem
    from leukcore.detect.train import DetectorTrainOptions, _training_items

    z = np.zeros((8, 8), np.int32)
    img = np.zeros((8, 8, 3), np.uint8)
    items = [TrainItem(img, z, "four-class", "a.jpg"), TrainItem(img, z, "bccd", "b"), TrainItem(img, z, "pbc", "c")]
    monkeypatch.setattr(D, "load_training_items", lambda *a, **k: (items, {"sources": {}}))
    monkeypatch.setattr(M.Detector, "load", classmethod(lambda cls, name, **kw: f"det:{name}"))
    seen = []
    monkeypatch.setattr(C, "ignore_found", lambda it, det, mpp: seen.append((it.name, det, mpp)) or it)
    _training_items("DATA", DetectorTrainOptions(ignore_found_by="m"), lambda s: None, 0.0)
    assert [n for n, _, _ in seen] == ["a.jpg"]  # the four-class item only
    assert seen[0][1:] == ("det:m", 0.5)
    seen.clear()
    _training_items("DATA", DetectorTrainOptions(), lambda s: None, 0.0)
    assert not seen
