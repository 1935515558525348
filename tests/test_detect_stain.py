"""Slide-level stain normalisation of the detector's input (leukcore.detect.stain)."""

from pathlib import Path

import numpy as np
import pytest

from leukcore.detect import stain as S
from leukcore.detect.data import background_color, read_rgb

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukcore" / "data" / "sample"


def _fields():
    return [read_rgb(f) for f in sorted((SAMPLE / "bccd").glob("*.jpg"))[:2]]


def _template():
    return S.template_of(_fields())


def test_lookup_table_matches_the_per_pixel_map():
    img = _fields()[0]
    bg = background_color(img)
    lut = S.StainNormalizer.for_image(img, bg, _template())
    direct = S.StainNormalizer.for_image(img, bg, _template(), use_lut=False)
    a, b = lut(img), direct(img)
    assert a.shape == img.shape and a.dtype == np.float32
    assert np.percentile(np.abs(a - b), 99) < 3 / 255  # 7-bit table: within the quantisation step
    assert np.abs(a - b).max() < 12 / 255


def test_table_filled_colour_by_colour_equals_the_whole_grid_at_once():
    """Entries are filled as tiles show their colours; each equals the whole-grid build (the shipped v4 inputs)."""
    img = _fields()[0]
    bg = background_color(img)
    norm = S.StainNormalizer.for_image(img, bg, _template())
    tile = img[:120, :160]
    out = norm(tile)  # fills only the colours this tile shows
    n = 1 << S._LUT_BITS
    sh = 8 - S._LUT_BITS
    assert norm._filled.sum() == len(np.unique((tile >> sh).reshape(-1, 3), axis=0))
    v = (np.arange(n, dtype=np.float32) + 0.5) * (256.0 / n)
    grid = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(n * n, n, 3)
    whole = np.round(S.reinhard(grid, norm.bg, norm.stats, norm.template) * 255.0).astype(np.uint8)
    whole = whole.reshape(n, n, n, 3)
    ref = whole[tile[..., 0] >> sh, tile[..., 1] >> sh, tile[..., 2] >> sh].astype(np.float32) * np.float32(1 / 255)
    assert np.array_equal(out, ref)
    assert np.array_equal(norm.lut(), whole)  # every entry, the rest filled at once


def test_the_map_is_per_pixel_so_tiles_agree_with_the_whole():
    img = _fields()[0]
    norm = S.StainNormalizer.for_image(img, background_color(img), _template())
    whole = norm(img)
    assert np.array_equal(whole[100:300, 50:250], norm(img[100:300, 50:250]))


def test_glass_stays_glass_and_stained_pixels_move_to_the_template():
    img = _fields()[0]
    bg = background_color(img)
    tpl = np.array([[60.0, 30.0, -30.0], [12.0, 10.0, 12.0]], np.float32)  # a far bluer template
    out = S.reinhard(img, bg, S.stain_stats(img, bg), tpl)
    glass = S._stained_weight(S._white_balanced(img, bg)) == 0
    assert glass.mean() > 0.01  # pixels at least as bright as the glass colour
    assert np.abs(out[glass] - S._white_balanced(img, bg)[glass]).max() < 1e-6
    st = S.stain_stats(np.round(out * 255).astype(np.uint8), np.full(3, 255.0))
    before = S.stain_stats(img, bg)
    assert st is not None and np.abs(st[0] - tpl[0]).max() < 10.0  # sRGB clipping and glass blend aside
    assert np.abs(st[0] - tpl[0]).max() < 0.5 * np.abs(before[0] - tpl[0]).max()


def test_a_re_stained_copy_comes_back_close_to_the_original():
    """The point of it: the same field in another lab's colours reaches the network in nearly the same colours."""
    from leukcore.detect.augment import restain

    img = _fields()[0]
    tpl = _template()
    other = restain(img, "deep-red", "green", "as-is", lab=None)

    def net_input(a, normalise):
        bg = background_color(a)
        return (
            S.StainNormalizer.for_image(a, bg, tpl, use_lut=False)(a)
            if normalise
            else np.clip(a / bg.reshape(1, 1, 3), 0, 1)
        )

    before = np.abs(net_input(other, False) - net_input(img, False)).mean()
    after = np.abs(net_input(other, True) - net_input(img, True)).mean()
    assert after < 0.6 * before


