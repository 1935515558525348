"""Conformance suite of hostile inputs (issue 18): every case of ``leukcore.testing.hostile`` through the API
(``open_slide`` + reading every tile, ``load_field`` / ``image_problem``) and the CLI (``leuk info --check``
in-process for every case, as subprocesses for all of them (slow) and a fast subset; ``leuk classify
--json`` and ``leuk analyze`` with a model for a few).

Asserted: the exit status (0 only for valid inputs), exactly one stderr line naming the file and the
problem, no traceback, no hang (timeouts), bounded memory (peak RSS of the children) and never a
summary that says ``complete: true`` over pixels that are not in the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from leukcore.io import SlideError, open_slide
from leukcore.io.integrity import verify_pixels
from leukcore.testing.hostile import CASE_NAMES, build_hostile_cases

#: peak RSS any child process may reach (the 1 x 60,000 PNG drove `leuk classify` to 3.65 GB before)
MAX_CHILD_RSS_MB = 2500
#: commands that load the models: the first use exports the classifier to ONNX (a cold cache on a
#: fresh machine, or new weights), which peaks near 3 GB once
MAX_MODEL_RSS_MB = 4000
CLI_TIMEOUT = 120


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    built = build_hostile_cases(root)
    yield {c.name: c for c in built}
    for c in built:  # let pytest remove the folder (a FIFO / chmod 000 file must not break cleanup)
        try:
            os.chmod(c.path, 0o644) if c.name == "unreadable_permissions" else None
        except OSError:
            pass


def _case(cases, name):
    c = cases.get(name)
    if c is None:
        pytest.skip(f"{name}: not built here (root reads anything / platform)")
    return c


def test_there_are_at_least_60_cases(cases):
    assert len(cases) >= 60
    assert set(cases) <= set(CASE_NAMES)
    assert len(set(CASE_NAMES)) == len(CASE_NAMES)
    kinds = {c.kind for c in cases.values()}
    assert kinds == {"ok", "warn", "open", "read"}


def _expect_error(c, err: BaseException):
    assert isinstance(err, c.error), f"{c.name}: {type(err).__name__}: {err}"
    msg = str(err)
    assert str(c.path) in msg, f"{c.name}: message does not name the file: {msg}"
    for w in c.words:
        assert w in msg.lower(), f"{c.name}: {w!r} not in {msg!r}"


# ------------------------------------------------------------------ API
@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_api_open_and_read(cases, name):
    c = _case(cases, name)
    if c.kind == "open":
        with pytest.raises(SlideError) as e:
            open_slide(c.path)
        _expect_error(c, e.value)
        return
    with open_slide(c.path) as s:
        if c.kind == "read":
            with pytest.raises(SlideError) as e:
                s.check_missing()
                verify_pixels(s)
            _expect_error(c, e.value)
            # the skip policy reads the rest as background and records what it skipped
            if s.damaged or "nan" in c.words:
                k = s.with_missing_policy("skip")
                verify_pixels(k)
                assert k.skipped_regions(), c.name
            return
        assert not s.damaged and s.info()["integrity"]["ok"]
        verify_pixels(s)
        th = s.thumbnail(64)
        assert th.dtype.name == "uint8" and th.ndim == 3 and th.shape[2] == 3
        text = " ".join(s.warnings).lower()
        if c.kind == "warn":
            assert all(w in text for w in c.words), (c.name, s.warnings)
        assert json.dumps(s.info())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_api_as_a_field(cases, name):
    """What `leuk classify` does before any model: geometry refused before decoding, near-uniform / noise
    images refused with a reason, damaged files an error naming the file."""
    from leukcore.field import image_problem, load_field

    c = _case(cases, name)
    if c.field == "error":
        with pytest.raises(SlideError) as e:
            load_field(c.path)
        assert str(c.path) in str(e.value)
        if c.field_error is not None:
            assert isinstance(e.value, c.field_error), (c.name, e.value)
        return
    img, _ = load_field(c.path)
    why = image_problem(img)
    if c.field == "refuse":
        assert why and ("no cell" in why or "not a blood smear" in why), (c.name, why)
    else:
        assert why is None, (c.name, why)


# ------------------------------------------------------------------ CLI, in-process (every case)
def _check_cli_result(c, rc, out, err, check_words=True):
    assert "Traceback" not in out + err, (c.name, err)
    if c.valid:
        assert rc == 0, (c.name, rc, err)
        info = json.loads(out)
        assert info["integrity"]["ok"] is True
        if c.kind == "warn":
            text = " ".join(info["warnings"]).lower()
            assert all(w in text for w in c.words), (c.name, info["warnings"])
    else:
        assert rc != 0, (c.name, out)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, (c.name, err)
        assert lines[0].startswith("leuk info: error:"), lines
        assert str(c.path) in lines[0] or os.fsdecode(c.path) in lines[0], lines
        if check_words:
            for w in c.words:
                assert w in lines[0].lower(), (c.name, w, lines[0])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_info_check_in_process(cases, name, capsys):
    from leukcore.cli import main

    c = _case(cases, name)
    rc = main(["info", "--check", "--json", str(c.path)])
    out, err = capsys.readouterr()
    _check_cli_result(c, rc, out, err)


# ------------------------------------------------------------------ CLI, subprocesses
#: each child writes its own peak RSS (KiB) here at exit: RUSAGE_CHILDREN would be the peak of every
#: child this pytest process ever reaped, other tests' included
#: (VmHWM of the process's own memory map: ru_maxrss would carry over the forked parent's size across exec)
_CHILD = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return line.split()[1]\n"
    "    return '0'\n"
    "atexit.register(lambda: open(os.environ['LEUK_TEST_RSS_FILE'], 'w').write(_hwm()))\n"
    "sys.argv = ['leuk', *sys.argv[1:]]\n"
    "runpy.run_module('leukcore', run_name='__main__')\n"
)
_PEAKS_KB: list = []


def _run(args, timeout=CLI_TIMEOUT):
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        rss_file = os.path.join(td, "rss")
        env = dict(os.environ, PYTHONIOENCODING="utf-8", LEUK_DEVICE="cpu", LEUK_TEST_RSS_FILE=rss_file)
        try:
            p = subprocess.run(
                [sys.executable, "-c", _CHILD, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                encoding="utf-8",
                errors="replace",
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"leuk {' '.join(args)}: no answer within {timeout} s (hang)")
        if os.path.exists(rss_file):
            _PEAKS_KB.append(float(open(rss_file).read() or 0))
    return p.returncode, p.stdout, p.stderr


def _children_peak_rss_mb() -> float:
    """Largest peak RSS of the ``leuk`` subprocesses this module ran (MiB)."""
    assert _PEAKS_KB, "no subprocess reported its peak memory"
    return max(_PEAKS_KB) / 1024.0


FAST_SUBSET = (
    "fifo",
    "png_1x60000",
    "tiff_60k_cut_in_offset_table",
    "png_huge_declared",
    "tiff_width0",
    "ome_mpp_40",
    "symlink_loop",
    "tiff_tile_bytecount0",
)


@pytest.mark.timeout(300)
def test_cli_info_subprocess_fast_subset(cases):
    _PEAKS_KB.clear()
    todo = [cases[n] for n in FAST_SUBSET if n in cases]
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda c: _run(["info", "--check", "--json", str(c.path)]), todo))
    for c, (rc, out, err) in zip(todo, results, strict=False):
        _check_cli_result(c, rc, out, err)
    assert _children_peak_rss_mb() < MAX_CHILD_RSS_MB


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_info_subprocess_every_case(cases):
    _PEAKS_KB.clear()
    todo = list(cases.values())
    with ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda c: _run(["info", "--check", "--json", str(c.path)]), todo))
    failures = []
    for c, (rc, out, err) in zip(todo, results, strict=False):
        try:
            _check_cli_result(c, rc, out, err)
        except AssertionError as e:
            failures.append(f"{c.name}: {e}")
    assert not failures, "\n".join(failures)
    assert _children_peak_rss_mb() < MAX_CHILD_RSS_MB


@pytest.mark.timeout(120)
def test_cli_info_text_shows_warnings(cases):
    c = cases["ome_physicalsize_abcd"]
    rc, out, err = _run(["info", str(c.path)])
    assert rc == 0 and "Traceback" not in err
    assert "warning:" in out and "abcd" in out and str(c.path) in out


# ------------------------------------------------------------------ model commands (a few cases each)
REFUSED_FIELDS = ("png_black", "png_white", "png_grey", "png_near_uniform", "png_noise", "png_one_pixel")
BAD_FIELDS = (
    "png_1x60000",
    "png_60000x1",
    "png_huge_field",
    "png_huge_declared",
    "zero_byte_png",
    "text_named_png",
    "fifo",
    "tiff_float_nan",
    "tiff_tile_bytecount0",
    "plain_directory",
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_classify_blank_images_get_no_label(cases):
    _PEAKS_KB.clear()
    names = ("field_png",) + REFUSED_FIELDS
    paths = [str(cases[n].path) for n in names]
    rc, out, err = _run(["classify", "--json", "--device", "cpu", *paths], timeout=500)
    assert rc == 0, err
    assert "Traceback" not in out + err
    recs = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert [r["path"] for r in recs] == paths
    assert recs[0]["label"] is not None
    for r in recs[1:]:
        assert r["label"] is None and r["reason"] and r["rule"] == "refused", r
    assert _children_peak_rss_mb() < MAX_MODEL_RSS_MB


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_classify_bad_files_one_line_each_bounded_memory(cases):
    _PEAKS_KB.clear()
    todo = [cases[n] for n in BAD_FIELDS if n in cases]
    rc, out, err = _run(["classify", "--json", "--device", "cpu", *[str(c.path) for c in todo]], timeout=500)
    assert rc == 2
    assert "Traceback" not in out + err
    assert not out.strip(), out  # no record that looks like an answer
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == len(todo), err
    for c, ln in zip(todo, lines, strict=False):
        assert ln.startswith("leuk classify: error:") and str(c.path) in ln, (c.name, ln)
    assert _children_peak_rss_mb() < MAX_MODEL_RSS_MB


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["tiff_tile_bytecount0", "zarr_missing_chunk_v2", "tiff_60k_cut_in_offset_table"])
def test_cli_analyze_refuses_missing_pixels_by_default(cases, name, tmp_path):
    c = cases[name]
    out_dir = tmp_path / "out"
    rc, out, err = _run(["analyze", str(c.path), "-o", str(out_dir), "--quiet", "--device", "cpu", "--mpp", "0.25"])
    assert rc != 0
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("leuk analyze: error:") and str(c.path) in lines[0], err
    summ = out_dir / "summary.json"
    assert not summ.exists() or json.loads(summ.read_text()).get("complete") is not True


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_analyze_skip_missing_records_regions_and_is_never_complete(cases, tmp_path):
    c = cases["tiff_tile_bytecount0"]
    out_dir = tmp_path / "out"
    rc, out, err = _run(
        ["analyze", str(c.path), "-o", str(out_dir), "--quiet", "--device", "cpu", "--mpp", "0.1", "--skip-missing"],
        timeout=500,
    )
    assert rc == 3, err
    assert "Traceback" not in out + err
    s = json.loads((out_dir / "summary.json").read_text())
    assert s["complete"] is False
    assert s["missing"]["count"] >= 1 and s["missing"]["skipped"] is True
    assert s["missing"]["boxes"][0]["box"] and "byte count 0" in s["missing"]["boxes"][0]["reason"]
    assert any("no pixel data" in w for w in s["warnings"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "incomplete" in lines[0] and str(c.path) in lines[0], err
