"""`leuk batch` with the REAL shipped models on a real dask.distributed LocalCluster (worker processes):
two small real-content slides + one corrupt file; error isolation, batch files, resume after interruption."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from test_pipeline_e2e import _classifier

    _classifier()
    from leukcore.sample import build_mosaic, bundled_fields

    fields = bundled_fields()
    four = [f for f in fields if f.source == "all4class"]
    bccd = [f for f in fields if f.source == "bccd"]
    src = tmp_path_factory.mktemp("archive")
    (src / "site1").mkdir()
    (src / "site2").mkdir()
    build_mosaic([four[1], bccd[2]], src / "site1" / "case.ome.tif", grid=(1, 2), mpp=0.25, shuffle=None)
    build_mosaic([bccd[3], four[-2]], src / "site2" / "case.ome.tif", grid=(1, 2), mpp=0.25, shuffle=None)
    (src / "site2" / "truncated.ome.tif").write_bytes(b"II*\x00\x08\x00\x00\x00garbage")
    return src


def test_leuk_batch_cli_isolation_and_resume(archive, tmp_path, capsys):
    import pandas as pd

    from leukcore.cli import main
    from leukcore.export.summary import is_complete

    out = tmp_path / "out"
    from test_pipeline_e2e import _classifier

    clf = _classifier()
    rc = main(["batch", str(archive), "-o", str(out), "--workers", "2", "--device", "cpu", "--quiet", "--model", clf])
    assert rc == 1  # one slide failed -> non-zero exit, others done
    df = pd.read_csv(out / "batch_summary.csv")
    assert len(df) == 3 and df["slide"].is_unique
    done = df[df.status == "done"]
    assert len(done) == 2 and all(n.startswith("case-") for n in done["slide"])  # same stem -> hashed names
    assert (done["cells"] >= 1).all()
    errs = json.loads((out / "errors.json").read_text())
    assert [e["slide"] for e in errs] == ["truncated"] and "truncated.ome.tif" in errs[0]["error"]
    for name in done["slide"]:
        assert is_complete(out / name)
    assert df["worker_pid"].dropna().nunique() >= 1
    assert "caveats" in df.columns

    # interrupted run: one slide lost its completion marker mid-write -> only it is redone
    victim = out / done["slide"].iloc[0]
    keep = out / done["slide"].iloc[1]
    (victim / "summary.json").unlink()
    mtime = (keep / "summary.json").stat().st_mtime_ns
    rc = main(["batch", str(archive), "-o", str(out), "--workers", "1", "--device", "cpu", "--quiet", "--model", clf])
    assert rc == 1
    df2 = pd.read_csv(out / "batch_summary.csv")
    st = dict(zip(df2.slide, df2.status, strict=False))
    assert st[victim.name] == "done" and st[keep.name] == "skipped" and st["truncated"] == "error"
    assert (keep / "summary.json").stat().st_mtime_ns == mtime
    assert is_complete(victim)
    a = pd.read_parquet(victim / "cells.parquet")
    assert len(a) == int(df.loc[df.slide == victim.name, "cells"].item())
    assert "slides: 3" in capsys.readouterr().out
