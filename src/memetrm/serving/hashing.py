"""Perceptual hashes of meme images and hashes of their normalised texts.

Images get PDQ (Meta's ThreatExchange perceptual hash, 256 bits): a repost re-encoded as a
JPEG or resized keeps nearly all bits, so "the same meme" is a Hamming distance of at most
``PDQ_DISTANCE`` (ThreatExchange's match threshold, 31 of 256 bits). PDQ hashes the whole
frame, so a crop or an added border moves it much further: such reposts mostly miss (the
measured recall per transform is in docs/serving.md).
PDQ also rates how much detail an image has; below ``PDQ_MIN_QUALITY`` (flat or tiny images)
its hash is unreliable and no near-duplicate matching is done on it.

A known-meme list answers for *the same meme*, which is more than the same picture: memes on one
template share a picture at 26-30 bits (docs/serving.md), and Hateful Memes' confounders are
the same picture with other text. So a list matches within ``LIST_DISTANCE`` bits, and where
the listed meme had text, its normalised text must also agree (``TEXT_SIMILARITY``, as
ThreatExchange's ``pdq_ocr`` signal: PDQ plus a 90 % string similarity).

Hex strings are the 64-digit form ThreatExchange exchanges (bit 0 first, big-endian).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from PIL import Image

from memetrm.errors import ConfigError

#: Hamming distance (of 256 bits) up to which two PDQ hashes are the same meme
PDQ_DISTANCE = 31
#: Hamming distance up to which a picture matches a known-meme list entry
LIST_DISTANCE = 16
#: similarity of normalised texts (0-1) from which a listed meme's text agrees
TEXT_SIMILARITY = 0.9
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
        """From 64 hex digits (32 bytes); raises ``ValueError`` on anything else, also on
        whitespace between the digits, which ``bytes.fromhex`` would skip."""
        try:
            bits = bytes.fromhex(text)
        except ValueError as e:
            raise ValueError(f"a PDQ hash is 64 hex digits, got {text[:80]!r} ({e})") from None
        if len(bits) != 32 or len(text) != 64:
            raise ValueError(f"a PDQ hash is 64 hex digits (32 bytes), got {len(text)} "
                             f"characters ({len(bits)} bytes)")
        return cls(bits, quality)


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


def texts_agree(a: str, b: str) -> bool:
    """Whether two normalised texts are the same meme text: difflib's ratio of at least
    ``TEXT_SIMILARITY``, its cheap upper bounds checked first (a long text that cannot reach
    it is not compared character by character)."""
    m = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return all(bound() >= TEXT_SIMILARITY for bound in (m.real_quick_ratio, m.quick_ratio, m.ratio))


def text_key(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode()).hexdigest()
