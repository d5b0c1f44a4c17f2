"""Load a saved model directory once and score memes: image + text in, probability out."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence

from memetrm.checkpoint import weights_path
from memetrm.data.fields import client_fields, join_texts, source_field
from memetrm.devices import resolve_device
from memetrm.encoders import DEFAULT_ENCODER, Encoder, create_encoder
from memetrm.encoders.runtimes import split_runtime, with_runtime
from memetrm.encoders.saved import resolve_encoders
from memetrm.errors import ConfigError, DataError, MemetrmError
from memetrm.evaluation.calibration import Calibrator
from memetrm.heads import Head, Memory, from_pretrained
from memetrm.modelstore import REVISION_KEY
from memetrm.serving.feature_memo import FeatureMemo, Features
from memetrm.serving.hashing import HASH_SIDE, LIST_DISTANCE, ImageHash, pdq, text_key
from memetrm.serving.hashlist import HashList, KnownMemes, ListMatch
from memetrm.serving.ocr import OCR
from memetrm.serving.policy import Policy, PolicyFile, check_community
from memetrm.serving.runtime_deltas import runtime_note
from memetrm.utils import split_field

DEFAULT_LABELS = ("not hateful", "hateful")
#: what a caller may give as an item's text: the meme text, or a field -> text mapping (which
#: may also name the meme's ``community``: its section of the policy)
TextInput = str | Mapping[str, str] | None
#: a text bucket closes at the first text longer than this many times its shortest (plus
#: ``BUCKET_CHARS``): a batch pads every text to its longest
BUCKET_SLACK = 1.5
BUCKET_CHARS = 16
#: a JPEG is decoded down to this many times its consumers' side at least: a resize by 2 or
#: more after libjpeg's reduced decode hides its other low-pass. Drafted to the towers' side
#: itself, MultiOFF probabilities moved by up to 0.05 (0.03 on the memes scaled up 2x); at
#: twice the side, by up to 0.006 on the memes scaled up 2x (docs/serving.md measures it)
DRAFT_MARGIN = 2
T = TypeVar("T")
R = TypeVar("R")


class ModelOutputError(MemetrmError):
    """The model's score for an item is not a finite number (a broken or poisoned model)."""


def check_threshold(thr: Any, where: str) -> float:
    if isinstance(thr, bool) or not isinstance(thr, int | float) or not 0 <= thr <= 1:
        raise ConfigError(f"{where}: 'threshold' must be a number in [0, 1] "
                          f"(the decision threshold), got {thr!r}")
    return float(thr)


def decision_threshold(config: dict[str, Any], model_dir: Path) -> float:
    """The dev-chosen threshold saved with the model; a missing or malformed one is an error,
    never a silent 0.5."""
    return check_threshold(config.get("threshold"), str(model_dir / "config.json"))


def load_model(model_dir: str | Path, device: torch.device) -> tuple[Head, dict[str, Any], float]:
    """A saved head on ``device``, its config and its decision threshold, checked to give
    finite outputs: what every command that scores with a saved model starts from."""
    head, config = from_pretrained(model_dir)
    threshold = decision_threshold(config, Path(model_dir))
    probe_head(head.to(device), Path(model_dir), bool(config.get("tokens", head.needs_tokens)))
    return head, config, threshold


@torch.no_grad()
def probe_head(head: Head, model_dir: Path, tokens: bool) -> None:
    """Refuse at load time a model whose output on a neutral input is not finite (NaN weights)."""
    probe = {f: torch.zeros(2, d, device=next(head.parameters()).device)
             for f, d in head.input_dims.items()}
    if tokens:
        for f, d in (head.token_dims or head.input_dims).items():
            probe[f"{f}.tokens"] = torch.zeros(2, 1, d, device=probe[f].device)
            probe[f"{f}.mask"] = torch.ones(2, 1, dtype=torch.bool, device=probe[f].device)
    if not torch.isfinite(head.eval().predict(probe)["prob"]).all():
        raise ConfigError(f"{model_dir}: the model's output is not finite on a probe input "
                          "(NaN or infinite weights?); refusing to serve it")


