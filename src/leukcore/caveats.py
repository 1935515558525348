"""What a run's answer must be read with: the caveats that the CLI, the summary, the report and napari show.

One owner for "the tool says so": a pixel size estimated and flagged unreliable (the estimate's own rule,
:mod:`leukcore.mpp`), and a slide whose stain lies far from the detector's training sources
(:meth:`leukcore.detect.stain.StainNormalizer.describe`).  Each caveat is one sentence naming the problem
and what to do; ``leuk detect`` and ``leuk analyze`` print them on stderr, ``summary.json`` lists them under
``caveats``, the sign-off report and the napari widget show them as warnings.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = ["run_caveats", "mpp_caveat", "stain_caveat"]


def mpp_caveat(mpp: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The caveat of a pixel size (the summary's ``mpp`` block: ``value``, ``source``, ``reliable``, ``reason``).

    Only an estimate flagged unreliable has one; a pixel size given by the user or the slide has none.
    """
    if not mpp or mpp.get("source") != "estimated" or mpp.get("reliable") is not False:
        return None
    v = mpp.get("value")
    at = f" (estimated {float(v):.3g} um/px)" if v else ""
    return (
        f"pixel size uncertain: {mpp.get('reason') or 'the estimate is flagged unreliable'}{at}; "
        "re-run with the slide's real pixel size (--mpp)"
    )


def stain_caveat(stain: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The caveat of a slide's stain (a run's ``meta["stain"]``): set when it is ``unlike_training``."""
    if not stain or not stain.get("unlike_training"):
        return None
    d = stain.get("distance")
    far = f" ({float(d):.1f} template standard deviations away)" if d is not None else ""
    return (
        f"stain unlike the detector's training slides{far}: white cells may be missed or red cells taken for "
        "white cells; check the cells found"
    )


def run_caveats(mpp: Optional[Mapping[str, Any]] = None, stain: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Every caveat of a run, in the order shown: the pixel size's, then the stain's."""
    return [c for c in (mpp_caveat(mpp), stain_caveat(stain)) if c]
