"""The Hateful Memes Challenge: a jsonl folder with named dev and test splits."""

from __future__ import annotations

from memetrm.data.jsonl import JsonlFolder
from memetrm.data.registry import register_dataset


@register_dataset
class HatefulMemes(JsonlFolder):
    name = "hateful_memes"
    subdir = "hateful_memes"
    how_to_get = (
        "Download the Hateful Memes Challenge data (train/dev_seen/dev_unseen/test_seen "
        "jsonl) from its official source and place the jsonl files in that folder."
    )
    dev_split = "dev_seen"
    test_split = "test_seen"

    @property
    def default_fields(self) -> tuple[str, ...]:
        return ("text", "caption") if self.captions else ("text",)
