"""Open Clip Art Library (Debian ``openclipart-svg``) as a Hateful-Memes-format jsonl folder.

It gives the alignment code image-text pairs we may redistribute (public domain): each SVG's
RDF metadata has a title and keywords, and its top-level folder is a category that zero-shot
prompts can be checked against. SVGs are untrusted input, so each is rendered under a size
guard and a timeout, and failures are counted and listed, never fatal.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import re
import signal
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from memetrm.data.images import open_image
from memetrm.errors import DataError
from memetrm.progress import make_progress
from memetrm.utils import atomic_write_dir, sha256_text

DEFAULT_SOURCE = Path("/usr/share/openclipart/svg")
DEFAULT_OUT = Path("~/.cache/memetrm/datasets/openclipart")
#: Share of ids (by hash) per split; deterministic, so re-runs and other machines agree.
SPLITS = (("train", 80), ("val", 10), ("test", 10))
MAX_KEYWORDS = 8
#: ``hash`` is a tagging artefact of the library's import, on thousands of files.
JUNK_KEYWORDS = {"hash"}
#: Many titles carry the artist ("Clipart by Nicu Buculei - antenna"): noise for retrieval.
_BYLINE = re.compile(r"^clipart by [^-]+ - ", re.IGNORECASE)
#: Top-level folders with a clear visual meaning -> zero-shot prompt. ``special``,
#: ``unsorted`` and the tiny ones (buttons, logos) have none and are left out of the task.
CATEGORY_PROMPTS = {
    "animals": "a clipart of an animal",
    "buildings": "a clipart of a building",
    "computer": "a clipart of a computer icon",
    "food": "a clipart of food",
    "geography": "a clipart of a map",
    "office": "a clipart of office supplies",
    "people": "a clipart of a person",
    "plants": "a clipart of a plant",
    "recreation": "a clipart of sports, games or music",
    "shapes": "a clipart of an abstract shape",
    "signs_and_symbols": "a clipart of a sign or symbol",
    "tools": "a clipart of a tool",
    "transportation": "a clipart of a vehicle",
}
_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


@dataclass
class PrepareReport:
    """What happened to every input file; written beside the data as ``prepare.json``."""

    found: int = 0
    duplicates: int = 0
    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # relative path -> reason


def split_of(item_id: str) -> str:
    bucket = int(sha256_text(item_id)[:8], 16) % 100
    for name, share in SPLITS:
        if bucket < share:
            return name
        bucket -= share
    raise AssertionError("SPLITS shares must sum to 100")


def read_metadata(root: ET.Element) -> tuple[str, list[str]]:
    """Title and keywords of the ``cc:Work`` (not the publisher's or author's ``dc:title``)."""
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.endswith("}Work"):
            title = (el.findtext(f"{_DC}title") or "").strip()
            subject = el.find(f"{_DC}subject")
            words = [] if subject is None else [
                (li.text or "").strip() for li in subject.iter(f"{_RDF}li")]
            return title, [w for w in words if w]
    return (root.findtext("{http://www.w3.org/2000/svg}title") or "").strip(), []


def caption(title: str, keywords: list[str]) -> str:
    """``title (kw1, kw2, ...)``: keywords add the generic words titles often lack."""
    title = _BYLINE.sub("", title)
    seen = {title.lower(), *JUNK_KEYWORDS}
    extra = []
    for k in keywords:
        if k.lower() not in seen:
            seen.add(k.lower())
            extra.append(k)
    extra = extra[:MAX_KEYWORDS]
    return f"{title} ({', '.join(extra)})" if extra else title


def _aspect(root: ET.Element) -> float | None:
    """Width / height from ``viewBox`` or ``width``/``height``, so the long side gets ``size``."""
    box = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", root.get("viewBox", ""))
    if len(box) == 4 and float(box[3]) > 0:
        return float(box[2]) / float(box[3])
    w, h = (re.match(r"\s*([\d.]+)", root.get(a, "")) for a in ("width", "height"))
    if w and h and float(h.group(1)) > 0:
        return float(w.group(1)) / float(h.group(1))
    return None


class _Timeout(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Timeout


def render_svg(path: Path, size: int, timeout: float) -> tuple[bytes, str, list[str]]:
    """(PNG bytes of a white ``size`` x ``size`` square, title, keywords); raises ``DataError``.

    The alarm interrupts pathological SVGs (huge path counts, deep nesting) between Python
    steps; ``open_image``'s pixel cap catches absurd aspect ratios before they are resized.
    """
    import cairosvg

    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        data = path.read_bytes()
        root = ET.fromstring(data)
        title, keywords = read_metadata(root)
        aspect = _aspect(root) or 1.0
        dims = {"output_width": size} if aspect >= 1 else {"output_height": size}
        png = cairosvg.svg2png(bytestring=data, background_color="white", **dims)
        img = open_image(png, name=str(path), max_pixels=64 * size * size)
    except _Timeout as e:
        raise DataError(f"timed out after {timeout:g} s") from e
    except DataError:
        raise
    except Exception as e:  # cairosvg/expat raise anything from ValueError to ZeroDivisionError
        raise DataError(f"{type(e).__name__}: {e}"[:200]) from e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    img.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), title, keywords


def _render_job(job: tuple[str, Path, int, float]) -> tuple[str, bytes | None, str, list[str]]:
    """Pool entry point: errors come back as values so one bad file never kills the pool."""
    item_id, path, size, timeout = job
    try:
        png, title, keywords = render_svg(path, size, timeout)
        return item_id, png, title, keywords
    except DataError as e:
        return item_id, None, str(e), []


def collect(source: Path, max_bytes: int, report: PrepareReport) -> dict[str, tuple[Path, str]]:
    """id (content hash) -> (path, top-level category); copies of one file are kept once."""
    items: dict[str, tuple[Path, str]] = {}
    for path in sorted(source.rglob("*.svg")):
        rel = path.relative_to(source)
        report.found += 1
        try:
            if path.stat().st_size > max_bytes:
                report.failed[str(rel)] = f"larger than {max_bytes:,} bytes"
                continue
            item_id = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        except OSError as e:  # dangling symlink, unreadable file
            report.failed[str(rel)] = f"unreadable: {e.strerror}"
            continue
        if item_id in items:
            report.duplicates += 1
            continue
        items[item_id] = (path, rel.parts[0] if len(rel.parts) > 1 else "")
    return items


def _results(jobs: list[tuple[str, Path, int, float]],
             workers: int) -> Iterator[tuple[str, bytes | None, str, list[str]]]:
    if workers <= 0:
        yield from map(_render_job, jobs)
        return
    # fresh processes: no torch threads or signal handlers inherited from the parent
    with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=200) as pool:
        yield from pool.imap_unordered(_render_job, jobs, chunksize=4)


def prepare_openclipart(source: Path = DEFAULT_SOURCE, out: Path = DEFAULT_OUT,
                        limit: int | None = None, size: int = 224, workers: int = 2,
                        timeout: float = 20.0, max_bytes: int = 5_000_000,
                        log: Callable[[str], None] = print) -> PrepareReport:
    """Rasterise every SVG under ``source`` and write a jsonl folder at ``out``, atomically.

    ``limit`` keeps the first N ids in hash order: a category mix, not one folder.
    """
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if not source.is_dir():
        raise DataError(f"no SVG folder at {source}: install it with "
                        "'apt-get install openclipart-svg' or pass --source")
    report = PrepareReport()
    items = collect(source, max_bytes, report)
    ids = sorted(items)[:limit] if limit else sorted(items)
    if not ids:
        raise DataError(f"no SVG files found under {source}")
    rel = {i: str(items[i][0].relative_to(source)) for i in ids}
    rows: dict[str, list[dict]] = {name: [] for name, _ in SPLITS}
    with atomic_write_dir(out) as tmp:
        (tmp / "img").mkdir()
        jobs = [(i, items[i][0], size, timeout) for i in ids]
        with make_progress() as progress:
            task = progress.add_task("rasterise openclipart", total=len(jobs))
            for item_id, png, title_or_error, keywords in _results(jobs, workers):
                progress.advance(task)
                if png is None:
                    report.failed[rel[item_id]] = title_or_error
                    continue
                title = title_or_error or Path(rel[item_id]).stem.replace("_", " ")
                (tmp / "img" / f"{item_id}.png").write_bytes(png)
                rows[split_of(item_id)].append({
                    "id": item_id, "img": f"img/{item_id}.png", "label": None,
                    "text": caption(title, keywords), "category": items[item_id][1],
                    "source": rel[item_id],
                })
        for name, split_rows in rows.items():
            split_rows.sort(key=lambda r: r["id"])
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split_rows))
            report.written[name] = len(split_rows)
        (tmp / "zeroshot.json").write_text(
            json.dumps({"field": "category", "prompts": CATEGORY_PROMPTS}, indent=2))
        (tmp / "prepare.json").write_text(json.dumps({
            "source": str(source), "size": size, "found": report.found,
            "duplicates": report.duplicates, "written": report.written,
            "categories": dict(Counter(items[i][1] for i in ids)),
            "failed": report.failed}, indent=2))
    log(f"{sum(report.written.values())} images written to {out} "
        f"({', '.join(f'{k} {v}' for k, v in report.written.items())}); "
        f"{report.duplicates} duplicate files, {len(report.failed)} failed/skipped")
    return report
