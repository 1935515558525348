"""Function-preserving widening of a trained detector network (Net2Net-style, zero-initialised fan-in).

A wider :class:`~leukcore.detect.net.StarDistUNet` is started from a narrower one's weights: every old
channel keeps its weights in the first slots of its layer; the new channels start from the new network's
random initialisation, and every weight that *reads* a new channel starts at zero, so the widened network
computes exactly what the old one did (up to float rounding) and the new channels are learned by
fine-tuning.  ``leuk train-detector --init-from CARD --channels ...`` uses it.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["widen_state"]


def _level_maps(old: dict, new: dict):
    """Per state-dict prefix: ``(out positions, in positions)`` of the old channels in the new tensor."""
    co, cn = list(old["channels"]), list(new["channels"])
    if len(co) != len(cn) or any(b < a for a, b in zip(co, cn, strict=True)):
        raise ValueError(f"cannot widen channels {co} to {cn}: same number of levels, none narrower")
    if int(new.get("head_channels", 64)) < int(old.get("head_channels", 64)):
        raise ValueError("cannot widen to fewer head channels")
    if int(new.get("n_rays", 32)) != int(old.get("n_rays", 32)):
        raise ValueError("the number of rays cannot change")
    same = np.arange
    maps = {}
    cin = same(3)
    for i, c in enumerate(co):
        maps[f"down.{i}.0"] = (same(c), cin)
        maps[f"down.{i}.3"] = (same(c), same(c))
        cin = same(c)
    for j, (c, c_new) in enumerate(zip(co[-2::-1], cn[-2::-1], strict=True)):
        maps[f"upconv.{j}"] = (same(c), cin)
        # the up block reads cat([upsampled, skip]): the skip's channels start at c_new in the new tensor
        maps[f"up.{j}.0"] = (same(c), np.concatenate([same(c), c_new + same(c)]))
        maps[f"up.{j}.3"] = (same(c), same(c))
        cin = same(c)
    head = same(int(old.get("head_channels", 64)))
    maps["features.0"] = (head, cin)
    maps["prob_head"] = (same(1), head)
    maps["dist_head"] = (same(int(old.get("n_rays", 32))), head)
    return maps


def _prefix(key: str) -> tuple[str, str]:
    """``("down.0.0", "weight")``; a batch norm's keys map to the conv before it (``down.0.1`` -> ``down.0.0``)."""
    prefix, name = key.rsplit(".", 1)
    m = re.fullmatch(r"(down|up)\.(\d+)\.([14])", prefix)
    if m:
        return f"{m[1]}.{m[2]}.{int(m[3]) - 1}", name
    return prefix, name


def widen_state(state: dict, old_arch: dict, new_arch: dict, seed: int = 0) -> dict:
    """The state dict of a ``new_arch`` network that computes what ``state`` (an ``old_arch`` network) does.

    Parameters
    ----------
    state : dict
        The narrower network's state dict (tensors).
    old_arch, new_arch : dict
        Model-card ``architecture`` sections; ``new_arch`` has the same levels and rays, no layer narrower.
    seed : int
        Seed of the new channels' initialisation.

    Returns
    -------
    dict
        A state dict for ``build_network(new_arch)``.
    """
    import torch

    from .net import build_network

    maps = _level_maps(old_arch, new_arch)
    torch.manual_seed(seed)
    out = build_network(new_arch).state_dict()
    for key, new in out.items():
        old = state[key]
        if new.dim() == 0:
            out[key] = old.clone()
            continue
        prefix, _ = _prefix(key)
        rows, cols = maps[prefix]
        is_transposed = prefix.startswith("upconv")
        t = new.clone()
        if new.dim() == 1:
            t[torch.as_tensor(rows)] = old
        else:
            if is_transposed:  # ConvTranspose2d weights are (in, out, kh, kw)
                t, old = t.transpose(0, 1), old.transpose(0, 1)
            reads_new = torch.ones(t.shape[1], dtype=torch.bool)
            reads_new[torch.as_tensor(cols)] = False
            t[:, reads_new] = 0.0
            t[torch.as_tensor(rows)[:, None], torch.as_tensor(cols)[None, :]] = old
            if is_transposed:
                t = t.transpose(0, 1).contiguous()
        out[key] = t
    return out
