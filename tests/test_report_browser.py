"""The sign-off report in a real browser: headless Chromium over the DevTools protocol (tests/_browser.py).

A reviewed, signed results folder of the bundled sample slide (fake models, fast) is reported; the page is
opened from disk and checked by content (title, status, counts per class, blast percentage, the number of
thumbnails and that each one decoded, the differential) and it requests nothing beyond its own file; then
it prints to PDF with ``leuk report --pdf``.  Needs the Debian ``chromium`` package.
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("websocket", reason="needs websocket-client (the dev extra)")

from _browser import DevTools, chromium_path, launch_chromium, page_target  # noqa: E402


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """Sample-slide results (fakes) with three corrections, a 50-cell differential and a sign-off."""
    from leukcore.corrections import Corrections
    from leukcore.differential import differential, record_differential
    from leukcore.report import write_report
    from test_outputs_unchanged import case_fakes_sample

    out = tmp_path_factory.mktemp("report-browser") / "sample"
    case_fakes_sample(out)
    c = Corrections.open(out, reviewer="amy")
    ids = c.table.df["cell_id"].tolist()
    c.set(ids[:2], "normal")
    c.set([ids[4]], "review")
    record_differential(out, differential(c.reviewed(), n=50, order="random", seed=1), reviewer="amy")
    html = write_report(out, reviewer="Dr Amy", signed=True)
    return out, html, c.reviewed()


@pytest.fixture
def chromium(tmp_path):
    if chromium_path() is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium; tools/test.sh installs it)")
    with launch_chromium(tmp_path / "profile") as port:
        yield port


@pytest.mark.slow
def test_report_renders_in_chromium(reviewed, chromium, tmp_path):
    out, html, table = reviewed
    url = html.resolve().as_uri()
    dt = DevTools(page_target(chromium))
    try:
        for domain in ("Network", "Page", "Runtime", "Log"):
            dt.call(f"{domain}.enable")
        dt.call("Page.navigate", url=url)
        dt.wait_for("document.readyState === 'complete'")
        dt.wait_for("Array.from(document.images).every(i => i.complete)")
        title = dt.eval("document.title")
        status = dt.eval("document.getElementById('status').dataset.state")
        status_text = dt.eval("document.getElementById('status').textContent")
        counts = dt.eval(
            "Object.fromEntries(Array.from(document.querySelectorAll('#counts tr[data-class]'))"
            ".map(r => [r.dataset.class, Array.from(r.cells).map(c => c.textContent.trim())]))"
        )
        blast = dt.eval("document.getElementById('blast-reviewed').dataset.value")
        thumbs = dt.eval(
            "Array.from(document.querySelectorAll('img.thumb')).map(i => "
            "[i.closest('.gallery').dataset.kind, +i.dataset.cell, i.naturalWidth, i.naturalHeight])"
        )
        diff_n = dt.eval("document.getElementById('differential').dataset.n")
        models = dt.eval("Array.from(document.querySelectorAll('#models tr[data-role]')).map(r => r.dataset.role)")
        dt.screenshot(tmp_path / "report.png")
    finally:
        dt.close()
    assert title == f"White-cell review: {table.meta['slide']}"
    assert status == "signed" and "Signed off by Dr Amy" in status_text
    n = len(table)
    for c, k in table.confident_counts().items():
        assert counts[c][3] == str(k) and counts[c][4] == f"{100 * k / n:.1f} %"
    assert counts["review"][3] == str(int(table.df["review"].sum()))
    assert float(blast) == pytest.approx(table.summary()["blast_percent"])
    df = table.df
    want_blast = set(df.loc[(df["label"] == "ALL") & ~df["review"], "cell_id"])
    want_review = set(df.loc[df["review"], "cell_id"])
    assert {t[1] for t in thumbs if t[0] == "blast"} == want_blast
    assert {t[1] for t in thumbs if t[0] == "review"} == want_review
    assert len(thumbs) == len(want_blast) + len(want_review)
    assert all(t[2] == 96 and t[3] == 96 for t in thumbs)  # every thumbnail decoded
    assert diff_n == "50" and models == ["detector", "classifier"]
    urls = [e["params"]["request"]["url"] for e in dt.events if e.get("method") == "Network.requestWillBeSent"]
    assert [u for u in urls if not u.startswith("data:")] == [url]  # nothing but the page itself
    problems = [
        e
        for e in dt.events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]
    assert not problems, problems  # no CSP violation
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_leuk_report_pdf(reviewed, tmp_path):
    if chromium_path() is None:
        pytest.skip("no chromium binary")
    from leukcore.cli import main

    out, _, _ = reviewed
    res = tmp_path / "res"
    shutil.copytree(out, res)
    assert main(["report", str(res), "-o", str(tmp_path / "rep.html"), "--pdf"]) == 0
    pdf = (tmp_path / "rep.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
