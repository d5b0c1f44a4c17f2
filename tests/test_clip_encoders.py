"""hf-clip and open-clip through ``create_encoder``, on tiny random models saved to disk.

No hub is reachable, so each test builds a few-layer CLIP, saves it the way a real checkpoint is
shipped and loads it back by path: the same code path as a downloaded model.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from memetrm.encoders import create_encoder, encoder_version
from memetrm.errors import ConfigError

PROJ = 24
TEXTS = ["a cat", "a much longer caption about a dog in the rain " * 3, "!!!"]




def rgb_image(seed: int, size: tuple[int, int] = (50, 40)) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


def save_tiny_hf_clip(path: Path, seed: int) -> Path:
    """CLIPModel (hidden 32, 2 layers, 32 px, patch 8) + byte-level BPE tokenizer with no merges."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    bos, eos = len(vocab), len(vocab) + 1
    vocab |= {"<|startoftext|>": bos, "<|endoftext|>": eos}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer.from_pretrained(path).save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(path)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2}
    config = CLIPConfig(
        text_config=tower | {"vocab_size": len(vocab), "max_position_embeddings": 16,
                             "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos},
        vision_config=tower | {"image_size": 32, "patch_size": 8},
        projection_dim=PROJ,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "tiny-clip", seed=0)


@pytest.fixture(scope="module")
def hf_enc(hf_clip_dir: Path):
    return create_encoder(f"hf-clip:{hf_clip_dir}")


def test_hf_clip_pooled_matches_transformers_api(hf_enc) -> None:
    pixels = torch.stack([hf_enc.image_transform()(rgb_image(i)) for i in range(2)])
    assert pixels.shape == (2, 3, 32, 32)
    img = hf_enc.encode_images(pixels)
    txt = hf_enc.encode_texts(TEXTS)
    assert img.pooled.shape == (2, PROJ) and txt.pooled.shape == (3, PROJ)
    assert img.tokens is None and txt.tokens is None
    assert hf_enc.dims("image") == hf_enc.dims("text", tokens=True) == PROJ

    ref = hf_enc.model.get_image_features(pixel_values=pixels)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output  # transformers 4 vs 5
    torch.testing.assert_close(img.pooled, ref)


def test_hf_clip_tokens(hf_enc) -> None:
    pixels = torch.stack([hf_enc.image_transform()(rgb_image(i)) for i in range(2)])
    img = hf_enc.encode_images(pixels, tokens=True)
    assert img.tokens.shape == (2, 16, PROJ) and img.mask.all()  # (32 / 8)^2 patches, no CLS

    txt = hf_enc.encode_texts(TEXTS, tokens=True)
    # the long caption truncates at the model's 16 positions, the short ones are padded
    assert txt.tokens.shape == (3, 16, PROJ) and txt.mask.dtype == torch.bool
    assert txt.mask[0].sum() == 6 and txt.mask[1].all()  # bos + "a</w>" + "c a t</w>" + eos
    # tokens share the pooled space: the end token's state is the pooled text feature
    torch.testing.assert_close(txt.tokens[0, 5], txt.pooled[0])

    hf_enc.max_text_tokens = 5
    try:
        short = hf_enc.encode_texts(TEXTS, tokens=True)
    finally:
        hf_enc.max_text_tokens = 32
    assert short.tokens.shape == (3, 5, PROJ) and short.mask.shape == (3, 5)
    torch.testing.assert_close(short.tokens, txt.tokens[:, :5])


def test_hf_clip_deterministic_and_transform_pickles(hf_enc) -> None:
    transform = pickle.loads(pickle.dumps(hf_enc.image_transform()))  # as DataLoader workers do
    image = rgb_image(7, size=(80, 30)).convert("P")  # odd aspect, palette mode
    pixels = transform(image)[None]
    torch.testing.assert_close(pixels, hf_enc.image_transform()(image)[None])
    a, b = hf_enc.encode_images(pixels, tokens=True), hf_enc.encode_images(pixels, tokens=True)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens, b.tokens)
    assert torch.equal(hf_enc.encode_texts(TEXTS).pooled, hf_enc.encode_texts(TEXTS).pooled)


def test_hf_clip_version_tracks_weights(tmp_path: Path) -> None:
    path = save_tiny_hf_clip(tmp_path / "clip", seed=0)
    first = create_encoder(f"hf-clip:{path}")
    assert first.version == create_encoder(f"hf-clip:{path}").version
    assert first.version == encoder_version(f"hf-clip:{path}")  # the cheap path agrees
    assert str(path) in first.version
    save_tiny_hf_clip(path, seed=1)  # same file names and sizes, other weights
    second = create_encoder(f"hf-clip:{path}")
    assert second.version != first.version
    texts = ["a cat"]
    assert not torch.equal(first.encode_texts(texts).pooled, second.encode_texts(texts).pooled)


