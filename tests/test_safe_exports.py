"""Exports are safe to open in a spreadsheet: text for people starts with a quote where a spreadsheet would
run it as a formula (OWASP "CSV injection"), ids and numbers stay byte for byte.

Every check reads the RAW cells of the written file with the csv module (pandas would re-parse numbers and
could hide or add a quote). The catalogue is hostile on purpose: titles and categories that start with
=, +, -, @, tab or carriage return, and user / item ids like '=u1' and '-5' that other systems join on.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossrec_core.cli import main
from crossrec_core.cli.recommend import write_csv_atomic
from crossrec_core.serving.explain import display_title
from crossrec_core.safe_text import FORMULA_STARTS, neutralise_cell, neutralise_frame

APP = str(Path(__file__).resolve().parent.parent / "app.py")
HOSTILE = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"]
N_ITEMS, N_USERS = 12, 20


def raw_rows(data: bytes) -> list[list[str]]:
    """Return the cells exactly as written (quotes undone only where the CSV format itself added them)."""
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def column(rows: list[list[str]], name: str) -> list[str]:
    i = rows[0].index(name)
    return [r[i] for r in rows[1:]]


def expected(text: str) -> str:
    """Return the cell a spreadsheet-safe export holds for ``text``: a quote before a formula start, and a
    carriage return as a line feed (a bare CR would start a new spreadsheet row, unquoted)."""
    out = "'" + text if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text
    return out.replace("\r", "\n")


# -- the function --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", HOSTILE[:5])
def test_formula_starts_get_a_leading_quote(text):
    assert neutralise_cell(text) == "'" + text


def test_carriage_returns_become_line_feeds_so_the_writer_quotes_them():
    assert neutralise_cell("\rx") == "'\nx"
    assert neutralise_cell("Tent\r=cmd()") == "Tent\n=cmd()" and neutralise_cell("a\r\nb") == "a\nb"
    frame = pd.DataFrame({"item_id": ["i1"], "title": ["Tent\r=cmd()"]})
    data = neutralise_frame(frame).to_csv(index=False).encode()
    assert data == b'item_id,title\ni1,"Tent\n=cmd()"\n'  # quoted: one cell, no new row that starts with =
    assert frame.to_csv(index=False).encode() == b"item_id,title\ni1,Tent\r=cmd()\n"  # why: pandas leaves a CR bare


@pytest.mark.parametrize("value", ["Dome tent", "", " =not at the start", "'=already quoted", "a=b", "5", None, 5, -2.5,
                                   float("nan")])
def test_other_values_are_unchanged(value):
    out = neutralise_cell(value)
    assert out is value


def test_formula_starts_are_the_owasp_list():
    assert set(FORMULA_STARTS) == {"=", "+", "-", "@", "\t", "\r"}


def test_neutralise_frame_touches_only_the_named_text_columns():
    frame = pd.DataFrame({
        "user_id": ["=u1", "-5"], "item_id": ["+7", "@i"], "title": HOSTILE[:2], "category": pd.Categorical(HOSTILE[2:4]),
        "explanation": [HOSTILE[4], None], "score": [-0.5, 1.0],
    })
    before = frame.copy()
    out = neutralise_frame(frame, ("title", "category", "explanation", "score", "absent"))
    assert out["title"].tolist() == ["'" + t for t in HOSTILE[:2]]
    assert out["category"].tolist() == ["'" + t for t in HOSTILE[2:4]]
    assert out["explanation"].tolist()[0] == "'\tx" and pd.isna(out["explanation"].tolist()[1])
    assert neutralise_frame(pd.DataFrame({"title": ["\rx", "ok"]}))["title"].tolist() == ["'\nx", "ok"]
    for name in ("user_id", "item_id", "score"):
        pd.testing.assert_series_equal(out[name], before[name])
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is not modified


# -- a tiny model on a hostile catalogue ------------------------------------------------------------------
def _hostile_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """12 items whose titles and categories start with every formula character; ids like '=id1' and '-4'."""
    item_ids = [f"=id{k}" if k % 2 else f"-{k}" for k in range(N_ITEMS)]
    items = pd.DataFrame({"item_id": item_ids, "category": [HOSTILE[k % 4] for k in range(N_ITEMS)],
                          "title": [HOSTILE[(k + 1) % 6] + f" t{k}" for k in range(N_ITEMS)]})
    rng = np.random.default_rng(0)
    rows = [(f"=u{u}" if u % 2 else f"-{u}", item_ids[int(i)], 1_700_000_000 + 60 * t, "view")
            for u in range(N_USERS) for t, i in enumerate(rng.choice(N_ITEMS, 4, replace=False))]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"]), items


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Return the folder with log.csv, items.csv, a tiny trained model (1 epoch, 8 dims, no text) and a
    workspace holding the same dataset and model for the studio."""
    from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
    from crossrec_core.data.dataset import from_frames
    from crossrec_core.storage.datasets import save_dataset
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    folder = tmp_path_factory.mktemp("hostile")
    inter, items = _hostile_frames()
    inter.to_csv(folder / "log.csv", index=False)
    items.to_csv(folder / "items.csv", index=False, quoting=csv.QUOTE_ALL)  # pandas leaves a bare CR unquoted
    ds = from_frames(inter, items, name="hostile")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=8, use_text=False), user=UserEncoderConfig(kind="gru", dim=8, max_len=6),
                      train=TrainConfig(epochs=1, patience=1, batch_size=32, device="cpu", fusion_epochs=1, seed=0))
    model = train_model(ds, cfg, name="hostile")
    save_model(model, folder / "model")
    home = folder / "ws"
    save_dataset(ds, "hostile", root=home)
    save_model(model, home / "models" / "hostile")
    return {"folder": folder, "inter": inter, "items": items, "ds": ds, "home": home}


