"""The detector settles a disagreement of the two pixel-size rulers (leukcore.detect.scale)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from leukcore.detect.data import read_rgb
from leukcore.mpp import estimate_mpp

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample"
FOURCLASS_MPP = 0.535


@pytest.fixture(scope="module")
def det():
    from leukcore.detect.model import Detector

    return Detector.load("wbc-stardist")


@pytest.fixture(scope="module")
def field():
    # four fields of one class folder side by side: enough white cells for the counts to mean something
    files = sorted((SAMPLE / "all4class" / "Pro").glob("*.jpg"))[:4]
    tiles = [read_rgb(f)[:224, :224] for f in files]
    return np.ascontiguousarray(np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0))


def _disagreeing(field, rbc_mpp, net_mpp):
    e = estimate_mpp(field)
    return replace(
        e,
        mpp=rbc_mpp,
        method="rbc-diameter",
        rbc_mpp=rbc_mpp,
        scalenet_mpp=net_mpp,
        reliable=False,
        reason="rulers disagree",
    )


def test_red_cell_ruler_reading_lobes_is_overruled_by_the_detector(field, det):
    """Red cells measured as fragments (pixel size 3x too large): at that scale the detector splits
    white cells into lobes and the count keeps climbing; at the network's scale it does not."""
    from leukcore.detect.scale import settle_disagreement

    e = settle_disagreement(field, _disagreeing(field, 3.0 * FOURCLASS_MPP, FOURCLASS_MPP), det)
    assert e.mpp == pytest.approx(FOURCLASS_MPP)
    assert e.method == "scalenet" and not e.reliable
    assert "detector check" in e.reason and "network used" in e.reason


def _network_reads(field, det, factor):
    from leukcore.detect.scale import settle_disagreement

    wrong = factor * FOURCLASS_MPP
    return settle_disagreement(
        field, replace(_disagreeing(field, FOURCLASS_MPP, wrong), mpp=wrong, method="scalenet"), det
    )


def test_network_reading_three_times_is_overruled_by_the_detector(field, det):
    """The other way round: the network reads three times the pixel size, the red cells are right."""
    e = _network_reads(field, det, 3.0)
    assert e.mpp == pytest.approx(FOURCLASS_MPP) and e.method == "rbc-diameter"
    assert "red cells used" in e.reason and not e.reliable


def test_an_undecided_check_keeps_the_answer_flagged(field, det):
    """At twice the pixel size detector v6 keeps these cells whole (growth 1.16 against 1.05 at the true one, less
    than the 0.15 margin): the check cannot tell, so the estimator's answer stands and stays flagged unreliable,
    with both counts in the reason (with v5 the red cells won here)."""
    e = _network_reads(field, det, 2.0)
    assert not e.reliable
    assert "detector check undecided" in e.reason and "network 1.070 um/px" in e.reason


def test_agreeing_rulers_are_left_alone(field, det, monkeypatch):
    """No disagreement: the detector is not run at all."""
    import leukcore.detect.scale as sc

    def boom(*a, **k):
        raise AssertionError("detector run without a disagreement")

    monkeypatch.setattr(sc, "fragmentation", boom)
    e = estimate_mpp(field)
    e = replace(e, rbc_mpp=e.mpp, scalenet_mpp=e.mpp * 1.2)
    assert sc.settle_disagreement(field, e, det) is e


def test_fragmentation_counts_grow_when_the_pixel_size_is_too_large(field, det):
    """The measurement itself: growth at 3x the pixel size is larger than at the true one."""
    from leukcore.detect.scale import fragmentation

    n, _, g_true = fragmentation([field], det, FOURCLASS_MPP)
    _, _, g_big = fragmentation([field], det, 3.0 * FOURCLASS_MPP)
    assert n >= 1 and g_big > g_true
    assert np.isfinite(g_true)


def test_a_single_cell_crop_is_not_given_to_the_fragments(det):
    """One white cell filling a small crop (a single-cell image): at the right pixel size the detector finds none
    or one, at a pixel size 7x too large the cell falls apart into fragments that keep multiplying; a count of
    fragments must not win on its own (it did: Zheng 2018 crops read at 0.88 um/px and called ALL)."""
    from leukcore.detect import scale as sc

    counts = {0.124: (0, 0, 1.0), 0.884: (5, 7, 8 / 6)}  # measured on Zheng 296.bmp
    img = np.full((120, 120, 3), 200, np.uint8)
    from leukcore.mpp import MppEstimate

    e = MppEstimate(
        mpp=0.124,
        spread=0.2,
        n_cells=3,
        method="scalenet",
        diameter_px=10.0,
        reliable=False,
        reason="",
        rbc_mpp=0.884,
        scalenet_mpp=0.124,
    )
    import unittest.mock as um

    with (
        um.patch.object(sc, "_search_regions", lambda x: [img]),
        um.patch.object(sc, "fragmentation", lambda regions, d, m: counts[round(m, 3)]),
    ):
        out = sc.settle_disagreement(img, e, det)
        assert out.mpp == pytest.approx(0.124) and "undecided" in out.reason
        counts[0.884] = (6, 6, 1.0)  # whole cells at the red cells' scale: they win
        out = sc.settle_disagreement(img, e, det)
        assert out.mpp == pytest.approx(0.884) and "red cells used" in out.reason
