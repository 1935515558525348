"""ONNX Runtime backend of the detector: export cache, probe check and fallback, threads, and the
same cells as torch on the real bundled sample slide (a mosaic of 32 real fields), seams exact."""

import os
import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from leukcore.detect import Detector, detect_cells  # noqa: E402
from leukcore.detect import onnx_backend as ob  # noqa: E402
from leukcore.io import open_slide  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("leuk-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEUK_CACHE", str(d))
        yield d


@pytest.fixture(scope="module")
def dets(cache):
    t = Detector.load("wbc-stardist", device="cpu", backend="torch")
    o = Detector.load("wbc-stardist", device="cpu", backend="onnx")
    return t, o


@pytest.fixture(scope="module")
def sample():
    from leukcore.sample import sample_slide_path

    return sample_slide_path()


def test_export_is_cached_by_weights_hash_and_checked(dets, cache):
    t, o = dets
    assert t.backend == "torch" and o.backend == "onnx"
    files = list((cache / "onnx").glob("detector-*.onnx"))
    assert len(files) == 1 and t.card["weights"]["sha256"][:16] in files[0].name
    assert o.backend_check["prob"] < 1e-5 and o.backend_check["dist"] < 1e-5
    a = Detector.load("wbc-stardist", device="cpu")  # auto on CPU: ONNX, reusing the export
    assert a.backend == "onnx" and list((cache / "onnx").glob("detector-*.onnx")) == files
    assert a.info()["backend"] == "onnx"


def test_maps_equal_torch_for_any_shape_and_tta(dets, sample):
    from leukcore.detect.data import normalize_image

    t, o = dets
    with open_slide(sample) as s:
        x = normalize_image(s.read_region(1, 200, 200, 416, 288))
    for shape in ((416, 288), (128, 96), (64, 256)):  # dynamic H and W, one session
        b = np.stack([x[: shape[0], : shape[1]], x[-shape[0] :, -shape[1] :]])
        (pt, dt), (po, do) = t.predict_maps(b), o.predict_maps(b)
        assert po.shape == pt.shape and do.shape == dt.shape and po.dtype == np.float32
        assert np.abs(po - pt).max() < 1e-5
        assert np.abs(do - dt).max() < 1e-4 * max(1.0, np.abs(dt).max())
    try:
        t.tta = o.tta = 8
        (pt, dt), (po, do) = t.predict_maps(x[None]), o.predict_maps(x[None])
        assert np.abs(po - pt).max() < 1e-5 and np.abs(do - dt).max() < 1e-3
    finally:
        t.tta = o.tta = 1


def _cells(table):
    return table.df[["centroid_y", "centroid_x"]].to_numpy()


def _max_match_dist(a, b):
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    d = cdist(a, b)
    r, c = linear_sum_assignment(d)
    return float(d[r, c].max()) if len(r) else 0.0


def test_same_cells_as_torch_on_the_sample_slide(dets, sample):
    """Real field mosaic, the user's defaults (skipping + windows): identical count, centroids within 0.5 px."""
    t, o = dets
    with open_slide(sample) as s:
        ct = detect_cells(s, t)
        co = detect_cells(s, o)
    assert len(ct) >= 100  # ~200 white cells on the sample slide
    assert len(co) == len(ct)
    assert _max_match_dist(_cells(co), _cells(ct)) < 0.5
    assert co.meta["detector"]["backend"] == "onnx"


@pytest.mark.parametrize("windows", [True, False])
def test_onnx_seams_exact_at_512_1024_2048(dets, sample, windows):
    _, o = dets
    with open_slide(sample) as s:
        res = {ts: detect_cells(s, o, tile_size=ts, windows=windows) for ts in (512, 1024, 2048)}
    assert res[512].meta["n_tiles"] > res[1024].meta["n_tiles"] > res[2048].meta["n_tiles"] == 1
    ref = _cells(res[512])
    for ts in (1024, 2048):
        assert len(res[ts]) == len(ref)
        assert _max_match_dist(_cells(res[ts]), ref) < 1e-3


def test_outputs_deterministic_with_two_threads(cache, sample):
    o2 = Detector.load("wbc-stardist", device="cpu", backend="onnx", threads=2)
    with open_slide(sample) as s:
        a = detect_cells(s, o2, region=(0, 0, 1200, 1600))
        b = detect_cells(s, o2, region=(0, 0, 1200, 1600))
    assert a.df[["centroid_y", "centroid_x", "score"]].equals(b.df[["centroid_y", "centroid_x", "score"]])


