"""Encoder runtimes: the same towers run by PyTorch, by ONNX Runtime, or by ONNX Runtime int8.

``onnx:<encoder>`` and ``onnx-int8:<encoder>`` wrap a ``towers`` encoder (``minilm-effnet``,
``towers:text=...,image=...``): ``--runtime onnx-int8`` on the CLI is that prefix. The text
tower's transformer and the image tower's feature extractor are exported once with
``torch.onnx.export``, their files cached under ``<cache>/onnx/`` keyed by a hash of the
weights; tokenisation, pooling and image preprocessing stay those of the torch towers. Each
cached file has a record beside it (``export.json``: the weights digest, the export settings
and the file's SHA-256), checked on every load: a file swapped for another export or cut short
is exported again, or refused with a ``ConfigError`` where the cache cannot be written.

``onnx-int8`` quantizes the text transformer's matrix products dynamically (onnxruntime's
``quantize_dynamic``, int8 weights per channel, 7-bit range for CPUs without VNNI). The image
tower is a convolutional network: dynamic quantization turns its convolutions into
``ConvInteger``, which ONNX Runtime runs slower than fp32 and which moved EfficientNet-Lite0
features to cosine 0.90 of the originals, so its matrix products only (none in the feature
extractor) are quantized and it runs as fp32 ONNX under both ONNX runtimes.

The runtime is part of the encoder's name and version, so features from each runtime have
their own cache entries and a model directory records the runtime it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from memetrm.encoders.base import Encoder
from memetrm.encoders.registry import create_encoder, encoder_version, register_encoder
from memetrm.encoders.towers import Towers, file_sha256, sha256_file
from memetrm.errors import ConfigError
from memetrm.utils import atomic_write_dir, default_cache_dir

RUNTIMES = ("torch", "onnx", "onnx-int8")
#: opset the exporter targets; part of the export cache key
OPSET = 18
#: text-tower inputs a sentence-transformers tokenizer may produce, in export order
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_NAME = "model.onnx"
#: beside each cached export: the weights digest and settings it came from, its size and SHA-256
RECORD_NAME = "export.json"


def split_runtime(encoder: str) -> tuple[str, str]:
    """``onnx-int8:minilm-effnet`` -> ("onnx-int8", "minilm-effnet"); no prefix means torch."""
    family, sep, rest = encoder.partition(":")
    return (family, rest) if sep and family in RUNTIMES[1:] else ("torch", encoder)


def with_runtime(encoder: str, runtime: str | None) -> str:
    """The encoder name that runs ``encoder``'s towers on ``runtime`` (None keeps it as is)."""
    if runtime is None:
        return encoder
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    base = split_runtime(encoder)[1]
    return base if runtime == "torch" else f"{runtime}:{base}"


