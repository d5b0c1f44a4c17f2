"""Markdown from the JSON in docs/data/: one module per benchmark, each with ``render()``.

Nothing here imports torch or the trainer (a test holds it to that), so ``make docs`` runs in
a small environment and CI can check that every table still agrees with its JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memetrm.errors import ConfigError
from memetrm.utils import atomic_write_text


def replace_block(path: Path, name: str, text: str) -> None:
    """Replace what stands between ``<!-- generated:NAME start -->`` and ``... end -->`` in a
    markdown file; hand-written prose around it stays. Missing markers are an error, so a
    table can never silently stop being updated."""
    start, end = f"<!-- generated:{name} start -->", f"<!-- generated:{name} end -->"
    doc = Path(path).read_text()
    if start not in doc or end not in doc:
        raise ConfigError(f"{path}: no {start} ... {end} block to write {name!r} into")
    head, _, rest = doc.partition(start)
    _, _, tail = rest.partition(end)
    atomic_write_text(Path(path), f"{head}{start}\n{text.strip()}\n{end}{tail}")


def load(data: Path) -> dict[str, Any] | None:
    """A benchmark's kept numbers, or None before its first run."""
    return json.loads(data.read_text()) if data.is_file() else None
