"""Safe image decoding shared by extraction, prediction and serving."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from memetrm.errors import DataError

#: Pixel budget per image. Memes are small; anything far beyond 40 MP is a bomb or a mistake.
MAX_PIXELS = 40_000_000


def open_image(source: str | Path | bytes, *, name: str | None = None,
               max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image fully into RGB, or raise ``DataError`` naming it.

    The size check happens on the header, before any pixel is decoded, so a decompression
    bomb costs nothing. ``load()`` forces a full decode so truncated files fail here, not
    later inside a worker.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    if isinstance(source, bytes):
        if not source:
            raise DataError(f"{label}: empty image data")
        fp: io.BytesIO | Path = io.BytesIO(source)
    else:
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
            img.load()
            return img.convert("RGB")
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{label}: rejected as a decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise DataError(f"{label}: not a readable image") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{label}: corrupt or truncated image ({e})") from e