def session_threads() -> int:
    """Intra-op threads of an ONNX Runtime session: the cores this process may run on (its CPU
    affinity: a container's or taskset's share, which onnxruntime's own default of every core
    of the machine ignores), fewer if torch was told to use fewer (``torch.set_num_threads``,
    ``OMP_NUM_THREADS``)."""
    return max(1, min(len(os.sched_getaffinity(0)), torch.get_num_threads()))


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise ConfigError("the onnx runtimes need onnxruntime and onnx: "
                          "pip install 'memetrm[serving]'") from e
    return onnxruntime


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the module's parameter and buffer names, shapes and bytes."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _TextBody(torch.nn.Module):
    """The transformer inside a sentence-transformers model: named inputs -> token embeddings."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).last_hidden_state


class _FeatureMap(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(pixels)


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], names: list[str],
            dynamic: tuple, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, path, input_names=names, opset_version=OPSET,
                          dynamic_shapes=dynamic, dynamo=True, external_data=False, verbose=False)


def _quantize(src: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process goes to the root logger
    try:
        quantize_dynamic(src, path, weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


def _export_problem(dest: Path, settings: dict[str, Any]) -> str | None:
    """Why ``dest/model.onnx`` cannot be used as the export ``settings`` describe (None: it can).

    The record beside it names the settings and the file's SHA-256, so a file swapped for
    another export (the int8 one copied over the fp32 one) or cut short is never loaded."""
    path, record = dest / ONNX_NAME, dest / RECORD_NAME
    if not path.is_file():
        return "not exported yet"
    try:
        saved = json.loads(record.read_bytes())
    except (OSError, ValueError) as e:
        return f"its record {record.name} is missing or unreadable ({e})"
    if not isinstance(saved, dict) or {k: v for k, v in saved.items()
                                       if k not in ("bytes", "sha256")} != settings:
        return f"its record {record.name} names other weights or export settings"
    try:
        same = saved.get("bytes") == path.stat().st_size and saved.get("sha256") == file_sha256(path)
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    return None if same else f"its bytes do not match the SHA-256 in {record.name} (swapped or cut short)"


def _cached_export(dest: Path, settings: dict[str, Any], write: Callable[[Path], None]) -> Path:
    """``dest/model.onnx`` as ``settings`` describe it: checked against its record, and written
    (again) by ``write`` when missing or not the expected file, published whole with its record.
    A cache that cannot be written (read-only, full) is a ``ConfigError`` naming the file."""
    path = dest / ONNX_NAME
    problem = _export_problem(dest, settings)
    if problem is None:
        return path
    try:
        with atomic_write_dir(dest) as tmp:
            write(tmp / ONNX_NAME)
            record = {**settings, "bytes": (tmp / ONNX_NAME).stat().st_size,
                      "sha256": sha256_file(tmp / ONNX_NAME)}
            (tmp / RECORD_NAME).write_text(json.dumps(record, indent=1))
    except OSError as e:
        raise ConfigError(f"{path}: {problem}, and the export cannot be written "
                          f"({e.strerror or e}); make {dest.parent} writable with free space, "
                          "or set MEMETRM_CACHE to another folder") from e
    return path


def onnx_file(module: torch.nn.Module, args: tuple[torch.Tensor, ...], names: list[str],
              dynamic: tuple, kind: str, int8: bool,
              cache_dir: str | Path | None = None) -> Path:
    """The cached ONNX file of ``module`` (fp32, or its int8 quantization), exported on a miss
    and again whenever the cached file is not the one its record describes.

    ``dynamic`` is ``torch.export``'s ``dynamic_shapes`` for ``args``. The key hashes the
    weights and the exporter's settings, so other weights at the same name or another torch /
    opset get a new export."""
    ort = _ort()
    settings: dict[str, Any] = {"weights": weights_digest(module), "kind": kind, "inputs": names,
                                "torch": torch.__version__, "opset": OPSET}
    key = hashlib.sha256(f"{settings['weights']}|{kind}|{names}|{torch.__version__}|{OPSET}"
                         .encode()).hexdigest()[:20]
    folder = Path(cache_dir or default_cache_dir()) / "onnx"
    fp32 = _cached_export(folder / f"{kind}-{key}", settings,
                          lambda path: _export(module, args, names, dynamic, path))
    if not int8:
        return fp32
    quantized = {**settings, "quantized": f"int8 ort{ort.__version__}",
                 "source": file_sha256(fp32)}
    return _cached_export(folder / f"{kind}-{key}-int8-ort{ort.__version__}", quantized,
                          lambda path: _quantize(fp32, path))


def _session(ort: Any, path: Path, opts: Any) -> Any:
    """An ONNX Runtime CPU session of ``path``; a file it cannot load is a ``ConfigError``."""
    from onnxruntime.capi.onnxruntime_pybind11_state import (
        Fail,
        InvalidArgument,
        InvalidProtobuf,
        NoSuchFile,
        RuntimeException,
    )

    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except (Fail, InvalidArgument, InvalidProtobuf, NoSuchFile, RuntimeException) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{path}: ONNX Runtime cannot load this export ({first}); delete "
                          f"{path.parent} to export it again") from e


class OnnxTowers(Towers):
    """``Towers`` whose transformer and feature extractor run in ONNX Runtime sessions.

    The sessions are CPU sessions (the onnxruntime CPU build), so the encoder stays on the CPU
    whatever device is asked for; heads and callers move its outputs where they need them.
    """

    def __init__(self, base: Towers, runtime: str) -> None:
        self.__dict__.update(base.__dict__)
        self.runtime = runtime
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = session_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # idle threads sleep instead of spinning: on a busy CPU, spinning steals the cores
        # that decoding and the other tower need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        int8 = runtime == "onnx-int8"
        sample = self.text_model.preprocess(["an example meme text", "two"])
        self.text_inputs = [n for n in TEXT_INPUTS if n in sample]
        body = _TextBody(self.text_model[0].auto_model, self.text_inputs)
        batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
        text_path = onnx_file(body, tuple(sample[n] for n in self.text_inputs), self.text_inputs,
                              (({0: batch, 1: tokens},) * len(self.text_inputs),), "text", int8)
        size = self.image_transform()(_blank()).shape
        image_path = onnx_file(_FeatureMap(self.image_model), (torch.zeros(2, *size),), ["pixels"],
                               ({0: batch},), "image", int8)
        self.text_session = _session(ort, text_path, opts)
        self.image_session = _session(ort, image_path, opts)

    def to(self, device: str | torch.device) -> Encoder:
        self.device = torch.device("cpu")
        return self

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.image_session.run(None, {"pixels": pixels.float().cpu().numpy()})[0]
        return torch.from_numpy(out)

    def token_embeddings(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One text at a time, without its padding: a padded batch costs every row the longest
        row's matrix products and attention, which made batches slower than single texts here.
        Padded positions get zeros (the attention mask marks them)."""
        mask = feats["attention_mask"]
        rows = []
        for i, n in enumerate(mask.sum(1).tolist()):
            inputs = {k: feats[k][i:i + 1, :n].cpu().numpy() for k in self.text_inputs}
            rows.append(torch.from_numpy(self.text_session.run(None, inputs)[0][0]))
        return {**feats, "token_embeddings": pad_sequence(rows, batch_first=True,
                                                          padding_value=0.0)}


def _blank():
    from PIL import Image

    return Image.new("RGB", (256, 256))


def _runtime_family(runtime: str) -> None:
    def create(arg: str = "") -> Encoder:
        if not arg:
            raise ConfigError(f"runtime {runtime!r} needs an encoder: {runtime}:minilm-effnet")
        base = create_encoder(arg, device="cpu")
        if not isinstance(base, Towers):
            raise ConfigError(f"runtime {runtime!r} runs `towers` encoders (minilm-effnet, "
                              f"mpnet-effnet, towers:...), not {arg!r}")
        enc = OnnxTowers(base, runtime)
        enc.version = f"{base.version}|{runtime}|ort{_ort().__version__}"
        return enc

    def version(arg: str) -> str:
        return f"{encoder_version(arg)}|{runtime}|ort{_ort().__version__}"

    register_encoder(runtime, version=version)(create)


for _runtime in RUNTIMES[1:]:
    _runtime_family(_runtime)
