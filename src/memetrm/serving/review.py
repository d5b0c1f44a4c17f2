"""The review queue and its audit log: answers routed to ``review`` wait for a moderator, whose
decisions are append-only rows and may teach the served model (its memory and hash list).

Storage goes through SQLAlchemy: a file path is SQLite in WAL mode with a busy timeout (readers
never wait for the writer, writers queue, and a killed process loses no committed row); an
SQLAlchemy URL (``postgresql+psycopg://...``) selects a server database. Nothing is updated
in place: an item's state is its latest audit row, and SQLite refuses any UPDATE or DELETE of
an audit row (a trigger).

States: ``waiting`` (no decision, or reopened by an appeal), ``escalated`` (waits for a senior
moderator's decision) and ``decided`` (``violating`` / ``not_violating``; an appeal reopens it).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, Response
from PIL import Image
from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    Engine,
    Float,
    ForeignKey,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column

from memetrm.data.images import open_image
from memetrm.errors import ConfigError, DataError, MemetrmError
from memetrm.heads import Memory, from_pretrained
from memetrm.serving.auth import Tokens
from memetrm.serving.hashing import ImageHash, normalise_text, pdq
from memetrm.serving.hashlist import Entry, HashList, edit_model_list
from memetrm.serving.memory import add_to_memory, remove_from_memory
from memetrm.serving.predictor import Predictor
from memetrm.utils import atomic_write_text

STATIC_DIR = Path(__file__).parent / "static"
DECISIONS = ("violating", "not_violating", "escalate")
#: the label a decision teaches the model (``escalate`` teaches nothing)
DECISION_LABELS = {"violating": 1, "not_violating": 0}
#: seconds a writer waits for another (SQLite's busy timeout)
BUSY_TIMEOUT_S = 30.0
MAX_NOTE_CHARS = 2000


def routes_to_review(answer: dict[str, Any]) -> bool:
    """Whether an answer goes to the review queue: its action (set by the policy) is ``review``."""
    return answer.get("action") == "review"


def memory_id(item_id: int) -> str:
    """The id under which a reviewed meme joins the model's memory and hash list."""
    return f"review-{item_id}"


class Base(DeclarativeBase):
    pass


class Item(Base):
    """A meme routed to review, as it was scored."""

    __tablename__ = "review_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    #: unix time it was routed
    created: Mapped[float] = mapped_column(Float, index=True)
    #: the model revision that scored it (``<name>@<revision>``)
    model: Mapped[str] = mapped_column(String(200))
    #: the uploaded bytes, unless the server keeps only their digests (loaded only when read)
    image: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    #: PDQ hash (hex), kept when the bytes are not, so a decision can still list the picture
    image_pdq: Mapped[str | None] = mapped_column(String(64))
    #: the text fields scored (a text read by OCR included)
    texts: Mapped[dict[str, str]] = mapped_column(JSON)
    prob: Mapped[float] = mapped_column(Float)
    #: distance of the score from the threshold: "most uncertain first" sorts on it
    margin: Mapped[float] = mapped_column(Float, index=True)
    action: Mapped[str | None] = mapped_column(String(40))
    #: the whole answer: scores, action and why, what answered
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: the nearest labelled memes of the model's memory, if it has one
    precedents: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    #: the known-meme list entry the picture matched, if any
    list_match: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    @property
    def has_image(self) -> bool:
        """Whether the picture's bytes are kept (its PDQ hash is kept only when they are not)."""
        return self.image_sha256 is not None and self.image_pdq is None


class AuditRow(Base):
    """One decision or appeal; rows are only ever added."""

    __tablename__ = "review_audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(20))  # decision | appeal
    #: violating | not_violating | escalate; None for an appeal
    decision: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text)
    #: the reviewer the token stands for
    reviewer: Mapped[str] = mapped_column(String(200))
    #: the model revision served when the row was written
    model: Mapped[str] = mapped_column(String(200))
    #: the item's decision before this row (None: the first)
    previous: Mapped[str | None] = mapped_column(String(20))
    #: what the model was taught or made to forget: {"list": ..., "memory": ...}
    taught: Mapped[dict[str, Any] | None] = mapped_column(JSON)


