"""Safe image decoding shared by extraction, prediction and serving."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from memetrm.errors import DataError

#: Pixel budget per image. Memes are small; anything far beyond 40 MP is a bomb or a mistake.
MAX_PIXELS = 40_000_000
#: Longest side and aspect ratio: a 4,000,000 x 10 strip is under the pixel budget, yet resizing
#: its short side to an encoder's 256 would build a 100-billion-pixel image.
MAX_SIDE = 16_384
MAX_ASPECT = 30.0
#: modes ``Image.reduce`` works on directly
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "La", "RGBa", "I", "F"}


def open_image(source: str | Path | bytes, *, name: str | None = None,
               max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE,
               max_aspect: float = MAX_ASPECT, reduce_to: int | None = None,
               draft_to: int | None = None) -> Image.Image:
    """Decode an image fully into RGB, or raise ``DataError`` naming it.

    Size, side and aspect checks happen on the header, before any pixel is decoded, so a
    decompression bomb or a degenerate strip costs nothing. ``load()`` forces a full decode so
    truncated files fail here, not later inside a worker. ``reduce_to`` bounds the longest side
    of what is returned cheaply (JPEG decodes at a reduced scale; other formats are reduced by
    an integer box factor), so later steps (OCR, resizing) cost what a normal meme costs.
    ``draft_to`` decodes a JPEG at the smallest scale (1/2, 1/4 or 1/8) whose both sides stay at
    least ``draft_to``: a consumer that first resizes the shorter side to that (an image tower's
    transform, PDQ's square) then reads nearly the same pixels, for less decoding and resizing.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    if isinstance(source, bytes):
        if not source:
            raise DataError(f"{label}: empty image data")
        fp: io.BytesIO | Path = io.BytesIO(source)
    else:
        if "\0" in str(source):
            raise DataError(f"{label}: the image path contains a NUL byte")
        fp = Path(source)
        if not fp.is_file():
            raise DataError(f"{label}: image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size
            if w * h > max_pixels:
                raise DataError(
                    f"{label}: image is {w}x{h} = {w * h:,} pixels, above the limit of "
                    f"{max_pixels:,} (possible decompression bomb)"
                )
            if max(w, h) > max_side or max(w, h) > max_aspect * max(1, min(w, h)):
                raise DataError(f"{label}: image is {w}x{h}, beyond the limits of {max_side:,} "
                                f"pixels a side and an aspect ratio of {max_aspect:g}:1")
            # JPEG only, a no-op for other formats; the smaller request meets both bounds
            sides = [s for s in (draft_to, reduce_to if reduce_to and max(w, h) > reduce_to
                                 else None) if s]
            if sides:
                img.draft("RGB", (min(sides), min(sides)))
            img.load()
            if reduce_to and max(img.size) >= 2 * reduce_to:
                if img.mode not in _REDUCIBLE:  # palette, 1-bit, 16-bit: reduce() refuses them
                    img = img.convert("RGBA" if img.has_transparency_data else "RGB")
                img = img.reduce(max(img.size) // reduce_to)
            # a phone photo's pixels are stored sideways; EXIF says how to show them
            return ImageOps.exif_transpose(img).convert("RGB")
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{label}: rejected as a decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise DataError(f"{label}: not a readable image") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{label}: corrupt or truncated image ({e})") from e
