"""Encoder runtimes: the same towers run by PyTorch, by ONNX Runtime, or by ONNX Runtime int8.

``onnx:<encoder>`` and ``onnx-int8:<encoder>`` wrap a ``towers`` encoder (``minilm-effnet``,
``towers:text=...,image=...``): ``--runtime onnx-int8`` on the CLI is that prefix. The text
tower's transformer and the image tower's feature extractor are exported once with
``torch.onnx.export``, their files cached under ``<cache>/onnx/`` keyed by a hash of the
weights; tokenisation, pooling and image preprocessing stay those of the torch towers.

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
import logging
import os
import warnings
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from memetrm.encoders.base import Encoder
from memetrm.encoders.registry import create_encoder, encoder_version, register_encoder
from memetrm.encoders.towers import Towers
from memetrm.errors import ConfigError
from memetrm.utils import atomic_write_dir, default_cache_dir

RUNTIMES = ("torch", "onnx", "onnx-int8")
#: opset the exporter targets; part of the export cache key
OPSET = 18
#: text-tower inputs a sentence-transformers tokenizer may produce, in export order
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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
            dynamic: tuple, dest: Path) -> None:
    """``torch.onnx.export`` into ``dest/model.onnx``, published whole or not at all."""
    with atomic_write_dir(dest) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, tmp / "model.onnx", input_names=names,
                          opset_version=OPSET, dynamic_shapes=dynamic, dynamo=True,
                          external_data=False, verbose=False)


def _quantize(src: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process goes to the root logger
    try:
        with atomic_write_dir(dest) as tmp:
            quantize_dynamic(src / "model.onnx", tmp / "model.onnx", weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=True,
                             op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


def onnx_file(module: torch.nn.Module, args: tuple[torch.Tensor, ...], names: list[str],
              dynamic: tuple, kind: str, int8: bool,
              cache_dir: str | Path | None = None) -> Path:
    """The cached ONNX file of ``module`` (fp32, or its int8 quantization), exported on a miss.

    ``dynamic`` is ``torch.export``'s ``dynamic_shapes`` for ``args``. The key hashes the
    weights and the exporter's settings, so other weights at the same name or another torch /
    opset get a new export."""
    ort = _ort()
    key = hashlib.sha256(f"{weights_digest(module)}|{kind}|{names}|{torch.__version__}|{OPSET}"
                         .encode()).hexdigest()[:20]
    folder = Path(cache_dir or default_cache_dir()) / "onnx"
    fp32 = folder / f"{kind}-{key}"
    if not (fp32 / "model.onnx").is_file():
        _export(module, args, names, dynamic, fp32)
    if not int8:
        return fp32 / "model.onnx"
    q = folder / f"{kind}-{key}-int8-ort{ort.__version__}"
    if not (q / "model.onnx").is_file():
        _quantize(fp32, q)
    return q / "model.onnx"


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
        providers = ["CPUExecutionProvider"]
        self.text_session = ort.InferenceSession(str(text_path), opts, providers=providers)
        self.image_session = ort.InferenceSession(str(image_path), opts, providers=providers)

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
