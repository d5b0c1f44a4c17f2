"""Contrastive tuning of a sentence-transformers text tower on labelled memes (SetFit-style).

Training goes through sentence-transformers' own trainer and losses: each meme is one
``(sentence, label)`` row and a batch triplet loss pulls same-label memes together and pushes
the others apart (``batch-all``, ``batch-hard`` or ``batch-semi-hard``), or SetFit's recipe of
labelled pairs (``contrastive``: each meme with a random same-label and a random other-label
partner, online contrastive loss). LoRA (through ``peft``) or freezing all but the top layers
cuts the cost on a CPU; texts are padded per batch.

Selection is on dev only: after each epoch a logistic probe fitted on (a sample of) the
training memes' embeddings is scored by dev AUROC, and the best epoch is kept. The result is a
sentence-transformers folder plus ``tuning.json`` (settings, per-epoch dev AUROC, seconds per
epoch, the ids it was tuned on, the files it wrote); use it as ``--encoder tuned:PATH``. The
folder is written under the model-folder lock: a new or empty folder, or one an earlier tune
wrote, where only the files listed in its ``tuning.json`` are replaced or removed.

A head fitted on features of the very memes the tower was tuned on sees them better separated
than unseen memes will be. ``fraction`` < 1 tunes on a stratified part of the training split
only, so a head can be fitted on the held-out part (``held_out_ids`` in ``tuning.json``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from memetrm.config import TuneConfig
from memetrm.data import get_dataset
from memetrm.data.fields import join_texts, joined_parts
from memetrm.data.records import MemeRecord
from memetrm.devices import resolve_device
from memetrm.errors import ConfigError, DataError
from memetrm.modelstore import STAGING_PREFIX, remove_stale, writer_lock
from memetrm.progress import make_progress
from memetrm.provenance import provenance
from memetrm.utils import plural, publish_mode

#: marks a folder written by ``memetrm tune`` and lists the files it wrote (``files``)
SUMMARY = "tuning.json"


def tune_split(records: Sequence[MemeRecord], fraction: float, seed: int
               ) -> tuple[list[MemeRecord], list[MemeRecord]]:
    """(tuned on, held out): a stratified ``fraction`` of the labelled records."""
    if fraction >= 1:
        return list(records), []
    rng = random.Random(seed)
    tuned, held = [], []
    for label in (0, 1):
        group = [r for r in records if r.label == label]
        rng.shuffle(group)
        n = round(fraction * len(group))
        tuned += group[:n]
        held += group[n:]
    order = {r.id: i for i, r in enumerate(records)}
    return sorted(tuned, key=lambda r: order[r.id]), sorted(held, key=lambda r: order[r.id])


def _texts(records: Sequence[MemeRecord], field: str, where: str) -> list[str]:
    """The text of ``field`` of every record; one lacking it is refused, naming the fields every
    record has, which ``--field`` can take instead."""
    def has(r: MemeRecord, f: str) -> bool:
        return all(r.texts.get(p, "").strip() for p in joined_parts(f))

    missing = [r.id for r in records if not has(r, field)]
    if missing:
        named = sorted({k for r in records for k in r.texts})
        usable = [f for f in named if all(has(r, f) for r in records)]
        hint = (f"; every record has {' and '.join(usable)}: use --field {usable[0]}" if usable
                else "")
        raise DataError(f"{where}: {plural(len(missing), 'record')} lack field {field!r}, ids: "
                        f"{', '.join(missing[:10])}{hint}")
    return [join_texts(r.texts, field) for r in records]


def contrastive_pairs(texts: list[str], labels: list[int], seed: int) -> dict[str, list]:
    """SetFit's pairs: each text with a random same-label and a random other-label partner."""
    rng = random.Random(seed)
    by_label = {c: [i for i, y in enumerate(labels) if y == c] for c in (0, 1)}
    a, b, same = [], [], []
    for i, y in enumerate(labels):
        for partner_label in (y, 1 - y):
            j = rng.choice(by_label[partner_label])
            a.append(texts[i])
            b.append(texts[j])
            same.append(int(partner_label == y))
    return {"sentence1": a, "sentence2": b, "label": same}


