import pytest
import torch

from leukcore.models.registry import ModelError, load_card, load_state_dict, save_model


def test_save_load_round_trip_and_hash_check(tmp_path):
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    card = {"task": "classification", "version": 1, "classes": ["a", "b"]}
    cpath = save_model(sd, card, tmp_path, "m")
    c = load_card(cpath)
    assert c["weights"]["format"] == "safetensors"
    assert torch.equal(load_state_dict(c)["w"], sd["w"])
    # tamper: hash check must refuse
    wfile = tmp_path / "m.safetensors"
    data = bytearray(wfile.read_bytes())
    data[-1] ^= 0xFF
    wfile.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_state_dict(load_card(cpath))


def test_unknown_model_and_bad_card(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        load_card("no-such-model")
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a dict\n")
    with pytest.raises(ModelError, match="lacks"):
        load_card(bad)
