"""A server follows its model folder: when ``memory add``, ``hashes add`` (or a new
``train --save``) writes it, the new revision (head and the folder's own hash list) is loaded
in the background and swapped in between batches; ``/health`` and every prediction name the
revision that answered.

Every write of the folder publishes one revision and replaces ``config.json`` last
(``memetrm.modelstore``), so a change of its inode, size or mtime means a complete new
revision: one ``stat`` per interval is all the watching. A rewrite that changes what the model
reads (encoder, fields, tokens) is not swapped in: that needs a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os

from starlette.concurrency import run_in_threadpool

from memetrm.encoders.tuned import TOWERS_KEY
from memetrm.errors import MemetrmError
from memetrm.modelstore import CONFIG_NAME
from memetrm.serving.hashlist import HashList
from memetrm.serving.predictor import Predictor, load_model

log = logging.getLogger("memetrm.serve")
#: what a swapped-in model must share with the served one (the encoders it reads included)
_SAME = ("encoder", "fields", "tokens", TOWERS_KEY)


class ModelWatcher:
    """Checks the folder's ``config.json`` every ``interval`` seconds (``run``, a task the app
    starts with the server)."""

    def __init__(self, predictor: Predictor, interval: float = 1.0) -> None:
        self.predictor, self.interval = predictor, interval
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.predictor.model_dir / CONFIG_NAME)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    async def run(self) -> None:
        """Until cancelled: reload (in a worker thread) whenever the folder has changed."""
        while True:
            await asyncio.sleep(self.interval)
            seen = self._signature()
            if seen is not None and seen != self._seen:
                self._seen = seen
                await run_in_threadpool(self.reload)

    def reload(self) -> bool:
        """Load the folder's current revision and swap it in; on failure keep the served one."""
        p = self.predictor
        try:
            head, config, threshold = load_model(p.model_dir, p.device)
            own_list = HashList.of_model(p.model_dir)
        except MemetrmError as e:
            log.warning("%s changed but cannot be loaded (%s); still serving %s",
                        p.model_dir, e, p.model_id)
            return False
        differs = [k for k in _SAME if config.get(k) != p.config.get(k)]
        if differs:
            log.warning("%s changed its %s; restart the server to serve it (still serving %s)",
                        p.model_dir, ", ".join(differs), p.model_id)
            return False
        try:  # the policy's operating points are chosen on the new revision's dev scores
            p.swap(head, config, threshold, own_list)
        except MemetrmError as e:
            log.warning("%s changed but cannot be served (%s); still serving %s",
                        p.model_dir, e, p.model_id)
            return False
        log.warning("reloaded %s: now serving %s (%d known memes)", p.model_dir, p.model_id,
                    len(p.known))
        return True