class DevProbe:
    """sentence-transformers evaluator: dev AUROC of a logistic probe on the tower's embeddings."""

    def __init__(self, train: tuple[list[str], list[int]], dev: tuple[list[str], list[int]],
                 batch_size: int = 128) -> None:
        from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

        self.train, self.dev, self.batch_size = train, dev, batch_size
        self.history: list[dict[str, float]] = []
        #: time spent scoring, so the training cost per epoch can leave it out
        self.seconds = 0.0
        # a subclass made here, so importing this module does not import sentence-transformers
        probe = self

        class _Evaluator(BaseEvaluator):
            def __init__(self) -> None:
                super().__init__()
                self.primary_metric = "dev_auroc"

            def __call__(self, model, output_path=None, epoch: float = -1, steps: int = -1,
                         **_: Any) -> dict[str, float]:
                score = probe.score(model)
                probe.history.append({"epoch": float(epoch), "steps": float(steps),
                                      "dev_auroc": score})
                return {"dev_auroc": score}

        self.evaluator = _Evaluator()

    def score(self, model: Any) -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score

        def embed(texts: list[str]) -> np.ndarray:
            return model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                show_progress_bar=False)

        t0 = time.perf_counter()
        clf = LogisticRegression(max_iter=2000).fit(embed(self.train[0]), self.train[1])
        score = float(roc_auc_score(self.dev[1], clf.decision_function(embed(self.dev[0]))))
        self.seconds += time.perf_counter() - t0
        return score


def _loss(name: str, model: Any) -> Any:
    from sentence_transformers.sentence_transformer import losses

    return {"batch-all": losses.BatchAllTripletLoss,
            "batch-hard": losses.BatchHardSoftMarginTripletLoss,
            "batch-semi-hard": losses.BatchSemiHardTripletLoss,
            "contrastive": losses.OnlineContrastiveLoss}[name](model)


def _prepare_model(cfg: TuneConfig) -> Any:
    """The tower with LoRA adapters or its lower layers frozen, as ``cfg`` asks."""
    from memetrm.encoders.towers import text_tower

    model = text_tower(cfg.tower)
    model.max_seq_length = cfg.max_seq_length
    backbone = model[0].auto_model
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        model[0].model = get_peft_model(backbone, LoraConfig(
            r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.1,
            target_modules="all-linear"))
    elif cfg.train_layers:
        layers = _encoder_layers(backbone)
        if cfg.train_layers > len(layers):
            raise ConfigError(f"--train-layers {cfg.train_layers}: the tower has {len(layers)}")
        backbone.requires_grad_(False)
        for layer in layers[-cfg.train_layers:]:
            layer.requires_grad_(True)
    return model


def _encoder_layers(backbone: Any) -> Sequence[Any]:
    for name in ("encoder.layer", "encoder.layers", "layers"):
        obj = backbone
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is not None:
            return obj
    raise ConfigError(f"--train-layers: cannot find the layers of {type(backbone).__name__}")


