"""readers.read_table: formats, encodings, delimiters and the file-level refusals."""

from __future__ import annotations

import gzip
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossrec_core.data.readers import read_table
from crossrec_core.errors import DataError

CSV = "user_id,item_id,timestamp\n001,0042,1700000000\n002,0043,1700000060\n"


def test_csv_keeps_leading_zeros_and_reads_strings(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text(CSV)
    df = read_table(p)
    assert list(df.columns) == ["user_id", "item_id", "timestamp"]
    assert df["user_id"].tolist() == ["001", "002"]
    assert df["item_id"].tolist() == ["0042", "0043"]
    assert df["timestamp"].tolist() == ["1700000000", "1700000060"]


def test_tsv_and_pipe_and_semicolon_detected(tmp_path):
    for delim, suffix in (("\t", ".tsv"), ("|", ".txt"), (";", ".csv")):
        p = tmp_path / f"log{suffix}"
        p.write_text(CSV.replace(",", delim))
        assert read_table(p)["item_id"].tolist() == ["0042", "0043"], delim


def test_quoted_commas_do_not_fool_the_sniffer(tmp_path):
    p = tmp_path / "items.csv"
    p.write_text('item_id;title\n1;"Tent, 2 person, green"\n2;"Boots, size 42"\n')
    df = read_table(p)
    assert df["title"].tolist() == ["Tent, 2 person, green", "Boots, size 42"]


def test_excel_export_bom_crlf_semicolon(tmp_path):
    p = tmp_path / "export.csv"
    p.write_bytes("\ufeffcustomer_no;sku;date\r\n7;A1;07.03.2024 14:02\r\n8;A2;08.03.2024 09:00\r\n".encode("utf-8"))
    df = read_table(p)
    assert list(df.columns) == ["customer_no", "sku", "date"]
    assert df["date"].tolist() == ["07.03.2024 14:02", "08.03.2024 09:00"]


def test_latin1_falls_back(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("item_id,title\n1,Crème brûlée\n2,Café\n".encode("latin-1"))
    assert read_table(p)["title"].tolist() == ["Crème brûlée", "Café"]


def test_utf16_excel_unicode_text(tmp_path):
    p = tmp_path / "unicode.txt"
    p.write_bytes("user_id\titem_id\nu1\tCafé\n".encode("utf-16"))
    assert read_table(p)["item_id"].tolist() == ["Café"]


def test_bytes_and_filelike_with_name():
    assert read_table(CSV.encode(), "upload.csv")["user_id"].tolist() == ["001", "002"]
    fh = io.BytesIO(gzip.compress(CSV.encode()))
    assert read_table(fh, "upload.csv.gz")["item_id"].tolist() == ["0042", "0043"]


def test_gzip_path(tmp_path):
    p = tmp_path / "log.csv.gz"
    p.write_bytes(gzip.compress(CSV.encode()))
    assert len(read_table(p)) == 2


def test_parquet_numbers_become_text_without_float_noise(tmp_path):
    p = tmp_path / "log.parquet"
    t = pa.table({"user_id": pa.array([1.0, 2.0]), "item_id": pa.array([10, 20]), "ts": pa.array(
        pd.to_datetime(["2024-01-01", "2024-01-02"]).as_unit("ms"))})
    pq.write_table(t, p)
    df = read_table(p)
    assert df["user_id"].tolist() == ["1", "2"]
    assert df["item_id"].tolist() == ["10", "20"]
    assert df["ts"].tolist() == ["1704067200", "1704153600"]


def test_jsonl_and_json_array(tmp_path):
    rows = [{"user_id": "u1", "item_id": 5, "timestamp": 1}, {"user_id": "u2", "item_id": 6, "timestamp": 2}]
    p = tmp_path / "log.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_table(p)["item_id"].tolist() == ["5", "6"]
    q = tmp_path / "log.json"
    q.write_text(json.dumps(rows))
    assert read_table(q)["user_id"].tolist() == ["u1", "u2"]


def test_recbole_atomic_headers_stripped(tmp_path):
    p = tmp_path / "shop.inter"
    p.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t7\t1700000000.0\n")
    q = tmp_path / "shop.item"
    q.write_text("item_id:token\tcategories:token_seq\ttitle:token_seq\n7\tCamping Tents\tDome tent, green\n")
    assert list(read_table(p).columns) == ["user_id", "item_id", "timestamp"]
    items = read_table(q)
    assert list(items.columns) == ["item_id", "categories", "title"]
    assert items["title"].tolist() == ["Dome tent, green"]


def test_size_limit(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text(CSV)
    with pytest.raises(DataError, match="over the"):
        read_table(p, max_bytes=10)


def test_gzip_bomb_refused_while_streaming():
    bomb = gzip.compress(b"user_id,item_id\n" + b"1" * 5_000_000)
    with pytest.raises(DataError, match="unpacks to more than"):
        read_table(bomb, "bomb.csv.gz", max_bytes=1_000_000)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"user_id,item_id\n", "no data rows"),
        (b"\x00\x01\x02binary\x00", "binary"),
        (b"PK\x03\x04rest-of-a-zip", "Excel"),
        (b"a,b\n1,2,3\n", "fields"),
    ],
)
def test_refusals(content, words):
    with pytest.raises(DataError, match=words):
        read_table(content, "bad.csv")


def test_wrong_delimiter_names_the_right_one():
    with pytest.raises(DataError, match="semicolons"):
        read_table(b"user_id;item_id\n1;2\n", "log.tsv")
    with pytest.raises(DataError, match="commas"):
        read_table(b"user_id,item_id\n1,2\n", "log.csv", delimiter="|")
