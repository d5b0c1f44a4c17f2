"""A bounded memory of encoder outputs in front of the encoder, so a repost costs a hash.

Images are looked up by PDQ hash: the nearest stored hash within ``distance`` bits returns
its features (a near-duplicate reuses the original's features; that is the point). Texts are
looked up exactly by the hash of their normalised form. Each kind is an LRU of ``capacity``
entries per encoder; counters say how often each lookup hit. A hit returns the features and
how far the stored meme was (a PDQ distance; 0 for a text), so an answer can say that the
memo gave its features.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import Any

import numpy as np

from memetrm.serving.hashing import PDQ_DISTANCE, ImageHash, distances

#: every counter ``stats`` reports (zero until it happens)
COUNTERS = ("image_exact", "image_near", "image_miss", "image_unhashable", "text_hit",
            "text_miss", "evicted")
#: an item's features from one encoder: {"pooled": (D,), and "tokens" (L, D), "mask" (L,)}
Features = dict[str, Any]


class _ImageLRU:
    """Fixed slots of packed hashes searched all at once; least recently used slot evicted."""

    def __init__(self, capacity: int) -> None:
        self.packed = np.zeros((capacity, 32), np.uint8)
        self.values: list[Features | None] = [None] * capacity
        self.order: OrderedDict[int, None] = OrderedDict()  # used slots, oldest first

    def get(self, h: ImageHash, distance: int) -> tuple[Features, int] | None:
        if not self.order:
            return None
        slots = np.fromiter(self.order, np.int64, len(self.order))
        d = distances(h, self.packed[slots])
        best = int(d.argmin())
        if d[best] > distance:
            return None
        slot = int(slots[best])
        self.order.move_to_end(slot)
        return self.values[slot], int(d[best])

    def put(self, h: ImageHash, value: Features) -> bool:
        """Store; True if an older entry was evicted to make room."""
        full = len(self.order) == len(self.values)
        slot = self.order.popitem(last=False)[0] if full else len(self.order)
        self.packed[slot] = np.frombuffer(h.bits, np.uint8)
        self.values[slot] = value
        self.order[slot] = None
        return full


class FeatureMemo:
    """Per-item encoder outputs, keyed by (encoder, PDQ hash) or (encoder, normalised text)."""

    def __init__(self, capacity: int = 4096, distance: int = PDQ_DISTANCE) -> None:
        self.capacity, self.distance = capacity, distance
        self._images: dict[str, _ImageLRU] = {}
        self._texts: dict[str, OrderedDict[str, Features]] = {}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get_image(self, encoder: str, h: ImageHash | None) -> tuple[Features, int] | None:
        with self._lock:
            if h is None or not h.reliable:
                self.counts["image_unhashable"] += 1
                return None
            lru = self._images.get(encoder)
            hit = lru.get(h, self.distance) if lru else None
            self.counts["image_miss" if hit is None else
                        "image_exact" if hit[1] == 0 else "image_near"] += 1
            return hit

    def put_image(self, encoder: str, h: ImageHash | None, value: Features) -> None:
        if h is None or not h.reliable:
            return
        with self._lock:
            lru = self._images.setdefault(encoder, _ImageLRU(self.capacity))
            self.counts["evicted"] += lru.put(h, value)

    def get_text(self, encoder: str, key: str) -> tuple[Features, int] | None:
        with self._lock:
            lru = self._texts.get(encoder)
            hit = lru.get(key) if lru is not None else None
            if hit is not None:
                lru.move_to_end(key)
            self.counts["text_miss" if hit is None else "text_hit"] += 1
            return None if hit is None else (hit, 0)

    def put_text(self, encoder: str, key: str, value: Features) -> None:
        with self._lock:
            lru = self._texts.setdefault(encoder, OrderedDict())
            lru[key] = value
            lru.move_to_end(key)
            if len(lru) > self.capacity:
                lru.popitem(last=False)
                self.counts["evicted"] += 1

    def stats(self) -> dict[str, int]:
        """Counters and current sizes, for ``/metrics``."""
        with self._lock:
            return {**{k: self.counts[k] for k in COUNTERS},
                    "image_entries": sum(len(lru.order) for lru in self._images.values()),
                    "text_entries": sum(len(lru) for lru in self._texts.values())}
