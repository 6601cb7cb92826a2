"""Tab-separated output that spreadsheets read as data, never as formulas or extra rows.

Patient ids and paths come from users' files: a cell starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return is a formula (``=cmd|' /C calc'!A0``) to Excel, LibreOffice
and Google Sheets. Such cells get a leading apostrophe, which spreadsheets show as text
(OWASP's CSV-injection advice), and the csv module's ``excel-tab`` dialect quotes cells holding a tab, a quote or a
line break (its ``\r\n`` row ending is what makes it quote a lone ``\r`` too), so a hostile
id cannot split a row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> str:
    """The cell text, prefixed with ``'`` when a spreadsheet would evaluate it."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_tsv(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(out, dialect="excel-tab")
    writer.writerow(header)
    for row in rows:
        writer.writerow([neutralise(v) for v in row])
