"""One typed owner each: AnalysisSettings (what a run records), the cached model loader, ModelCard."""

from __future__ import annotations

import dataclasses

import pytest

from leukcore import provenance
from leukcore.loader import clear_model_cache, load_classifier, load_detector
from leukcore.models import ModelCard
from leukcore.settings import AnalysisSettings


def test_settings_record_is_what_provenance_records():
    s = AnalysisSettings(mpp=0.5, region=[1, 2, 30, 40], review_threshold=0.7, device="cpu", skip_missing=True)
    assert s.record() == provenance.analysis_settings(
        mpp=0.5, region=(1, 2, 30, 40), review_threshold=0.7, device="cpu", skip_missing=True
    )
    assert AnalysisSettings().record() == provenance.analysis_settings()
    assert s.region == (1, 2, 30, 40)
    # threads, queue and overlap change speed, never cells: not recorded
    assert s.replace(threads=3, queue_size=1, overlap=False).record() == s.record()


def test_settings_build_applies_options_and_refuses_unknown_ones():
    base = AnalysisSettings(classifier="all-4class", tile_size=512)
    s = AnalysisSettings.build(base, device="cpu")
    assert (s.classifier, s.tile_size, s.device) == ("all-4class", 512, "cpu")
    assert AnalysisSettings.build() == AnalysisSettings()
    with pytest.raises(TypeError, match="tile_sise"):
        AnalysisSettings.build(tile_sise=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.device = "cuda"


def test_loader_returns_loaded_models_as_they_are_and_caches_by_card():
    class Loaded:
        card = {"name": "x"}

        def predict_crops(self, crops):
            return crops

    m = Loaded()
    assert load_detector(m) is m and load_classifier(m) is m
    assert load_detector(None) is None and load_classifier(None) is None
    clear_model_cache()
    a = load_classifier("all-binary", device="cpu", backend="torch")
    assert load_classifier("all-binary", device="cpu", backend="torch") is a
    clear_model_cache()
    assert load_classifier("all-binary", device="cpu", backend="torch") is not a
    clear_model_cache()


@pytest.mark.parametrize("name", ["all-binary", "all-4class", "wbc-stardist"])
def test_model_card_spec_of_the_shipped_cards(name):
    from leukcore.models import load_card
    from leukcore.results import BLAST_CLASSES, class_color

    raw = load_card(name)
    c = ModelCard.load(name)
    assert (c.name, c.task) == (name, raw["task"])
    assert list(c.classes) == [str(k) for k in raw.get("classes") or []]
    assert set(c.blast_classes) == set(c.classes) & set(BLAST_CLASSES)
    assert all(c.colors[k] == tuple(class_color(k)) for k in c.classes)
    if c.task == "detection":
        assert c.mpp == float(raw["input"]["mpp"]) and not c.classes
    else:
        assert c.crop_um == float(raw["input"]["crop_um"]) and c.input_size == int(raw["input"]["size"])
        assert c.review_confidence == (raw.get("review") or {}).get("confidence")