@dataclass
class Prepared:
    """One item ready for the encoder: decoded image and every text field the model reads."""

    image: Image.Image | None
    texts: dict[str, str]
    ocr_text: str | None = None
    #: PDQ hash of the image, when a feature memo or a hash list needs it
    image_hash: ImageHash | None = None
    #: the known-meme list entry the picture is near: the item is answered from the list when
    #: its text agrees too, and by the model (which says so) when it does not
    listed: ListMatch | None = None
    #: fields whose features the repost memo gave -> PDQ distance of the memoised picture
    #: (``image``), 0 for a text (equal once normalised)
    memo: dict[str, int] = dataclasses.field(default_factory=dict)
    #: the request's community: selects its section of the policy
    community: str | None = None
    #: head field -> its features, once encoded (by a tower's own batch, ahead of the head)
    encoded: dict[str, Features] = dataclasses.field(default_factory=dict)

    @property
    def answered_by_list(self) -> bool:
        return self.listed is not None and self.listed.text_agrees


def each(run: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R | Exception]:
    """``run(items)``, but a failing batch is retried item by item, so only the item at fault
    fails (its exception takes its place in the list) and its batch-mates still get answers."""
    try:
        return list(run(items))
    except Exception as e:  # isolation: any failure is retried per item below
        if len(items) < 2:
            return [e]
    out: list[R | Exception] = []
    for item in items:
        try:
            out.extend(run([item]))
        except Exception as e:
            out.append(e)
    return out


def length_buckets(texts: Sequence[str]) -> list[list[int]]:
    """Indices of ``texts`` grouped by length, shortest first: a batch pads every text to its
    longest, so a one-liner batched with a paragraph would pay for the paragraph's length."""
    buckets: list[list[int]] = []
    for i in sorted(range(len(texts)), key=lambda i: len(texts[i])):
        if buckets and len(texts[i]) <= BUCKET_SLACK * len(texts[buckets[-1][0]]) + BUCKET_CHARS:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


def _model_id(model_dir: Path, config: dict[str, Any]) -> str:
    """``<dir name>@<revision[:12]>``: names exactly which revision of the folder (weights,
    hash list, memory) produced a score. A folder written before revisions existed is named
    by a digest of its weights."""
    revision = config.get(REVISION_KEY)
    if not isinstance(revision, str) or not revision:
        revision = hashlib.sha256(weights_path(model_dir).read_bytes()).hexdigest()
    return f"{config.get('name') or model_dir.resolve().name}@{revision[:12]}"


