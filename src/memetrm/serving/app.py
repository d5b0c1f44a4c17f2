"""HTTP API and web page: ``create_app(model_dir)`` loads the model once, then serves it.

Bad input always gets a 4xx with a message, never a 500: bodies are capped in size and time
while they stream in, image types are sniffed from magic bytes (the declared type is only a
hint), pixels are bounded by ``open_image`` before decoding, and each request has a deadline.
A prediction whose client disconnects is dropped from every queue it waits in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memetrm.data.images import MAX_PIXELS, open_image
from memetrm.errors import ConfigError, DataError, MemetrmError
from memetrm.serving.auth import RequireToken, Tokens
from memetrm.serving.guards import (
    MAX_TEXT_CHARS,
    ClientGone,
    PixelBudget,
    header_pixels,
    in_thread,
    json_structure,
    parse_json,
    redact_access_log,
    unless_disconnected,
)
from memetrm.serving.metrics import add_metrics
from memetrm.serving.policy import check_community
from memetrm.serving.predictor import ModelOutputError, Predictor, Prepared, each
from memetrm.serving.reload import ModelWatcher
from memetrm.serving.review import ReviewStore, review_router

STATIC_DIR = Path(__file__).parent / "static"
#: magic bytes -> MIME type of the image formats accepted
IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"BM": "image/bmp",
}
ALLOWED_TYPES = sorted({*IMAGE_MAGIC.values(), "image/webp"})
#: the status of a prediction whose client disconnected (nginx's "client closed request"):
#: nobody receives it, but ``/metrics`` counts it apart from real answers
CLIENT_GONE = 499
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Limits:
    max_upload_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = MAX_TEXT_CHARS
    max_pixels: int = MAX_PIXELS
    #: seconds for reading the body + decode + OCR + model; a slower request gets 504 and any
    #: stage it had not started yet is skipped
    timeout_s: float = 60.0
    #: seconds a client may take to send its body, from the end of its headers (which the
    #: protocol's header timeout bounds); a slower one gets 408 and its connection and
    #: prediction slot are freed
    body_timeout_s: float = 10.0
    #: predictions accepted at once (being read, decoded, queued or scored); more get 503 at once
    max_pending: int = 64
    #: longest image side kept after decoding: enough for the encoders and OCR
    reduce_to: int = 2048
    #: OCR calls run at once (each is seconds of CPU); more wait, within their deadline
    ocr_workers: int = 2
    #: decoded pixels in flight across all requests (one image at the per-image limit, or many
    #: memes); more wait, within their deadline
    pixel_budget: int = MAX_PIXELS


class Neighbour(BaseModel):
    """A labelled meme in a retrieval head's memory, close to the one scored."""

    id: str
    label: int
    similarity: float


class HashMatch(BaseModel):
    """The known-meme list entry a meme matched: its answer came from the list, not a model."""

    label: int
    source_id: str
    #: Hamming distance between the PDQ hashes (of 256 bits)
    distance: int
    list: str


class Source(BaseModel):
    """What answered: the model, a known-meme list, or the model on features the repost memo
    kept from an earlier, near-identical meme."""

    kind: Literal["model", "list", "memo"]
    #: the answer's source in words, as the page and the CLI show it
    words: str
    #: the list and the listed meme's id (a list answer)
    list: str | None = None
    id: str | None = None
    #: PDQ distance to the listed picture (list) or to the memo's picture (memo)
    distance: int | None = None
    #: the picture is on a list but the meme's text is another: the model answered
    picture_on_list: HashMatch | None = None


class ActionReason(BaseModel):
    """Why the answer got its action: the rule, its operating point, the policy section."""

    #: ``<action>: <operating point as written>``, ``default`` when no rule held, ``list:
    #: <action>`` for a known-meme list's answer
    rule: str
    #: the rule's threshold on the calibrated probability (None: the default, or a list answer)
    threshold: float | None
    #: the policy file's name (None: no policy, the action is the label)
    policy: str | None
    #: the community whose section of the policy decided (None: the base policy)
    community: str | None
    words: str