def _check_ids_unchanged(rows, hostile) -> None:
    users = set(hostile["inter"]["user_id"])
    items = set(hostile["items"]["item_id"])
    if "user_id" in rows[0]:
        assert set(column(rows, "user_id")) <= users and "=u1" in column(rows, "user_id") and "-0" in column(rows, "user_id")
    got = column(rows, "item_id")
    assert set(got) <= items and any(i.startswith("=") for i in got) and any(i.startswith("-") for i in got)


# -- `crossrec recommend` ----------------------------------------------------------------------------------
def test_cli_recommend_neutralises_category_and_keeps_ids(hostile, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    f, out = hostile["folder"], tmp_path / "recs.csv"
    rc = main(["recommend", "--model", str(f / "model"), "--interactions", str(f / "log.csv"), "--items",
               str(f / "items.csv"), "--k", "8", "--out", str(out)])
    assert rc == 0
    rows = raw_rows(out.read_bytes())
    assert rows[0] == ["user_id", "rank", "item_id", "score", "category"]
    _check_ids_unchanged(rows, hostile)
    cat_of = dict(zip(hostile["items"]["item_id"], hostile["items"]["category"]))
    assert column(rows, "category") == [expected(cat_of[i]) for i in column(rows, "item_id")]
    assert {c[:2] for c in column(rows, "category")} == {"'=", "'+", "'-", "'@"}
    assert all(float(s) >= 0 and s == s.strip() for s in column(rows, "score"))
    assert {r for r in column(rows, "rank")} == {str(k) for k in range(1, 9)}


def test_write_csv_atomic_neutralises_only_the_text_columns_it_is_given(tmp_path):
    frame = pd.DataFrame({"user_id": ["=u1", "-5", "+7", "@u"], "rank": [1, 2, 3, 4], "item_id": ["-5", "=id1", "@i", "+1"],
                          "score": [0.5, 0.25, 0.125, 0.0625], "category": ["\tx", "\rx", "@SUM(A1)", "Tents"]})
    out = tmp_path / "r.csv"
    write_csv_atomic(frame, out, text_columns=("category",))
    rows = raw_rows(out.read_bytes())
    assert column(rows, "category") == ["'\tx", "'\nx", "'@SUM(A1)", "Tents"]
    assert column(rows, "user_id") == ["=u1", "-5", "+7", "@u"] and column(rows, "item_id") == ["-5", "=id1", "@i", "+1"]
    assert column(rows, "score") == ["0.5", "0.25", "0.125", "0.0625"]
    assert out.read_bytes().startswith(b"user_id,rank,item_id,score,category\n=u1,1,-5,0.5,'\tx\n")
    write_csv_atomic(frame, out)  # without text_columns: written as given (the function's old contract)
    assert out.read_bytes() == frame.to_csv(index=False, float_format="%.6g", lineterminator="\n").encode()


def test_demo_export_neutralises_titles_and_categories(hostile, tmp_path):
    from crossrec_core.cli.data import _export_demo

    _export_demo(hostile["ds"], tmp_path)
    rows = raw_rows((tmp_path / "items.csv").read_bytes())
    ds = hostile["ds"]
    by_id = dict(zip(ds.items["item_id"], zip(ds.items["title"], ds.items["category"])))
    assert column(rows, "title") == [expected(by_id[i][0]) for i in column(rows, "item_id")]
    assert column(rows, "category") == [expected(by_id[i][1]) for i in column(rows, "item_id")]
    assert {t[:2] for t in column(rows, "title")} == {"'=", "'+", "'-", "'@", "'\t", "'\n"}
    _check_ids_unchanged(rows, hostile)
    log_rows = raw_rows((tmp_path / "interactions.csv").read_bytes())
    _check_ids_unchanged(log_rows, hostile)


# -- the studio's downloads (Recommendations page) ------------------------------------------------------------
@pytest.fixture
def captured_media(monkeypatch):
    """Return the in-memory media stores AppTest creates, so a download button's bytes can be read back."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stores = []
    real_init = MemoryMediaFileStorage.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        stores.append(self)

    monkeypatch.setattr(MemoryMediaFileStorage, "__init__", init)
    return stores


def _download_bytes(at, stores, key: str) -> bytes:
    button = next(b for b in at.get("download_button") if b.id.endswith(key))
    name = button.proto.url.rsplit("/", 1)[-1]
    for store in reversed(stores):
        try:
            return store.get_file(name).content
        except Exception:  # noqa: BLE001 - not in this run's store
            continue
    raise AssertionError(f"download {key} ({button.proto.url}) not found")


def test_studio_downloads_neutralise_text_and_keep_ids(hostile, monkeypatch, captured_media):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CROSSREC_HOME", str(hostile["home"]))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/recommendations.py")
    at.run()
    assert not at.exception, at.exception
    model_titles = dict(zip(hostile["items"]["item_id"], hostile["items"]["title"]))
    cat_of = dict(zip(hostile["ds"].items["item_id"], hostile["ds"].items["category"]))

    # "Download this list": title, category and explanation are text for people
    rows = raw_rows(_download_bytes(at, captured_media, "rec_dl_one"))
    assert {"item_id", "title", "category", "explanation"} <= set(rows[0])
    # this list shows display titles (whitespace collapsed, so '\tx t3' is shown as 'x t3'); neutralised after that
    shown = [display_title(model_titles[i], i) for i in column(rows, "item_id")]
    assert column(rows, "title") == [expected(t) for t in shown]
    assert any(t.startswith("'") for t in column(rows, "title"))
    assert column(rows, "category") == [expected(cat_of[i]) for i in column(rows, "item_id")]
    assert all(not c.startswith(FORMULA_STARTS) for c in column(rows, "explanation"))
    assert set(column(rows, "item_id")) <= set(model_titles)

    # "Download all shoppers", with the reasons
    at.toggle(key="rec_all_explain").set_value(True).run()
    at.button(key="rec_all").click().run()
    assert not at.exception, at.exception
    rows = raw_rows(at.session_state["_rec_all_csv"])
    assert rows[0][:5] == ["user_id", "rank", "item_id", "title", "category"] and rows[0][-1] == "explanation"
    _check_ids_unchanged(rows, hostile)
    assert column(rows, "title") == [expected(model_titles[i]) for i in column(rows, "item_id")]
    assert column(rows, "category") == [expected(cat_of[i]) for i in column(rows, "item_id")]
    assert {t[:2] for t in column(rows, "title")} == {"'=", "'+", "'-", "'@", "'\t", "'\n"}
    assert all(not c.startswith(FORMULA_STARTS) for c in column(rows, "explanation"))
    assert _download_bytes(at, captured_media, "rec_dl_all") == at.session_state["_rec_all_csv"]
