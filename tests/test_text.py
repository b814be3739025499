"""Text encoder: offline bundled MiniLM, 384-d unit vectors, dedup, cache by content hash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import crossrec_core.models.text as text_module
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.models.bert import BertEncoder, load_bert
from crossrec_core.models.text import TEXT_DIM, TextEncoder, default_model_dir, item_texts


@pytest.fixture(scope="module")
def shared_encoder(tmp_path_factory):
    return TextEncoder(cache_dir=tmp_path_factory.mktemp("textcache"))


def test_offline_load_gives_384d_unit_vectors(shared_encoder):
    v = shared_encoder.encode(["Dome Tent | Camping", "Hiking Boots | Footwear"])
    assert v.shape == (2, TEXT_DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    # related products are closer than unrelated ones
    w = shared_encoder.encode(["camping tent", "tent for camping", "espresso machine"])
    assert w[0] @ w[1] > w[0] @ w[2]


def test_bfloat16_products_keep_the_float32_vectors_to_a_cosine_of_0_9999(monkeypatch):
    """On a CPU the network may multiply in bfloat16 (BF16_CPU; by default where the CPU does it natively): its
    vectors are not the float32 ones bit for bit, but within a cosine of 0.9999 of each, far closer than two titles."""
    texts = ["Dome Tent | Camping", "Hiking Boots | Footwear", "Espresso machine, 15 bar | Kitchen",
             "Strap top (1) | Ladieswear", "Organic green tea, 100 bags | Grocery"]
    monkeypatch.setattr(text_module, "BF16_CPU", False)
    exact = TextEncoder(cache_dir="").encode(texts)
    monkeypatch.setattr(text_module, "BF16_CPU", True)
    low = TextEncoder(cache_dir="").encode(texts)
    assert not np.array_equal(exact, low)  # the switch reaches the network
    cos = (exact * low).sum(axis=1)
    assert cos.min() > 0.9999
    assert (exact @ exact.T - np.eye(len(texts))).max() < 0.99  # two different titles are much further apart


def test_identical_text_identical_vector_and_dedup(tmp_path):
    enc = TextEncoder(cache_dir=tmp_path)
    v = enc.encode(["Camp Stove", "Lantern", "Camp Stove", "Camp Stove"])
    assert enc.n_encoded == 2  # duplicates encoded once
    assert np.array_equal(v[0], v[2]) and np.array_equal(v[0], v[3])
    assert not np.array_equal(v[0], v[1])


def test_cache_hit_avoids_reencoding(tmp_path, monkeypatch):
    first = TextEncoder(cache_dir=tmp_path)
    v1 = first.encode(["Trail Sandals", "Camp Stove"])
    second = TextEncoder(cache_dir=tmp_path)

    def boom(texts):
        raise AssertionError("the network must not run for cached texts")

    monkeypatch.setattr(second, "_encode_network", boom)
    v2 = second.encode(["Camp Stove", "Trail Sandals"])
    assert np.array_equal(v1[::-1], v2)
    assert second._model is None  # the model was not even loaded


def test_two_writers_share_the_cache(tmp_path):
    a, b = TextEncoder(cache_dir=tmp_path), TextEncoder(cache_dir=tmp_path)
    va = a.encode(["one"])
    vb = b.encode(["two"])
    c = TextEncoder(cache_dir=tmp_path)
    c._encode_network = None  # any call would fail
    vc = c.encode(["two", "one"])
    assert np.array_equal(vc[0], vb[0]) and np.array_equal(vc[1], va[0])
    assert len(list(tmp_path.rglob("*.keys.npy"))) == 2
    assert not list(tmp_path.rglob("*.tmp*"))


def test_damaged_shard_is_ignored_and_recomputed(tmp_path):
    a = TextEncoder(cache_dir=tmp_path)
    v = a.encode(["Dome Tent"])
    vec_file = next(tmp_path.rglob("*.vecs.npy"))
    vec_file.write_bytes(b"garbage")
    b = TextEncoder(cache_dir=tmp_path)
    w = b.encode(["Dome Tent"])
    assert b.n_encoded == 1 and np.allclose(v, w, atol=1e-6)


def test_bad_model_dir_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="text_model_dir"):
        TextEncoder(tmp_path / "nope", cache_dir=tmp_path)


def test_item_texts_joins_title_category_attributes():
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["Dome Tent", ""], "category": ["Camping", "Food"], "brand": ["Acme", ""]})
    assert list(item_texts(items, ("brand",))) == ["Dome Tent | Camping | Acme", "Food"]


_HARD_TEXTS = ["Dome Tent | Camping", "", "x", "Café crème brûlée — ÉLAN naïve 日本語 テスト 中文 ☕ 😀", "a " * 200,
               "Strap top (1) | Ladieswear | Black | Jersey", "UPPER lower MiXeD 123-456 $9.99 e-mail@x.com"]


def test_the_bundled_bert_runs_without_transformers_and_gives_its_vectors(monkeypatch):
    """The bundled model is a plain BERT: models/bert.py runs it from the folder's own files (transformers' import and
    model builder cost seconds per training). Its token ids are transformers' tokenizer's, its float32 vectors
    transformers' to 1e-5; short, empty, accented, CJK and over-long (truncated) texts alike."""
    monkeypatch.setattr(text_module, "BF16_CPU", False)
    own = TextEncoder(cache_dir="")
    mine = own.encode(_HARD_TEXTS)
    assert isinstance(own._model, BertEncoder)
    monkeypatch.setattr(text_module, "load_bert", lambda folder: None)  # what a folder of another architecture gets
    ref = TextEncoder(cache_dir="")
    theirs = ref.encode(_HARD_TEXTS)
    assert not isinstance(ref._model, BertEncoder)
    np.testing.assert_allclose(mine, theirs, atol=1e-5)
    batch = ref._tokenizer(_HARD_TEXTS, padding=True, truncation=True, max_length=own.max_seq_length)
    encodings = own._tokenizer.encode_batch(_HARD_TEXTS)
    assert [e.ids for e in encodings] == batch["input_ids"]
    assert [e.attention_mask for e in encodings] == batch["attention_mask"]
    assert len(encodings[4].ids) == own.max_seq_length  # the long text is cut where transformers cuts it


def test_encoding_titles_never_imports_transformers(tmp_path):
    """A fresh process encodes titles with the bundled model without importing transformers at all."""
    code = ("import sys; from crossrec_core.models.text import TextEncoder; "
            f"v = TextEncoder(cache_dir={str(tmp_path)!r}).encode(['Dome Tent | Camping']); "
            "assert v.shape == (1, 384); print('transformers' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.stdout.strip() == "False"


def test_a_folder_that_is_not_a_plain_bert_is_left_to_transformers(tmp_path):
    """load_bert runs only what it runs exactly: another architecture, relative positions or no tokenizer.json -> None."""
    src = default_model_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(src / name, tmp_path / name)
    assert load_bert(tmp_path) is not None
    config = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    assert load_bert(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    assert load_bert(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tokenizer.json").unlink()
    assert load_bert(tmp_path) is None


def test_a_damaged_bert_folder_is_a_model_error_not_a_traceback(tmp_path):
    """A text_model_dir whose weights or tokenizer file is damaged says which folder failed (ModelError)."""
    src = default_model_dir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(src / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="Could not load the text model"):
        TextEncoder(tmp_path, cache_dir="").encode(["Dome Tent"])
    shutil.copy(src / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError, match="Could not load the text model"):
        TextEncoder(tmp_path, cache_dir="").encode(["Dome Tent"])
