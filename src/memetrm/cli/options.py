"""Option types shared by the commands, so each is declared (and documented) once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memetrm.devices import DEVICE_HELP
from memetrm.errors import ConfigError

DataRoot = Annotated[str | None, typer.Option(
    "--data-root", envvar="MEMETRM_DATA",
    help="Folder holding the named datasets (default ../shared/data).")]
Dataset = Annotated[str | None, typer.Option(
    help="Registered dataset name or a jsonl folder path [default: multioff].")]
Encoder = Annotated[str | None, typer.Option(help="Encoder name [default: minilm-effnet].")]
Fields = Annotated[str | None, typer.Option(
    help="Comma-separated fields to encode, e.g. text,caption (default: the dataset's).")]
MissingImages = Annotated[str | None, typer.Option(
    "--on-missing-image", help="error (default) or skip; skipped ids are counted and reported.")]
BadLine = Annotated[str | None, typer.Option(
    "--on-bad-line", help="error (default: one error lists every bad line, the first 20 shown) "
                          "or skip (bad lines are left out and counted).")]
AllowOutside = Annotated[bool | None, typer.Option(
    "--allow-outside-images/--no-allow-outside-images",
    help="Follow image paths that leave the dataset folder [default: no].")]
CacheDir = Annotated[str | None, typer.Option(
    envvar="MEMETRM_CACHE", help="Feature cache folder (default ~/.cache/memetrm).")]
Device = Annotated[str | None, typer.Option(
    "--device", help=f"Where to run: {DEVICE_HELP} [default: auto]")]
Precision = Annotated[str | None, typer.Option(
    help="Encoder precision on an accelerator: auto, fp32, fp16 or bf16 [default: auto]; "
         "cached features stay fp32.")]
ThresholdMetric = Annotated[str | None, typer.Option(
    "--threshold-metric",
    help="How the decision threshold is chosen on dev (or out-of-fold) predictions: f1 | "
         "accuracy | balanced-accuracy (Youden's J) | precision>=P (most recall with precision "
         ">= P) | recall>=R (most precision with recall >= R) | fpr<=F (most recall with a "
         "false-positive rate <= F) [default: balanced-accuracy].")]
Threshold = Annotated[float | None, typer.Option(
    "--threshold", min=0.0, max=1.0,
    help="Decision threshold to use instead of the one chosen on dev and saved with the model.")]
Model = Annotated[Path, typer.Option("--model", help="A model directory from `train --save`.")]
ENGINES = ("local", "ray")


def split_csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None

Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any config key, e.g. --set train.lr=1e-4 --set head_cfg.hidden=256 "
                  "(values by YAML's rules; beats --config and typed options).")]
ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="YAML run config; options you type override it, --set overrides both.")]
PrintConfig = Annotated[bool, typer.Option(
    "--print-config", help="Print the resolved config as YAML and exit.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")]
Engine = Annotated[str, typer.Option(
    "--engine", help="local, or ray (shards the work over Ray workers).")]
RayAddress = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster to join (default: start an embedded local one).")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Ray workers.")]
GpusPerWorker = Annotated[float, typer.Option("--gpus-per-worker", min=0)]


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
Runtime = Annotated[str | None, typer.Option(
    "--runtime", help="Run the encoder towers with torch, onnx or onnx-int8 (ONNX Runtime; int8 = "
                      "dynamically quantized text tower) [default: the model's / torch].")]
HashLists = Annotated[list[Path] | None, typer.Option(
    "--hash-list", help="Known-meme list (CSV: pdq,label,source_id[,text]); a meme whose picture "
                        "is within --list-distance of a listed one, and whose text agrees where "
                        "the listed meme had text, is answered from the list. Repeatable.")]
ListDistance = Annotated[int, typer.Option(
    "--list-distance", min=0, max=256,
    help="PDQ Hamming distance (of 256 bits) up to which a picture matches a known-meme list.")]
HashDistance = Annotated[int, typer.Option(
    "--hash-distance", min=0, max=256,
    help="PDQ Hamming distance (of 256 bits) up to which the repost memo reuses an image's "
         "features.")]
CacheSize = Annotated[int, typer.Option(
    "--cache-size", min=0,
    help="Memoise the encoder outputs of this many images and texts: a repost (an image within "
         "--hash-distance, a text equal once normalised) reuses them; 0 = off.")]