def _written(folder: Path) -> set[str] | None:
    """The files ``memetrm tune`` wrote into ``folder`` (its summary's ``files``); None where the
    folder holds a summary from before the list was kept. The list is untrusted: a name that
    is absolute, hidden or climbs out of the folder is refused."""
    where = folder / SUMMARY
    try:
        files = json.loads(where.read_bytes()).get("files")
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{where}: unreadable ({e}); choose another --out") from e
    if files is None:
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{where}: 'files' must list file names; choose another --out")
    bad = [f for f in files if PurePosixPath(f).is_absolute()
           or any(part in ("", "..") or part.startswith(".") for part in f.split("/"))]
    if bad:
        raise ConfigError(f"{where}: lists {bad[0]!r}, not a file inside the folder; choose "
                          "another --out")
    return set(files)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an ``--out`` that is a file, a folder memetrm tune did not
    write, or (without ``overwrite``) an earlier tuned tower; an empty folder is fine."""
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
        if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
            if not (out / SUMMARY).is_file():
                raise ConfigError(f"{out}: exists and was not written by memetrm tune (no "
                                  f"{SUMMARY}); choose another --out, nothing in it is replaced")
            if not overwrite:
                raise ConfigError(f"{out}: holds a tuned tower already; pass --overwrite to "
                                  "replace it (files memetrm tune did not write stay)")
            _written(out)
        parent = next(p for p in [out, *out.parents] if p.exists())
    except OSError as e:
        raise ConfigError(f"{out}: cannot be written ({e.strerror or e})") from e
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: cannot be written ({parent} is not a writable folder)")


def _publish(staged: Path, folder: Path) -> None:
    """Move the staged files into ``folder`` (call with its lock held), the summary last, then
    remove the files an earlier tune wrote that this one did not; any other file stays. A file
    of the new tower that something else wrote there is refused, before anything moves."""
    new = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    old = _written(folder) if (folder / SUMMARY).is_file() else set()
    if old is not None:
        clash = [f for f in new if (folder / f).exists() and f not in old]
        if clash:
            raise ConfigError(f"{folder}: {', '.join(clash[:5])} was not written by memetrm "
                              "tune; refusing to replace it, choose another --out")
    for name in sorted(new, key=lambda f: f == SUMMARY):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / name, folder / name)
    for name in sorted((old or set()) - set(new)):
        path = folder / name
        if not path.parent.resolve().is_relative_to(folder.resolve()):
            continue  # a subfolder now linking out of the folder: what it holds is not ours
        path.unlink(missing_ok=True)
        if path.parent != folder:
            with contextlib.suppress(OSError):  # the subfolder goes only if this left it empty
                path.parent.rmdir()


@contextlib.contextmanager
def _quiet_hugging_face() -> Iterator[None]:
    """Hugging Face's logs and tqdm bars off while tuning: the progress shown is memetrm's."""
    import datasets
    import transformers

    level = transformers.logging.get_verbosity()
    bars = (transformers.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled())
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        if bars[0]:
            transformers.logging.enable_progress_bar()
        if bars[1]:
            datasets.enable_progress_bars()


def _progress_callback(progress: Any) -> Any:
    """A trainer callback advancing one task of memetrm's progress display per step."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        task = None

        def on_train_begin(self, args, state, control, **_: Any) -> None:
            self.task = progress.add_task("tuning", total=state.max_steps)

        def on_step_end(self, args, state, control, **_: Any) -> None:
            progress.update(self.task, completed=state.global_step)

    return Steps()


def tune_text_tower(dataset: str, out: str | Path, cfg: TuneConfig,
                    data_root: str | Path | None = None,
                    log: Callable[[str], None] = print, overwrite: bool = False) -> dict[str, Any]:
    """Tune ``cfg.tower`` on the dataset's training split, select the epoch on its dev split,
    and write the tuned tower to ``out``. Returns what ``tuning.json`` holds.

    ``out`` is checked before any work: a new or empty folder, or with ``overwrite`` one an
    earlier tune wrote, of which only the files that tune wrote are replaced."""
    out = Path(out)
    check_out(out, overwrite)
    device = resolve_device(cfg.device)
    ds = get_dataset(dataset, data_root)
    train_all = [r for r in ds.records(ds.train_split) if r.label is not None]
    dev = [r for r in ds.records(ds.dev_split) if r.label is not None]
    tuned, held_out = tune_split(train_all, cfg.fraction, cfg.seed)
    x = _texts(tuned, cfg.field, f"{ds.identity}/{ds.train_split}")
    y = [int(r.label) for r in tuned]
    if min(sum(y), len(y) - sum(y)) < 2:
        raise DataError(f"{ds.identity}: tuning needs at least 2 memes of each label")
    dev_texts = _texts(dev, cfg.field, f"{ds.identity}/{ds.dev_split}")
    with _quiet_hugging_face():
        summary = _tune(cfg, device, ds.identity, tuned, held_out, (x, y),
                        (dev_texts, [int(r.label) for r in dev]), out, overwrite, log)
    log(f"dev AUROC after tuning: {summary['dev_auroc']}; {summary['steps']} steps in "
        f"{summary['train_seconds']:.0f} s")
    return summary


