"""2-D maps of item and user vectors: PCA (instant) and UMAP (slower, cached on disk by content).

A ``Projection`` keeps what it needs to place NEW vectors on the same map (a what-if user, every user of
the log): PCA is linear (mean + two components); UMAP places new points by a k-nearest-item weighted
mean of their neighbours' map positions, so the map never has to be recomputed for a user.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Literal
import shutil
import sys

import numpy as np

from crossrec_core.errors import ConfigError, DataError
from crossrec_core.storage.workspace import atomic_dir, cache_dir

log = logging.getLogger(__name__)

Method = Literal["pca", "umap"]
_CACHE_VERSION = 1
# Why 10: enough neighbours to smooth a user between islands, few enough to keep it on the right island.
_PLACE_K = 10


@dataclass(frozen=True)
class ProjectionConfig:
    """Settings of a 2-D map.

    n_neighbors: more neighbours = broader, smoother map (UMAP only).
    min_dist: smaller = tighter islands (UMAP only).
    """

    method: Method = "pca"
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("pca", "umap"):
            raise ConfigError(f"Unknown map method '{self.method}'. Use 'pca' or 'umap'.")
        if not 2 <= int(self.n_neighbors) <= 200:
            raise ConfigError(f"n_neighbors must be between 2 and 200, got {self.n_neighbors}.")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise ConfigError(f"min_dist must be between 0 and 1, got {self.min_dist}.")


@dataclass(frozen=True)
class Projection:
    """A 2-D map of item vectors, able to place further vectors (users) on the same map."""

    method: str
    items_xy: np.ndarray  # float32 (n_items, 2)
    mean: np.ndarray  # float32 (d,) PCA centre (also used to normalise for kNN placement)
    components: np.ndarray  # float32 (d, 2) PCA axes; for UMAP only used as a fallback
    item_vectors_unit: np.ndarray  # float32 (n_items, d) L2-normalised item vectors (kNN placement)
    fingerprint: str
    seconds: float = 0.0
    from_cache: bool = False

    @property
    def n_items(self) -> int:
        return len(self.items_xy)

    def place(self, vectors: np.ndarray, *, linear: bool = False, batch_size: int = 4096) -> np.ndarray:
        """Return float32 (n, 2) map positions for new vectors (n, d) on this map.

        Default: the similarity-weighted mean position of the _PLACE_K most similar items (cosine), for
        PCA and UMAP alike. Why not the linear PCA projection for users: user states and item vectors
        have different norms and offsets, so a linear projection puts every user off the islands, while
        the neighbour placement puts a user among the products they resemble. ``linear=True`` (PCA only)
        gives the plain linear projection. Batched so thousands of users stay cheap.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.mean.shape[0]:
            raise DataError(
                f"Cannot place vectors of shape {vectors.shape} on a map of {self.mean.shape[0]}-d item vectors."
            )
        if linear:
            if self.method != "pca":
                raise DataError("Only a PCA map can place vectors linearly; use the neighbour placement.")
            return ((vectors - self.mean) @ self.components).astype(np.float32)  # (n, 2)
        out = np.empty((len(vectors), 2), dtype=np.float32)
        k = min(_PLACE_K, self.n_items)
        for a in range(0, len(vectors), batch_size):
            v = _unit(vectors[a : a + batch_size])
            sims = v @ self.item_vectors_unit.T  # (b, n_items)
            nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (b, k)
            w = np.take_along_axis(sims, nn, axis=1)
            w = np.exp((w - w.max(axis=1, keepdims=True)) * 10.0)  # sharpen: nearest dominates
            w /= w.sum(axis=1, keepdims=True)
            out[a : a + batch_size] = np.einsum("bk,bkc->bc", w, self.items_xy[nn])
        return out


def vectors_fingerprint(vectors: np.ndarray, config: ProjectionConfig | None = None) -> str:
    """Return a short content hash of the vectors (and the map settings): the disk-cache key."""
    config = config or ProjectionConfig()
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    h = hashlib.sha256()
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    h.update(f"{config.method}|{config.n_neighbors}|{config.min_dist}|{config.seed}|v{_CACHE_VERSION}".encode())
    return h.hexdigest()[:20]


