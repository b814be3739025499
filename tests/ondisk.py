"""Helpers shared by the crash-safety and concurrency tests: what is on disk, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path


def folder_digest(folder: Path) -> dict[str, str]:
    """Return {file name: sha256} of every file in a folder (the on-disk content, byte for byte)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def content_hash(ds) -> str:
    """Return the dataset's fingerprint recomputed from its arrays (not the one cached from the manifest)."""
    ds.__dict__.pop("_fingerprint_cache", None)
    return ds.fingerprint()
