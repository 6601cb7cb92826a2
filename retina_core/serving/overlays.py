"""Grad-CAM overlays of recent predictions, kept in memory and bounded.

An overlay is derived from a patient's image, so by default it never touches disk: the
newest ``capacity`` predictions' PNGs stay in an LRU and older ones are dropped (their
URLs then answer 404).
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class OverlayCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, prediction_id: str, overlays: dict[str, bytes]) -> None:
        with self._lock:
            self._items[prediction_id] = dict(overlays)
            self._items.move_to_end(prediction_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, prediction_id: str, name: str) -> bytes | None:
        with self._lock:
            found = self._items.get(prediction_id)
            if found is None:
                return None
            self._items.move_to_end(prediction_id)
            return found.get(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
