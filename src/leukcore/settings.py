"""The settings of one analysis, typed and in one place: :class:`AnalysisSettings`.

:func:`leukcore.pipeline.analyze_slide`, :func:`leukcore.batch.run_batch` (and each of its worker tasks),
``leuk analyze``, ``leuk batch`` and the napari widget all take one of these; :meth:`AnalysisSettings.record`
is the JSON block a run's ``summary.json`` fingerprints (``provenance.settings``), so ``leuk batch`` resumes a
slide only when every recorded setting is the same.

The models are settings too (``detector``, ``classifier``: a shipped name, a card path or an already loaded
model); their fingerprint is recorded in its own block (:func:`leukcore.provenance.model_record`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["AnalysisSettings", "DEFAULT_DETECTOR", "DEFAULT_CLASSIFIER", "DEFAULT_TILE_SIZE"]

DEFAULT_DETECTOR = "wbc-stardist"
DEFAULT_CLASSIFIER = "all-binary"
#: detection tile side in working pixels
DEFAULT_TILE_SIZE = 1024


@dataclass(frozen=True)
class AnalysisSettings:
    """Every setting of a slide analysis (``None`` = the default, resolved when the run starts).

    Attributes
    ----------
    detector : str, path or loaded detector
        Shipped model name, model card ``.yaml``, or a loaded ``Detector``.
    classifier : str, path, loaded classifier or None
        ``"all-binary"``, ``"all-4class"``, a card ``.yaml``, a loaded ``Classifier``; ``None`` for detection
        only.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:N]"``.
    mpp : float, optional
        Level-0 microns per pixel, overriding the file's (estimated from red cells when neither is known).
    region : (y0, x0, y1, x1), optional
        Level-0 region to analyse (default the whole slide).
    batch_size : int, optional
        Classification batch size (default 32 on CPU, 256 on CUDA).
    review_threshold : float, optional
        Cells whose confidence is below this are flagged ``review``; default the classifier card's.
    tile_size : int
        Detection tile side (working pixels).
    detect_batch_size : int, optional
        Detection tiles per forward pass (default the detector's).
    threads : int, optional
        CPU threads of the network: the detector's thread count (``Detector.load(threads=)``: ONNX Runtime
        intra-op threads, torch threads) and, in a batch worker process, ``torch.set_num_threads``.  Default: every
        core the process may use; in a batch one per worker process (``leuk batch --threads-per-worker``).
    trust_unverified : bool
        Load model cards whose weights have no sha256 (refused by default).
    skip_missing : bool
        Analyse around pixels that are not in the file (recorded, never complete) instead of failing.
    queue_size : int
        Detection chunks buffered between detection and classification (bounds memory).
    overlap : bool
        Run detection and classification concurrently (``False``: detection to the end first; benchmarks).
    """

    detector: Any = DEFAULT_DETECTOR
    classifier: Any = DEFAULT_CLASSIFIER
    device: str = "auto"
    mpp: Optional[float] = None
    region: Optional[tuple] = None
    batch_size: Optional[int] = None
    review_threshold: Optional[float] = None
    tile_size: int = DEFAULT_TILE_SIZE
    detect_batch_size: Optional[int] = None
    threads: Optional[int] = None
    trust_unverified: bool = False
    skip_missing: bool = False
    queue_size: int = 4
    overlap: bool = True

    def __post_init__(self):
        if self.region is not None:
            object.__setattr__(self, "region", tuple(self.region))  # values as given: detection rounds them

    def replace(self, **changes) -> AnalysisSettings:
        """A copy with ``changes`` (field names, as :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def build(cls, settings: Optional[AnalysisSettings] = None, **options) -> AnalysisSettings:
        """``settings`` with ``options`` (field names) applied; the defaults when ``settings`` is None.

        Raises
        ------
        TypeError
            An option that is not a setting.
        """
        base = settings if settings is not None else cls()
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown analysis setting(s): {', '.join(unknown)}")
        return base.replace(**options) if options else base

    def record(self) -> dict:
        """The settings a run records and fingerprints (``summary["provenance"]["settings"]``), JSON-ready.

        The models are recorded in their own block; ``threads``, ``queue_size`` and ``overlap`` change how
        fast a run goes, never its cells, and are not recorded.
        """
        return {
            "mpp": None if self.mpp is None else float(self.mpp),
            "region": None if self.region is None else [int(v) for v in self.region],
            "review_threshold": None if self.review_threshold is None else float(self.review_threshold),
            "tile_size": int(self.tile_size),
            "batch_size": None if self.batch_size is None else int(self.batch_size),
            "detect_batch_size": None if self.detect_batch_size is None else int(self.detect_batch_size),
            "device": str(self.device),
            "skip_missing": bool(self.skip_missing),
        }
