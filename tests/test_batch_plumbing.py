"""run_batch on a real dask.distributed LocalCluster (2 worker processes), with contract-obeying fakes
installed in each worker: resume, error isolation, unique names, batch files."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("distributed")

slow = pytest.mark.slow


def install_fakes():
    """Run on every worker: replace detection by the test fake (worker processes import this module)."""
    import leukcore.detect
    from test_pipeline_plumbing import fake_iter_detect

    leukcore.detect.iter_detect = fake_iter_detect
    return True


def _fake_settings_models():
    from test_pipeline_plumbing import FakeClassifier, FakeDetector

    return FakeDetector(), FakeClassifier()


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = Client(cluster)
    c.run(install_fakes)
    yield c
    c.close()
    cluster.close()


@pytest.fixture
def slides(tmp_path):
    from leukcore.io import write_slide
    from test_pipeline_plumbing import _disk_image

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    for i, rel in enumerate(["a/s1.ome.tif", "b/s1.ome.tif", "a/s2.ome.tif"]):
        img, _ = _disk_image(n=4 + i, size=600, seed=i)
        write_slide(src / rel, img, mpp=0.5, tile=256)
    (src / "a" / "broken.ome.tif").write_bytes(b"II*\x00 this is not a tiff")
    return src


@slow
def test_batch_resume_and_error_isolation(client, slides, tmp_path, monkeypatch):
    import leukcore.batch as B

    det, clf = _fake_settings_models()
    # models travel pickled to the workers (the load cache key is their str())
    out = tmp_path / "out"
    events = []
    res = B.run_batch(
        slides,
        out,
        cluster=B.BatchCluster(client=client),
        detector=det,
        classifier=clf,
        device="cpu",
        tile_size=256,
        progress=events.append,
    )
    assert res["n_total"] == 4 and res["n_done"] == 3 and res["n_error"] == 1
    names = sorted(r["slide"] for r in res.rows)
    assert names[0] == "broken" and names[1] == "s1-" + names[1][3:] and len(set(names)) == 4
    errs = json.loads((out / "errors.json").read_text())
    assert [e["slide"] for e in errs] == ["broken"] and "broken.ome.tif" in errs[0]["error"]
    import pandas as pd

    df = pd.read_csv(out / "batch_summary.csv")
    assert len(df) == 4 and df["slide"].is_unique
    assert set(df["status"]) == {"done", "error"}
    n_s2 = df.loc[df.slide == "s2", "cells"].item()
    assert n_s2 >= 6 and n_s2 == len(pd.read_parquet(out / "s2" / "cells.parquet"))
    assert events[-1].done == 4 and events[-1].total == 4
    # second run: the 3 complete slides are skipped, the broken one retried (and fails again)
    res2 = B.run_batch(
        slides, out, cluster=B.BatchCluster(client=client), detector=det, classifier=clf, device="cpu", tile_size=256
    )
    assert res2["n_skipped"] == 3 and res2["n_error"] == 1 and res2["n_done"] == 0


@slow
def test_batch_resumes_after_interruption(client, slides, tmp_path):
    import leukcore.batch as B

    det, clf = _fake_settings_models()
    srcs = B.find_slides(slides)
    srcs = [s for s in srcs if "broken" not in s.name]
    out = tmp_path / "out"
    B.run_batch(
        srcs, out, cluster=B.BatchCluster(client=client), detector=det, classifier=clf, device="cpu", tile_size=256
    )
    names = B.slide_names(srcs)
    # simulate a crash mid-slide: marker gone, a temp file left behind by the killed process
    victim = out / names[0]
    (victim / "summary.json").unlink()
    (victim / ".cells.csv.tmp-99999").write_text("half")
    before = {n: (out / n / "summary.json").stat().st_mtime_ns for n in names[1:]}
    res = B.run_batch(
        srcs, out, cluster=B.BatchCluster(client=client), detector=det, classifier=clf, device="cpu", tile_size=256
    )
    assert res["n_done"] == 1 and res["n_skipped"] == 2
    assert (victim / "summary.json").exists()
    assert not list(victim.glob(".*tmp-*"))
    assert before == {n: (out / n / "summary.json").stat().st_mtime_ns for n in names[1:]}


def test_find_slides_and_names(tmp_path):
    from leukcore.batch import find_slides, slide_names

    (tmp_path / "x" / "y.ome.zarr").mkdir(parents=True)
    (tmp_path / "x" / "y.ome.zarr" / "0").mkdir()
    (tmp_path / "x" / "a.svs").write_bytes(b"")
    (tmp_path / "x" / "notes.txt").write_text("hi")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "a.ome.tif").write_bytes(b"")
    found = find_slides(tmp_path)
    assert [p.name for p in found] == ["a.svs", "y.ome.zarr", "a.ome.tif"]
    names = slide_names(found)
    assert names[1] == "y" and names[0].startswith("a-") and names[2].startswith("a-") and names[0] != names[2]
    assert slide_names(found) == names
    lst = tmp_path / "list.txt"
    lst.write_text("# my slides\nx/a.svs\n\nz/a.ome.tif\n")
    assert find_slides(lst) == [tmp_path / "x" / "a.svs", tmp_path / "z" / "a.ome.tif"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_slides(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no slides"):
        find_slides(tmp_path / "empty")
