"""Corpus CER / WER arithmetic for the OCR benchmark."""

from __future__ import annotations


def normalize(text: str) -> str:
    """Case-fold and collapse whitespace: the only normalisation the CER/WER figures use."""
    return " ".join(text.lower().split())


def _edit_distance(a: list[str] | str, b: list[str] | str) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i]
        for j, y in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_counts(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """(char edits, ref chars, word edits, ref words) after ``normalize``; sum these over a
    corpus and divide, so long memes weigh more than one-word ones (corpus CER/WER)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    return (_edit_distance(ref, hyp), len(ref),
            _edit_distance(ref.split(), hyp.split()), len(ref.split()))
