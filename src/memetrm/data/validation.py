"""Checks every loader runs, so bad data fails loudly with file:line or id, and nothing is lost."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from memetrm.config import BAD_LINE_POLICIES
from memetrm.errors import ConfigError, DataError
from memetrm.utils import plural


def parse_jsonl_line(line: str, where: str) -> dict[str, Any]:
    """One JSON object, or a ``DataError`` naming ``where`` (``file:line``)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON ({e.msg})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


#: UTF-8 byte-order mark, which some editors write at the start of a file
BOM = b"\xef\xbb\xbf"
#: How many bad lines an error message lists before giving only the total.
SHOWN_BAD_LINES = 20


class BadLines:
    """The bad lines of one file: collected so one error lists them all (the first 20 and the
    total), or, with ``skip``, dropped and counted, never silently."""

    def __init__(self, path: Path, policy: str = "error"):
        if policy not in BAD_LINE_POLICIES:
            raise ConfigError(f"on_bad_line must be one of {BAD_LINE_POLICIES}, got {policy!r}")
        self.path, self.policy = path, policy
        self.errors: list[str] = []

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Run one line's parsing; a ``DataError`` inside is recorded and the line left out."""
        try:
            yield
        except DataError as e:
            self.errors.append(str(e))

    def finish(self, warn: Callable[[str], None] | None = None) -> None:
        if not self.errors:
            return
        shown = "\n  ".join(self.errors[:SHOWN_BAD_LINES])
        more = len(self.errors) - SHOWN_BAD_LINES
        listing = f"\n  {shown}" + (f"\n  ... and {more} more" if more > 0 else "")
        if self.policy == "error":
            raise DataError(f"{self.path}: {plural(len(self.errors), 'bad line')}:{listing}\n"
                            "Fix them, or pass --on-bad-line skip to leave them out (counted).")
        if warn:
            warn(f"{self.path}: skipped {plural(len(self.errors), 'bad line')}:{listing}")


def read_jsonl(path: Path, bad: BadLines | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line.

    A UTF-8 byte-order mark is accepted. A line that is not UTF-8 or not a JSON object raises
    ``file:line``, or is recorded in ``bad`` when given.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            with bad.check() if bad else contextlib.nullcontext():
                line = decode_line(raw.removeprefix(BOM) if lineno == 1 else raw, where)
                if line.strip():
                    yield lineno, parse_jsonl_line(line, where)


def read_text(path: Path) -> str:
    """A whole UTF-8 file (a byte-order mark is dropped); bad bytes raise ``file:line``."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {raw[e.start]:#04x})") from e


def decode_line(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid UTF-8 (byte {raw[e.start]:#04x} at column "
                        f"{e.start + 1})") from e


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