class Predictor:
    """Encoder + head from a ``save_pretrained`` directory, loaded once, reused per request.

    ``prepare`` (decode, OCR, field checks) is per item so a batch job can record one bad
    item and go on; ``run`` encodes and scores prepared items in one batch. Model calls are
    serialised by a lock: on a CPU, concurrent forwards only fight over the same cores.

    ``runtime`` runs the encoder towers on another runtime than the one the model was trained
    with (torch, onnx, onnx-int8; None keeps the trained one). ``memo`` reuses the features
    of memes seen before (reposts); ``hash_lists`` (with ``<model>/hashes.csv``, when present)
    answer listed memes without any model, within ``list_distance`` bits. Encoders are loaded
    on first use, so a meme answered from a list never loads one. Every result names what
    answered it (``source``).

    ``prob`` is the head's score through the calibrator saved with the model (``score_raw``
    the score itself); ``policy`` (a policy file) turns it into an ``action`` at operating
    points chosen on the model's dev scores, and without one the action is the label.
    """

    def __init__(self, model_dir: str | Path, *, encoder: Encoder | None = None,
                 ocr: OCR | None = None, device: str = "auto",
                 threshold: float | None = None, runtime: str | None = None,
                 memo: FeatureMemo | None = None, hash_lists: Sequence[HashList] = (),
                 list_distance: int = LIST_DISTANCE, policy: PolicyFile | None = None) -> None:
        self.model_dir = Path(model_dir)
        #: compiled against each revision's dev scores as it is swapped in
        self._policy_file = policy
        self.device = resolve_device(device)
        #: an operator's override of the dev-chosen threshold, kept across swaps
        self._threshold = None if threshold is None else check_threshold(threshold, "--threshold")
        head, config, dev_threshold = load_model(self.model_dir, self.device)
        #: the head's inputs; ``text@mpnet-effnet`` reads ``text`` through another encoder
        self.fields: list[str] = list(config.get("fields") or head.fields)
        self.tokens: bool = bool(config.get("tokens", head.needs_tokens))
        #: the encoders the config names, as found from here (tuned towers checked by digest)
        configured = config.get("encoder") or DEFAULT_ENCODER
        encoders = resolve_encoders(config, self.model_dir)
        trained = encoders[configured]
        default = with_runtime(trained, runtime)
        if split_runtime(default)[0] != split_runtime(trained)[0]:
            warnings.warn(runtime_note(trained, split_runtime(default)[0]), stacklevel=2)
        self._default = default
        #: loaded encoders by name (``_encoder`` loads the others on first use)
        self._encoders: dict[str, Encoder] = {default: encoder} if encoder else {}
        #: field -> (item field it reads, encoder); a caption view reads the caption it was
        #: trained on the variants of (one given caption is its own mean)
        self._sources = {spec: (source_field(spec),
                                with_runtime(encoders[split_field(spec, configured)[1]], runtime))
                         for spec in self.fields}
        self.ocr = ocr or OCR()
        self.memo = memo
        self._lists, self.list_distance = list(hash_lists), list_distance
        #: scored batches by size, and items answered from a hash list (for ``/metrics``)
        self.batch_sizes: Counter[int] = Counter()
        self.listed = 0
        self._lock = threading.Lock()
        self.swap(head, config, dev_threshold, HashList.of_model(self.model_dir))

    def swap(self, head: Head, config: dict[str, Any], threshold: float,
             own_list: HashList) -> None:
        """Serve another revision of the model folder (head, config, dev threshold, the
        folder's own hash list) from the next batch on: a batch is scored by one revision,
        and requests in flight are not dropped. The operator's threshold still wins; the
        calibrator and the policy's operating points are the revision's."""
        known = KnownMemes([own_list, *self._lists], self.list_distance)
        where = str(self.model_dir / "config.json")
        threshold = threshold if self._threshold is None else self._threshold
        #: what labels 0 and 1 mean (``not offensive`` / ``offensive`` for MultiOFF models)
        label_names: list[str] = list(config.get("labels") or DEFAULT_LABELS)
        calibrator = Calibrator.from_config(config, where)
        policy = Policy.of_model(self._policy_file, config, calibrator, threshold, label_names,
                                 where)
        with self._lock:
            self.head, self.config = head, config
            self.threshold, self.label_names = threshold, label_names
            self.calibrator, self.policy = calibrator, policy
            self.model_id = _model_id(self.model_dir, config)
            self.known = known

    @property
    def encoder(self) -> Encoder:
        """The model's own encoder (loaded on first use)."""
        return self._encoder(self._default)

    @encoder.setter
    def encoder(self, value: Encoder) -> None:
        self._encoders[self._default] = value

    def _encoder(self, name: str) -> Encoder:
        if name not in self._encoders:
            self._encoders[name] = create_encoder(name, device=self.device)
        return self._encoders[name]

    def load_encoders(self) -> None:
        """Load every encoder now (a server does, so its first request is not slow)."""
        for _, enc in self._sources.values():
            self._encoder(enc)

    @property
    def input_fields(self) -> list[str]:
        """The item fields the model reads (``image``, ``text``, ...), whatever their encoders,
        views by their base name: what a client sends."""
        return client_fields(self.fields)

    @property
    def text_fields(self) -> list[str]:
        return [f for f in self.input_fields if f != "image"]

    def info(self) -> dict[str, Any]:
        """What a client needs to send and to interpret scores: fields, threshold, provenance."""
        return {
            "model": self.model_id,
            "head": self.config.get("head"),
            "encoder": self._default,
            "fields": self.input_fields,
            "tokens": self.tokens,
            "threshold": self.threshold,
            "dataset": self.config.get("dataset"),
            "labels": self.label_names,
            "calibration": self.calibrator.describe(),
            "policy": self.policy.describe(),
        }

    def prepare(self, image: Image.Image | None, text: TextInput = None, *,
                lists: bool = True) -> Prepared:
        """Validate one item and fill in a missing meme text by OCR; raises ``DataError``.

        A meme on a hash list is answered from the list, with no further checks: its picture
        near a listed one and, where the listed meme had text, its text agreeing (read by OCR
        if not given). ``lists`` False leaves the lists out (a memory stores what the model
        reads, whatever the lists say). A ``community`` in ``text`` selects the policy's
        section."""
        known = self.known if lists and len(self.known) else None
        image_hash = pdq(image) if image is not None and (self.memo or known) else None
        texts = {"text": text} if isinstance(text, str) else dict(text or {})
        community = check_community(texts.pop("community", None))
        for f in self.text_fields:
            if texts.get(f) is not None and not isinstance(texts[f], str):
                raise DataError(f"field {f!r} must be a string, got {type(texts[f]).__name__}")
        texts = {k: v for k, v in texts.items() if isinstance(v, str) and v.strip()}
        ocr_text = None

        def meme_text() -> str:
            nonlocal ocr_text
            if "text" not in texts and image is not None:
                ocr_text = texts["text"] = self.ocr(image)
            return texts.get("text", "")

        listed = known.match(image_hash, meme_text) if known else None
        if listed is not None and listed.text_agrees:
            return Prepared(image, {}, ocr_text, image_hash, listed, community=community)
        if "image" in self.input_fields and image is None:
            raise DataError("this model reads the image: an image is required")
        if "text" in self.input_fields and "text" not in texts:
            if image is None:
                raise DataError("no text given and no image to read it from")
            meme_text()
        missing = [f for f in self.text_fields if f not in texts]
        if missing:
            raise DataError(
                f"this model reads the field(s) {missing}, which cannot be derived from an image "
                f"(e.g. 'caption' was a stand-in for the image when it was trained): pass them "
                f"explicitly"
            )
        return Prepared(image, {f: texts[f] for f in self.text_fields}, ocr_text, image_hash,
                        listed, community=community)

    @cached_property
    def _tower_side(self) -> int | None:
        """The side every image tower of the model resizes to (None: one needs full size)."""
        sides = [self._encoder(enc).image_side() for source, enc in self._sources.values()
                 if source == "image"]
        return None if None in sides else max(sides, default=0)

    def draft_side(self, ocr: bool) -> int | None:
        """The side down to which a JPEG may be decoded for this model (``open_image``'s
        ``draft_to``): ``DRAFT_MARGIN`` times its image towers' size, and PDQ's when the repost
        memo hashes. None, a full decode, when OCR reads the picture, when a known-meme list is
        on (list entries are hashes of full-size pictures, and a reduced decode moved PDQ by up
        to the whole list distance; docs/serving.md), or when a tower wants the full picture."""
        if ocr or len(self.known) or self._tower_side is None:
            return None
        return DRAFT_MARGIN * max(self._tower_side, HASH_SIDE if self.memo else 0) or None

    def features(self, items: Sequence[Prepared]) -> dict[str, torch.Tensor]:
        """The head's input batch for prepared items (every field through its encoder)."""
        batch: dict[str, torch.Tensor] = {}
        for field in self._sources:
            per_item = self.encode_field(field, items)
            batch[field] = torch.stack([f["pooled"] for f in per_item]).float().to(self.device)
            if self.tokens:  # memoised items may have other token counts: pad, mask says so
                batch[f"{field}.tokens"] = pad_sequence(
                    [f["tokens"] for f in per_item], batch_first=True).float().to(self.device)
                batch[f"{field}.mask"] = pad_sequence(
                    [f["mask"] for f in per_item], batch_first=True).to(self.device)
        return batch

    def encode_field(self, field: str, items: Sequence[Prepared]) -> list[Features]:
        """Each item's features of one head field; those encoded before are kept with the item
        (``Prepared.encoded``), so a tower's own batch runs ahead of the head's."""
        source, enc = self._sources[field]
        todo = [p for p in items if field not in p.encoded]
        for p, f in zip(todo, self._encode(enc, source, todo), strict=True):
            p.encoded[field] = f
        return [p.encoded[field] for p in items]

    def _encode(self, enc: str, source: str, items: Sequence[Prepared]) -> list[Features]:
        """Each item's features of ``source`` from encoder ``enc``: from the memo where it
        has them (the item records the hit), the rest in one forward pass (and memoised)."""
        memo, image = self.memo, source == "image"
        keys = [p.image_hash if image else text_key(join_texts(p.texts, source)) for p in items] if memo \
            else [None] * len(items)
        found: list[Features | None] = [None] * len(items)
        for i, k in enumerate(keys if memo else []):
            hit = memo.get_image(enc, k) if image else memo.get_text(enc, k)
            if hit is not None:
                found[i], items[i].memo[source] = hit
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            encoder = self._encoder(enc)
            if image:
                transform = encoder.image_transform()
                pixels = torch.stack([transform(items[i].image) for i in todo])
                runs = [(todo, encoder.encode_images(pixels.to(self.device), tokens=self.tokens))]
            else:
                texts = [join_texts(items[i].texts, source) for i in todo]
                runs = [([todo[j] for j in bucket],
                         encoder.encode_texts([texts[j] for j in bucket], tokens=self.tokens))
                        for bucket in length_buckets(texts)]
            for rows, out in runs:
                for j, i in enumerate(rows):
                    f = {"pooled": out.pooled[j].float().cpu().clone()}
                    if self.tokens:  # fp16, as the feature cache the head was trained from
                        f["tokens"] = out.tokens[j].to(torch.float16).cpu().clone()
                        f["mask"] = out.mask[j].cpu().clone()
                    found[i] = f
                    if memo:
                        (memo.put_image if image else memo.put_text)(enc, keys[i], f)
        return found  # type: ignore[return-value]

    def run(self, items: Sequence[Prepared]) -> list[dict[str, Any]]:
        """Score prepared items in one forward pass; a non-finite score raises ``ModelOutputError``.
        Items matched on a hash list get the list's answer (``prob`` 0 or 1, ``hash_match``)."""
        scored = iter(self._score([p for p in items if not p.answered_by_list]))
        self.listed += sum(p.answered_by_list for p in items)
        return [self._listed(p) if p.answered_by_list else next(scored) for p in items]

    def _listed(self, item: Prepared) -> dict[str, Any]:
        m = item.listed
        label = m.entry.label
        agreed = ", text agrees" if m.entry.text else ""
        return {"prob": float(label), "score_raw": None, "label": label,
                "label_name": self.label_names[label], "threshold": self.threshold,
                **self.policy.for_label(label, item.community),
                "ocr_text": item.ocr_text, "model": self.model_id,
                "trace": None, "steps": None, "neighbours": None, "hash_match": m.as_dict(),
                "source": {"kind": "list", "list": m.list, "id": m.entry.source_id,
                           "distance": m.distance, "picture_on_list": None,
                           "words": f"known meme {m.entry.source_id} on list {m.list} "
                                    f"(picture at distance {m.distance}{agreed})"}}

    @staticmethod
    def _scored_source(item: Prepared, model: str) -> dict[str, Any]:
        """The model answered: on which features (the repost memo's?), and whether the picture
        is on a list with another text."""
        words = [f"model {model}"]
        if item.memo:
            words.append("features kept by the repost memo (" + ", ".join(
                f"picture at distance {d}" if f == "image" else f"{f} equal once normalised"
                for f, d in item.memo.items()) + ")")
        m = item.listed
        if m is not None:
            words.append(f"picture on list {m.list} at distance {m.distance}; text differs "
                         f"(entry {m.entry.source_id})")
        return {"kind": "memo" if item.memo else "model", "list": None, "id": None,
                "distance": item.memo.get("image"),
                "picture_on_list": m.as_dict() if m is not None else None,
                "words": "; ".join(words)}

    def _score(self, items: Sequence[Prepared]) -> list[dict[str, Any]]:
        if not items:
            return []
        with self._lock, torch.inference_mode():  # one revision scores the whole batch
            self.batch_sizes[len(items)] += 1
            head, model, threshold, names = self.head, self.model_id, self.threshold, self.label_names
            calibrator, policy = self.calibrator, self.policy
            out = head.predict(self.features(items))
        raws = out["prob"].float().cpu().tolist()
        if not all(math.isfinite(p) for p in raws):
            raise ModelOutputError(f"model {model} produced a non-finite score")
        probs = calibrator(np.array(raws)).tolist()
        n = len(items)
        traces = (calibrator(out["trace"].float().cpu().numpy()).tolist() if "trace" in out
                  else [None] * n)
        steps = out["steps"].cpu().tolist() if "steps" in out else [None] * n
        neighbours = (head.explain(out) if isinstance(head, Memory) else None) or [None] * n
        results = []
        for p, prob, raw, trace, step, near in zip(items, probs, raws, traces, steps, neighbours,
                                                   strict=True):
            label = int(prob >= threshold)
            results.append({
                "prob": prob,
                "score_raw": raw,
                "label": label,
                "label_name": names[label],
                "threshold": threshold,
                **policy.decide(prob, p.community),
                "ocr_text": p.ocr_text,
                "model": model,
                "trace": trace,
                "steps": step,
                "neighbours": near,
                "hash_match": None,
                "source": self._scored_source(p, model),
            })
        return results

    def run_each(self, items: Sequence[Prepared]) -> list[dict[str, Any] | Exception]:
        """``run``, but a failing batch is retried item by item, so only the item at fault fails
        (its exception takes its place in the list) and its batch-mates still get scores."""
        return each(self.run, items)

    def predict(self, images: Sequence[Image.Image | None],
                texts: Sequence[TextInput] | None = None) -> list[dict[str, Any]]:
        """Score memes; ``texts[i]`` None means "read it off the image" (OCR)."""
        texts = texts if texts is not None else [None] * len(images)
        if len(texts) != len(images):
            raise DataError(f"{len(images)} images but {len(texts)} texts")
        return self.run([self.prepare(i, t) for i, t in zip(images, texts, strict=True)])
