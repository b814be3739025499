"""Hostile files that still get through: unpacked-size and row limits of the readers, and model zips that
zipfile cannot read (encrypted, multi-part, odd compression, broken names) give one plain error.

The limits are monkeypatched down (readers.DEFAULT_MAX_BYTES, readers.DEFAULT_MAX_ROWS) so the files stay
tiny; the same constants guard every format, so one patch covers gzip, JSON Lines and Parquet alike.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossrec_core.storage import registry
from crossrec_core.cli import main
from crossrec_core.data import readers
from crossrec_core.data.load import load_log
from crossrec_core.data.readers import read_table
from crossrec_core.errors import DataError, ModelError

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _log_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{k % 97}" for k in range(n)], "item_id": [f"i{k % 13}" for k in range(n)],
                         "timestamp": [1_700_000_000 + k for k in range(n)]})


def _plain_sentence(message: str) -> None:
    """One line a merchandiser can act on: no traceback, no line break, says what to do."""
    assert "\n" not in message and "Traceback" not in message
    assert "split the log" in message and "crossrec ingest" in message


@pytest.fixture
def no_data_read(monkeypatch):
    """Make reading Parquet data (not its footer) fail the test: limits must be checked on the metadata."""

    def refuse(*args, **kwargs):
        raise AssertionError("pq.read_table was called: the data was read before the limit was checked")

    monkeypatch.setattr(pq, "read_table", refuse)


# -- Parquet: checked on the footer, before any data is read -------------------------------------------
def test_parquet_whose_metadata_unpacks_past_the_limit_is_refused_unread(tmp_path, monkeypatch, no_data_read):
    p = tmp_path / "log.parquet"
    n = 200_000
    table = pa.table({"user_id": pa.array(["the-same-long-shopper-id-0001"] * n), "item_id": pa.array(["i1"] * n)})
    pq.write_table(table, p, compression="zstd", use_dictionary=False)  # plain pages: 6 MB unpacked, KB on disk
    unpacked = readers.parquet_unpacked_bytes(pq.read_metadata(p))
    assert p.stat().st_size < 200_000 < 1_000_000 < unpacked
    monkeypatch.setattr(readers, "DEFAULT_MAX_BYTES", 1_000_000)
    with pytest.raises(DataError) as info:
        read_table(p)
    msg = str(info.value)
    assert msg.startswith("log.parquet would unpack to ") and "200,000 rows" in msg and "976.6 KB size limit" in msg
    assert readers._human(unpacked) in msg
    _plain_sentence(msg)
    # the same refusal for an upload held in memory
    with pytest.raises(DataError, match="would unpack to"):
        read_table(p.read_bytes(), "upload.parquet")


def test_parquet_over_the_row_limit_is_refused_unread(tmp_path, monkeypatch, no_data_read):
    p = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pandas(_log_rows(5_000)), p)
    monkeypatch.setattr(readers, "DEFAULT_MAX_ROWS", 1_000)
    with pytest.raises(DataError) as info:
        read_table(p)
    msg = str(info.value)
    assert msg.startswith("log.parquet has 5,000 rows, over the 1,000-row limit")
    assert "\n" not in msg and "--max-rows" in msg


def test_parquet_within_the_limits_still_loads(tmp_path, monkeypatch):
    p = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pandas(_log_rows(5_000)), p)
    monkeypatch.setattr(readers, "DEFAULT_MAX_ROWS", 5_000)
    monkeypatch.setattr(readers, "DEFAULT_MAX_BYTES", readers.parquet_unpacked_bytes(pq.read_metadata(p)))
    assert len(read_table(p)) == 5_000


# -- gzip: CSV, TSV and JSON Lines share the one unpacked-size limit ---------------------------------------
@pytest.mark.parametrize("name", ["log.csv.gz", "log.tsv.gz", "log.jsonl.gz"])
def test_gzip_over_the_unpacked_limit_is_refused(name, tmp_path, monkeypatch):
    frame = _log_rows(40_000)
    if name.startswith("log.jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in frame.to_dict("records"))
    else:
        text = frame.to_csv(index=False, sep="\t" if ".tsv" in name else ",")
    p = tmp_path / name
    p.write_bytes(gzip.compress(text.encode()))
    assert p.stat().st_size < 500_000 < len(text)
    monkeypatch.setattr(readers, "DEFAULT_MAX_BYTES", 500_000)
    with pytest.raises(DataError) as info:
        load_log(p)
    msg = str(info.value)
    assert msg.startswith(f"{name} unpacks to more than 488.3 KB, over the size limit for unpacked files")
    _plain_sentence(msg)
    monkeypatch.setattr(readers, "DEFAULT_MAX_BYTES", len(text) + 1)
    assert load_log(p).n_events > 0  # control: the same file loads under a big enough limit


@pytest.mark.parametrize("name", ["log.csv", "log.jsonl", "log.csv.gz", "log.jsonl.gz"])
def test_text_over_the_row_limit_is_refused(name, tmp_path, monkeypatch):
    frame = _log_rows(3_000)
    text = (frame.to_csv(index=False) if ".csv" in name
            else "".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    p = tmp_path / name
    p.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    monkeypatch.setattr(readers, "DEFAULT_MAX_ROWS", 2_999)
    with pytest.raises(DataError) as info:
        load_log(p)
    assert str(info.value).startswith(f"{name} has 3,000 rows, over the 2,999-row limit")
    monkeypatch.setattr(readers, "DEFAULT_MAX_ROWS", 3_000)
    assert len(read_table(p)) == 3_000


def test_ingest_max_rows_flag_exits_2_with_one_line(tmp_path, workspace, capsys):
    p = tmp_path / "log.csv"
    _log_rows(500).to_csv(p, index=False)
    rc = main(["ingest", "--interactions", str(p), "--name", "big", "--max-rows", "100"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "crossrec: error: log.csv has 500 rows, over the 100-row limit: split the log by date " \
        "range or keep only recent or active users, or load it with `crossrec ingest --max-rows N` on a machine " \
        "with more memory.\n"
    assert not (workspace / "datasets" / "big").exists()
    assert main(["ingest", "--interactions", str(p), "--name", "big", "--max-rows", "500"]) == 0


# -- model zips zipfile cannot read -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_zip(tmp_path_factory) -> bytes:
    """A tiny trained model (1 epoch, 8 dims, no text), zipped as the Train page expects it."""
    from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
    from crossrec_core.data.dataset import from_frames
    from crossrec_core.training.loop import train_model

    rng = np.random.default_rng(3)
    inter = pd.DataFrame([(f"u{u}", f"i{int(x)}", t) for u in range(20) for t, x in enumerate(rng.choice(8, 4, replace=False))],
                         columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(8)], "category": ["A", "B"] * 4, "title": list("abcdefgh")})
    cfg = ModelConfig(item=ItemEncoderConfig(dim=8, use_text=False), user=UserEncoderConfig(kind="gru", dim=8, max_len=4),
                      train=TrainConfig(epochs=1, patience=1, batch_size=32, device="cpu", fusion_epochs=1))
    folder = registry.save_model(train_model(from_frames(inter, items), cfg, name="z"), tmp_path_factory.mktemp("z") / "z")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.writestr(f"z/{p.name}", p.read_bytes())
    return buf.getvalue()


def _central_entries(buf: bytearray) -> list[int]:
    """Return the offsets of the central-directory entries (walked from the end record, not searched)."""
    eocd = buf.rfind(b"PK\x05\x06")
    count, _, start = struct.unpack("<HII", bytes(buf[eocd + 10: eocd + 20]))
    out, pos = [], start
    for _ in range(count):
        out.append(pos)
        name_len, extra_len, comment_len = struct.unpack("<HHH", bytes(buf[pos + 28: pos + 34]))
        pos += 46 + name_len + extra_len + comment_len
    return out


def _patched(data: bytes, *, flags: int = 0, method: int | None = None, disk: int | None = None, last_only=False) -> bytes:
    """Return the zip with general-purpose flag bits set (and/or the method, or the member's disk number)
    in both the central directory and the local headers, as a real tool would write them."""
    buf = bytearray(data)
    entries = _central_entries(buf)
    for cd in entries[-1:] if last_only else entries:
        local = struct.unpack("<I", bytes(buf[cd + 42: cd + 46]))[0]
        for off, flag_at, method_at in ((cd, 8, 10), (local, 6, 8)):
            buf[off + flag_at: off + flag_at + 2] = struct.pack("<H", struct.unpack("<H", bytes(buf[off + flag_at: off + flag_at + 2]))[0] | flags)
            if method is not None:
                buf[off + method_at: off + method_at + 2] = struct.pack("<H", method)
        if disk is not None:
            buf[cd + 34: cd + 36] = struct.pack("<H", disk)
    return bytes(buf)


def _bad_utf8_name(data: bytes) -> bytes:
    """A member whose name is flagged UTF-8 (bit 11) but is not valid UTF-8: zipfile raises UnicodeDecodeError."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("z/caf\u00e9.json", b"{}")
    return buf.getvalue().replace("caf\u00e9".encode(), b"caf\xff\xfe")


def _spanned_first_part(data: bytes) -> bytes:
    return b"PK\x07\x08" + data  # the spanning marker that starts the first part (.z01) of a split zip


ZIP_CASES = {
    "encrypted_every_member": (lambda d: _patched(d, flags=0x1), "password-protected"),
    "encrypted_last_member_only": (lambda d: _patched(d, flags=0x1, last_only=True), "password-protected"),
    "strong_encryption": (lambda d: _patched(d, flags=0x41), "password-protected"),
    "member_on_another_disk": (lambda d: _patched(d, disk=1), "multi-part"),
    "first_part_of_a_split_zip": (_spanned_first_part, "multi-part"),
    "unknown_compression_method": (lambda d: _patched(d, method=99), "method crossrec cannot unpack"),
    "name_not_valid_utf8": (_bad_utf8_name, "not a readable zip"),
    "cut_in_half": (lambda d: d[: len(d) // 2], "not a readable zip"),
}


@pytest.mark.parametrize("case", list(ZIP_CASES), ids=list(ZIP_CASES))
def test_unreadable_model_zip_is_a_plain_model_error_and_nothing_is_unpacked(case, good_zip, workspace, monkeypatch):
    make, words = ZIP_CASES[case]
    data = make(good_zip)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a[0]) or real_open(self, *a, **k))
    with pytest.raises(ModelError) as info:
        registry.import_model_zip(data, "imported")
    msg = str(info.value)
    assert words in msg and "\n" not in msg, msg
    assert opened == [], "a member was unpacked before the zip was refused"
    assert not (workspace / "models" / "imported").exists()
    assert not list(workspace.rglob(".staging-*")) and not list(workspace.rglob("*.safetensors"))


def test_unreadable_zip_errors_point_to_a_fix(good_zip, workspace):
    with pytest.raises(ModelError, match="zip the model folder again without a password"):
        registry.import_model_zip(_patched(good_zip, flags=0x1), "imported")
    with pytest.raises(ModelError, match="zip the model folder again as one file"):
        registry.import_model_zip(_patched(good_zip, disk=2), "imported")


def test_the_same_zip_without_the_defect_imports(good_zip, workspace):
    """Control: the cases above are refused for their defect, not because the model is bad."""
    assert registry.import_model_zip(good_zip, "imported") == workspace / "models" / "imported"
    assert registry.load_model(workspace / "models" / "imported").n_items == 8


def test_train_page_import_of_an_encrypted_zip_shows_a_message(good_zip, workspace):
    """The studio's zip import: a plain error on the page, no exception, no new model."""
    from streamlit.testing.v1 import AppTest

    from crossrec_core.storage.datasets import save_dataset

    save_dataset(load_log(_log_rows(200)), "shop")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    at.file_uploader(key="train_zip").set_value(("model.zip", _patched(good_zip, flags=0x1), "application/zip"))
    at.run()
    at.button(key="train_import").click().run()
    assert not at.exception, at.exception
    assert any("password-protected" in e.value for e in at.error), [e.value for e in at.error]
    assert not (workspace / "models" / "imported-model").exists()
