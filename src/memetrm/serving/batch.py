"""Batch scoring shared by every engine: reading inputs, scoring a chunk item by item, and a
resumable output keyed by id.

Inputs: a folder of images, a Hateful-Memes-format jsonl (``id``, ``img``, ``text``, ...), or
Parquet (a ``.parquet`` file or a folder of them) with ``id``, ``img`` (a path or the image
bytes) and optional ``text`` / ``caption`` columns. Outputs: jsonl (appended and flushed per
chunk, so a killed run resumes where it stopped) or Parquet (by extension; written atomically
when the run ends, merged with the rows already there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from memetrm.data.images import open_image
from memetrm.data.validation import BOM, decode_line, parse_jsonl_line
from memetrm.errors import DataError, MemetrmError
from memetrm.progress import make_progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
#: every column of a result row, so error rows and scored rows share one schema
RESULT_KEYS = ("id", "prob", "label", "label_name", "threshold", "ocr_text", "model", "trace",
               "steps", "error")


@dataclass
class InputItem:
    """One row of a batch job; ``error`` set means it is recorded as failed, not scored."""

    id: str
    #: a path, the encoded image bytes (Parquet input), or None for text-only models
    image: Path | bytes | None = None
    texts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: the row's label, when it has one (labelled memes for a retrieval memory)
    label: Any = None


def _parquet_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source] if source.suffix == ".parquet" else []
    return sorted(source.glob("*.parquet")) if source.is_dir() else []


def iter_inputs(source: Path) -> Iterator[InputItem]:
    """Lazily read a folder of images, a jsonl file, or Parquet.

    A bad row becomes an item with ``error`` (its id, or ``line N`` when it has none) so one
    broken line costs one output line, not the whole run.
    """
    if parquet := _parquet_files(source):
        yield from _iter_parquet(parquet)
    elif source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                yield InputItem(p.relative_to(source).as_posix(), p)
    elif source.is_file():
        yield from _iter_jsonl(source)
    else:
        raise DataError(f"{source}: no such file or folder")


def _iter_jsonl(source: Path) -> Iterator[InputItem]:
    with open(source, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{source}:{lineno}"
            try:
                line = decode_line(raw.removeprefix(BOM) if lineno == 1 else raw, where)
                if not line.strip():
                    continue
                obj = parse_jsonl_line(line, where)
                if "id" not in obj:
                    raise DataError(f"{where}: missing 'id'")
            except DataError as e:
                yield InputItem(f"line {lineno}", error=str(e))
                continue
            img = obj.get("img")
            texts = {k: v for k, v in obj.items() if k not in ("id", "img", "label")}
            yield InputItem(str(obj["id"]), source.parent / img if img else None, texts,
                            label=obj.get("label"))


def _iter_parquet(files: list[Path]) -> Iterator[InputItem]:
    import pyarrow.parquet as pq

    for path in files:
        pf = pq.ParquetFile(path)
        if "id" not in pf.schema_arrow.names:
            raise DataError(f"{path}: a Parquet input needs an 'id' column "
                            f"(has {pf.schema_arrow.names})")
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                row += 1
                img = rec.get("img")
                texts = {k: v for k, v in rec.items() if k not in ("id", "img", "label")}
                if rec["id"] is None:
                    yield InputItem(f"{path.name} row {row}", error=f"{path}: row {row} has no id")
                elif isinstance(img, str):
                    yield InputItem(str(rec["id"]), path.parent / img, texts)
                else:
                    yield InputItem(str(rec["id"]), img, texts)


def score_chunk(predictor: Any, chunk: list[InputItem]) -> list[dict[str, Any]]:
    """Result rows for a chunk, in order; a failing item becomes ``{"id", "error"}`` alone."""
    out: list[dict[str, Any] | None] = [None] * len(chunk)
    ready, where = [], []
    for i, item in enumerate(chunk):
        if item.error:
            out[i] = {"id": item.id, "error": item.error}
            continue
        try:
            image = open_image(item.image, name=item.id) if item.image is not None else None
            ready.append(predictor.prepare(image, item.texts))
            where.append(i)
        except MemetrmError as e:
            out[i] = {"id": item.id, "error": str(e)}
    for i, result in zip(where, predictor.run_each(ready), strict=True):
        if isinstance(result, MemetrmError):
            out[i] = {"id": chunk[i].id, "error": str(result)}
        elif isinstance(result, Exception):
            out[i] = {"id": chunk[i].id, "error": f"scoring failed: {type(result).__name__}: {result}"}
        else:
            out[i] = {"id": chunk[i].id, **result}
    return [{k: r.get(k) for k in RESULT_KEYS} for r in out]  # type: ignore[union-attr]


class ResultLog:
    """The output of a batch run, keyed by id: what is done already, and appending to it.

    jsonl is appended and flushed per chunk (a torn last line from a kill is cut off and that
    item redone); Parquet rows are buffered and written atomically by ``close``. A row whose id
    is already in the log is never written twice.
    """

    def __init__(self, output: Path):
        self.output = Path(output)
        self.parquet = self.output.suffix == ".parquet"
        self._rows: list[dict[str, Any]] = []
        self.done = self._read_parquet_ids() if self.parquet else read_done_ids(self.output)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._file = None if self.parquet else open(self.output, "a", encoding="utf-8")  # noqa: SIM115

    def _read_parquet_ids(self) -> set[str]:
        if not self.output.exists():
            return set()
        import pyarrow.parquet as pq

        return {str(i) for i in pq.read_table(self.output, columns=["id"])["id"].to_pylist()}

    def write(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the rows whose id is new; returns those written."""
        fresh = []
        for r in rows:
            if r["id"] not in self.done:
                self.done.add(r["id"])
                fresh.append(r)
        if self._file is not None:
            self._file.writelines(json.dumps(r, allow_nan=False) + "\n" for r in fresh)
            self._file.flush()
        else:
            self._rows.extend(fresh)
        return fresh

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        from memetrm.utils import atomic_write_dir

        old = pq.read_table(self.output).to_pylist() if self.output.exists() else []
        table = pa.Table.from_pylist(old + self._rows)
        with atomic_write_dir(self.output.with_suffix(".parquet.tmp")) as tmp:
            pq.write_table(table, tmp / "part.parquet")
            (tmp / "part.parquet").replace(self.output)


