"""The caveats a run is read with (leukcore.caveats): said on the CLI, in summary.json and in the report."""

from pathlib import Path

import numpy as np
from PIL import Image

from leukcore.caveats import mpp_caveat, run_caveats, stain_caveat

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample"
UNSURE = {"value": 0.31, "source": "estimated", "reliable": False, "reason": "rulers disagree"}
FAR = {"applied": True, "distance": 2.45, "unlike_training": True}


def test_only_an_unreliable_estimate_and_a_far_stain_have_caveats():
    assert mpp_caveat(UNSURE) == (
        "pixel size uncertain: rulers disagree (estimated 0.31 um/px); re-run with the slide's real pixel size (--mpp)"
    )
    assert mpp_caveat({**UNSURE, "reliable": True}) is None
    assert mpp_caveat({**UNSURE, "source": "user"}) is None  # the user's own pixel size is not second-guessed
    assert mpp_caveat(None) is None and stain_caveat(None) is None
    assert stain_caveat({**FAR, "unlike_training": False}) is None
    assert "(2.5 template standard deviations away)" in stain_caveat(FAR)
    assert run_caveats(UNSURE, FAR) == [mpp_caveat(UNSURE), stain_caveat(FAR)]
    assert run_caveats() == []


def _field(tmp_path, rbc=None):
    from leukcore.detect.augment import restain
    from leukcore.detect.data import read_rgb

    img = read_rgb(sorted((SAMPLE / "bccd").glob("*.jpg"))[0])
    if rbc:
        img = restain(img, rbc, "white", "as-is", lab=None)
    p = tmp_path / f"field-{rbc or 'own'}.png"
    Image.fromarray(np.ascontiguousarray(img)).save(p)
    return p


def test_leuk_detect_says_when_the_stain_is_unlike_training(tmp_path, capsys):
    import json

    from leukcore.cli import main

    for rbc, expect in ((None, False), ("orange", True)):
        out = tmp_path / f"out-{rbc}"
        rc = main(["detect", str(_field(tmp_path, rbc)), "-o", str(out), "--mpp", "0.092", "--device", "cpu"])
        err = capsys.readouterr().err
        meta = json.loads((out / "detect_meta.json").read_text())
        assert rc == 0 and meta["stain"]["unlike_training"] is expect
        assert ("stain unlike the detector's training slides" in err) is expect
        assert "pixel size uncertain" not in err  # given with --mpp


def test_summary_and_report_carry_the_caveats(tmp_path):
    from leukcore.pipeline import analyze_slide
    from leukcore.report.facts import report_data

    res = analyze_slide(str(_field(tmp_path, "orange")), classifier=None, mpp=0.092, out_dir=tmp_path / "res")
    s = res.summary
    assert s["stain"]["unlike_training"] is True and s["stain"]["distance"] > 2.0
    assert s["caveats"] == [stain_caveat(s["stain"])]
    d = report_data(tmp_path / "res", thumbnails=False)
    assert stain_caveat(s["stain"]) in d["warnings"]


def test_a_batch_row_carries_the_slides_caveats():
    from leukcore.export.summary import summary_row

    row = summary_row({"slide": {"name": "s1"}, "mpp": UNSURE, "caveats": run_caveats(UNSURE, FAR)})
    assert row["caveats"] == f"{mpp_caveat(UNSURE)}; {stain_caveat(FAR)}"
    assert summary_row({"slide": {"name": "s2"}})["caveats"] == ""
