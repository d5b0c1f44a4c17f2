"""Offline OCR for memes (RapidOCR, models shipped in its wheel).

The PP-OCR recogniser was trained mostly on Chinese, where words are not separated, so it
often glues English words together ("Trumpwasbringing"). A text encoder tokenises such runs
into junk sub-words, so ``restore_spaces`` re-segments long letter runs with a unigram model
built from the MiniLM WordPiece vocabulary (its whole-word entries are ordered by corpus
frequency): no extra download, no extra dependency.
"""

from __future__ import annotations

import math
import re
import threading
from functools import lru_cache

import numpy as np
from PIL import Image

from memetrm.errors import ConfigError

#: recognitions below this confidence are dropped (RapidOCR's own default)
MIN_SCORE = 0.5
#: whole words start here in the BERT-uncased vocabulary ("the" is 1996); before are specials
_FIRST_WORD_ID = 1996
_CONTRACTIONS = ("t", "s", "m", "d", "ll", "re", "ve")
_LETTERS = re.compile(r"[A-Za-z]+")
#: a comma/colon/... or a full stop before a capital, glued to the next word
_GLUED_PUNCT = re.compile(r"(?<=[A-Za-z])([,;:!?]|\.(?=[A-Z]))(?=[A-Za-z])")


#: Longest side OCR reads: a blank 36 MP upload would otherwise take seconds of CPU.
MAX_OCR_SIDE = 2048


class OCR:
    """Lazily built, thread-safe RapidOCR engine returning one string per image."""

    def __init__(self, min_score: float = MIN_SCORE, restore: bool = True,
                 max_side: int = MAX_OCR_SIDE) -> None:
        self.min_score = min_score
        self.restore = restore
        self.max_side = max_side
        self._engine = None
        self._lock = threading.Lock()

    def load(self) -> OCR:
        """Build the engine now (servers call this at startup so the first request is not slow)."""
        with self._lock:
            if self._engine is None:
                try:
                    from rapidocr_onnxruntime import RapidOCR
                except ImportError as e:
                    raise ConfigError(
                        "OCR needs 'rapidocr-onnxruntime': pip install 'memetrm[ocr]' "
                        "(or pass the meme text explicitly)"
                    ) from e
                self._engine = RapidOCR()
        return self

    def lines(self, image: Image.Image) -> list[str]:
        """Recognised lines in reading order (top to bottom, left to right)."""
        self.load()
        if max(image.size) > self.max_side:  # OCR time grows with pixels; meme text stays legible
            image = image.copy()
            image.thumbnail((self.max_side, self.max_side))
        arr = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()  # RapidOCR expects BGR
        with self._lock:
            result, _ = self._engine(arr)
        return [text for _box, text, score in result or [] if float(score) >= self.min_score]

    def __call__(self, image: Image.Image) -> str:
        text = " ".join(line.strip() for line in self.lines(image) if line.strip())
        return restore_spaces(text) if self.restore else text


@lru_cache(maxsize=1)
def _word_costs() -> dict[str, float]:
    """Zipf costs ``log(rank * log N)`` of the vocabulary's whole words (wordninja's model)."""
    from memetrm.encoders.towers import minilm_dir

    try:
        vocab = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    except (ConfigError, OSError):
        return {}
    words = ["a", "i"] + [w for w in vocab[_FIRST_WORD_ID:] if w.isascii() and w.isalpha()]
    log_n = math.log(len(words))
    costs = {w: math.log((rank + 1) * log_n) for rank, w in enumerate(dict.fromkeys(words))}
    # WordPiece keeps few plurals as whole words; "ricans" must not become "rican sin"
    for w, c in list(costs.items()):
        costs.setdefault(w + "s", c + 1.5)
    return costs


def _unknown_cost(n: int) -> float:
    """Cost of keeping ``n`` letters as one out-of-vocabulary word (names, slang, typos)."""
    return 12.0 + 2.5 * n


def _segment(run: str, costs: dict[str, float]) -> tuple[float, list[str]]:
    """Cheapest split of a letter run into words (dynamic programming over prefixes)."""
    low = run.lower()
    n = len(low)
    best: list[tuple[float, int]] = [(0.0, 0)] + [(math.inf, 0)] * n
    for end in range(1, n + 1):
        for start in range(max(0, end - 24), end):
            piece = low[start:end]
            c = costs.get(piece, _unknown_cost(len(piece)))
            if best[start][0] + c < best[end][0]:
                best[end] = (best[start][0] + c, start)
    words, end = [], n
    while end > 0:
        start = best[end][1]
        words.append(run[start:end])
        end = start
    return best[n][0], words[::-1]


def restore_spaces(text: str, min_len: int = 8) -> str:
    """Split glued letter runs of at least ``min_len`` letters and put a space after glued
    punctuation; keep everything else as is.

    A run right after an apostrophe may start with a contraction ("don'tever" -> "don't ever").
    """
    costs = _word_costs()
    if not costs:
        return text

    def fix(m: re.Match[str]) -> str:
        run = m.group(0)
        if len(run) < min_len:
            return run
        options = [_segment(run, costs)]
        if m.start() > 0 and text[m.start() - 1] == "'":
            for suffix in _CONTRACTIONS:
                if run.lower().startswith(suffix) and len(run) > len(suffix):
                    cost, words = _segment(run[len(suffix):], costs)
                    options.append((cost, [run[: len(suffix)], *words]))
        return " ".join(min(options)[1])

    return _GLUED_PUNCT.sub(r"\1 ", _LETTERS.sub(fix, text))
