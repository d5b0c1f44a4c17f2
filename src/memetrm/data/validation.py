"""Checks every loader runs, so bad data fails loudly with file:line or id, and nothing is lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memetrm.errors import DataError


def parse_jsonl_line(line: str, where: str) -> dict[str, Any]:
    """One JSON object, or a ``DataError`` naming ``where`` (``file:line``)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON ({e.msg})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a malformed line raises file:line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, parse_jsonl_line(line, f"{path}:{lineno}")


def parse_label(value: Any, where: str, *, allow_missing: bool = True) -> int | None:
    """Labels are 0 or 1 (bools and "0"/"1" accepted); anything else names where it came from."""
    if value is None:
        if allow_missing:
            return None
        raise DataError(f"{where}: missing label")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise DataError(f"{where}: label {value!r} is not 0 or 1")


def check_text(value: Any, where: str, field: str = "text") -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field '{field}' is empty")
    return value


def check_unique_ids(ids: list[str], sources: list[str]) -> None:
    seen: dict[str, str] = {}
    for i, src in zip(ids, sources, strict=True):
        if i in seen:
            raise DataError(f"duplicate id {i!r} at {src} (first seen at {seen[i]})")
        seen[i] = src
