"""Training and evaluation of cell classifiers (readers, splits, loops, metrics, stain tests).

Submodules: ``datasets`` (readers + dedup), ``splits``, ``stain``, ``cells`` (fields -> per-cell
crops with the project's detector), ``features`` (cached backbone features), ``loop`` (two-phase
training), ``metrics``, ``evaluate`` (metrics files, colour baseline, stain swap), ``config``.
Heavy libraries are imported inside functions.
"""
