"""memetrm: frozen vision-language encoders + tiny trainable reasoning heads for memes."""

from memetrm.data import MemeRecord, load_split
from memetrm.encoders import create_encoder, list_encoders
from memetrm.heads import create_head, list_heads

__all__ = [
    "MemeRecord",
    "create_encoder",
    "create_head",
    "list_encoders",
    "list_heads",
    "load_split",
]
__version__ = "0.1.0"
