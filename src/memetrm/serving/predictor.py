"""Load a saved model directory once and score memes: image + text in, probability out."""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence

from memetrm.checkpoint import weights_path
from memetrm.data.fields import join_texts, joined_parts, view_base
from memetrm.devices import resolve_device
from memetrm.encoders import DEFAULT_ENCODER, Encoder, create_encoder
from memetrm.encoders.runtimes import split_runtime, with_runtime
from memetrm.encoders.saved import resolve_encoders
from memetrm.errors import ConfigError, DataError, MemetrmError
from memetrm.heads import Head, Memory, from_pretrained
from memetrm.serving.feature_memo import FeatureMemo, Features
from memetrm.serving.hashing import PDQ_DISTANCE, ImageHash, pdq, text_key
from memetrm.serving.hashlist import MODEL_LIST, HashList, best_match
from memetrm.serving.ocr import OCR
from memetrm.serving.runtime_deltas import runtime_note
from memetrm.utils import split_field

DEFAULT_LABELS = ("not hateful", "hateful")
#: what a caller may give as an item's text: the meme text, or a field -> text mapping
TextInput = str | Mapping[str, str] | None


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
    #: the known-meme list entry this item matched (it is answered from the list)
    known: dict[str, Any] | None = None


def _model_id(model_dir: Path, config: dict[str, Any]) -> str:
    """``<dir name>@<weights sha256[:12]>``: names exactly which weights produced a score."""
    digest = hashlib.sha256(weights_path(model_dir).read_bytes()).hexdigest()[:12]
    return f"{config.get('name') or model_dir.resolve().name}@{digest}"


