"""Read interaction logs and item tables from CSV, TSV, Parquet, JSON Lines (plain or .gz) and RecBole atomic files.

Every column comes back as text (pandas "str" dtype, missing values as NaN): ids are strings, some logs
use titles as ids, and leading zeros must survive. Problems a user can fix (empty file, binary file, wrong
delimiter, file too large, gzip bomb) become a DataError that names the file and says what to do.

Why one module of ~510 lines: every format shares the same size / row limits and text-only column
rules; splitting by format would copy those guards into each.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import re
import tempfile
import zlib
from pathlib import Path
from typing import IO, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from crossrec_core.errors import DataError

log = logging.getLogger(__name__)

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

# One size limit for everything a file holds once unpacked: the file itself, what a gzip file decompresses
# to, and what a Parquet file's metadata says its pages unpack to. Callers pass their own (`max_bytes`,
# `crossrec ingest --max-bytes`, the studio's upload limit).
DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GB: far above any log a laptop should ingest in one go
# Rows matter apart from bytes: a Parquet file of repeated values unpacks to few bytes but many rows, and
# every row costs ~250 bytes once read as text (10M rows took 2.4 GB in bench/scale.py), so 200M rows is
# ~50 GB of memory, beyond what one machine should ingest (README, "Scaling out": reduce it upstream).
DEFAULT_MAX_ROWS = 200_000_000
_TOO_BIG_ADVICE = (
    "split the log (by date range, or keep only the columns crossrec needs) or load it with "
    "`crossrec ingest --max-bytes N` on a machine with more memory"
)
SAMPLE_BYTES = 1 << 20  # sniff delimiter/encoding from the first MB
MAX_HEADER_BYTES = 1 << 20  # a header line longer than this is not a table
DELIMITERS = (",", ";", "\t", "|")
_DELIM_NAMES = {",": "commas (,)", ";": "semicolons (;)", "\t": "tabs", "|": "pipes (|)"}
MAX_GZIP_RATIO = 200  # real CSV logs compress 5-20x; zeros compress ~1000x
MAX_RATIO_FLOOR = 64 << 20  # the ratio check starts after 64 MB of output (small files may compress well)
_GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_TEXT_SUFFIXES = {".csv", ".tsv", ".tab", ".txt", ".dat", ".jsonl", ".ndjson", ".json", ".inter", ".item", ".user"}
_TAB_SUFFIXES = {".tsv", ".tab", ".inter", ".item", ".user"}
_RECBOLE_SUFFIXES = {".inter", ".item", ".user"}
_RECBOLE_TYPE = re.compile(r":(token|token_seq|float|float_seq)$", re.IGNORECASE)


def read_table(
    source: Source,
    name: str | None = None,
    *,
    max_bytes: int | None = None,
    delimiter: str | None = None,
    max_rows: int | None = None,
) -> pd.DataFrame:
    """Return the table in ``source`` with every column as text.

    Args:
        source: a path, raw bytes, or a binary file-like object (as uploaded by the app).
        name: the file name to use for format detection and messages (defaults to the path's name).
        max_bytes: refuse files larger than this, and files that unpack to more (gzip content, the
            uncompressed size in a Parquet file's metadata); default DEFAULT_MAX_BYTES (2 GB).
        delimiter: force a delimiter for delimited text; by default it is detected.
        max_rows: refuse tables with more rows than this (Parquet: checked on its metadata, before reading
            the data); default DEFAULT_MAX_ROWS (200 million).
    Returns:
        A DataFrame with string columns (missing cells are NaN). RecBole ``name:type`` headers are stripped.
    Raises:
        DataError: the file is empty, header-only, binary, too large (bytes, unpacked bytes or rows), or cannot
            be parsed.
    """
    limit = int(max_bytes or DEFAULT_MAX_BYTES)
    row_limit = int(max_rows or DEFAULT_MAX_ROWS)
    raw, path, label = _open_source(source, name, limit)
    suffixes = [s.lower() for s in Path(label).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""

    head = _peek(raw, path, 8)
    if head.startswith(_GZIP_MAGIC):
        tmp = _gunzip(raw, path, label, limit)
        try:
            return _read_plain(None, tmp, label, suffix, delimiter, limit, row_limit)
        finally:
            tmp.unlink(missing_ok=True)
    return _read_plain(raw, path, label, suffix, delimiter, limit, row_limit)


def _read_plain(
    raw: bytes | None, path: Path | None, label: str, suffix: str, delimiter: str | None, limit: int, row_limit: int
) -> pd.DataFrame:
    head = _peek(raw, path, 8)
    if len(head) == 0:
        raise DataError(f"{label} is empty. Export the log again and check that it has a header row and data rows.")
    if head.startswith(PARQUET_MAGIC) or suffix in {".parquet", ".pq"}:
        return _read_parquet(raw, path, label, limit, row_limit)
    if head.startswith(_ZIP_MAGIC) or suffix in {".xlsx", ".xls", ".zip"}:
        raise DataError(
            f"{label} is an Excel workbook or a zip archive, not a text table. "
            "Open it and save it as CSV (comma- or semicolon-separated), then upload the CSV."
        )

    sample = _peek(raw, path, SAMPLE_BYTES)
    encoding, text = _detect_encoding(sample, label)
    if not text.strip():
        raise DataError(f"{label} is empty (it contains only blank lines). Export the log again.")
    if encoding == "utf-16":
        # Excel's "Unicode text" export: transcode once to utf-8 and read as delimited text.
        data = _read_all(raw, path).decode("utf-16")
        raw, path, encoding = data.encode("utf-8"), None, "utf-8"
        sample = raw[:SAMPLE_BYTES]
        text = sample.decode("utf-8", errors="ignore")

    first = text.lstrip("\ufeff \r\n\t")[:1]
    if suffix in {".jsonl", ".ndjson", ".json"} or first in {"{", "["}:
        return _read_json(raw, path, label, text, row_limit)
    forced = delimiter or ("\t" if suffix in _TAB_SUFFIXES else None)
    df = _read_delimited(raw, path, label, text, encoding, forced, len(sample) < SAMPLE_BYTES, row_limit)
    if suffix in _RECBOLE_SUFFIXES or any(_RECBOLE_TYPE.search(str(c)) for c in df.columns):
        df.columns = [_RECBOLE_TYPE.sub("", str(c)) for c in df.columns]
    return df


# -- sources ---------------------------------------------------------------------------------------
def _open_source(source: Source, name: str | None, limit: int) -> tuple[bytes | None, Path | None, str]:
    """Return (bytes or None, path or None, label); paths stay on disk so pyarrow can stream them."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or path.name
        if not path.exists():
            raise DataError(f"{label}: file not found at {path}. Check the path.")
        if path.is_dir():
            raise DataError(f"{label} is a folder, not a file. Point to the CSV/Parquet file inside it.")
        size = path.stat().st_size
        _check_size(size, limit, label)
        return None, path, label
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(limit + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
    else:
        raise DataError(f"Cannot read {type(source).__name__}: give a file path, bytes or an open binary file.")
    label = name or getattr(source, "name", None) or "the uploaded file"
    label = Path(str(label)).name
    _check_size(len(data), limit, label)
    return data, None, label


def _check_size(size: int, limit: int, label: str) -> None:
    if size > limit:
        raise DataError(f"{label} is {_human(size)}, over the {_human(limit)} size limit: {_TOO_BIG_ADVICE}.")


def _check_rows(n_rows: int, row_limit: int, label: str) -> None:
    """Refuse a table with more rows than ``row_limit`` (called before the rows become pandas objects)."""
    if n_rows > row_limit:
        raise DataError(
            f"{label} has {n_rows:,} rows, over the {row_limit:,}-row limit: split the log by date range or keep "
            "only recent or active users, or load it with `crossrec ingest --max-rows N` on a machine with more memory."
        )


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _peek(raw: bytes | None, path: Path | None, n: int) -> bytes:
    if raw is not None:
        return raw[:n]
    with open(path, "rb") as fh:
        return fh.read(n)


def _read_all(raw: bytes | None, path: Path | None) -> bytes:
    return raw if raw is not None else path.read_bytes()


def _gunzip(raw: bytes | None, path: Path | None, label: str, limit: int) -> Path:
    """Return a temporary file holding the decompressed content (the caller deletes it).

    Decompression streams to disk, so memory stays flat; it stops as soon as the output passes ``limit``, or
    as soon as the ratio is far beyond what real logs reach (a gzip bomb), so a bomb costs a fraction of a second.
    """
    fh = io.BytesIO(raw) if raw is not None else open(path, "rb")
    fd, tmp_name = tempfile.mkstemp(prefix="crossrec-gunzip-", suffix=".tmp")
    tmp = Path(tmp_name)
    written = consumed = 0
    mid_member = False
    try:
        with os.fdopen(fd, "wb") as out:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while True:
                chunk = fh.read(1 << 16)
                if not chunk:
                    break
                consumed += len(chunk)
                while chunk:
                    try:
                        # max_length bounds the output of one call, so a tiny chunk cannot explode in memory
                        piece = d.decompress(chunk, 1 << 22)
                    except zlib.error as err:
                        raise DataError(f"{label} is a damaged gzip file ({err}). Compress the log again.") from None
                    out.write(piece)
                    written += len(piece)
                    if written > limit:
                        raise DataError(
                            f"{label} unpacks to more than {_human(limit)}, over the size limit for unpacked files "
                            f"(it may also be a damaged or malicious archive): {_TOO_BIG_ADVICE}."
                        )
                    if written > MAX_RATIO_FLOOR and written > MAX_GZIP_RATIO * consumed:
                        raise DataError(
                            f"{label} unpacks to more than {MAX_GZIP_RATIO} times its size, far beyond any real log: "
                            "it looks like a damaged or malicious archive (a 'zip bomb'). Compress the log again."
                        )
                    if d.eof:  # several gzip members may follow each other
                        chunk = d.unused_data
                        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                        mid_member = False
                    else:
                        chunk = d.unconsumed_tail
                        mid_member = True
            if mid_member:
                raise DataError(f"{label} is a damaged or truncated gzip file. Compress the log again.")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        fh.close()
    return tmp


# -- text ------------------------------------------------------------------------------------------
def _detect_encoding(sample: bytes, label: str) -> tuple[str, str]:
    """Return (encoding, decoded sample): utf-8, utf-8-sig, utf-16 (BOM) or latin-1; DataError for binary."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", sample.decode("utf-16", errors="ignore")
    if b"\x00" in sample:
        raise DataError(
            f"{label} looks like a binary file (it contains NUL bytes), not a text table. "
            "Export the log as CSV, TSV, JSON Lines or Parquet."
        )
    try:
        # incremental decoder: a multi-byte character cut at the end of the sample is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        encoding = "utf-8-sig" if sample.startswith(codecs.BOM_UTF8) else "utf-8"
    except UnicodeDecodeError:
        text, encoding = sample.decode("latin-1"), "latin-1"
    controls = sum(text.count(c) for c in map(chr, (*range(1, 9), 11, 12, *range(14, 32), 127)))
    if controls > max(8, len(text) // 100):
        raise DataError(
            f"{label} does not look like text (many control characters). "
            "Export the log as CSV, TSV, JSON Lines or Parquet."
        )
    return encoding, text.lstrip("\ufeff")


def _sniff_delimiter(lines: list[str]) -> str | None:
    """Return the delimiter whose count is the same (and non-zero) on the most sample lines."""
    best, best_score = None, (0, 0)
    for delim in DELIMITERS:
        counts = [_count_outside_quotes(line, delim) for line in lines]
        header = counts[0]
        if header == 0:
            continue
        consistent = sum(1 for c in counts if c == header)
        score = (consistent, header)
        if score > best_score:
            best, best_score = delim, score
    return best


def _count_outside_quotes(line: str, delim: str) -> int:
    if '"' not in line:
        return line.count(delim)
    try:
        return max(len(next(csv.reader([line], delimiter=delim))) - 1, 0)
    except (csv.Error, StopIteration):
        return line.count(delim)


def _read_delimited(
    raw: bytes | None,
    path: Path | None,
    label: str,
    text: str,
    encoding: str,
    forced: str | None,
    sample_is_whole: bool,
    row_limit: int,
) -> pd.DataFrame:
    lines = text.splitlines()
    if not lines or (len(lines) == 1 and not sample_is_whole and len(lines[0]) >= MAX_HEADER_BYTES // 4):
        raise DataError(
            f"{label} has no line break in its first {_human(SAMPLE_BYTES)}: it is not a table with one event "
            "per line. Check the export (line endings, or whether it is one big JSON document)."
        )
    if not sample_is_whole:
        lines = lines[:-1] or lines  # the last sampled line may be cut
    lines = [ln for ln in lines[:200] if ln.strip()]
    delim = forced or _sniff_delimiter(lines) or ","
    header = next(csv.reader([lines[0]], delimiter=delim))
    names = [h.strip() or f"column_{i + 1}" for i, h in enumerate(header)]
    if len(names) == 1:
        others = [d for d in DELIMITERS if d != delim and d in lines[0]]
        if others:
            right = max(others, key=lines[0].count)
            raise DataError(
                f"{label} was read as a single column named '{lines[0][:60]}'. It seems to be separated by "
                f"{_DELIM_NAMES[right]}, not {_DELIM_NAMES[delim]}: save it again with one consistent separator "
                f"or rename it to match (.csv for commas/semicolons, .tsv for tabs)."
            )
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{label} has repeated column names: {', '.join(dupes)}. Rename the columns so each is unique.")
    n_data = sum(1 for ln in lines[1:] if ln.strip())
    if n_data == 0 and sample_is_whole:
        raise DataError(
            f"{label} has a header ({', '.join(names[:6])}) but no data rows. Export the log again with its rows."
        )

    def parse(enc: str) -> pa.Table:
        src = pa.py_buffer(raw) if raw is not None else str(path)
        return pacsv.read_csv(
            src,
            read_options=pacsv.ReadOptions(
                encoding=enc, column_names=names, skip_rows=1, block_size=1 << 24, use_threads=True
            ),
            parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    try:
        try:
            table = parse("utf8" if encoding in {"utf-8", "utf-8-sig"} else encoding)
        except pa.ArrowInvalid as err:
            if "UTF8" not in str(err) and "utf8" not in str(err).lower():
                raise
            log.info("%s is not valid UTF-8 beyond the sample; reading it as latin-1", label)
            table = parse("latin-1")
    except pa.ArrowInvalid as err:
        raise DataError(_explain_csv_error(label, str(err), names, delim)) from None
    except (pa.ArrowException, OSError, UnicodeError) as err:
        raise DataError(f"{label} could not be read as a table ({_short(err)}). Export it again as CSV.") from None
    if table.num_rows == 0:
        raise DataError(
            f"{label} has a header ({', '.join(names[:6])}) but no data rows. Export the log again with its rows."
        )
    _check_rows(table.num_rows, row_limit, label)
    if encoding == "utf-8-sig" and names[0].startswith("\ufeff"):
        names[0] = names[0].lstrip("\ufeff")
        table = table.rename_columns(names)
    return _to_frame(table)


def _explain_csv_error(label: str, msg: str, names: list[str], delim: str) -> str:
    m = re.search(r"Expected (\d+) columns, got (\d+): (.*)", msg, re.S)
    if m:
        example = m.group(3).strip()[:80]
        return (
            f"{label}: a row has {m.group(2)} fields but the header has {m.group(1)} "
            f"({', '.join(names[:6])}), separated by {_DELIM_NAMES.get(delim, repr(delim))}. Example row: '{example}'. "
            "Quote values that contain the separator, or export with another separator."
        )
    return f"{label} could not be parsed as a table ({_short(msg)}). Check the separator and quoting, then export it again."


def _short(err) -> str:
    s = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return s[:160]


# -- JSON lines and parquet --------------------------------------------------------------------------
def _read_json(raw: bytes | None, path: Path | None, label: str, text: str, row_limit: int) -> pd.DataFrame:
    data = _read_all(raw, path)
    try:
        if text.lstrip("\ufeff \r\n\t").startswith("["):
            df = pd.read_json(io.BytesIO(data), orient="records", dtype=False)
            table = pa.Table.from_pandas(df, preserve_index=False)
        else:
            table = pajson.read_json(pa.py_buffer(data), read_options=pajson.ReadOptions(block_size=1 << 24))
    except (pa.ArrowException, ValueError, UnicodeError, TypeError) as err:
        raise DataError(
            f"{label} is not valid JSON Lines ({_short(err)}). Each line must be one JSON object such as "
            '{"user_id": "u1", "item_id": "i9", "timestamp": 1700000000}.'
        ) from None
    if table.num_rows == 0 or table.num_columns == 0:
        raise DataError(f"{label} has no records. Export the log again with its rows.")
    _check_rows(table.num_rows, row_limit, label)
    return _to_frame(_stringify(table, label))


def _read_parquet(raw: bytes | None, path: Path | None, label: str, limit: int, row_limit: int) -> pd.DataFrame:
    try:
        # the footer alone: a few KB of Parquet can declare gigabytes of pages, so refuse before reading them
        meta = pq.read_metadata(pa.BufferReader(raw) if raw is not None else str(path))
        unpacked = parquet_unpacked_bytes(meta)
        if unpacked > limit:
            raise DataError(
                f"{label} would unpack to {_human(unpacked)} ({meta.num_rows:,} rows), over the {_human(limit)} "
                f"size limit for unpacked files: {_TOO_BIG_ADVICE}."
            )
        _check_rows(meta.num_rows, row_limit, label)
        table = pq.read_table(pa.py_buffer(raw) if raw is not None else str(path))
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{label} is not a readable Parquet file ({_short(err)}). Export it again.") from None
    if table.num_rows == 0:
        raise DataError(f"{label} has columns ({', '.join(table.column_names[:6])}) but no rows.")
    _check_rows(table.num_rows, row_limit, label)  # in case the footer understated them
    return _to_frame(_stringify(table, label))


def parquet_unpacked_bytes(meta) -> int:
    """Return the bytes a Parquet file's pages unpack to, as its footer declares them (pyarrow FileMetaData).

    Per row group the larger of the group's total and its column chunks' uncompressed sizes, so a footer that
    leaves one of them at 0 still counts.
    """
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        columns = sum(group.column(c).total_uncompressed_size for c in range(group.num_columns))
        total += max(int(group.total_byte_size), int(columns))
    return total


def _stringify(table: pa.Table, label: str) -> pa.Table:
    """Return the table with every column as string; numbers keep their integer look (12.0 -> '12')."""
    cols, names, nested = [], [], []
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            out = col.cast(pa.string())
        elif pa.types.is_dictionary(t):
            out = col.cast(t.value_type).cast(pa.string())
        elif pa.types.is_timestamp(t):
            out = pc.cast(col, pa.timestamp("s", tz=t.tz), safe=False).cast(pa.int64()).cast(pa.string())
        elif pa.types.is_date(t):
            out = col.cast(pa.timestamp("s")).cast(pa.int64()).cast(pa.string())
        elif pa.types.is_floating(t):
            arr = col.to_numpy(zero_copy_only=False).astype(np.float64)
            finite = np.isfinite(arr)
            if finite.any() and np.all(np.mod(arr[finite], 1) == 0) and np.abs(arr[finite]).max() < 2**53:
                ints = pa.array(np.where(finite, arr, 0).astype(np.int64), mask=~finite)
                out = ints.cast(pa.string())
            else:
                out = pa.array(arr, mask=~finite).cast(pa.string())
        elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
            out = col.cast(pa.string())
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            try:
                out = col.cast(pa.string())
            except pa.ArrowInvalid:
                raise DataError(f"{label}: column '{name}' holds binary data, not text. Store ids as text.") from None
        else:  # struct, list, map: keep a readable form, and let validation refuse it if it is an id column
            nested.append(name)
            out = pa.array([None if v is None else str(v) for v in col.to_pylist()], type=pa.string())
        cols.append(out)
        names.append(str(name))
    result = pa.table(dict(zip(names, cols)))
    if nested:
        result = result.replace_schema_metadata({b"crossrec_nested": ",".join(nested).encode()})
    return result


def _to_frame(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    meta = table.schema.metadata or {}
    df.attrs["nested_columns"] = [c for c in meta.get(b"crossrec_nested", b"").decode().split(",") if c]
    return df


def frame_as_text(df: pd.DataFrame, name: str = "the table") -> pd.DataFrame:
    """Return a copy of an in-memory DataFrame with every column as text, exactly as read_table would give it."""
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError(f"{name} has no rows." if df.shape[1] else f"{name} has no columns.")
    frame = df.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        # mixed python objects in a column: fall back to their text form
        table = pa.Table.from_pandas(
            frame.apply(lambda c: c.astype("str") if c.dtype == object else c), preserve_index=False
        )
    return _to_frame(_stringify(table, name))
