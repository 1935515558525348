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


def test_user_model_folder_by_name(tmp_path, monkeypatch, capsys):
    """Models in $LEUK_MODEL_PATH load by name, are listed (stray yaml ignored) and take precedence."""
    from leukcore.cli import main
    from leukcore.models.registry import MODEL_PATH_ENV, list_models

    sd = {"w": torch.ones(2)}
    save_model(sd, {"task": "classification", "version": 7, "classes": ["a", "b"]}, tmp_path, "my-model")
    save_model(sd, {"task": "detection", "version": 9, "input": {"mpp": 0.5}}, tmp_path, "wbc-stardist")
    (tmp_path / "notes.yaml").write_text("just: notes\n")
    assert "my-model" not in list_models()
    with pytest.raises(ModelError, match="unknown model"):
        load_card("my-model")
    monkeypatch.setenv(MODEL_PATH_ENV, str(tmp_path))
    assert load_card("my-model")["version"] == 7
    assert load_card("wbc-stardist")["version"] == 9  # user folder first
    assert "my-model" in list_models("classification") and "notes" not in list_models()
    assert list_models("detection").count("wbc-stardist") == 1
    assert "all-4class" in list_models("classification")  # shipped ones still there
    assert main(["models", "--task", "classification"]) == 0
    assert str(tmp_path / "my-model.yaml") in capsys.readouterr().out
