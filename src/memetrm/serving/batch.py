"""Batch scoring shared by every engine: reading inputs, scoring a chunk item by item, and a
resumable output keyed by id.

Inputs: a folder of images, a Hateful-Memes-format jsonl (``id``, ``img``, ``text``, ...), or
Parquet (a ``.parquet`` file or a folder of them) with ``id``, ``img`` (a path or the image
bytes) and optional ``text`` / ``caption`` (and ``community``, for the policy) columns.
Outputs: jsonl (appended and flushed per chunk, so a killed run resumes where it stopped) or
Parquet (by extension; written atomically when the run ends, merged with the rows already
there).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from memetrm.data.images import open_image
from memetrm.data.validation import BOM, decode_line, parse_jsonl_line
from memetrm.errors import DataError, MemetrmError
from memetrm.progress import make_progress
from memetrm.serving.guards import MAX_TEXT_CHARS
from memetrm.utils import plural

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
#: every column of a result row, so error rows and scored rows share one schema
RESULT_KEYS = ("id", "prob", "score_raw", "label", "label_name", "threshold", "action",
               "action_reason", "ocr_text", "model", "trace", "steps", "neighbours", "hash_match",
               "source", "error")


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
            yield make_item(obj, source.parent, where, f"line {lineno}")


def _iter_parquet(files: list[Path]) -> Iterator[InputItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from e
        if "id" not in pf.schema_arrow.names:
            raise DataError(f"{path}: a Parquet input needs an 'id' column "
                            f"(has {pf.schema_arrow.names})")
        row = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                row += 1
                yield make_item(rec, path.parent, f"{path} row {row}", f"{path.name} row {row}")


#: JSON-native values a text column may hold; anything else (timestamps, nested data) is not
#: a text field and is dropped, so every engine carries the same row
_TEXT_VALUES = (str, int, float, bool, type(None))
#: the columns a meme's texts come in: nested data there is an error, not a column to drop
#: (a dropped ``text`` would be read off the image by OCR instead)
TEXT_COLUMNS = ("text", "caption")


def make_item(rec: dict[str, Any], base: Path, where: str, anon: str) -> InputItem:
    """One input row checked the same way for every engine and format: a row that is not
    scorable becomes an item with ``error`` (naming ``where``; ``anon`` is its id when it has
    no usable one), never an exception. Every text a row carries is within the HTTP limit
    (``MAX_TEXT_CHARS``), whichever of them the model reads."""
    rid, img = rec.get("id"), rec.get("img")
    texts = {k: v for k, v in rec.items()
             if k not in ("id", "img", "label") and isinstance(v, _TEXT_VALUES)}
    if rid is None or isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
        return InputItem(anon, error=f"{where}: 'id' must be a non-empty string or an integer, "
                                      f"got {rid!r}")
    item = InputItem(str(rid), texts=texts, label=rec.get("label"))
    nested = [k for k in TEXT_COLUMNS if k in rec and not isinstance(rec[k], _TEXT_VALUES)]
    long = [k for k, v in texts.items() if isinstance(v, str) and len(v) > MAX_TEXT_CHARS]
    if nested:
        item.error = (f"{where}: id {rid}: {nested[0]!r} must be a string, got "
                      f"{type(rec[nested[0]]).__name__}")
    elif long:
        item.error = (f"{where}: id {rid}: {long[0]!r} is {len(texts[long[0]]):,} characters, "
                      f"above the limit of {MAX_TEXT_CHARS:,}")
        item.texts = {}  # the row is not scored: its megabytes need not travel with it
    elif isinstance(img, str) and "\0" in img:
        item.error = f"{where}: id {rid}: 'img' contains a NUL byte"
    elif isinstance(img, str) and img:
        item.image = base / img
    elif isinstance(img, bytes) and img:
        item.image = img
    elif isinstance(img, bytes) or img == "":
        item.error = f"{where}: id {rid}: 'img' is empty"
    elif img is not None:
        item.error = (f"{where}: id {rid}: 'img' must be a path or the image bytes, got "
                      f"{type(img).__name__}")
    return item


def score_chunk(predictor: Any, chunk: list[InputItem]) -> list[dict[str, Any]]:
    """Result rows for a chunk, in order; a failing item becomes ``{"id", "error"}`` alone."""
    out: list[dict[str, Any] | None] = [None] * len(chunk)
    ready, where = [], []
    for i, item in enumerate(chunk):
        if item.error:
            out[i] = {"id": item.id, "error": item.error}
            continue
        try:
            # a path is named: the row's id alone does not say which file is missing
            image = None if item.image is None else open_image(item.image, name=item.id if isinstance(
                item.image, bytes) else f"{item.id}: {item.image}")
            ready.append(predictor.prepare(image, item.texts))  # a community column: its policy
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
        self._file = None
        if self.output.exists() and not self.output.is_file():
            raise DataError(f"{self.output}: the output exists and is not a regular file")
        with output_errors(self.output):
            self.done = self._read_parquet_ids() if self.parquet else read_done_ids(self.output)
            self.output.parent.mkdir(parents=True, exist_ok=True)
            if not self.parquet:
                self._file = open(self.output, "a", encoding="utf-8")  # noqa: SIM115

    def _read_parquet_ids(self) -> set[str]:
        if not self.output.exists():
            return set()
        return {str(i) for i in _read_parquet(self.output, columns=["id"])["id"].to_pylist()}

    def write(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the rows whose id is new; returns those written."""
        fresh = []
        for r in rows:
            if r["id"] not in self.done:
                self.done.add(r["id"])
                fresh.append(r)
        if self._file is not None:
            with output_errors(self.output):
                self._file.writelines(json.dumps(r, allow_nan=False) + "\n" for r in fresh)
                self._file.flush()
        else:
            self._rows.extend(fresh)
        return fresh

    def close(self) -> None:
        if self._file is not None:
            with output_errors(self.output), contextlib.suppress(ValueError):
                self._file.close()
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        with output_errors(self.output):
            old = _read_parquet(self.output).to_pylist() if self.output.exists() else []
            fd, tmp = tempfile.mkstemp(prefix=f".{self.output.name}.", dir=self.output.parent)
            os.close(fd)
            try:
                pq.write_table(pa.Table.from_pylist(old + self._rows), tmp)
                os.replace(tmp, self.output)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


@contextlib.contextmanager
def output_errors(output: Path) -> Iterator[None]:
    """An output that cannot be read or written (a folder, under a file, a full disk, /proc)
    is bad input naming the path and the reason, never a traceback."""
    try:
        yield
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DataError(f"{output}: no space left on the device; the rows written so far "
                            "are kept: free space and rerun the same command to resume") from e
        raise DataError(f"{output}: cannot write results there ({e.strerror or e})") from e


def _read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: exists and is not a readable Parquet result file ({e})") from e


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
        return (f"{self.scored} scored, {plural(self.errors, 'error')}, {self.already_done} already "
                f"done, {plural(self.duplicates, 'duplicate id')} skipped")

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