class Prediction(BaseModel):
    #: the calibrated probability of label 1 (the model's calibrator applied to ``score_raw``)
    prob: float
    #: the head's own score, before calibration (None for a list answer)
    score_raw: float | None = None
    label: int
    #: what ``label`` means for this model's dataset (e.g. ``offensive``)
    label_name: str
    threshold: float
    #: what to do with the meme: the policy's action, or the label without a policy
    action: str
    action_reason: ActionReason
    ocr_text: str | None
    model: str
    trace: list[float] | None
    #: supervision steps used by a head that halts early (None for other heads)
    steps: int | None = None
    #: the nearest labelled memes, for heads with a retrieval memory (None for other heads)
    neighbours: list[Neighbour] | None = None
    #: set when the meme was answered from a known-meme hash list
    hash_match: HashMatch | None = None
    source: Source
    #: the review queue's id for this meme, when it was routed to review
    review_id: int | None = None


class ModelInfo(BaseModel):
    model: str
    head: str | None
    encoder: str
    #: the fields a request sends (``image``, ``text``, ``caption``): a model trained on a
    #: caption view (``caption_mean``) takes one ``caption``, its own mean
    fields: list[str]
    tokens: bool
    threshold: float
    dataset: str | None
    labels: list[str]
    #: how ``prob`` is calibrated, in words
    calibration: str
    #: the policy's rules with their operating points, and its community sections
    policy: dict[str, Any]


#: The page loads nothing from elsewhere; its script and styles are inline.
PAGE_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
            "'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
#: ``--docs`` loads Swagger UI from its CDN.
DOCS_CSP = PAGE_CSP.replace("script-src 'self'", "script-src 'self' https://cdn.jsdelivr.net") \
    .replace("style-src 'self'", "style-src 'self' https://cdn.jsdelivr.net")


class SecurityHeaders:
    """ASGI middleware: CSP, no framing, no MIME sniffing, no referrer, on every response."""

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.headers = [(b"content-security-policy", csp.encode()), (b"x-frame-options", b"DENY"),
                        (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *self.headers]}
            await send(msg)

        await self.app(scope, receive, with_headers)


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


