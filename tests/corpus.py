"""The bad-input corpus as uploads: (file name, bytes) pairs for the app's Data page.

The file-level corpus lives in tests/test_bad_inputs.py (``CASES``, owned by ingestion; it drives
load_log and `crossrec ingest`). This module turns each of those cases into the two uploads a browser
would send (interaction log, optional items table) and adds cases that only an upload can produce: hostile
file names, contents under a misleading extension, wide headers, uploads whose name the browser's type
filter would refuse.

Every case says what the Data page must show: an error naming the problem (``error`` key words, as in
test_bad_inputs) or a validation report (the file loads).
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from test_bad_inputs import CASES as FILE_CASES  # the ingestion engineer's corpus (plain module-level list)

# The Data page's st.file_uploader(type=...) list: the browser only offers these extensions.
UPLOAD_TYPES = ("csv", "tsv", "txt", "parquet", "jsonl", "ndjson", "json", "gz", "inter", "item")
GOOD_LOG = "user_id,item_id,timestamp\n" + "".join(f"u{k % 7},i{k % 11},{1_700_000_000 + 60 * k}\n" for k in range(60))


@dataclass(frozen=True)
class Upload:
    """One corpus case as the browser would upload it."""

    name: str
    log: tuple[str, bytes]  # (file name, content)
    items: tuple[str, bytes] | None = None
    error: tuple[str, ...] = ()  # key words of the error the page must show; () = the file loads
    renamed: bool = False  # the original extension is not offered by the uploader; sent as .csv instead


def uploadable_name(name: str) -> tuple[str, bool]:
    """Return (a name the uploader accepts, whether it had to be renamed).

    A browser never sends a file whose extension is not in the uploader's type list, so a user with
    ``book.xlsx`` can only get it in by renaming it ``book.xlsx.csv``; the content stays hostile.
    """
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in UPLOAD_TYPES:
        return name, False
    return f"{name}.csv", True


def from_file_cases(tmp: Path) -> list[Upload]:
    """Return every case of tests/test_bad_inputs.py as an upload (files are generated under ``tmp``)."""
    out = []
    for case in FILE_CASES:
        if case.kwargs:  # needs a load_log argument (mapping / max_bytes) the Data page sets by widgets
            continue
        folder = tmp / case.name
        folder.mkdir(parents=True, exist_ok=True)
        log_path, items_path = case.make(folder)
        log_name, renamed = uploadable_name(log_path.name)
        items = None
        if items_path is not None:
            items_name, renamed_items = uploadable_name(items_path.name)
            items = (items_name, items_path.read_bytes())
            renamed = renamed or renamed_items
        out.append(Upload(case.name, (log_name, log_path.read_bytes()), items, tuple(case.error), renamed))
    return out


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def upload_only_cases() -> list[Upload]:
    """Return the cases only an upload produces (hostile names, misleading extensions, odd content)."""
    wide = ",".join(f"c{k}" for k in range(5000))
    return [
        Upload("traversal_file_name", ("../../../etc/cron.d/evil.csv", GOOD_LOG.encode())),
        Upload("html_file_name", ('<img src=x onerror="window.__xss=3">.csv', GOOD_LOG.encode())),
        Upload("markdown_file_name", ("**bold** [x](javascript:alert(1)).csv", GOOD_LOG.encode())),
        Upload("parquet_named_csv", ("log.csv", _parquet_bytes(pa.table({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"]})))),
        Upload("csv_named_parquet", ("log.parquet", GOOD_LOG.encode()), error=("Parquet",)),
        Upload("zip_named_csv", ("log.csv", b"PK\x03\x04" + b"\x00" * 200), error=("Excel",)),
        Upload("gzip_of_gzip", ("log.csv.gz", gzip.compress(gzip.compress(GOOD_LOG.encode()))), error=("binary",)),
        Upload("json_array_not_lines", ("log.json", json.dumps([{"user_id": "u1", "item_id": f"i{k}"} for k in range(3)]).encode())),
        Upload("wide_header_5000_columns", ("wide.csv", (wide + "\n" + ",".join("1" * 5000) + "\n").encode()),
               error=("no 'user_id' column",)),
        Upload("only_ids_one_row", ("one.csv", b"user_id,item_id\nu1,i1\n")),
        Upload("csv_formula_injection", ("formula.csv", ("user_id,item_id,title\n" + "".join(
            f"u{k % 3},i{k},=HYPERLINK(\"http://evil\";\"x\")\n" for k in range(9))).encode())),
        Upload("invalid_utf8_bytes", ("bad.csv", b"user_id,item_id,title\nu1,i1,caf\xe9\xff\xfe\nu1,i2,ok\n")),
        Upload("items_binary_log_good", ("log.csv", GOOD_LOG.encode()), items=("items.csv", bytes(range(256)) * 16),
               error=("binary",)),
        Upload("items_without_item_column", ("log.csv", GOOD_LOG.encode()), items=("items.csv", b"sku_x,cat\n1,A\n"),
               error=("items.csv",)),
    ]


def all_uploads(tmp: Path) -> list[Upload]:
    """Return the whole upload corpus (>= 30 cases)."""
    return from_file_cases(tmp) + upload_only_cases()
