"""``memetrm predict`` (one meme, or a resumable batch to jsonl) and ``memetrm serve``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from memetrm.cli.options import Device
from memetrm.data.images import open_image
from memetrm.data.validation import BOM, decode_line, parse_jsonl_line
from memetrm.errors import DataError, MemetrmError
from memetrm.progress import console, make_progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}


@dataclass
class InputItem:
    """One row of a batch job; ``error`` set means it is recorded as failed, not scored."""

    id: str
    image: Path | None = None
    texts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def iter_inputs(source: Path) -> Iterator[InputItem]:
    """Lazily read a folder of images or a Hateful-Memes-format jsonl (``id``, ``img``, ``text``).

    A bad jsonl row becomes an item with ``error`` (its id, or ``line N`` when it has none) so
    one broken line costs one output line, not the whole run.
    """
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                yield InputItem(p.relative_to(source).as_posix(), p)
        return
    if not source.is_file():
        raise DataError(f"{source}: no such file or folder")
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
            yield InputItem(str(obj["id"]), source.parent / img if img else None, texts)


def read_done_ids(output: Path) -> set[str]:
    """Ids already in ``output``. A torn last line (the run was killed mid-write) is cut off,
    so appends start on a clean line and that item is redone; a bad line elsewhere is an error.
    """
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


def _score_chunk(predictor: Any, chunk: list[InputItem]) -> list[dict[str, Any]]:
    """Results for a chunk, in order; per-item failures become ``{"id", "error"}``."""
    out: list[dict[str, Any] | None] = [None] * len(chunk)
    ready, where = [], []
    for i, item in enumerate(chunk):
        if item.error:
            out[i] = {"id": item.id, "error": item.error}
            continue
        try:
            image = open_image(item.image, name=item.id) if item.image else None
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
    return out  # type: ignore[return-value]


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


def predict_batch(predictor: Any, source: Path, output: Path, batch_size: int = 16,
                  progress: bool = True) -> BatchSummary:
    """Stream ``source`` into ``output`` (jsonl), skipping ids already there.

    Memory stays flat: items are read lazily and written (append + flush) per batch, so an
    interrupted run resumes where it stopped. A repeated id is scored once and counted.
    """
    done = read_done_ids(output)
    summary = BatchSummary()
    total = 0
    for it in iter_inputs(source):  # a cheap first pass (no decoding) sizes the progress bar
        total += 1
        summary.already_done += it.id in done
    seen: set[str] = set()

    def fresh(items: Iterator[InputItem]) -> Iterator[InputItem]:
        for it in items:
            if it.id in done:
                continue
            if it.id in seen:
                summary.duplicates += 1
                continue
            seen.add(it.id)
            yield it

    pending = fresh(iter_inputs(source))
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as f, make_progress(disable=not progress) as bar:
        task = bar.add_task("predict", total=total, completed=summary.already_done)
        while chunk := list(islice(pending, batch_size)):
            for rec in _score_chunk(predictor, chunk):
                f.write(json.dumps(rec, allow_nan=False) + "\n")
                summary.errors += "error" in rec
                summary.scored += "error" not in rec
            f.flush()
            bar.advance(task, len(chunk))
    return summary


def predict(
    model: Path = typer.Option(..., "--model", help="model directory from `memetrm train --save`"),
    image: Path | None = typer.Option(None, "--image", help="one meme image"),
    text: str | None = typer.Option(None, "--text", help="meme text; omitted -> OCR"),
    caption: str | None = typer.Option(None, "--caption",
                                       help="caption, for models trained with one"),
    input: Path | None = typer.Option(None, "--input",
                                      help="folder of images or jsonl (id, img, text)"),
    output: Path | None = typer.Option(None, "--output",
                                       help="results jsonl (appended, resumable)"),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    as_json: bool = typer.Option(False, "--json", help="print the prediction as JSON"),
    device: Device = None,
) -> None:
    """Score one meme (--image) or a folder/jsonl (--input ... --output results.jsonl)."""
    from memetrm.serving.predictor import Predictor

    if (image is None) == (input is None):
        raise typer.BadParameter("give exactly one of --image or --input")
    if input is not None and output is None:
        raise typer.BadParameter("--input needs --output")
    for path in (image, input):
        if path is not None and not path.exists():  # checked before the model loads
            raise DataError(f"{path}: no such file or folder")
    predictor = Predictor(model, device=device or "auto")
    if input is not None:
        try:
            summary = predict_batch(predictor, input, output, batch_size)
        except KeyboardInterrupt:
            console.print(f"interrupted: finished batches are in {output}; "
                          "rerun the same command to resume")
            raise typer.Exit(130) from None
        console.print(f"{summary} -> {output}")
        return
    texts = {k: v for k, v in {"text": text, "caption": caption}.items() if v is not None}
    result = predictor.predict([open_image(image)], [texts])[0]
    if as_json:
        typer.echo(json.dumps({"image": str(image), **result}, allow_nan=False))
        return
    color = "red" if result["label"] else "green"
    verdict = f"[{color}]{result['label_name']}[/{color}]"
    Console().print(f"{image}: p({predictor.label_names[1]}) = [bold]{result['prob']:.3f}[/bold] "
                    f"-> {verdict} "
                    f"(threshold {result['threshold']:.3f}, model {result['model']})")
    if result["ocr_text"] is not None:
        Console().print(f"OCR text: {result['ocr_text']!r}")
    if result["trace"]:
        Console().print("trace: " + " -> ".join(f"{p:.3f}" for p in result["trace"]))
    if result["steps"] is not None:
        Console().print(f"halted after {result['steps']} of {len(result['trace'])} steps")


def serve(
    model: Path = typer.Option(..., "--model", help="model directory from `memetrm train --save`"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb"),
    max_text_chars: int = typer.Option(2000, "--max-text-chars"),
    timeout: float = typer.Option(60.0, "--timeout", help="seconds per prediction before 504"),
    max_connections: int = typer.Option(256, "--max-connections",
                                        help="open connections above this get 503"),
    max_pending: int = typer.Option(64, "--max-pending",
                                    help="predictions in progress above this get 503 at once"),
    header_timeout: float = typer.Option(10.0, "--header-timeout",
                                         help="seconds a client may take to send its headers"),
    docs: bool = typer.Option(False, "--docs", help="serve /docs (Swagger UI, from its CDN)"),
    device: Device = None,
) -> None:
    """Serve the model over HTTP (POST /v1/predict) with a web page at /."""
    import uvicorn

    from memetrm.serving.app import Limits, create_app
    from memetrm.serving.protocol import protocol_with_header_timeout

    limits = Limits(int(max_upload_mb * 1024 * 1024), max_text_chars, timeout_s=timeout,
                    max_pending=max_pending)
    app = create_app(model, limits, device=device or "auto", docs=docs)
    uvicorn.run(app, host=host, port=port, limit_concurrency=max_connections,
                timeout_keep_alive=5, http=protocol_with_header_timeout(header_timeout))


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("serve")(serve)