def test_threads_default_and_explicit(cache):
    o = Detector.load("wbc-stardist", device="cpu", backend="onnx", threads=1)
    assert o.threads == 1 and o._onnx.session.get_session_options().intra_op_num_threads == 1
    d = Detector.load("wbc-stardist", device="cpu", backend="onnx")
    assert d.threads == len(os.sched_getaffinity(0))
    assert d._onnx.session.get_session_options().intra_op_num_threads == d.threads


def test_torch_backend_sets_torch_threads(cache):
    import torch

    before = torch.get_num_threads()
    try:
        t = Detector.load("wbc-stardist", device="cpu", backend="torch", threads=1)
        torch.set_num_threads(2)
        t.predict_maps(np.ones((1, 64, 64, 3), np.float32))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_falls_back_to_torch_when_the_export_disagrees(cache, monkeypatch):
    monkeypatch.setattr(ob, "PROBE_TOL", {"prob": -1.0, "dist": -1.0})  # nothing can pass
    with pytest.warns(RuntimeWarning, match="using torch"):
        d = Detector.load("wbc-stardist", device="cpu", backend="auto")
    assert d.backend == "torch" and d._onnx is None
    with pytest.raises(RuntimeError, match="disagrees"):
        Detector.load("wbc-stardist", device="cpu", backend="onnx")


def test_corrupt_cached_export_falls_back_and_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("LEUK_CACHE", str(tmp_path))
    d = Detector.load("wbc-stardist", device="cpu", backend="onnx")
    path = ob.detector_onnx_path(d.card, d._weights_key())
    path.write_bytes(b"not an onnx file")
    with pytest.warns(RuntimeWarning, match="using torch"):
        d2 = Detector.load("wbc-stardist", device="cpu", backend="auto")
    assert d2.backend == "torch" and not path.exists()  # the bad file is gone ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Detector.load("wbc-stardist", device="cpu").backend == "onnx"  # ... and re-exported


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        Detector.load("wbc-stardist", device="cpu", backend="tensorrt")


def test_memory_modes_same_maps_and_no_spinning(dets):
    """The bounded arena (default: shrunk after every run) changes where memory comes from, not the maps."""
    _, o = dets
    r = o._onnx
    assert r.memory == ob.MEMORY == "shrink" and r.run_options is not None
    opts = r.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = ob.probe_tiles(size=128)
    ref = r(x)
    for mode in ("off", "arena"):
        other = ob.DetectorOnnxRunner(r.path, threads=r.threads, memory=mode)
        p, d = other(x)
        assert np.array_equal(p, ref[0]) and np.array_equal(d, ref[1])
    with pytest.raises(ValueError, match="memory"):
        ob.DetectorOnnxRunner(r.path, threads=1, memory="huge")


def test_softplus_at_the_candidates_only_gives_the_same_cells():
    """Detection applies the distance head's softplus to the NMS candidates only: same cells as on the full map."""
    from leukcore.detect.onnx_backend import softplus
    from leukcore.detect.postprocess import instances_from_maps

    rng = np.random.default_rng(3)
    prob = np.zeros((96, 128), np.float32)
    yy, xx = np.mgrid[:96, :128]
    for cy, cx in rng.uniform(10, 86, (6, 2)):
        prob = np.maximum(prob, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0).astype(np.float32))
    logits = rng.normal(2.0, 1.0, (96, 128, 32)).astype(np.float32)
    a = instances_from_maps(prob, softplus(logits), prob_thresh=0.4, nms_thresh=0.3, origin=(0, 0))
    b = instances_from_maps(prob, logits, prob_thresh=0.4, nms_thresh=0.3, origin=(0, 0), dist_logits=True)
    assert len(a[0]) >= 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(softplus(np.array([-30.0, 0.0, 30.0])), [np.log1p(np.exp(-30.0)), np.log(2.0), 30.0])


def test_a_loaded_detector_pickles_to_a_worker_with_its_backend():
    """run_batch ships loaded models to dask workers by pickle: the ONNX sessions are reopened there."""
    import pickle

    from leukcore.detect import Detector

    det = Detector.load("wbc-stardist", device="cpu", backend="onnx", threads=2)
    x = np.random.default_rng(0).uniform(0.3, 1.0, (1, 64, 64, 3)).astype(np.float32)
    p0, d0 = det.predict_maps(x)
    back = pickle.loads(pickle.dumps(det))
    assert back.backend == "onnx" and back._onnx is not None and back is not det
    p1, d1 = back.predict_maps(x)
    assert np.array_equal(p0, p1) and np.array_equal(d0, d1)
    p2, _ = back.predict_maps_one_core(x)  # the side-by-side session and its lock work after the trip
    assert np.allclose(p0, p2, atol=1e-6)
