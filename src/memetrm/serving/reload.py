"""A server follows its model folder: when ``memory add`` (or a new ``train --save``) rewrites
it, the new head is loaded in the background and swapped in between batches; ``/health`` and
every prediction name the model id that scored it.

The folder's ``config.json`` is what each write replaces last (``memetrm.modelstore``), so a
change of its inode, size or mtime means a complete new revision. A rewrite that changes what
the model reads (encoder, fields, tokens) is not swapped in: that needs a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from starlette.concurrency import run_in_threadpool

from memetrm.encoders.tuned import TOWERS_KEY
from memetrm.errors import MemetrmError
from memetrm.modelstore import CONFIG_NAME
from memetrm.serving.predictor import Predictor, _model_id, load_model

log = logging.getLogger("memetrm.serve")
#: what a swapped-in model must share with the served one (the encoders it reads included)
_SAME = ("encoder", "fields", "tokens", TOWERS_KEY)


class ModelWatcher:
    """Polled by requests (at most once per ``interval`` seconds: one ``stat``)."""

    def __init__(self, predictor: Predictor, interval: float = 1.0,
                 threshold: float | None = None) -> None:
        self.predictor, self.interval, self.threshold = predictor, interval, threshold
        self._seen = self._signature()
        self._next = 0.0
        self._task: asyncio.Task | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.predictor.model_dir / CONFIG_NAME)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def poll(self) -> None:
        """Start a reload in the background if the folder changed since it was loaded."""
        now = time.monotonic()
        if now < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = now + self.interval
        seen = self._signature()
        if seen is not None and seen != self._seen:
            self._seen = seen
            self._task = asyncio.get_running_loop().create_task(
                run_in_threadpool(self.reload))

    def reload(self) -> bool:
        """Load the folder's current revision and swap it in; on failure keep the served one."""
        p = self.predictor
        try:
            head, config, threshold = load_model(p.model_dir, p.device)
        except MemetrmError as e:
            log.warning("%s changed but cannot be loaded (%s); still serving %s",
                        p.model_dir, e, p.model_id)
            return False
        differs = [k for k in _SAME if config.get(k) != p.config.get(k)]
        if differs:
            log.warning("%s changed its %s; restart the server to serve it (still serving %s)",
                        p.model_dir, ", ".join(differs), p.model_id)
            return False
        model_id = _model_id(p.model_dir, config)
        with p._lock:  # between batches: a batch is scored by one model
            p.head, p.config, p.model_id = head, config, model_id
            p.threshold = threshold if self.threshold is None else self.threshold
            p.label_names = list(config.get("labels") or p.label_names)
        log.warning("reloaded %s: now serving %s", p.model_dir, model_id)
        return True