def _tune(cfg: TuneConfig, device: Any, identity: str, tuned: list[MemeRecord],
          held_out: list[MemeRecord], train: tuple[list[str], list[int]],
          dev: tuple[list[str], list[int]], out: Path, overwrite: bool,
          log: Callable[[str], None]) -> dict[str, Any]:
    """Train, score and write the tower (see ``tune_text_tower``)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    class _Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            """No model card: it would quote training memes (and draws its own bar)."""

    x, y = train
    rng = random.Random(cfg.seed)
    probe_idx = (sorted(rng.sample(range(len(x)), cfg.probe_sample))
                 if 0 < cfg.probe_sample < len(x) else list(range(len(x))))
    probe = DevProbe(([x[i] for i in probe_idx], [y[i] for i in probe_idx]), dev)
    torch.manual_seed(cfg.seed)
    model = _prepare_model(cfg).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dev_before = probe.score(model) if cfg.probe else None
    if dev_before is not None:
        log(f"dev AUROC before tuning (logistic probe): {dev_before:.4f} ({probe.seconds:.0f} s)")
    data = (Dataset.from_dict(contrastive_pairs(x, y, cfg.seed)) if cfg.loss == "contrastive"
            else Dataset.from_dict({"sentence": x, "label": y}))
    select = cfg.max_steps < 0 and cfg.probe
    with tempfile.TemporaryDirectory() as checkpoints, make_progress() as progress:
        args = SentenceTransformerTrainingArguments(
            output_dir=checkpoints, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr,
            warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
            eval_strategy="epoch" if select else "no", save_strategy="epoch" if select else "no",
            load_best_model_at_end=select, metric_for_best_model="dev_auroc",
            greater_is_better=True, save_total_limit=1, logging_strategy="no",
            report_to="none", use_cpu=device.type == "cpu", dataloader_drop_last=True,
            disable_tqdm=True)
        trainer = _Trainer(model=model, args=args, train_dataset=data, loss=_loss(cfg.loss, model),
                           evaluator=probe.evaluator if select else None,
                           callbacks=[_progress_callback(progress)])
        trainer.remove_callback(PrinterCallback)
        scoring_before = probe.seconds
        t0 = time.perf_counter()
        train_out = trainer.train()
        seconds = time.perf_counter() - t0 - (probe.seconds - scoring_before)
    if cfg.lora_rank:
        model[0].model = model[0].auto_model.merge_and_unload()
    if cfg.probe and not probe.history:
        probe.history.append({"epoch": -1.0, "steps": float(train_out.global_step),
                              "dev_auroc": probe.score(model)})
    steps = train_out.global_step
    epochs_done = steps * cfg.batch_size / len(data)
    summary = {
        "config": asdict(cfg), "dataset": identity, "trainable_params": trainable,
        "train_memes": len(tuned), "rows": len(data), "steps": steps,
        "dev_auroc_before": dev_before, "history": probe.history,
        "dev_auroc": max((h["dev_auroc"] for h in probe.history), default=None),
        "train_seconds": seconds, "probe_seconds": probe.seconds,
        "seconds_per_epoch": seconds / epochs_done if epochs_done else math.nan,
        "rows_per_second": steps * cfg.batch_size / max(seconds, 1e-9),
        "tuned_ids": [r.id for r in tuned] if held_out else "all",
        "held_out_ids": [r.id for r in held_out],
        "provenance": provenance(threads=torch.get_num_threads()),
    }
    try:
        with writer_lock(out) as folder:
            check_out(folder, overwrite)  # again: another process may have written it since
            remove_stale(folder)
            staged = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
            try:
                model.save(str(staged), create_model_card=False)
                for p in staged.rglob("*"):
                    publish_mode(p, 0o777 if p.is_dir() else 0o666)
                files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*")
                               if p.is_file())
                summary["files"] = [*files, SUMMARY]
                (staged / SUMMARY).write_text(json.dumps(summary, indent=1))
                publish_mode(staged / SUMMARY, 0o666)
                _publish(staged, folder)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot write the tuned tower ({e.strerror or e})") from e
    return summary
