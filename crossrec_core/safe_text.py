"""Neutralise text cells of exported CSVs against spreadsheet formulas (OWASP "CSV injection").

Excel and LibreOffice run a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (tab and
carriage return can hide such a start), so a product title like ``=HYPERLINK("http://x", "Tent")`` in a
recommendations file would become a live link or worse when a merchandiser opens it. OWASP's fix is a
leading single quote, which spreadsheets show as text. It is applied only to text meant for people
(titles, categories, explanations); ids and numbers are never touched, because other systems join on
them byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PEOPLE_TEXT_COLUMNS = ("title", "category", "explanation")  # the export columns people read, never ids


def neutralise_cell(value: object) -> object:
    """Return ``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula; any
    other value (other text, numbers, None, NaN) comes back unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


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
        try:
            risky = pd.Series(arr, dtype=object).str.startswith(FORMULA_STARTS, na=False).to_numpy(dtype=bool)
        except AttributeError:  # a column holding no text at all
            continue
        if risky.any():
            arr[risky] = "'" + arr[risky]  # object arrays add element by element
            fixed = pd.Series(arr, index=out.index, dtype=object)
            out[name] = fixed.astype(values.dtype) if isinstance(values.dtype, pd.StringDtype) else fixed
    return out