def test_too_few_stained_pixels_means_white_balance_only():
    blank = np.full((64, 64, 3), 230, np.uint8)
    assert S.stain_stats(blank, np.full(3, 230.0)) is None
    out = S.StainNormalizer.for_image(blank, np.full(3, 230.0), _template(), use_lut=False)(blank)
    assert np.allclose(out, 1.0)


def test_a_card_with_an_unknown_normalisation_is_refused():
    from leukcore.detect import Detector

    det = Detector.load("wbc-stardist", backend="torch")
    card = dict(det.card)
    card["input"] = {**card["input"], "normalization": {"type": "macenko"}}
    det2 = Detector.from_network(det.net, card)
    with pytest.raises(ValueError, match="unknown input normalization 'macenko'"):
        _ = det2.stain_template


def test_cached_training_cells_are_keyed_by_the_detectors_input_normalisation():
    """Same weights read through another normalisation find other cells: the crop cache must not mix them."""
    from leukcore.detect import Detector
    from leukcore.train.cells import detector_finder

    det = Detector.load("wbc-stardist", backend="torch")
    plain = dict(det.card)
    plain["input"] = {k: v for k, v in det.card["input"].items() if k != "normalization"}
    a = detector_finder(det).name
    b = detector_finder(Detector.from_network(det.net, plain)).name
    assert a != b and a.split(":")[:3] == b.split(":")[:3]  # same model name and weights hash


def test_a_run_records_how_far_the_slides_stain_is_from_the_training_template():
    from leukcore.detect import Detector, detect_cells
    from leukcore.detect.augment import restain
    from leukcore.io import Slide

    det = Detector.load("wbc-stardist", backend="torch")
    img = _fields()[0]
    own = detect_cells(Slide.from_array(img, mpp=0.092), det, progress=None).meta["stain"]
    assert own["applied"] and own["distance"] < S.UNLIKE_TRAINING_DISTANCE and not own["unlike_training"]
    red = restain(img, "deep-red", "white", "as-is", lab=None)
    other = detect_cells(Slide.from_array(red, mpp=0.092), det, progress=None).meta["stain"]
    assert other["distance"] > own["distance"]


def test_thresholds_are_tuned_on_the_input_the_detector_sees():
    """A stain-normalising detector is tuned on normalised fields, not on plain white balance."""
    from leukcore.detect.data import field_input, normalize_image
    from leukcore.detect.train import tune_thresholds

    img = _fields()[0][:96, :96]
    tpl = _template()
    seen = []

    class Recording:
        mpp, multiple, stain_template = 0.5, 4, tpl

        def predict_maps(self, x):
            seen.append(x[0])
            return np.zeros(x.shape[:3], np.float32), np.ones(x.shape[:3] + (16,), np.float32)

    tune_thresholds(
        Recording(), {"v": [(img, ("boxes", np.zeros((0, 4))))]}, probs=(0.5,), nmss=(0.4,), min_cells=(4.0,)
    )
    np.testing.assert_allclose(seen[0], field_input(img, tpl), atol=1e-6)
    assert np.abs(seen[0] - normalize_image(img)).max() > 0.05


def test_table_fill_failure_is_raised_and_leaves_no_entry_marked(monkeypatch):
    """A failing colour computation raises in the thread that asked; nothing is marked filled, so a later call
    computes the entries again (no half-filled table read as done)."""
    img = _fields()[0]
    norm = S.StainNormalizer.for_image(img, background_color(img), _template())
    calls = []

    def boom(*a, **k):
        calls.append(1)
        raise RuntimeError("colour conversion failed")

    monkeypatch.setattr(S, "reinhard", boom)
    with pytest.raises(RuntimeError, match="colour conversion failed"):
        norm(img[:50, :50])
    assert not norm._filled.any()
    monkeypatch.undo()
    out = norm(img[:50, :50])
    assert out.shape == (50, 50, 3) and norm._filled.any()


