"""Small builders shared by the reporting tests."""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

GALLERY = ["gallery/fundus_0.png", "gallery/fundus_1.png"]
"""Gallery overlays, relative to the report folder, as the explain stage writes them."""


def png_bytes(size: int = 32, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def add_gallery(report_dir: Path) -> Path:
    """Put the gallery overlays into a report folder, as the explain stage leaves them."""
    for i, relative in enumerate(GALLERY):
        path = report_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(seed=i))
    return report_dir


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """What the tests read from a report: ids, image sources, text and table rows per id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.images: list[str] = []
        self.text: dict[str, str] = {}
        self.rows: dict[str, list[tuple[dict[str, str | None], list[str]]]] = {}
        self._open: list[str | None] = []
        self._row: tuple[dict[str, str | None], list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        if tag in VOID:
            return
        element_id = attributes.get("id")
        if element_id is not None:
            self.ids.append(element_id)
            self.text.setdefault(element_id, "")
        self._open.append(element_id)
        if tag == "tr":
            self._row = (attributes, [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            for element_id in filter(None, self._open):
                self.rows.setdefault(element_id, []).append(self._row)
            self._row = None
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element_id in filter(None, self._open):
            self.text[element_id] += data
        if self._cell is not None:
            self._cell.append(data)

    def row(self, element_id: str, first_cell: str) -> list[str]:
        """Cells of the row under ``element_id`` whose first cell starts with ``first_cell``."""
        matches = [
            cells for _, cells in self.rows.get(element_id, []) if cells and cells[0].startswith(first_cell)
        ]
        if len(matches) != 1:
            raise AssertionError(f"{len(matches)} rows starting {first_cell!r} under #{element_id}")
        return matches[0]

    def metric_row(self, element_id: str, metric: str) -> list[str]:
        matches = [
            cells for attrs, cells in self.rows.get(element_id, []) if attrs.get("data-metric") == metric
        ]
        if len(matches) != 1:
            raise AssertionError(f"{len(matches)} rows for metric {metric!r} under #{element_id}")
        return matches[0]
