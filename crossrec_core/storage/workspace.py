"""Where datasets and models live on disk, and how they are written so a crash never leaves half a file.

Layout (default ``./workspace``, overridable with ``CROSSREC_HOME``)::

    workspace/
      datasets/<name>/   manifest.json + parquet files
      models/<name>/     registry folders (see registry.py)
      cache/text/        text-encoder vectors by content hash
      tmp/               staging area for atomic writes (same filesystem, so rename is atomic)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from crossrec_core.errors import ConfigError, StorageError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def workspace_root(root: str | os.PathLike | None = None) -> Path:
    """Return the workspace folder (created if missing): ``root``, else $CROSSREC_HOME, else ./workspace."""
    path = Path(root or os.environ.get("CROSSREC_HOME") or "workspace").expanduser().resolve()
    try:
        for sub in ("datasets", "models", "cache", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise ConfigError(
            f"The workspace {path} is not a folder (a file is in the way). "
            "Point CROSSREC_HOME at a folder, or move that file."
        ) from err
    except PermissionError as err:
        raise ConfigError(f"No permission to write the workspace {path}. Point CROSSREC_HOME at a folder you can write.") from err
    return path


def datasets_dir(root=None) -> Path:
    return workspace_root(root) / "datasets"


def models_dir(root=None) -> Path:
    return workspace_root(root) / "models"


def cache_dir(root=None) -> Path:
    return workspace_root(root) / "cache"


def safe_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name (letters, digits, . _ -), else raise ConfigError."""
    name = str(name).strip()
    if not _NAME_RE.match(name) or name in {".", ".."}:
        raise ConfigError(
            f"'{name[:40]}' is not a valid name. Use letters, digits, '.', '_' or '-' (at most 80 characters)."
        )
    return name


def slugify(text: str, default: str = "dataset") -> str:
    """Turn a file name or title into a safe workspace name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-._")[:60]
    return slug or default


@contextlib.contextmanager
def name_lock(target: Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold an inter-process lock for one workspace entry (two saves of one name never interleave)."""
    lock_path = target.parent / f".{target.name}.lock"
    with FileLock(str(lock_path), timeout=timeout):
        yield


@contextlib.contextmanager
def atomic_dir(target: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a staging folder; on success it atomically replaces ``target``.

    A crash (even SIGKILL) at any point leaves ``target`` either as it was or fully replaced: the new
    content becomes visible through one atomic exchange (see ``publish_dir``). A full disk while the
    staging folder is written raises StorageError; the staging folder is removed and ``target`` is
    untouched.
    """
    target = Path(target)
    root = target.parent.parent  # workspace root for datasets/<name> and models/<name>
    tmp_root = root / "tmp" if (root / "tmp").is_dir() else target.parent
    staging = tmp_root / f".staging-{target.name}-{uuid.uuid4().hex[:8]}"
    with disk_full_is_plain(f"'{target.name}'", tmp_root):
        staging.mkdir(parents=True)
    with name_lock(target):
        try:
            with disk_full_is_plain(f"'{target.name}'", tmp_root):
                yield staging
                _fsync_tree(staging)
            if target.exists() and not overwrite:
                raise ConfigError(f"'{target.name}' already exists. Choose another name or delete it first.")
            publish_dir(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def disk_full_is_plain(what: str, where: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC / EDQUOT) inside the block into a StorageError that says what to do.

    Safetensors and parquet writers report it in several ways (an OSError with the errno, or their own
    error naming "No space left on device"); any of them becomes the same plain sentence."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - only a full disk is converted, the rest is re-raised
        full = (isinstance(err, OSError) and err.errno in DISK_FULL) or "No space left on device" in str(err) \
            or "Disk quota exceeded" in str(err)
        if not full:
            raise
        try:
            free = f"{shutil.disk_usage(where).free / 2**20:.1f} MB free"
        except OSError:
            free = "no space left"
        raise StorageError(f"The disk is full ({free} at {where}): {what} could not be saved. Free some space and "
                           "try again; the previous version, if any, is unchanged.") from err


def publish_dir(staging: Path, target: Path) -> None:
    """Move the finished folder ``staging`` to ``target``, replacing any previous version atomically.

    On Linux the two folders are swapped with one ``renameat2(RENAME_EXCHANGE)`` call, so there is no
    instant at which ``target`` is missing. Elsewhere the old version is first moved aside under a
    name that records where it belongs (``.old~<parent>~<name>~<hex>``) and ``clean_stale_staging``
    puts it back if a crash happens before the new one lands.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    if _rename_exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous version
        return
    aside = staging.parent / f".old~{target.parent.name}~{target.name}~{uuid.uuid4().hex[:8]}"
    os.replace(target, aside)
    os.replace(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); return False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with disk_full_is_plain(f"'{path.name}'", path.parent), open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # a failed write leaves nothing half-written behind
            tmp.unlink()


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def clean_stale_staging(root=None) -> int:
    """Remove staging folders left by a killed process; return how many entries were cleaned.

    A previous version moved aside by ``publish_dir`` whose replacement never landed is put back.
    """
    ws = workspace_root(root)
    n = 0
    for pattern in (".staging-*", ".old-*"):  # unfinished writes; entries already being deleted
        for p in (ws / "tmp").glob(pattern):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    for p in (ws / "tmp").glob(".old~*"):
        parts = p.name.split("~")
        home = ws / parts[1] / parts[2] if len(parts) == 4 else None
        if home is not None and not home.exists():
            os.replace(p, home)
        else:
            shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
