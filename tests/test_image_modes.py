"""Large images in every mode PNG and GIF allow are reduced, not refused, and the EXIF
orientation of a photo is applied."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from memetrm.data.images import open_image


def encoded(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt", [("P", "GIF"), ("P", "PNG"), ("1", "PNG"),
                                       ("I;16", "PNG"), ("LA", "PNG")])
def test_large_images_of_any_mode_are_reduced(mode: str, fmt: str) -> None:
    img = Image.new(mode, (4200, 300))
    if mode == "I;16":
        img = Image.fromarray(np.full((300, 4200), 40_000, dtype=np.uint16))
    out = open_image(encoded(img, fmt), reduce_to=2048)
    assert out.mode == "RGB" and max(out.size) <= 2100


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encoded(img, "JPEG", exif=exif.tobytes())
    assert open_image(data).size == (20, 40)
    assert open_image(data, reduce_to=2048).size == (20, 40)