class BodyLimit:
    """ASGI middleware: reject by Content-Length up front, count streamed (chunked) bytes, and
    give the body a deadline, so a client trickling it frees its connection at the deadline."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body above the limit of {self.max_bytes:,} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, send, 413, too_large)
            return
        seen, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def counted() -> Message:
            nonlocal seen, complete
            if complete:  # the body is in: what is left to come is the disconnect, untimed
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    msg = await receive()
            except TimeoutError:
                raise BodyTooSlow from None
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge
            complete = not msg.get("more_body", False)
            return msg

        started = False

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, send, 413, too_large)
        except BodyTooSlow:
            if not started:  # closed after the answer: the rest of the body is not awaited
                await self._reject(scope, send, 408, "the request body did not arrive within "
                                                     f"{self.timeout_s:g} s",
                                   headers={"connection": "close"})

    async def _reject(self, scope: Scope, send: Send, status: int, detail: str,
                      headers: dict[str, str] | None = None) -> None:
        resp = JSONResponse({"detail": detail}, status_code=status, headers=headers)
        await resp(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class Batcher(Protocol):
    """What the app asks of its batcher: score one prepared meme among others, and say how
    many wait (``TowerBatchers`` here, ``@serve.batch`` on Ray Serve replicas)."""

    async def submit(self, item: Prepared) -> dict[str, Any]: ...

    def depth(self) -> int: ...


class MicroBatcher(Generic[T, R]):
    """Coalesces concurrent submissions into one call of ``run`` (a forward pass).

    Items that arrive while a batch runs wait in a queue and all go into the next one, so
    one client pays no extra latency and many clients share the per-call overhead (Python,
    small CPU kernels) instead of queueing one by one behind the model. ``run`` answers each
    item with its result or its exception (``each``: one bad item fails alone).
    """

    def __init__(self, run: Callable[[list[T]], list[R | Exception]], max_batch: int = 16,
                 name: str = "memetrm-score") -> None:
        self.run, self.max_batch = run, max_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        # its own thread: a batch never queues behind decode/OCR work in the shared pool
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=name)

    def depth(self) -> int:
        """Items waiting for the next batch."""
        return self._queue.qsize() if self._loop else 0

    def _ensure_worker(self) -> None:
        # one worker per event loop (a test client may run each request on a fresh loop)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._work())

    async def submit(self, item: T) -> R:
        self._ensure_worker()
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _work(self) -> None:
        while True:
            batch: list[tuple[T, asyncio.Future]] = []
            while not batch or (len(batch) < self.max_batch and not self._queue.empty()):
                item, fut = await self._queue.get()
                if not fut.done():  # done: timed out or its client gone, so it takes no room
                    batch.append((item, fut))
            results = await asyncio.get_running_loop().run_in_executor(
                self._worker, self.run, [i for i, _ in batch])
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    (fut.set_exception if isinstance(res, Exception) else fut.set_result)(res)


class TowerBatchers:
    """A meme's way through the model: each head field's encoder tower (image, text, ...)
    batches in a thread of its own, so the towers run side by side and a tower's batch holds
    only the memes it has not encoded yet; then the head scores memes whose features are in.
    Decoding and hashing run before, in the request threads, beside both."""

    def __init__(self, predictor: Predictor, max_batch: int = 16) -> None:
        self.towers = {field: MicroBatcher(partial(each, partial(predictor.encode_field, field)),
                                           max_batch, f"memetrm-{field}")
                       for field in predictor.fields}
        self.head = MicroBatcher(predictor.run_each, max_batch)

    def depth(self) -> int:
        """Memes waiting for a batch, at every stage."""
        return self.head.depth() + sum(t.depth() for t in self.towers.values())

    async def submit(self, item: Prepared) -> dict[str, Any]:
        if not item.answered_by_list:
            await asyncio.gather(*(tower.submit(item) for tower in self.towers.values()))
        return await self.head.submit(item)


def sniff_image_type(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in IMAGE_MAGIC.items() if data.startswith(magic)), None)


def check_texts(texts: dict[str, Any], fields: list[str], max_chars: int) -> dict[str, str]:
    """The text fields the model reads, each a valid Unicode string within the length limit;
    checked before the item joins a batch, so a bad one fails only its own request."""
    out = {}
    for key in fields:
        value = texts.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise HTTPException(422, f"field {key!r} must be a string, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise HTTPException(422, f"field {key!r} is not valid Unicode (a lone surrogate at "
                                     f"position {e.start})") from e
        if len(value) > max_chars:
            raise HTTPException(422, f"field {key!r} is {len(value):,} characters, above the limit "
                                     f"of {max_chars:,}")
        out[key] = value
    return out


def _check_image_bytes(data: bytes, declared: str | None) -> None:
    if not data:
        raise HTTPException(400, "the image is empty")
    if declared and declared not in ALLOWED_TYPES and declared != "application/octet-stream":
        raise HTTPException(415, f"image content type {declared!r} not allowed; "
                                 f"allowed: {', '.join(ALLOWED_TYPES)}")
    if sniff_image_type(data) is None:
        raise HTTPException(415, "the upload is not an image of an allowed type "
                                 f"({', '.join(ALLOWED_TYPES)})")


_OPENAPI_RESPONSES = {
    "responses": {
        "400": {"description": "malformed body or unreadable image"},
        "408": {"description": "the body did not arrive within the body deadline"},
        "413": {"description": "body above the upload limit"},
        "415": {"description": "not multipart/JSON, or not an allowed image type"},
        "422": {"description": "a required field is missing or too long"},
        "504": {"description": "prediction took longer than the request timeout"},
    },
}

#: what a text field holds, for the request schema
FIELD_DESCRIPTIONS = {
    "text": "meme text; omitted -> read off the image by OCR",
    "caption": "one sentence describing the picture, as the training captions were",
}
#: what the ``community`` field of a request does
COMMUNITY_DESCRIPTION = "the meme's community: selects its section of the server's policy"


def _body_schema(fields: list[str], image: dict[str, str], community: bool) -> dict[str, Any]:
    """The request body of a model reading ``fields``; an image is taken even where the model
    reads none, for OCR of a missing ``text``; ``community`` where the policy has sections."""
    texts = {f: {"type": "string", "description": FIELD_DESCRIPTIONS.get(f, "")}
             for f in fields if f != "image"}
    if community:
        texts["community"] = {"type": "string", "description": COMMUNITY_DESCRIPTION}
    return {"schema": {"type": "object", "required": [f for f in fields if f != "text"],
                       "properties": {"image": {"type": "string", **image}, **texts}}}


def _openapi_body(fields: list[str], community: bool) -> dict[str, Any]:
    """The request body and error answers of ``/v1/predict`` for a model reading ``fields``."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": _body_schema(fields, {"format": "binary"}, community),
        "application/json": _body_schema(fields, {"description": "base64 (a data: URL is fine)"},
                                         community),
    }}, **_OPENAPI_RESPONSES}