def test_tiles_read_side_by_side_fill_one_table():
    """Threads normalising tiles at once (the detector's reader threads) get the one-thread values."""
    from concurrent.futures import ThreadPoolExecutor

    img = _fields()[0]
    bg, tpl = background_color(img), _template()
    ref = S.StainNormalizer.for_image(img, bg, tpl)
    shared = S.StainNormalizer.for_image(img, bg, tpl)
    tiles = [img[y : y + 96, x : x + 96] for y in range(0, 288, 96) for x in range(0, 384, 96)]
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(shared, tiles))
    for t, o in zip(tiles, outs, strict=True):
        assert np.array_equal(o, ref(t))


def test_ratio_bounds_read_one_pair_or_one_per_lab_channel_and_refuse_nonsense():
    assert S.ratio_bounds() == ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    assert S.ratio_bounds([[0.5, 1.0, 1.0], [1.0, 1.0, 1.0]]) == ((0.5, 1.0, 1.0), (1.0, 1.0, 1.0))
    for bad in ([0.0, 1.0], [1.0, 0.5], [[0.5, 0.5], [1.0, 1.0]], "wide"):
        with pytest.raises(ValueError, match="std_ratio_bounds"):
            S.ratio_bounds(bad)


def _lab_spread(rgb01, mask):
    from skimage.color import rgb2lab

    return rgb2lab(rgb01)[mask].std(0)


def test_per_channel_bounds_keep_the_colour_spread_the_default_shrinks():
    """A slide whose stained pixels vary more in hue than the template's: the default map shrinks a* and b*;
    a card bounding only L keeps them (the hue gap between white and red cells on a deep-red slide)."""
    img = _fields()[0]
    bg = background_color(img)
    stats = S.stain_stats(img, bg)
    tpl = stats.copy()
    tpl[1] = stats[1] * 0.6  # the template is tighter on every channel than the slide
    mask = S.stained_mask(img, bg)
    own = _lab_spread(S.reinhard(img, bg, None, tpl), mask)
    default = _lab_spread(S.StainNormalizer(bg=bg, stats=stats, template=tpl, use_lut=False)(img), mask)
    keep = S.StainNormalizer(bg=bg, stats=stats, template=tpl, use_lut=False, bounds=((0.5, 1, 1), (1, 1, 1)))
    kept = _lab_spread(keep(img), mask)
    assert np.all(default[1:] < 0.8 * own[1:])
    assert np.allclose(kept[1:], own[1:], rtol=0.1) and kept[0] < 0.8 * own[0]
    assert keep.describe()["std_ratio_bounds"] == [[0.5, 1.0, 1.0], [1.0, 1.0, 1.0]]


def test_a_detector_maps_with_its_cards_bounds():
    from leukcore.detect import Detector

    det = Detector.load("wbc-stardist", backend="torch")
    assert det.stain_bounds == S.ratio_bounds()  # v7's card names none: the default
    card = dict(det.card)
    norm = {**card["input"]["normalization"], "std_ratio_bounds": [[0.5, 1.0, 1.0], [1.0, 1.0, 1.0]]}
    card["input"] = {**card["input"], "normalization": norm}
    det2 = Detector.from_network(det.net, card)
    img = _fields()[0]
    assert det2.stain_normalizer(img, background_color(img)).bounds == ((0.5, 1.0, 1.0), (1.0, 1.0, 1.0))
    card["input"] = {**card["input"], "normalization": {**norm, "std_ratio_bounds": [2.0, 1.0]}}
    with pytest.raises(ValueError, match="model card input.normalization: std_ratio_bounds"):
        _ = Detector.from_network(det.net, card).stain_bounds
