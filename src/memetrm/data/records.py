"""The one record type every dataset loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class MemeRecord:
    """A meme: an id, an optional label (1 = hateful/offensive), text fields and an image path.

    ``texts`` maps a field name (``text``, ``caption``, ...) to its string, so that captions
    or OCR output travel as their own modality instead of being glued onto the meme text.
    """

    id: str
    label: int | None
    texts: dict[str, str] = field(default_factory=dict)
    image: Path | None = None
    source: str = ""  # "file:line" for error messages

    @property
    def text(self) -> str:
        return self.texts.get("text", "")