def read_done_ids(output: Path) -> set[str]:
    """Ids already in a jsonl ``output``. A torn last line (the run was killed mid-write) is
    cut off, so appends start on a clean line and that item is redone; a bad line elsewhere is
    an error."""
    if not output.exists():
        return set()
    done: set[str] = set()
    good_end = 0
    with open(output, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline")
                done.add(str(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError) as e:
                if f.read(1):
                    raise DataError(f"{output}:{lineno}: not a result record; fix or remove "
                                    f"the line to resume") from e
                break
            good_end += len(line)
    if good_end < output.stat().st_size:
        with open(output, "r+b") as f:
            f.truncate(good_end)
    return done


@dataclass
class BatchSummary:
    """What a batch run did; ``scored + errors + already_done + duplicates`` = input items."""

    scored: int = 0
    errors: int = 0
    already_done: int = 0
    duplicates: int = 0

    def __str__(self) -> str:
        return (f"{self.scored} scored, {self.errors} errors, {self.already_done} already done, "
                f"{self.duplicates} duplicate ids skipped")

    def count(self, rows: list[dict[str, Any]]) -> None:
        self.errors += sum(r["error"] is not None for r in rows)
        self.scored += sum(r["error"] is None for r in rows)


def pending_inputs(source: Path, done: set[str], summary: BatchSummary) -> Iterator[InputItem]:
    """Inputs not in ``done``, each id once; repeats and done ones are counted in ``summary``."""
    seen: set[str] = set()
    for it in iter_inputs(source):
        if it.id in done:
            summary.already_done += 1
        elif it.id in seen:
            summary.duplicates += 1
        else:
            seen.add(it.id)
            yield it


def predict_batch(predictor: Any, source: Path, output: Path, batch_size: int = 16,
                  progress: bool = True) -> BatchSummary:
    """The local engine: stream ``source`` into ``output``, skipping ids already there.

    Memory stays flat: items are read lazily and written per chunk, so an interrupted run
    resumes where it stopped. A repeated id is scored once and counted.
    """
    log = ResultLog(output)
    summary = BatchSummary()
    total = sum(1 for _ in iter_inputs(source))  # a cheap pass (no decoding) sizes the bar
    pending = pending_inputs(source, set(log.done), summary)
    try:
        with make_progress(disable=not progress) as bar:
            task = bar.add_task("predict", total=total)
            while chunk := list(islice(pending, batch_size)):
                summary.count(log.write(score_chunk(predictor, chunk)))
                bar.update(task, completed=summary.scored + summary.errors
                           + summary.already_done + summary.duplicates)
    finally:
        log.close()
    return summary
