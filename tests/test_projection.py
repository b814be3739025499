"""Tests of crossrec_core.serving.projection: PCA exactness, placement, UMAP disk cache, errors."""

import dataclasses

from pathlib import Path

import numpy as np
import pytest

from crossrec_core.errors import ConfigError, DataError
from crossrec_core.serving.projection import (
    ProjectionConfig,
    cached_umap_exists,
    clear_projection_cache,
    pca_components,
    project_items,
    vectors_fingerprint,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path))
    return tmp_path


def islands(n_per=40, d=8, seed=0):
    """Three well separated clusters along axes 0, 1, 2."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:3] * 20
    x = np.concatenate([c + rng.normal(scale=0.5, size=(n_per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per)


def test_pca_recovers_the_two_axes_of_a_planar_cloud():
    # points spread on axis 0 (var 100) and axis 2 (var 4), nothing else: PCA axes are e0 and e2 exactly
    rng = np.random.default_rng(1)
    x = np.zeros((500, 4), dtype=np.float32)
    x[:, 0] = rng.normal(scale=10, size=500)
    x[:, 2] = rng.normal(scale=2, size=500)
    mean, comps = pca_components(x)
    assert comps.shape == (4, 2)
    np.testing.assert_allclose(np.abs(comps[:, 0]), [1, 0, 0, 0], atol=1e-3)
    np.testing.assert_allclose(np.abs(comps[:, 1]), [0, 0, 1, 0], atol=1e-3)
    assert (comps[np.abs(comps).argmax(axis=0), [0, 1]] > 0).all()  # sign convention


def test_pca_projection_is_deterministic_and_places_items_where_they_are(home):
    x, _ = islands()
    p1, p2 = project_items(x), project_items(x)
    assert p1.method == "pca" and p1.items_xy.shape == (120, 2) and p1.items_xy.dtype == np.float32
    np.testing.assert_array_equal(p1.items_xy, p2.items_xy)
    np.testing.assert_allclose(p1.place(x[:7], linear=True), p1.items_xy[:7], atol=1e-4)
    # neighbour placement: an item's own vector lands next to it (closer than to any other island)
    x_label = islands()[1]
    pos = p1.place(x[:1])[0]
    nearest = np.argsort(np.linalg.norm(p1.items_xy - pos, axis=1))[:5]
    assert (x_label[nearest] == 0).all()


def test_pca_map_separates_the_islands(home):
    x, label = islands()
    xy = project_items(x).items_xy
    centres = np.stack([xy[label == c].mean(axis=0) for c in range(3)])
    spread = max(np.linalg.norm(xy[label == c] - centres[c], axis=1).max() for c in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread


@pytest.mark.slow  # numba compiles UMAP on first use in a process: ~45 s on 2 cores
def test_umap_is_cached_on_disk_by_content_and_users_land_on_their_island(home):
    x, label = islands()
    cfg = ProjectionConfig(method="umap", n_neighbors=10)
    assert not cached_umap_exists(x, cfg)
    first = project_items(x, cfg)
    assert not first.from_cache and first.items_xy.shape == (120, 2)
    assert cached_umap_exists(x, cfg)
    assert (home / "cache" / "projection" / vectors_fingerprint(x, cfg) / "items_xy.npy").is_file()
    # numba's compiled code went to disk: the next process's first map skips most of the compiling
    import numba

    assert numba.config.CACHE_DIR and list(Path(numba.config.CACHE_DIR).rglob("*.nbi")), numba.config.CACHE_DIR
    second = project_items(x, cfg)
    assert second.from_cache
    np.testing.assert_array_equal(first.items_xy, second.items_xy)
    # a user vector next to island 1 is placed among island-1 items
    user = x[label == 1].mean(axis=0, keepdims=True)
    pos = first.place(user)[0]
    nearest = np.argsort(np.linalg.norm(first.items_xy - pos, axis=1))[:5]
    assert (label[nearest] == 1).all()
    # other vectors: another cache entry
    assert not cached_umap_exists(x * 2, cfg)
    assert clear_projection_cache() == 1
    assert not cached_umap_exists(x, cfg)


def test_bad_inputs_raise_plain_errors(home):
    with pytest.raises(ConfigError, match="pca"):
        ProjectionConfig(method="tsne")
    with pytest.raises(ConfigError, match="n_neighbors"):
        ProjectionConfig(n_neighbors=1)
    with pytest.raises(DataError, match="at least 3"):
        project_items(np.zeros((2, 4), np.float32))
    bad = np.ones((5, 3), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        project_items(bad)
    p = project_items(islands()[0])
    with pytest.raises(DataError, match="place"):
        p.place(np.zeros((2, 5), np.float32))
    umap_like = dataclasses.replace(p, method="umap")
    with pytest.raises(DataError, match="linearly"):
        umap_like.place(np.zeros((1, 8), np.float32), linear=True)


def test_exact_knn_finds_itself_first_then_the_most_similar():
    from crossrec_core.serving.projection import exact_knn

    v = np.array([[1, 0], [0.9, 0.1], [0.1, 1], [-1, 0]], dtype=np.float32)  # no ties
    idx, dist = exact_knn(v, 3, batch_size=2)  # batches of 2 exercise the blocked path
    assert idx.tolist() == [[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 2, 1]]
    assert dist[:, 0].tolist() == [0, 0, 0, 0]
    assert dist[0, 1] == pytest.approx(1 - 0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    assert (np.diff(dist, axis=1) >= 0).all()