_APPEND_ONLY = [f"CREATE TRIGGER IF NOT EXISTS review_audit_no_{op.lower()} BEFORE {op} ON "
                "review_audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
                for op in ("UPDATE", "DELETE")]


def database_url(db: str) -> str:
    """An SQLAlchemy URL as is; a path is an SQLite file (its folder must exist)."""
    if "://" in db:
        return db
    path = Path(db).expanduser().resolve()
    if not path.parent.is_dir():
        raise ConfigError(f"{db}: no folder {path.parent} for the review database")
    return f"sqlite:///{path}"


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite(conn: Any, _record: Any) -> None:
        conn.isolation_level = None  # transactions begin below, not in the driver
        for pragma in ("journal_mode=WAL", f"busy_timeout={int(BUSY_TIMEOUT_S * 1000)}",
                       "foreign_keys=ON", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # a write takes the lock up front: two deciders never both read "waiting"
        immediate = conn.get_execution_options().get("immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Conflict(MemetrmError):
    """A decision or appeal that the item's state does not allow (a 409)."""


class ReviewStore:
    """The queue and audit log in one database. ``routes`` picks the answers that go to review;
    ``store_images`` False keeps only the picture's SHA-256 and PDQ hash."""

    def __init__(self, db: str, *, store_images: bool = True,
                 routes: Callable[[dict[str, Any]], bool] = routes_to_review) -> None:
        self.url, self.store_images, self.routes = database_url(db), store_images, routes
        try:
            self.engine = _engine(self.url)
            Base.metadata.create_all(self.engine)
            if self.engine.dialect.name == "sqlite":
                with self.engine.begin() as conn:
                    for ddl in _APPEND_ONLY:
                        conn.exec_driver_sql(ddl)
        except SQLAlchemyError as e:
            raise ConfigError(f"{db}: cannot open the review database "
                              f"({str(e).splitlines()[0]})") from e
        self._writer = self.engine.execution_options(immediate=True)

    def _write(self) -> Session:
        return Session(self._writer, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def route(self, answer: dict[str, Any], image: bytes | None, texts: dict[str, str]) -> int:
        """Queue a scored meme; returns its id. The text read by OCR counts as its text."""
        texts = dict(texts)
        if answer.get("ocr_text") and not texts.get("text"):
            texts["text"] = answer["ocr_text"]
        digest = hashlib.sha256(image).hexdigest() if image is not None else None
        pdq_hex = None
        if image is not None and not self.store_images:
            pdq_hex = pdq(open_image(image, name="upload")).hex
        item = Item(created=time.time(), model=answer["model"],
                    image=image if self.store_images else None, image_sha256=digest,
                    image_pdq=pdq_hex, texts=texts, prob=float(answer["prob"]),
                    margin=abs(float(answer["prob"]) - float(answer["threshold"])),
                    action=answer.get("action"), answer=answer,
                    precedents=answer.get("neighbours"), list_match=_list_match(answer))
        with self._write() as s, s.begin():
            s.add(item)
        return item.id

    def queue(self, status: str = "waiting", order: str = "oldest",
              limit: int = 50) -> list[dict[str, Any]]:
        """Items in ``status``, oldest first or nearest their threshold first."""
        last_id = (select(AuditRow.item_id, func.max(AuditRow.id).label("last"))
                   .group_by(AuditRow.item_id).subquery())
        last = aliased(AuditRow)
        q = (select(Item, last).outerjoin(last_id, last_id.c.item_id == Item.id)
             .outerjoin(last, last.id == last_id.c.last))
        if status == "waiting":
            q = q.where((last.id.is_(None)) | (last.kind == "appeal"))
        elif status == "escalated":
            q = q.where(last.decision == "escalate")
        elif status == "decided":
            q = q.where(last.decision.in_(list(DECISION_LABELS)))
        q = q.order_by(*([Item.margin] if order == "uncertain" else []), Item.id).limit(limit)
        with Session(self.engine) as s:
            return [_item_dict(item, row) for item, row in s.execute(q)]

    def item(self, item_id: int) -> dict[str, Any]:
        """An item with its whole audit trail, oldest row first."""
        with Session(self.engine) as s:
            item = s.get(Item, item_id)
            if item is None:
                raise KeyError(item_id)
            rows = s.scalars(select(AuditRow).where(AuditRow.item_id == item_id)
                             .order_by(AuditRow.id)).all()
            return {**_item_dict(item, rows[-1] if rows else None),
                    "history": [_row_dict(r) for r in rows]}

    def image(self, item_id: int) -> bytes | None:
        with Session(self.engine) as s:
            item = s.get(Item, item_id)
            if item is None:
                raise KeyError(item_id)
            return item.image

    def record(self, item_id: int, kind: Literal["decision", "appeal"], decision: str | None,
               note: str, reviewer: str, model: str,
               teach: Callable[[Item, str | None], dict[str, Any] | None] | None = None
               ) -> dict[str, Any]:
        """Append a decision (or an appeal) if the item's state allows it (``Conflict`` if not,
        ``KeyError`` for an unknown item). ``teach(item, decision)`` runs before the row is
        committed, with the write lock held: a failed lesson records nothing."""
        with self._write() as s, s.begin():
            item = s.get(Item, item_id, with_for_update=True)  # PostgreSQL: lock the item
            if item is None:
                raise KeyError(item_id)
            rows = s.scalars(select(AuditRow).where(AuditRow.item_id == item_id)
                             .order_by(AuditRow.id)).all()
            last = rows[-1] if rows else None
            previous = next((r.decision for r in reversed(rows) if r.kind == "decision"), None)
            _check_transition(kind, decision, last)
            taught = teach(item, decision) if teach is not None else None
            row = AuditRow(item_id=item_id, at=time.time(), kind=kind, decision=decision,
                           note=note, reviewer=reviewer, model=model, previous=previous,
                           taught=taught)
            s.add(row)
        return _row_dict(row)

    def decisions(self) -> Iterator[tuple[Item, AuditRow]]:
        """Each decided item (``violating`` / ``not_violating``) with its current decision."""
        last_id = (select(AuditRow.item_id, func.max(AuditRow.id).label("last"))
                   .group_by(AuditRow.item_id).subquery())
        q = (select(Item, AuditRow).join(last_id, last_id.c.item_id == Item.id)
             .join(AuditRow, AuditRow.id == last_id.c.last)
             .where(AuditRow.decision.in_(list(DECISION_LABELS))).order_by(Item.id))
        with Session(self.engine) as s:
            yield from s.execute(q).tuples()

    def audit(self) -> list[dict[str, Any]]:
        """Every audit row, oldest first."""
        with Session(self.engine) as s:
            return [_row_dict(r) for r in s.scalars(select(AuditRow).order_by(AuditRow.id))]


def _check_transition(kind: str, decision: str | None, last: AuditRow | None) -> None:
    state = _status(last)
    if kind == "appeal":
        if state != "decided":
            raise Conflict(f"only a decided item can be appealed; this one is {state}")
    elif state == "decided":
        raise Conflict(f"already decided ({last.decision}); appeal to reopen it")
    elif state == "escalated" and decision == "escalate":
        raise Conflict("already escalated")


def _status(last: AuditRow | None) -> str:
    if last is None or last.kind == "appeal":
        return "waiting"
    return "escalated" if last.decision == "escalate" else "decided"


def _list_match(answer: dict[str, Any]) -> dict[str, Any] | None:
    source = answer.get("source") or {}
    return answer.get("hash_match") or source.get("picture_on_list")


def _item_dict(item: Item, last: AuditRow | None) -> dict[str, Any]:
    return {"id": item.id, "created": item.created, "model": item.model, "texts": item.texts,
            "prob": item.prob, "threshold": item.answer.get("threshold"),
            "label_name": item.answer.get("label_name"), "action": item.action,
            "action_reason": item.answer.get("action_reason"), "margin": item.margin,
            "precedents": item.precedents, "list_match": item.list_match,
            "source": item.answer.get("source"), "has_image": item.has_image,
            "image_sha256": item.image_sha256, "status": _status(last),
            "decision": last.decision if last is not None else None}


def _row_dict(row: AuditRow) -> dict[str, Any]:
    return {"id": row.id, "item_id": row.item_id, "at": row.at, "kind": row.kind,
            "decision": row.decision, "note": row.note, "reviewer": row.reviewer,
            "model": row.model, "previous": row.previous, "taught": row.taught}


class Teacher:
    """Writes a decided meme into the served model's folder, or takes it out again: the
    folder's hash list (``edit_model_list``, as ``hashes add/remove``) and, for a head with a
    memory, the memory (``add_to_memory`` / ``remove_from_memory``, as ``memory add/remove``).
    Each write is locked and published as a new revision, which the server's folder watcher
    then loads."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def __call__(self, item: Item, decision: str | None, learn: bool = True) -> dict[str, Any]:
        """Forget what an earlier decision on ``item`` taught; then, if ``learn``, teach the
        label of ``decision`` (nothing for ``escalate``)."""
        key, model_dir = memory_id(item.id), self.predictor.model_dir
        taught: dict[str, Any] = {"id": key}
        head = from_pretrained(model_dir)[0]  # the folder's revision: the served one may lag
        if key in {e.source_id for e in HashList.of_model(model_dir).entries}:
            edit_model_list(model_dir, lambda current: current.remove([key]))
            taught["list"] = "removed"
        if isinstance(head, Memory) and key in head.memory_ids:
            remove_from_memory(model_dir, [key])
            taught["memory"] = "removed"
        label = DECISION_LABELS.get(decision or "")
        if not learn or label is None:
            return taught
        text = item.texts.get("text", "")
        picture = _picture_hash(item)
        if picture is not None and picture.reliable:
            entry = Entry(picture, label, key, normalise_text(text))
            edit_model_list(model_dir, lambda current: current.add([entry]))
            taught["list"] = f"added as {label}"
        else:
            taught["list"] = "not added: no picture detailed enough for PDQ"
        if not isinstance(head, Memory):
            taught["memory"] = "not added: the model has no memory"
        elif not item.has_image and "image" in self.predictor.input_fields:
            taught["memory"] = "not added: the picture was not stored"
        else:
            self._add_to_memory(item, key, label)
            taught["memory"] = f"added as {label}"
        return taught

    def _add_to_memory(self, item: Item, key: str, label: int) -> None:
        with tempfile.TemporaryDirectory(prefix="memetrm-review-") as tmp:
            row: dict[str, Any] = {"id": key, "label": label, **item.texts}
            if item.has_image:
                (Path(tmp) / "meme").write_bytes(item.image)
                row["img"] = "meme"
            (Path(tmp) / "meme.jsonl").write_text(json.dumps(row) + "\n")
            p = self.predictor
            add_to_memory(p.model_dir, Path(tmp) / "meme.jsonl", device=str(p.device),
                          encoder=p.encoder)


def _picture_hash(item: Item) -> ImageHash | None:
    if item.has_image:
        return pdq(open_image(item.image, name=f"review item {item.id}"))
    return ImageHash.from_hex(item.image_pdq) if item.image_pdq else None


class DecisionIn(BaseModel):
    decision: Literal["violating", "not_violating", "escalate"]
    note: str = Field("", max_length=MAX_NOTE_CHARS)
    #: teach the model the decided label (hash list and memory)
    learn: bool = True


class AppealIn(BaseModel):
    note: str = Field("", max_length=MAX_NOTE_CHARS)


def review_router(store: ReviewStore, predictor: Predictor, tokens: Tokens) -> APIRouter:
    """The page ``/review`` and the JSON endpoints under ``/v1/review``; every endpoint needs
    a reviewer's token, and the audit rows name the reviewer the token stands for. The page
    itself holds no data: it asks for the token and sends it with each call."""
    router = APIRouter()
    teacher = Teacher(predictor)
    #: one decision at a time in this process: a lesson's writes never interleave another's
    deciding = threading.Lock()
    reviewer = Depends(tokens.require)

    @router.get("/review", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "review.html")

    @router.get("/v1/review/queue", tags=["review"])
    def queue(who: str = reviewer, status: Literal["waiting", "escalated", "decided"] = "waiting",
              order: Literal["oldest", "uncertain"] = "oldest",
              limit: int = 50) -> dict[str, Any]:
        """Items waiting for a decision (or escalated, or decided), each with its ``id``."""
        return {"reviewer": who, "labels": predictor.label_names,
                "items": store.queue(status, order, max(1, min(limit, 500)))}

    @router.get("/v1/review/{item_id}", tags=["review"])
    def item(item_id: int, who: str = reviewer) -> dict[str, Any]:
        """One item and its audit trail."""
        return _on_item(store.item, item_id)

    @router.get("/v1/review/{item_id}/image", tags=["review"])
    def image(item_id: int, who: str = reviewer) -> Response:
        data = _on_item(store.image, item_id)
        if data is None:
            raise HTTPException(404, f"review item {item_id} has no stored picture")
        with Image.open(io.BytesIO(data)) as img:  # the header only: what the server accepted
            mime = Image.MIME.get(img.format or "", "application/octet-stream")
        return Response(data, media_type=mime, headers={"Cache-Control": "no-store"})

    @router.post("/v1/review/{item_id}/decision", tags=["review"])
    def decide(item_id: int, body: DecisionIn, who: str = reviewer) -> dict[str, Any]:
        """Record a decision as a new audit row; ``learn`` also puts the meme with the decided
        label on the model's hash list and in its memory (and takes out what an earlier,
        appealed decision put there)."""
        with deciding:
            return _on_item(store.record, item_id, "decision", body.decision, body.note, who,
                            predictor.model_id, lambda it, d: teacher(it, d, learn=body.learn))

    @router.post("/v1/review/{item_id}/appeal", tags=["review"])
    def appeal(item_id: int, body: AppealIn, who: str = reviewer) -> dict[str, Any]:
        """Reopen a decided item: it waits again, and its next decision is a new row."""
        with deciding:
            return _on_item(store.record, item_id, "appeal", None, body.note, who,
                            predictor.model_id)

    return router


def _on_item(fn: Callable[..., Any], item_id: int, *args: Any) -> Any:
    """``fn(item_id, *args)`` with the store's errors as HTTP answers."""
    try:
        return fn(item_id, *args)
    except KeyError as e:
        raise HTTPException(404, f"no review item {item_id}") from e
    except Conflict as e:
        raise HTTPException(409, str(e)) from e
    except DataError as e:
        raise HTTPException(422, str(e)) from e


def export_decisions(store: ReviewStore, output: Path) -> int:
    """Write each decided meme (``violating`` 1, ``not_violating`` 0, as currently decided) as a
    labelled dataset that ``train`` (a folder of jsonl splits) and ``memory add`` read: jsonl
    rows ``id, label, img, <text fields>`` with the pictures saved beside in ``img/``, or
    Parquet (by extension) with the picture bytes in ``img``. Returns the rows written."""
    rows: list[dict[str, Any]] = []
    pictures: dict[str, bytes] = {}
    parquet = output.suffix == ".parquet"
    for item, row in store.decisions():
        out: dict[str, Any] = {"id": memory_id(item.id), "label": DECISION_LABELS[row.decision],
                               **item.texts}
        if item.has_image:
            if parquet:
                out["img"] = item.image
            else:
                with Image.open(io.BytesIO(item.image)) as img:
                    name = f"img/{out['id']}.{(img.format or 'bin').lower()}"
                out["img"], pictures[name] = name, item.image
        rows.append(out)
    if not rows:
        raise DataError(f"{store.url}: no decided memes to export")
    output.parent.mkdir(parents=True, exist_ok=True)
    for name, data in pictures.items():
        (output.parent / name).parent.mkdir(exist_ok=True)
        (output.parent / name).write_bytes(data)
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = output.with_name(f".{output.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.replace(output)
    else:
        atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)
