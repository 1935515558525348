"""Build the torch network of a classifier card (a timm architecture)."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["build_network", "architecture_of"]


def architecture_of(card: Mapping[str, Any]) -> dict:
    """The ``architecture`` section of a model card as a dict with at least ``name`` (a timm model name).

    A bare string is taken as the name.

    Raises
    ------
    ValueError
        When the card names no architecture.
    """
    arch = card.get("architecture", {})
    if isinstance(arch, str):
        arch = {"name": arch}
    if not arch.get("name"):
        raise ValueError(f"{card.get('_card_path', 'model card')}: architecture.name (a timm model name) missing")
    return dict(arch)


def build_network(arch_name: str, num_classes: int, drop_rate: float = 0.0, **kw):
    """A timm network with ``num_classes`` outputs and random weights (never downloads)."""
    import timm

    try:
        return timm.create_model(arch_name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **kw)
    except RuntimeError as e:  # unknown model
        raise ValueError(f"unknown timm architecture {arch_name!r}: {e}") from None
