"""A corpus of malformed inputs: each gives its clear DataError, or loads with the expected warning.

Every case is generated in tmp_path (large ones too), then checked twice: through load_log (the message's key
words, or the report's warning count) and through `crossrec ingest` (exit status 2 with a one-line message on
stderr, no traceback, workspace unchanged; or exit status 0 for the cases that load).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossrec_core.cli import main
from crossrec_core.data.load import load_log
from crossrec_core.data.profile import profile_dataset
from crossrec_core.errors import DataError

GOOD_ROWS = "".join(f"u{k % 7},i{k % 11},{1_700_000_000 + 60 * k}\n" for k in range(60))


@dataclass
class Case:
    name: str
    make: Callable[[Path], tuple[Path, Path | None]]  # -> (interactions, items)
    error: tuple[str, ...] = ()  # key words of the DataError message (regex-free, case-sensitive)
    warning: str | None = None  # report.counts key expected when the file loads
    check: Callable | None = None  # extra assertion on the loaded dataset
    args: list[str] = field(default_factory=list)  # extra CLI args; (mapping, kwargs) passed to load_log via kw
    kwargs: dict = field(default_factory=dict)


def _text(name, content, encoding="utf-8"):
    def make(tmp):
        p = tmp / name
        p.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
        return p, None

    return make


def _with_items(log, items):
    def make(tmp):
        p, q = tmp / "log.csv", tmp / "items.csv"
        p.write_text(log)
        q.write_text(items)
        return p, q

    return make


def _parquet(table_fn):
    def make(tmp):
        p = tmp / "log.parquet"
        pq.write_table(table_fn(), p)
        return p, None

    return make


def _one_line_100mb(tmp):
    p = tmp / "oneline.csv"
    chunk = b"x" * (1 << 20)
    with open(p, "wb") as fh:
        fh.write(b"user_id,item_id,")
        for _ in range(100):
            fh.write(chunk)
    return p, None


def _gzip_bomb(tmp):
    p = tmp / "bomb.csv.gz"
    member = gzip.compress(b"user_id,item_id\n" + b"0" * (64 << 20), compresslevel=9)
    p.write_bytes(member * 34)  # ~2.2 GB once unpacked, 2 MB on disk
    return p, None


def _small_bomb(tmp):
    p = tmp / "small_bomb.csv.gz"
    p.write_bytes(gzip.compress(b"user_id,item_id\n" + b"1,2\n" * 3_000_000))  # 12 MB unpacked
    return p, None


def _many_categories(tmp):
    n = 100_000
    p, q = tmp / "log.csv", tmp / "items.csv"
    k = np.arange(n)
    p.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},i{i},{1_700_000_000 + i}\n" for u, i in zip(k % 5000, k)))
    q.write_text("item_id,category,title\n" + "".join(f"i{i},cat{i},Item {i}\n" for i in k))
    return p, q


def _check_many_categories(ds):
    assert ds.n_categories == 100_000
    prof = profile_dataset(ds)
    assert prof.transitions.shape == (31, 31)


def _binary(tmp):
    p = tmp / "random.csv"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p, None


_LOG = "user_id,item_id,timestamp\n"
CASES = [
    Case("empty", _text("empty.csv", b""), ("empty.csv is empty",)),
    Case("blank_lines", _text("blank.csv", "\n\n   \n"), ("empty",)),
    Case("header_only", _text("header.csv", _LOG), ("header", "no data rows")),
    Case("missing_item_column", _text("noitem.csv", "user_id,timestamp\nu1,1\n"), ("no 'item_id' column", "Available columns")),
    Case("wrong_delimiter", _text("log.tsv", "user_id;item_id;timestamp\nu1;i1;1\n"), ("single column", "semicolons")),
    Case("ragged_rows", _text("ragged.csv", _LOG + "u1,i1,1\nu2,i2,2,extra,fields\n"), ("fields", "header has 3")),
    Case("duplicate_columns", _text("dupcols.csv", "user_id,item_id,user_id\n1,2,3\n"), ("repeated column names",)),
    Case("impossible_dates", _text("dates.csv", "user_id,item_id,date\n" + "u1,i1,2024-02-30\n" * 5 + "u1,i2,2024-02-28\n"),
         ("5 of 6 rows", "timestamp", "'2024-02-30'")),
    Case("mixed_dates", _text("mixed.csv", "user_id,item_id,date\nu1,i1,2024-03-07 14:02\nu1,i2,08.03.2024 09:00\n"
                              "u1,i3,2024-03-09\nu2,i1,13.03.2024\n"),
         check=lambda ds: ds.seqs.times[:3].tolist() == [1709820120, 1709888400, 1709942400]),
    Case("few_bad_dates", _text("fewbad.csv", "user_id,item_id,date\n" + "".join(f"u{k % 5},i{k},2024-03-{k % 28 + 1:02d}\n" for k in range(40)) + "u1,i99,2024-13-45\n"),
         warning="bad_timestamps"),
    Case("negative_timestamps", _text("neg.csv", _LOG + "u1,i1,-1700000000\nu1,i2,-5\nu2,i3,1700000000\n"), ("out of range", "'-1700000000'")),
    Case("far_future", _text("future.csv", _LOG + "u1,i1,99999999999\nu1,i2,88888888888\nu2,i3,1700000000\n"), ("out of range", "2100")),
    Case("null_user_ids", _text("nullusers.csv", _LOG + ",i1,1\n,i2,2\nnull,i3,3\nu1,i4,4\n"), ("no usable user id", "'user_id'", "3 of 4")),
    Case("whitespace_ids", _text("ws.csv", _LOG + GOOD_ROWS + "   ,i1,1700000000\n"), warning="bad_user_id"),
    Case("very_long_ids", _text("longids.csv", _LOG + "".join(f"{'u' * 10_000}{k},i{k},{k}\n" for k in range(3))), ("at most 512 characters",)),
    Case("header_repeated_inside", _text("cat.csv", _LOG + GOOD_ROWS + _LOG + GOOD_ROWS.replace("u", "v")), warning="header_rows"),
    Case("excel_bom_crlf_semicolons", _text("export.csv", "\ufeffCustomer_No;SKU;Date\r\n7;0042;07.03.2024 14:02\r\n7;0043;08.03.2024 09:00\r\n"),
         check=lambda ds: ds.item_ids.tolist() == ["0042", "0043"] and ds.user_ids.tolist() == ["7"]),
    Case("latin1", _text("latin.csv", "user_id,item_id,title\nu1,i1,Crème brûlée\nu1,i2,Café\n", "latin-1"),
         check=lambda ds: sorted(ds.item_titles) == ["Café", "Crème brûlée"]),
    Case("utf16", _text("unicode.txt", "user_id\titem_id\nu1\tCafé\nu1\tThé\n", "utf-16"), check=lambda ds: ds.n_items == 2),
    Case("old_mac_line_endings", _text("mac.csv", "user_id,item_id\ru1,i1\ru1,i2\r"), check=lambda ds: ds.n_events == 2),
    Case("nul_bytes", _text("nul.csv", b"user_id,item_id\nu1\x00,i1\n"), ("binary", "NUL")),
    Case("random_binary", _binary, ("binary",)),
    Case("xlsx_workbook", _text("book.xlsx", b"PK\x03\x04" + b"\x00" * 100), ("Excel",)),
    Case("one_line_100mb", _one_line_100mb, ("no line break",)),
    Case("gzip_bomb", _gzip_bomb, ("bomb",)),
    Case("gzip_over_limit", _small_bomb, ("unpacks to more than",), args=["--max-bytes", "1000000"], kwargs={"max_bytes": 1_000_000}),
    Case("truncated_gzip", _text("cut.csv.gz", gzip.compress((_LOG + GOOD_ROWS).encode())[:-20]), ("damaged",)),
    Case("broken_jsonl", _text("log.jsonl", '{"user_id": "u1", "item_id": "i1"}\n{"user_id": "u2", \n'), ("JSON",)),
    Case("parquet_float_ids", _parquet(lambda: pa.table({"user_id": [1.0, 2.0, 1.0], "item_id": [10.0, 20.0, 30.0]})),
         check=lambda ds: ds.user_ids.tolist() == ["1", "2"] and ds.item_ids.tolist() == ["10", "30", "20"]),
    Case("parquet_struct_ids", _parquet(lambda: pa.table({"user_id": pa.array([{"a": 1}, {"a": 2}]), "item_id": ["i1", "i2"]})),
         ("nested",)),
    Case("parquet_no_rows", _parquet(lambda: pa.table({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())})),
         ("no rows",)),
    Case("items_contradict_log", _with_items("user_id,item_id,category\nu1,i1,Toys\nu1,i2,Baby\nu2,i1,Toys\n",
                                             "item_id,category\ni1,Books\ni2,Baby\n"), warning="category_contradictions"),
    Case("items_file_empty", _with_items(_LOG + GOOD_ROWS, ""), ("items.csv is empty",)),
    Case("every_user_one_event", _text("single.csv", _LOG + "".join(f"u{k},i{k % 3},{k}\n" for k in range(20))),
         warning="single_event_users"),
    Case("single_category", _with_items(_LOG + GOOD_ROWS, "item_id,category\n" + "".join(f"i{k},Shoes\n" for k in range(11))),
         check=lambda ds: ds.n_categories == 1 and ds.category_names.tolist() == ["Shoes"]),
    Case("many_categories", _many_categories, check=_check_many_categories),
    Case("mapping_to_missing_column", _text("log.csv", _LOG + GOOD_ROWS), ("no column 'shopper'",),
         args=["--map", "user_id=shopper"], kwargs={"mapping": {"user_id": "shopper"}}),
    Case("quoted_newline_in_title", _text("nl.csv", 'user_id,item_id,title\nu1,i1,"Tent\nwith porch"\nu1,i2,Boots\n'),
         check=lambda ds: "Tent\nwith porch" in set(ds.item_titles)),
]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path, workspace, capsys):
    src = tmp_path / "src"
    src.mkdir()
    log_path, items_path = case.make(src)
    if case.error:
        with pytest.raises(DataError) as info:
            load_log(log_path, items_path, **case.kwargs)
        for words in case.error:
            assert words in str(info.value), (words, str(info.value))
    else:
        ds = load_log(log_path, items_path, **case.kwargs)
        if case.warning:
            assert ds.report.counts.get(case.warning, 0) > 0, ds.report.to_dict()
            assert ds.report.warnings
        if case.check:
            assert case.check(ds) is not False

    before = _listing(workspace)
    argv = ["ingest", "--interactions", str(log_path), "--name", "case"] + case.args
    if items_path is not None:
        argv += ["--items", str(items_path)]
    rc = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    if case.error:
        assert rc == 2
        assert captured.err.startswith("crossrec: error: ") and captured.err.count("\n") == 1
        assert _listing(workspace) == before
    else:
        assert rc == 0 and "Saved dataset 'case'" in captured.out


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


def test_repeated_header_with_metadata_adds_no_fake_item(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_text("user_id,item_id,category\nu1,i1,A\nu1,i2,B\nuser_id,item_id,category\nu2,i1,A\n")
    ds = load_log(p)
    assert sorted(ds.item_ids) == ["i1", "i2"] and ds.report.counts["header_rows"] == 1