def test_hf_clip_missing_or_broken_model_is_config_error(hf_clip_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(hf_clip_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load CLIP model"):
        create_encoder(f"hf-clip:{broken}")
    with pytest.raises(ConfigError, match="cannot load CLIP model"):
        create_encoder(f"hf-clip:{tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="cannot load CLIP model"):
        encoder_version(f"hf-clip:{tmp_path / 'nowhere'}")


OPEN_CLIP_CFG = {
    "embed_dim": PROJ,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def register_open_clip(tmp_path_factory: pytest.TempPathFactory, arch: str, cfg: dict) -> str:
    """open_clip's registry is global, so every test arch gets a unique name."""
    import open_clip

    path = tmp_path_factory.mktemp("oc_cfg") / f"{arch}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return arch


@pytest.fixture(scope="module")
def open_clip_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    return register_open_clip(tmp_path_factory, "memetrm-tiny-test", OPEN_CLIP_CFG)


def save_open_clip_weights(arch: str, path: Path, seed: int) -> Path:
    """Random weights as safetensors: open_clip loads them without unpickling anything."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model(arch)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def oc_enc(open_clip_arch: str, tmp_path_factory: pytest.TempPathFactory):
    path = save_open_clip_weights(
        open_clip_arch, tmp_path_factory.mktemp("oc") / "tiny.safetensors", seed=0
    )
    return create_encoder(f"open-clip:{open_clip_arch}:{path}")


def test_open_clip_pooled_and_tokens(oc_enc) -> None:
    transform = pickle.loads(pickle.dumps(oc_enc.image_transform()))
    pixels = torch.stack([transform(rgb_image(i)) for i in range(2)])
    assert pixels.shape == (2, 3, 32, 32)

    pooled = oc_enc.encode_images(pixels)
    img = oc_enc.encode_images(pixels, tokens=True)
    assert pooled.pooled.shape == (2, PROJ) and pooled.tokens is None
    torch.testing.assert_close(img.pooled, pooled.pooled)  # one pass gives the same pooled
    assert img.tokens.shape == (2, 16, PROJ) and img.mask.all()

    txt = oc_enc.encode_texts(TEXTS, tokens=True)
    torch.testing.assert_close(txt.pooled, oc_enc.encode_texts(TEXTS).pooled)
    assert txt.pooled.shape == (3, PROJ) and txt.tokens.shape == (3, 16, PROJ)
    # real tokens run through the end token; open_clip pads with 0, also the id of "!"
    assert txt.mask[0].sum() == 4 and txt.mask[1].all() and txt.mask[2].sum() == 3
    torch.testing.assert_close(txt.tokens[0, 3], txt.pooled[0])  # end token = pooled
    assert oc_enc.dims("image", tokens=True) == oc_enc.dims("text") == PROJ

    a, b = oc_enc.encode_images(pixels, tokens=True), oc_enc.encode_images(pixels, tokens=True)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens, b.tokens)


def test_open_clip_version_tracks_weights(open_clip_arch: str, tmp_path: Path) -> None:
    path = save_open_clip_weights(open_clip_arch, tmp_path / "w.safetensors", seed=0)
    first = create_encoder(f"open-clip:{open_clip_arch}:{path}")
    assert first.version.startswith(f"{open_clip_arch}:{path}+")
    assert first.version == encoder_version(f"open-clip:{open_clip_arch}:{path}")
    save_open_clip_weights(open_clip_arch, path, seed=1)
    second = create_encoder(f"open-clip:{open_clip_arch}:{path}")
    assert second.version != first.version


def test_open_clip_bad_specs(open_clip_arch: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="open-clip:<arch>"):
        create_encoder("open-clip")
    with pytest.raises(ConfigError, match="open-clip:<arch>"):
        create_encoder(f"open-clip:{open_clip_arch}")  # random weights would poison the cache
    missing = f"open-clip:{open_clip_arch}:{tmp_path / 'missing.safetensors'}"
    with pytest.raises(ConfigError, match="neither a weights file nor a tag"):
        create_encoder(missing)
    with pytest.raises(ConfigError, match="neither a weights file nor a tag"):
        encoder_version(missing)
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        encoder_version("open-clip:no-such-arch:openai")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load open_clip"):
        create_encoder(f"open-clip:{open_clip_arch}:{broken}")


def test_open_clip_tokens_unsupported_is_config_error(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    cfg = OPEN_CLIP_CFG | {"text_cfg": OPEN_CLIP_CFG["text_cfg"] | {"pool_type": "last"}}
    arch = register_open_clip(tmp_path_factory, "memetrm-tiny-lastpool-test", cfg)
    path = save_open_clip_weights(arch, tmp_path / "w.safetensors", seed=0)
    enc = create_encoder(f"open-clip:{arch}:{path}")
    assert enc.encode_texts(TEXTS).pooled.shape == (3, PROJ)  # pooled still works
    with pytest.raises(ConfigError, match="does not support token features.*'last'"):
        enc.encode_texts(TEXTS, tokens=True)


def test_open_clip_foreign_files_and_impossible_names_are_config_errors(
        open_clip_arch: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")  # torch's weights-only unpickler raises KeyError on it
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(ConfigError, match="cannot load open_clip"):
            create_encoder(f"open-clip:{open_clip_arch}:{path}")
    too_long = f"open-clip:{open_clip_arch}:{'a' * 5000}"
    with pytest.raises(ConfigError, match="neither a weights file nor a tag"):
        encoder_version(too_long)


def test_open_clip_weights_path_in_a_model_config(open_clip_arch: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from memetrm.encoders.saved import saved_encoder_meta
    from memetrm.heads import create_head, save_pretrained
    from memetrm.serving.predictor import Predictor

    from .fakes import FakeEncoder

    save_open_clip_weights(open_clip_arch, tmp_path / "w.safetensors", seed=0)
    monkeypatch.chdir(tmp_path)
    # a model saves the weights file by its absolute path: found from any directory
    meta = saved_encoder_meta(f"open-clip:{open_clip_arch}:w.safetensors", ["text"], "m")
    assert meta == {"encoder": f"open-clip:{open_clip_arch}:{tmp_path.resolve() / 'w.safetensors'}"}
    # a relative one in a config would be looked up from wherever the command runs: refused
    head = create_head("linear", {"text": 5})
    save_pretrained(head, tmp_path / "m", encoder=f"open-clip:{open_clip_arch}:w.safetensors",
                    fields=["text"], tokens=False, threshold=0.5)
    with pytest.raises(ConfigError, match="config.json: encoder .* relative path"):
        Predictor(tmp_path / "m", encoder=FakeEncoder(), device="cpu")
