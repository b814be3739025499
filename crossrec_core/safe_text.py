"""Neutralise text cells of exported CSVs against spreadsheet formulas (OWASP "CSV injection").

Excel and LibreOffice run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (tab and
carriage return can hide such a start), so a product title like ``=HYPERLINK("http://x", "Tent")`` in a
recommendations file would become a live link or worse when a merchandiser opens it. OWASP's fix is a
leading single quote, which spreadsheets show as text. It is applied only to text meant for people
(titles, categories, explanations); ids and numbers are never touched, because other systems join on
them byte for byte.

A carriage return inside such text also becomes a line feed. Python's csv writer (and so pandas) quotes a
cell holding a line feed but not one holding a bare carriage return when lines end in ``\\n``, and a
spreadsheet starts a new row at that carriage return: ``"\\r=cmd"`` would put an unquoted ``=cmd`` at the
start of a row.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PEOPLE_TEXT_COLUMNS = ("title", "category", "explanation")  # the export columns people read, never ids


def neutralise_cell(value: object) -> object:
    """Return ``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula, and its
    carriage returns as line feeds; any other value (other text, numbers, None, NaN) comes back as it is."""
    if not isinstance(value, str):
        return value
    out = "'" + value if value.startswith(FORMULA_STARTS) else value
    return out.replace("\r\n", "\n").replace("\r", "\n") if "\r" in out else out


def neutralise_frame(df: pd.DataFrame, columns: Iterable[str] = PEOPLE_TEXT_COLUMNS) -> pd.DataFrame:
    """Return a copy of ``df`` whose text ``columns`` went through neutralise_cell.

    Columns not listed, listed columns that are absent, and numeric columns stay exactly as they are.
    """
    out = df.copy()
    for name in columns:
        if name not in out.columns:
            continue
        values = out[name]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        arr = values.to_numpy(dtype=object, copy=True)  # categoricals cannot take new values: work on plain objects
        text = pd.Series(arr, dtype=object)
        try:
            risky = (text.str.startswith(FORMULA_STARTS, na=False) | text.str.contains("\r", regex=False, na=False))
        except AttributeError:  # a column holding no text at all
            continue
        idx = np.flatnonzero(risky.to_numpy(dtype=bool))
        if len(idx):
            arr[idx] = [neutralise_cell(v) for v in arr[idx]]  # only the few risky cells go through Python
            fixed = pd.Series(arr, index=out.index, dtype=object)
            out[name] = fixed.astype(values.dtype) if isinstance(values.dtype, pd.StringDtype) else fixed
    return out