def pca_components(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (mean (d,), components (d, 2)) of the vectors, with a deterministic sign per axis."""
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    d = x.shape[1]
    if d == 1:
        comps = np.zeros((1, 2))
        comps[0, 0] = 1.0
        return mean.astype(np.float32), comps.astype(np.float32)
    # the covariance is only (d, d): an eigendecomposition is cheaper than an SVD of (n, d)
    cov = xc.T @ xc / max(len(x) - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    comps = evecs[:, ::-1][:, :2]  # (d, 2) largest variance first
    # sign convention: the largest-magnitude loading of each axis is positive (stable across runs)
    flip = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(2)])
    comps = comps * np.where(flip == 0, 1.0, flip)
    return mean.astype(np.float32), comps.astype(np.float32)


def project_items(
    item_vectors: np.ndarray,
    config: ProjectionConfig | None = None,
    *,
    use_cache: bool = True,
    root=None,
) -> Projection:
    """Return the 2-D map of the item vectors (n_items, d), PCA or UMAP as the config says.

    UMAP results are cached on disk under ``cache_dir()/projection/<fingerprint>/`` (numpy .npy files,
    never pickles), so the same model's map is computed once per workspace. PCA is never cached: it
    takes milliseconds.
    """
    config = config or ProjectionConfig()
    vecs = np.asarray(item_vectors, dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) < 3:
        raise DataError(f"A map needs at least 3 item vectors; got an array of shape {vecs.shape}.")
    if not np.isfinite(vecs).all():
        raise DataError("The model's item vectors contain NaN or infinite values; retrain the model.")
    fp = vectors_fingerprint(vecs, config)
    mean, comps = pca_components(vecs)
    unit = _unit(vecs)
    if config.method == "pca":
        t0 = time.perf_counter()
        xy = ((vecs - mean) @ comps).astype(np.float32)
        return Projection("pca", xy, mean, comps, unit, fp, time.perf_counter() - t0)

    folder = cache_dir(root) / "projection" / fp
    if use_cache and (folder / "items_xy.npy").is_file():
        try:
            xy = np.load(folder / "items_xy.npy", allow_pickle=False)
            if xy.shape == (len(vecs), 2):
                return Projection("umap", xy.astype(np.float32), mean, comps, unit, fp, 0.0, from_cache=True)
        except (OSError, ValueError) as err:  # a damaged cache entry is recomputed, not fatal
            log.warning("ignoring damaged map cache %s: %s", folder, err)
    t0 = time.perf_counter()
    xy = _umap_fit(vecs, config)
    seconds = time.perf_counter() - t0
    log.info("UMAP of %d items took %.1f s", len(vecs), seconds)
    if use_cache:
        with atomic_dir(folder) as staging:
            np.save(staging / "items_xy.npy", xy, allow_pickle=False)
    return Projection("umap", xy, mean, comps, unit, fp, seconds)


def cached_umap_exists(item_vectors: np.ndarray, config: ProjectionConfig, *, root=None) -> bool:
    """Return True when the UMAP map of these vectors is already in the disk cache."""
    fp = vectors_fingerprint(np.asarray(item_vectors, dtype=np.float32), config)
    return (cache_dir(root) / "projection" / fp / "items_xy.npy").is_file()


def exact_knn(vectors: np.ndarray, k: int, *, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Return (indices int64 (n, k), cosine distances float32 (n, k)) of each vector's k nearest vectors,
    itself first, computed exactly by blocked matrix products (no per-row Python loop)."""
    unit = _unit(vectors)
    n = len(unit)
    k = min(k, n)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for a in range(0, n, batch_size):
        sims = unit[a : a + batch_size] @ unit.T  # (b, n)
        rows = np.arange(len(sims))
        sims[rows, a + rows] = np.inf  # self is always the first neighbour (UMAP expects it)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (b, k) unordered
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        idx[a : a + batch_size] = np.take_along_axis(part, order, axis=1)
        d = 1.0 - np.take_along_axis(sims, idx[a : a + batch_size], axis=1)
        d[:, 0] = 0.0
        dist[a : a + batch_size] = np.maximum(d, 0.0)
    return idx, dist


def import_umap():
    """Return the umap module, imported with numba's on-disk cache on for every function it compiles.

    umap-learn and pynndescent mark only some of their numba functions ``cache=True``, so every new
    process compiled the rest again on its first map (15-60 s, bench/RESULTS.md). Their decorators run
    at import, so ``numba.njit`` / ``numba.jit`` default to ``cache=True`` while umap is first imported,
    and are restored right after. The cache lives in $NUMBA_CACHE_DIR when set, else in the workspace's
    cache folder (numba/); a function numba cannot cache is compiled as before (numba warns, we do not).
    Later imports (umap already in sys.modules) change nothing.
    """
    if "umap" in sys.modules:
        return sys.modules["umap"]
    import numba  # slow: compiles its own code on import; only the map needs it

    if not os.environ.get("NUMBA_CACHE_DIR"):
        folder = cache_dir() / "numba"
        folder.mkdir(parents=True, exist_ok=True)
        numba.config.CACHE_DIR = str(folder)
    plain_njit, plain_jit = numba.njit, numba.jit

    def cached(decorator):
        def wrapper(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)
        return wrapper

    numba.njit, numba.jit = cached(plain_njit), cached(plain_jit)
    try:
        with warnings.catch_warnings():  # "cannot cache ... dynamic globals": compiled per process, as before
            warnings.simplefilter("ignore")
            import umap  # lazy: importing umap compiles numba code (seconds); only pay it when asked
    except ImportError as err:  # pragma: no cover - umap-learn is a declared dependency
        raise ConfigError("The UMAP map needs the 'umap-learn' package: pip install umap-learn.") from err
    finally:
        numba.njit, numba.jit = plain_njit, plain_jit
    return umap


def _umap_fit(vecs: np.ndarray, config: ProjectionConfig) -> np.ndarray:
    umap = import_umap()
    n = len(vecs)
    n_neighbors = min(int(config.n_neighbors), n - 1)
    # Why exact neighbours: a blocked matrix product finds them in a second or two for 20k-50k items,
    # while umap's approximate search (pynndescent) spends most of a first call compiling numba code.
    knn = exact_knn(vecs, n_neighbors)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=float(config.min_dist),
        metric="cosine",
        random_state=int(config.seed),
        # Why: a fixed seed forces single-threaded layout in umap; that is the price of a map
        # that looks the same every time the page opens.
        init="spectral" if n > 50 else "random",
        n_epochs=120 if n > 10_000 else None,  # big maps converge visually well before 200
        precomputed_knn=(knn[0], knn[1], None),
        verbose=False,
    )
    with warnings.catch_warnings():  # umap warns about the seed (see above) and the precomputed kNN
        warnings.simplefilter("ignore")
        return reducer.fit_transform(vecs).astype(np.float32)  # (n, 2)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def clear_projection_cache(root=None) -> int:
    """Remove every cached map; return how many were removed."""
    folder = cache_dir(root) / "projection"
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


__all__ = [
    "Projection",
    "ProjectionConfig",
    "cached_umap_exists",
    "clear_projection_cache",
    "pca_components",
    "project_items",
    "vectors_fingerprint",
]
