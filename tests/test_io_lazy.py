"""Opening a big pyramid reads metadata only: RSS barely grows and only the tiles under a region are decoded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from leukcore.testing.bigslide import write_repeated_tile_slide
from leukcore.testing.slides import sample_field


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    p = tmp_path_factory.mktemp("big") / "big.ome.tif"
    tile = np.ascontiguousarray(np.tile(sample_field(0, "bccd"), (2, 1, 1))[:512, :512])
    write_repeated_tile_slide(str(p), (24_000, 24_000), tile, mpp=0.25)  # 1.7 GB of RGB if decoded
    return p


def test_open_and_read_region_are_lazy(big):
    code = f"""
import json, psutil
import numpy as np, dask.array, zarr, tifffile
from leukcore.io import open_slide
from leukcore.testing.slides import n_reads
proc = psutil.Process()
rss0 = proc.memory_info().rss
s = open_slide({str(big)!r})
rss1 = proc.memory_info().rss
reads_after_open = n_reads(s)
r = s.read_region(0, 10_000, 7_000, 1024, 1024)
rss2 = proc.memory_info().rss
readers = s._readers
print('@@' + json.dumps(dict(open_mb=(rss1 - rss0) / 2**20, read_mb=(rss2 - rss0) / 2**20,
      reads_after_open=reads_after_open, reads_region=n_reads(s), shape=list(s.shape), levels=s.n_levels,
      region_mean=float(r.mean()))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("@@")][-1][2:])
    assert out["shape"] == [24000, 24000] and out["levels"] == 7
    assert out["reads_after_open"] == 0
    assert out["reads_region"] == 1  # one windowed read of the level-0 store
    assert out["open_mb"] < 60, out  # a decoded level 0 would be 1650 MB
    assert out["read_mb"] < 120, out
    assert 50 < out["region_mean"] < 250  # real content, not fill value


def test_region_decodes_only_tiles_under_it(big):
    from leukcore.io import open_slide

    with open_slide(big) as s:
        arr = s._readers[0].getter(s._readers[0].source.get())
        store = getattr(getattr(arr, "store_path", None), "store", None)
        if store is None or not hasattr(store, "get"):
            pytest.skip("zarr store internals changed")
        keys = []
        orig = store.get

        async def spy(key, *a, **k):
            keys.append(key)
            return await orig(key, *a, **k)

        store.get = spy
        try:
            s.read_region(0, 512 * 7 + 100, 512 * 9 + 100, 1024, 1024)  # unaligned: 3 x 3 tiles
        finally:
            del store.get
        chunk_keys = [k for k in keys if not k.endswith(("zarr.json", ".zarray", ".zattrs", ".zgroup"))]
        assert len(chunk_keys) == 9, keys


def test_reads_never_import_dask_distributed(big):
    """Reads use local threads by callable: dask resolves a scheduler *name* by importing distributed (~0.25 s
    of every run's first read, issue 17)."""
    code = f"""
import sys
from leukcore.io import open_slide
with open_slide({str(big)!r}) as s:
    s.thumbnail(512)
    s.read_region(s.n_levels - 1, 0, 0, 64, 64)
print('@@', 'distributed' in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "@@ False" in r.stdout, r.stdout
