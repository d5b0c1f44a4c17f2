"""Perceptual hashes of meme images and hashes of their normalised texts.

Images get PDQ (Meta's ThreatExchange perceptual hash, 256 bits): a repost re-encoded as a
JPEG or resized keeps nearly all bits, so "the same meme" is a Hamming distance of at most
``PDQ_DISTANCE`` (ThreatExchange's match threshold, 31 of 256 bits). PDQ hashes the whole
frame, so a crop or an added border moves it much further: such reposts mostly miss (the
measured recall per transform is in docs/serving.md).
PDQ also rates how much detail an image has; below ``PDQ_MIN_QUALITY`` (flat or tiny images)
its hash is unreliable and no near-duplicate matching is done on it.

Hex strings are the 64-digit form ThreatExchange exchanges (bit 0 first, big-endian).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from PIL import Image

from memetrm.errors import ConfigError

#: Hamming distance (of 256 bits) up to which two PDQ hashes are the same meme
PDQ_DISTANCE = 31
#: PDQ quality below which a hash is not matched (ThreatExchange's guidance)
PDQ_MIN_QUALITY = 50
#: side of the square an image is scaled to before hashing
HASH_SIDE = 256
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class ImageHash:
    """A PDQ hash: 32 packed bytes, and PDQ's quality score (0-100)."""

    bits: bytes
    quality: int = 100

    @property
    def hex(self) -> str:
        return self.bits.hex()

    @property
    def reliable(self) -> bool:
        return self.quality >= PDQ_MIN_QUALITY

    @classmethod
    def from_hex(cls, text: str, quality: int = 100) -> ImageHash:
        """From 64 hex digits; raises ``ValueError`` on anything else."""
        if len(text) != 64:
            raise ValueError(f"a PDQ hash is 64 hex digits, got {len(text)} characters")
        return cls(bytes.fromhex(text), quality)


def pdq(image: Image.Image) -> ImageHash:
    """PDQ hash of a decoded image (the ``pdqhash`` package: Meta's C++ reference code).

    The image is first scaled to ``HASH_SIDE`` square: PDQ reduces it to 64x64 anyway, and
    hashing 256 px instead of a 640 px meme takes 8 ms instead of 20 on one core while
    keeping re-encodes and resizes of MultiOFF memes as close (docs/serving.md)."""
    try:
        import pdqhash
    except ImportError as e:
        raise ConfigError("perceptual hashing needs pdqhash: pip install 'memetrm[serving]'") from e
    small = image.convert("RGB").resize((HASH_SIDE, HASH_SIDE), Image.BILINEAR)
    vector, quality = pdqhash.compute(np.asarray(small))
    return ImageHash(np.packbits(vector.astype(bool)).tobytes(), int(quality))


def distances(query: ImageHash, packed: np.ndarray) -> np.ndarray:
    """Hamming distances from ``query`` to each row of ``packed`` (N, 32) uint8."""
    return np.bitwise_count(packed ^ np.frombuffer(query.bits, np.uint8)).sum(1, dtype=np.int64)


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: how a repost's retyped caption usually differs."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_key(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode()).hexdigest()
