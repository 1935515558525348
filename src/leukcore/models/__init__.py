"""Shipped models, model cards and safe weight loading."""

from .card import ModelCard
from .registry import (
    WEIGHTS_DIR,
    ModelError,
    card_path,
    list_models,
    load_card,
    load_state_dict,
    save_model,
    sha256_file,
)

__all__ = [
    "WEIGHTS_DIR",
    "ModelCard",
    "ModelError",
    "card_path",
    "list_models",
    "load_card",
    "load_state_dict",
    "save_model",
    "sha256_file",
]
