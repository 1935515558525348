"""The sign-off report (issue 16): ``write_report`` / ``leuk report`` on any results folder (reviewed or not,
detection only, partial, slide gone), counts model vs reviewed, thumbnails, warnings, sign-off and its hash
check, the recorded differential; the page is self-contained.  The browser check is tests/test_report_browser.py."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from leukcore.results import CellTable


@pytest.fixture(scope="module")
def sample_results(tmp_path_factory):
    from test_outputs_unchanged import case_fakes_sample

    out = tmp_path_factory.mktemp("report") / "sample"
    case_fakes_sample(out)
    return out


@pytest.fixture
def results(sample_results, tmp_path):
    dst = tmp_path / "res"
    shutil.copytree(sample_results, dst)
    return dst


def _external_refs(html: str) -> list[str]:
    """Anything that would make a browser fetch: src/href not data:, url(...), @import."""
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', html)
    bad = [r for r in refs if not r.startswith("data:") and not r.startswith("#")]
    bad += re.findall(r"url\(([^)]*)\)", html) + re.findall(r"@import", html)
    return bad


def _thumb_ids(html: str, kind: str) -> list[int]:
    m = re.search(rf'<div class="gallery" data-kind="{kind}"[^>]*>(.*?)</div>', html, re.S)
    return [int(v) for v in re.findall(r'data-cell="(\d+)"', m.group(1))] if m else []


def test_report_of_unreviewed_results(results):
    from leukcore.export.kinds import read_results
    from leukcore.report import REPORT_NAME, write_report

    table, summary = read_results(results)
    out = write_report(results)
    assert out == results / REPORT_NAME
    html = out.read_text()
    assert f"<title>White-cell review: {summary['slide']['name']}</title>" in html
    assert not _external_refs(html)
    assert 'data-state="unsigned"' in html and "Not reviewed" in html
    # counts: model == reviewed, per class confident cells; review row; total
    conf = table.confident_counts()
    for c, n in conf.items():
        row = re.search(rf'<tr data-class="{c}">(.*?)</tr>', html, re.S).group(1)
        assert re.findall(r"<td[^>]*>([^<]*)</td>", row)[0:4] == [
            str(n),
            f"{100 * n / len(table):.1f} %",
            str(n),
            f"{100 * n / len(table):.1f} %",
        ]
    nrev = int(table.df["review"].sum())
    assert re.search(rf'<tr data-class="review">.*?<td>{nrev}</td>', html, re.S)
    assert f'data-value="{summary["blast_percent"]}"' in html
    # thumbnails: every blast (confident ALL) and every review cell
    blasts = set(table.df.loc[(table.df["label"] == "ALL") & ~table.df["review"], "cell_id"])
    assert set(_thumb_ids(html, "blast")) == blasts
    assert set(_thumb_ids(html, "review")) == set(table.df.loc[table.df["review"], "cell_id"])
    assert html.count('class="thumb"') == len(blasts) + nrev
    assert "data:image/jpeg;base64," in html
    # models with version and weights hash
    assert re.search(r'<tr data-role="classifier"><td>classifier</td><td>fake-clf</td><td>2</td><td><code>1{64}', html)
    assert "not reviewed: every number is the model" in html


def test_reviewed_signed_then_changed(results):
    from leukcore.corrections import Corrections
    from leukcore.report import SIGNOFF_NAME, report_data, sign_off, signoff_state, write_report

    c = Corrections.open(results, reviewer="amy")
    ids = c.table.df["cell_id"].tolist()
    c.set(ids[:3], "normal")
    c.set([ids[5]], "review")
    d = report_data(results, thumbnails=False)
    assert d["review"]["corrected"] == 4 and d["review"]["reviewers"] == ["amy"]
    rows = {r["name"]: r for r in d["class_rows"]}
    reviewed = c.reviewed()
    assert rows["normal"]["reviewed"] == reviewed.confident_counts()["normal"]
    assert rows["review"]["reviewed"] == int(reviewed.df["review"].sum())
    assert d["reviewed"]["blast_percent"] == reviewed.summary()["blast_percent"]
    assert rows["normal"]["changed"]
    assert d["signoff"] is None

    with pytest.raises(ValueError, match="reviewer"):
        write_report(results, signed=True)
    out = write_report(results, results / "signed.html", reviewer="Dr Amy", signed=True)
    rec = json.loads((results / SIGNOFF_NAME).read_text())
    assert rec["reviewer"] == "Dr Amy" and rec["corrections_sha256"] == c.digest() and rec["corrections"] == 4
    assert rec["blast_percent"] == reviewed.summary()["blast_percent"]
    html = out.read_text()
    assert 'data-state="signed"' in html and "Signed off by Dr Amy" in html
    assert "4 cell(s) corrected by amy; last change 20" in html and " by Dr Amy</dd>" in html
    assert set(_thumb_ids(html, "review")) == set(reviewed.df.loc[reviewed.df["review"], "cell_id"])
    assert ids[5] in _thumb_ids(html, "review") and ids[0] not in _thumb_ids(html, "blast")

    c.undo()  # a change after the sign-off voids it
    st = signoff_state(results)
    assert not st["valid"] and "corrections changed" in st["reason"]
    html = write_report(results).read_text()
    assert 'data-state="invalid"' in html and "no longer valid" in html
    sign_off(results, "Dr Amy")
    assert signoff_state(results)["valid"]


def test_warnings(results):
    from leukcore.report import report_data

    s = json.loads((results / "summary.json").read_text())
    s["partial"] = True
    s["complete"] = False
    s["mpp"] = {
        "value": 0.25,
        "source": "estimated",
        "spread": 0.3,
        "n_cells": 12,
        "method": "scalenet",
        "reliable": False,
        "reason": "rulers disagree",
    }
    s["warnings"] = ["level 2: 3 tiles missing"]
    s["missing"] = {"count": 3, "boxes": [], "skipped": True}
    (results / "summary.json").write_text(json.dumps(s))
    d = report_data(results, thumbnails=False)
    w = "\n".join(d["warnings"])
    assert "partial run" in w and "incomplete results" in w
    assert "pixel size uncertain: rulers disagree" in w
    assert "slide integrity: level 2: 3 tiles missing" in w and "3 missing region(s)" in w
    assert "estimated from the image (scalenet, spread 0.30, 12 red cells)" in d["mpp"]["text"]
    assert "many cells left for review" not in w
    # many review cells: the reviewer leaves half the cells unidentified
    from leukcore.corrections import Corrections

    c = Corrections.open(results, reviewer="amy")
    c.set(c.table.df["cell_id"].tolist()[: len(c.table) // 2 + 1], "review")
    assert any("many cells left for review" in x for x in report_data(results, thumbnails=False)["warnings"])


def test_slide_gone_and_stale_corrections(results, tmp_path):
    from leukcore.corrections import Corrections
    from leukcore.report import write_report

    Corrections.open(results, reviewer="amy").set([1], "normal")
    s = json.loads((results / "summary.json").read_text())
    s["slide"]["path"] = str(tmp_path / "gone.ome.tif")
    s["slide"]["name"] = "gone.ome.tif"
    s["models"]["classifier"]["sha256"] = "9" * 64
    (results / "summary.json").write_text(json.dumps(s))
    html = write_report(results).read_text()
    assert "slide not found" in html and 'class="thumb"' not in html and "more not shown (slide not found)" in html
    assert "corrections not applied" in html and "classifier weights" in html


def test_detection_only_folder(tmp_path):
    """A folder with only cells.parquet (``leuk detect``): no summary, no classes; the report still comes out."""
    from leukcore.report import write_report

    polys = [np.array([[0, 0], [0, 4], [4, 4], [4, 0]], np.float32) + 10 * i for i in range(3)]
    t = CellTable.from_detections(
        np.array([[2 + 10 * i, 2 + 10 * i] for i in range(3)], float), polys, np.ones(3, np.float32), mpp=0.5
    )
    (tmp_path / "det").mkdir()
    t.to_parquet(tmp_path / "det" / "cells.parquet")
    html = write_report(tmp_path / "det").read_text()
    assert "no summary.json" in html and "detection only" in html and not _external_refs(html)


def test_cli_report_with_differential_and_sign(results, capsys):
    from leukcore.cli import main
    from leukcore.differential import read_differential

    assert main(["report", str(results), "--sign"]) == 2
    assert "--sign needs --reviewer" in capsys.readouterr().err
    out = results / "r.html"
    assert (
        main(
            [
                "report",
                str(results),
                "-o",
                str(out),
                "--differential",
                "20",
                "--order",
                "raster",
                "--reviewer",
                "amy",
                "--sign",
                "--max-thumbnails",
                "5",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "20-cell differential (raster)" in printed and f"report: {out}" in printed
    rec = read_differential(results)
    assert rec["n"] == 20 and rec["order"] == "raster" and rec["reviewer"] == "amy" and len(rec["cell_ids"]) == 20
    html = out.read_text()
    assert '<table id="differential" data-n="20">' in html and "First 20 cells in raster order" in html
    assert len(_thumb_ids(html, "blast")) == 5 and "more not shown (at most 5 per group)" in html
    assert 'data-state="signed"' in html
    assert main(["report", str(results / "nope")]) == 2


def test_pdf_without_chromium_keeps_the_html(results, monkeypatch, capsys):
    import leukcore.report as rp
    from leukcore.cli import main

    monkeypatch.setattr(rp, "find_chromium", lambda: None)
    assert main(["report", str(results), "--pdf"]) == 2
    assert "PDF needs headless Chromium" in capsys.readouterr().err
    assert (results / "report.html").is_file() and not (results / "report.pdf").exists()
