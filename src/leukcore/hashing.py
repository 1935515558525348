"""File and byte fingerprints (sha256): the one owner, below everything that records a hash.

:mod:`leukcore.models` (weights checks), :mod:`leukcore.provenance` (run fingerprints, which re-exports both
names), the report and the training readers use these.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file", "sha256_bytes"]


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a whole file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """sha256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()