class Predictor:
    """Encoder + head from a ``save_pretrained`` directory, loaded once, reused per request.

    ``prepare`` (decode, OCR, field checks) is per item so a batch job can record one bad
    item and go on; ``run`` encodes and scores prepared items in one batch. Model calls are
    serialised by a lock: on a CPU, concurrent forwards only fight over the same cores.

    ``runtime`` runs the encoder towers on another runtime than the one the model was trained
    with (torch, onnx, onnx-int8; None keeps the trained one). ``memo`` reuses the features
    of memes seen before (reposts); ``hash_lists`` (with ``<model>/hashes.csv``, when present)
    answer listed memes without any model.
    """

    def __init__(self, model_dir: str | Path, *, encoder: Encoder | None = None,
                 ocr: OCR | None = None, device: str = "auto",
                 threshold: float | None = None, runtime: str | None = None,
                 memo: FeatureMemo | None = None, hash_lists: Sequence[HashList] = (),
                 hash_distance: int = PDQ_DISTANCE) -> None:
        self.model_dir = Path(model_dir)
        self.device = resolve_device(device)
        self.head, self.config, self.threshold = load_model(self.model_dir, self.device)
        if threshold is not None:  # an operator's override of the dev-chosen threshold
            self.threshold = check_threshold(threshold, "--threshold")
        #: the head's inputs; ``text@mpnet-effnet`` reads ``text`` through another encoder
        self.fields: list[str] = list(self.config.get("fields") or self.head.fields)
        self.tokens: bool = bool(self.config.get("tokens", self.head.needs_tokens))
        #: what labels 0 and 1 mean (``not offensive`` / ``offensive`` for MultiOFF models)
        self.label_names: list[str] = list(self.config.get("labels") or DEFAULT_LABELS)
        #: the encoders the config names, as found from here (tuned towers checked by digest)
        configured = self.config.get("encoder") or DEFAULT_ENCODER
        encoders = resolve_encoders(self.config, self.model_dir)
        trained = encoders[configured]
        default = with_runtime(trained, runtime)
        if split_runtime(default)[0] != split_runtime(trained)[0]:
            warnings.warn(runtime_note(trained, split_runtime(default)[0]), stacklevel=2)
        self.encoder = encoder or create_encoder(default, device=self.device)
        self._default = default
        #: field -> (item field it reads, encoder); a caption view reads the caption it was
        #: trained on the variants of (one given caption is its own mean)
        self._sources = {spec: (view_base(field), with_runtime(encoders[enc], runtime))
                         for spec in self.fields for field, enc in [split_field(spec, configured)]}
        #: encoders of fields that name another one (``text@mpnet-effnet``)
        self.extra_encoders = {enc: create_encoder(enc, device=self.device)
                               for _, enc in self._sources.values() if enc != default}
        self.ocr = ocr or OCR()
        self.model_id = _model_id(self.model_dir, self.config)
        self.memo = memo
        own = self.model_dir / MODEL_LIST
        self.hash_lists = [*([HashList.read(own, hash_distance)] if own.is_file() else []), *hash_lists]
        #: scored batches by size, and items answered from a hash list (for ``/metrics``)
        self.batch_sizes: Counter[int] = Counter()
        self.listed = 0
        self._lock = threading.Lock()

    @property
    def input_fields(self) -> list[str]:
        """The item fields the model reads (``image``, ``text``, ...), whatever their encoders."""
        return list(dict.fromkeys(p for f, _ in self._sources.values() for p in joined_parts(f)))

    @property
    def text_fields(self) -> list[str]:
        return [f for f in self.input_fields if f != "image"]

    def info(self) -> dict[str, Any]:
        """What a client needs to interpret scores: fields, threshold, provenance."""
        return {
            "model": self.model_id,
            "head": self.config.get("head"),
            "encoder": self.encoder.name,
            "fields": self.fields,
            "tokens": self.tokens,
            "threshold": self.threshold,
            "dataset": self.config.get("dataset"),
            "labels": self.label_names,
        }

    def prepare(self, image: Image.Image | None, text: TextInput = None) -> Prepared:
        """Validate one item and fill in a missing meme text by OCR; raises ``DataError``.

        A meme on a hash list is answered from the list: no text checks, no OCR."""
        image_hash = (pdq(image) if image is not None and (self.memo or self.hash_lists)
                      else None)
        known = best_match(self.hash_lists, image_hash)
        if known is not None:
            return Prepared(image, {}, None, image_hash, known)
        texts = {"text": text} if isinstance(text, str) else dict(text or {})
        for f in self.text_fields:
            if texts.get(f) is not None and not isinstance(texts[f], str):
                raise DataError(f"field {f!r} must be a string, got {type(texts[f]).__name__}")
        texts = {k: v for k, v in texts.items() if isinstance(v, str) and v.strip()}
        if "image" in self.input_fields and image is None:
            raise DataError("this model reads the image: an image is required")
        ocr_text = None
        if "text" in self.input_fields and "text" not in texts:
            if image is None:
                raise DataError("no text given and no image to read it from")
            ocr_text = texts["text"] = self.ocr(image)
        missing = [f for f in self.text_fields if f not in texts]
        if missing:
            raise DataError(
                f"this model reads the field(s) {missing}, which cannot be derived from an image "
                f"(e.g. 'caption' was a stand-in for the image when it was trained): pass them "
                f"explicitly"
            )
        return Prepared(image, {f: texts[f] for f in self.text_fields}, ocr_text, image_hash)

    def features(self, items: Sequence[Prepared]) -> dict[str, torch.Tensor]:
        """The head's input batch for prepared items (every field through its encoder)."""
        batch: dict[str, torch.Tensor] = {}
        for field, (source, enc) in self._sources.items():
            per_item = self._encode(enc, source, items)
            batch[field] = torch.stack([f["pooled"] for f in per_item]).float().to(self.device)
            if self.tokens:  # memoised items may have other token counts: pad, mask says so
                batch[f"{field}.tokens"] = pad_sequence(
                    [f["tokens"] for f in per_item], batch_first=True).float().to(self.device)
                batch[f"{field}.mask"] = pad_sequence(
                    [f["mask"] for f in per_item], batch_first=True).to(self.device)
        return batch

    def _encode(self, enc: str, source: str, items: Sequence[Prepared]) -> list[Features]:
        """Each item's features of ``source`` from encoder ``enc``: from the memo where it
        has them, the rest in one forward pass (and memoised)."""
        memo, image = self.memo, source == "image"
        keys = [p.image_hash if image else text_key(join_texts(p.texts, source)) for p in items] if memo \
            else [None] * len(items)
        found: list[Features | None] = [
            (memo.get_image(enc, k) if image else memo.get_text(enc, k)) if memo else None
            for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            encoder = self.encoder if enc == self._default else self.extra_encoders[enc]
            if image:
                transform = encoder.image_transform()
                pixels = torch.stack([transform(items[i].image) for i in todo])
                out = encoder.encode_images(pixels.to(self.device), tokens=self.tokens)
            else:
                out = encoder.encode_texts([join_texts(items[i].texts, source) for i in todo],
                                           tokens=self.tokens)
            for j, i in enumerate(todo):
                f = {"pooled": out.pooled[j].float().cpu().clone()}
                if self.tokens:  # fp16, as the feature cache the head was trained from keeps them
                    f["tokens"] = out.tokens[j].to(torch.float16).cpu().clone()
                    f["mask"] = out.mask[j].cpu().clone()
                found[i] = f
                if memo:
                    (memo.put_image if image else memo.put_text)(enc, keys[i], f)
        return found  # type: ignore[return-value]

    def run(self, items: Sequence[Prepared]) -> list[dict[str, Any]]:
        """Score prepared items in one forward pass; a non-finite score raises ``ModelOutputError``.
        Items matched on a hash list get the list's answer (``prob`` 0 or 1, ``hash_match``)."""
        scored = iter(self._score([p for p in items if p.known is None]))
        self.listed += sum(p.known is not None for p in items)
        return [self._listed(p) if p.known else next(scored) for p in items]

    def _listed(self, item: Prepared) -> dict[str, Any]:
        label = item.known["label"]
        return {"prob": float(label), "label": label, "label_name": self.label_names[label],
                "threshold": self.threshold, "ocr_text": None, "model": self.model_id,
                "trace": None, "steps": None, "neighbours": None, "hash_match": item.known}

    def _score(self, items: Sequence[Prepared]) -> list[dict[str, Any]]:
        if not items:
            return []
        with self._lock, torch.inference_mode():
            self.batch_sizes[len(items)] += 1
            out = self.head.predict(self.features(items))
        probs = out["prob"].float().cpu().tolist()
        if not all(math.isfinite(p) for p in probs):
            raise ModelOutputError(f"model {self.model_id} produced a non-finite score")
        n = len(items)
        traces = out["trace"].float().cpu().tolist() if "trace" in out else [None] * n
        steps = out["steps"].cpu().tolist() if "steps" in out else [None] * n
        neighbours = (self.head.explain(out) if isinstance(self.head, Memory) else None) or [None] * n
        results = []
        for p, prob, trace, step, near in zip(items, probs, traces, steps, neighbours, strict=True):
            label = int(prob >= self.threshold)
            results.append({
                "prob": prob,
                "label": label,
                "label_name": self.label_names[label],
                "threshold": self.threshold,
                "ocr_text": p.ocr_text,
                "model": self.model_id,
                "trace": trace,
                "steps": step,
                "neighbours": near,
                "hash_match": None,
            })
        return results

    def run_each(self, items: Sequence[Prepared]) -> list[dict[str, Any] | Exception]:
        """``run``, but a failing batch is retried item by item, so only the item at fault fails
        (its exception takes its place in the list) and its batch-mates still get scores."""
        try:
            return list(self.run(items))
        except Exception as e:  # isolation: any failure is retried per item below
            if len(items) < 2:
                return [e]
        out: list[dict[str, Any] | Exception] = []
        for item in items:
            try:
                out.extend(self.run([item]))
            except Exception as e:
                out.append(e)
        return out

    def predict(self, images: Sequence[Image.Image | None],
                texts: Sequence[TextInput] | None = None) -> list[dict[str, Any]]:
        """Score memes; ``texts[i]`` None means "read it off the image" (OCR)."""
        texts = texts if texts is not None else [None] * len(images)
        if len(texts) != len(images):
            raise DataError(f"{len(images)} images but {len(texts)} texts")
        return self.run([self.prepare(i, t) for i, t in zip(images, texts, strict=True)])