def create_app(model: str | Path | Predictor, limits: Limits | None = None,
               device: str = "auto", docs: bool = False,
               threshold: float | None = None, batcher: Batcher | None = None,
               review: ReviewStore | None = None, review_tokens: Tokens | None = None,
               api_tokens: Tokens | None = None) -> FastAPI:
    """The model (a directory or a ready ``Predictor``) is loaded here, once, before serving.
    ``batcher`` (default: ``TowerBatchers``, one per tower and one for the head) gathers the
    predictions into model batches.

    ``docs`` turns on FastAPI's ``/docs`` page, whose JavaScript comes from a CDN; the schema
    itself is always at ``/openapi.json``. ``review`` queues the answers it routes, for the
    reviewers of ``review_tokens`` at ``/review``; ``api_tokens`` closes the scoring API to
    clients without one.
    """
    if review is not None and review_tokens is None:
        raise ConfigError("a review queue needs reviewer tokens (--review-token or --review-tokens)")
    predictor = (model if isinstance(model, Predictor)
                 else Predictor(model, device=device, threshold=threshold))
    limits = limits or Limits()
    if "text" in predictor.input_fields:
        predictor.ocr.load()
    predictor.load_encoders()
    pixels = PixelBudget(limits.pixel_budget)
    ocr_slots = asyncio.Semaphore(limits.ocr_workers)
    watcher = ModelWatcher(predictor)
    redact_access_log()

    @contextlib.asynccontextmanager
    async def follow_folder(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(watcher.run())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title="memetrm", version="1",
                  summary=f"Hateful-meme classifier {predictor.model_id}",
                  docs_url="/docs" if docs else None, redoc_url=None, lifespan=follow_folder)
    app.state.predictor, app.state.limits = predictor, limits
    batcher = batcher or TowerBatchers(predictor)
    if api_tokens is not None:
        app.add_middleware(RequireToken, tokens=api_tokens)
    if review is not None and review_tokens is not None:
        app.include_router(review_router(review, predictor, review_tokens))
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes,
                       timeout_s=limits.body_timeout_s)
    # added after (outside) the body limit, so that its 408s and 413s are counted too
    cancelled, observe = add_metrics(app, predictor, batcher.depth)
    app.add_middleware(SecurityHeaders, csp=DOCS_CSP if docs else PAGE_CSP)

    #: a model that reads no image scores a meme from its texts: the image may be left out
    image_optional = "image" not in predictor.input_fields

    async def read_body(request: Request) -> tuple[bytes | None, str | None, dict[str, Any]]:
        """(image bytes or None, declared image type, text fields) from a multipart or JSON
        body."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):  # the latter: texts only
            form = await request.form(max_files=1, max_fields=8,
                                      max_part_size=limits.max_upload_bytes)
            upload = form.get("image")
            texts = {k: v for k, v in form.items() if k != "image"}
            if upload is None and image_optional:
                return None, None, texts
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "multipart field 'image' (a file) is required")
            return await upload.read(), upload.content_type, texts
        if ctype == "application/json":
            raw = await request.body()
            if not raw:
                raise HTTPException(400, "empty request body")
            structure, most = json_structure(raw), 8 * limits.max_text_chars + 256
            if structure > most:
                raise HTTPException(422, f"JSON body has {structure:,} commas, colons and "
                                         f"brackets, above the {most:,} a prediction (a base64 "
                                         "'image' and a few text fields) can hold")
            try:  # a 10 MB body takes a while to parse: not on the event loop
                obj = await run_in_threadpool(parse_json, raw)
            except ValueError as e:
                raise HTTPException(400, f"malformed JSON: {e}") from e
            if isinstance(obj, dict) and obj.get("image") is None and image_optional:
                return None, None, {k: v for k, v in obj.items() if k != "image"}
            if not isinstance(obj, dict) or not isinstance(obj.get("image"), str):
                raise HTTPException(422, "JSON body must be an object with a base64 'image' string")
            b64 = obj["image"]
            if b64.startswith("data:"):  # a data: URL, as browsers' FileReader produce
                b64 = b64.split(",", 1)[-1]
            try:
                data = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as e:
                raise HTTPException(400, f"'image' is not valid base64: {e}") from e
            return data, None, {k: v for k, v in obj.items() if k != "image"}
        raise HTTPException(415, "send multipart/form-data (image file + text) or application/json "
                                 f"(base64 image + text), not {ctype or 'no content type'!r}")

    pending = asyncio.Semaphore(limits.max_pending)

    @app.post("/v1/predict", response_model=Prediction,
              openapi_extra=_openapi_body(predictor.input_fields,
                                          bool(predictor.policy.communities)))
    async def predict(request: Request) -> dict[str, Any]:
        """Score one meme; without ``text`` the meme text is read off the image by OCR."""
        if pending.locked():
            raise HTTPException(503, f"server busy: {limits.max_pending} predictions in progress; "
                                     "retry shortly", headers={"Retry-After": "1"})
        deadline = time.monotonic() + limits.timeout_s
        gone = threading.Event()  # set when the client disconnects

        def skip_if_late(stage: str) -> None:
            if gone.is_set():  # nobody waits for the answer: skip the work
                raise HTTPException(CLIENT_GONE, f"the client disconnected before {stage}")
            if time.monotonic() > deadline:  # its answer is a 504 already: skip the work
                raise HTTPException(504, f"the request timed out before {stage}")

        def decode(data: bytes, ocr: bool) -> Image.Image:
            skip_if_late("its image was decoded")
            try:
                return open_image(data, name="upload", max_pixels=limits.max_pixels,
                                  reduce_to=limits.reduce_to, draft_to=predictor.draft_side(ocr))
            except DataError as e:
                raise HTTPException(400, str(e)) from e

        def prepare(image: Image.Image | None, texts: dict[str, str]) -> Prepared:
            skip_if_late("its text was read (OCR)")
            try:
                return predictor.prepare(image, texts)
            except DataError as e:
                raise HTTPException(422, str(e)) from e

        async def work() -> dict[str, Any]:
            data, declared, texts = await read_body(request)
            return await unless_disconnected(score(data, declared, texts), request.receive, gone)

        async def score(data: bytes | None, declared: str | None,
                        texts: dict[str, Any]) -> dict[str, Any]:
            """Waits (for pixels, an OCR slot, the model) happen here, on the event loop, so a
            queue of waiting requests holds no worker thread; decode and OCR run in threads."""
            if data is not None:
                _check_image_bytes(data, declared)
            try:  # selects the policy's section; checked before any decoding
                community = check_community(texts.get("community"))
            except DataError as e:
                raise HTTPException(422, str(e)) from e
            # the meme text also when the model reads none: a known-meme list compares it
            texts = check_texts(texts, list(dict.fromkeys([*predictor.text_fields, "text"])),
                                limits.max_text_chars)
            if community is not None:
                texts["community"] = community
            ocr = (("text" in predictor.input_fields or predictor.known.has_text)
                   and not texts.get("text", "").strip())
            image = None
            if data is not None:
                held = await pixels.acquire(min(header_pixels(data), limits.max_pixels))
                image = await in_thread(decode, data, ocr, release=lambda: pixels.release(held))
            if image is not None and ocr:
                await ocr_slots.acquire()
                prepared = await in_thread(prepare, image, texts, release=ocr_slots.release)
            else:
                prepared = await in_thread(prepare, image, texts)
            skip_if_late("it was scored")
            answer = await batcher.submit(prepared)
            observe(answer)
            if review is not None and review.routes(answer):
                answer["review_id"] = await in_thread(review.route, answer, data, texts)
            return answer

        async with pending:
            try:
                return await asyncio.wait_for(work(), limits.timeout_s)
            except TimeoutError as e:
                raise HTTPException(504, f"prediction exceeded the {limits.timeout_s:g} s "
                                         "timeout") from e
            except (ClientGone, ClientDisconnect) as e:
                cancelled.inc()
                raise HTTPException(CLIENT_GONE, "the client disconnected before the answer") \
                    from e
            except ModelOutputError as e:
                raise HTTPException(500, str(e)) from e
            except DataError as e:
                raise HTTPException(422, str(e)) from e
            except MemetrmError as e:
                raise HTTPException(500, f"scoring failed: {e}") from e

    # async: answered on the event loop, even when every worker thread is busy
    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> dict[str, Any]:
        return predictor.info()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": predictor.model_id}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    return app
