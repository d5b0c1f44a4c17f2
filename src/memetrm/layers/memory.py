"""A memory of labelled examples: embeddings and labels as buffers (saved with the weights), ids
beside them, inner-product search through faiss.

Search is exact (``IndexFlatIP``) up to ``APPROXIMATE_AFTER`` rows and approximate past it
(HNSW, 32 links per node, ``efSearch`` 128): an exact search over a million 256-d memes
still answers one query in tens of milliseconds on one core, so the approximate index only
pays off beyond that. The index is derived from the embeddings, never saved: it is built on
the first search after loading and extended in place by ``add``. So are the bank's own
neighbours (each row's nearest other rows, never itself): the neighbours a training meme
retrieves while the bank holds the training set, and what a leave-one-out calibration scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: rows past which the memory searches an approximate (HNSW) index instead of an exact one
APPROXIMATE_AFTER = 2_000_000
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128


class InnerProductIndex:
    """faiss top-k by inner product over fixed rows (unit-norm rows: cosine similarity)."""

    def __init__(self, keys: torch.Tensor, approximate_after: int | None = None):
        import faiss

        self.dim = keys.shape[1]
        limit = APPROXIMATE_AFTER if approximate_after is None else approximate_after
        self.approximate = len(keys) > limit
        if self.approximate:
            self.index = faiss.IndexHNSWFlat(self.dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            self.index = faiss.IndexFlatIP(self.dim)
        self.add(keys)

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, keys: torch.Tensor) -> None:
        if len(keys):
            self.index.add(keys.detach().float().cpu().contiguous().numpy())

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and rows of the ``k`` nearest (fewer if there are fewer rows), (B, k)."""
        import faiss

        k = min(k, len(self))
        if not k or not len(queries):
            empty = torch.zeros(len(queries), 0, device=queries.device)
            return empty, empty.long()
        faiss.omp_set_num_threads(torch.get_num_threads())
        sims, idx = self.index.search(queries.detach().float().cpu().contiguous().numpy(), k)
        return (torch.from_numpy(sims).to(queries.device),
                torch.from_numpy(idx).long().to(queries.device))


class MemoryBank(nn.Module):
    """Rows of (unit-norm embedding, label, id); ``search`` returns the nearest by inner product.

    The buffers grow with every ``add``; a checkpoint of any size loads into a fresh (empty)
    bank, whose buffers take the saved shapes. ``ids`` are strings: they are the module's extra
    state (``get_extra_state``), so they travel with ``state_dict()`` into an EMA copy, an
    ensemble member or a saved model, always beside the rows they name.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(0, dim))
        self.register_buffer("labels", torch.zeros(0))
        self.ids: list[str] = []
        self._index: InnerProductIndex | None = None
        self._own: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def reset(self) -> None:
        self.embeddings = self.embeddings[:0]
        self.labels = self.labels[:0]
        self.ids = []
        self._index = self._own = None

    def add(self, vectors: torch.Tensor, labels: torch.Tensor, ids: list[str]) -> None:
        if not len(vectors) == len(labels) == len(ids):
            raise ValueError(f"{len(vectors)} vectors, {len(labels)} labels and {len(ids)} ids")
        vectors = vectors.detach().to(self.embeddings)
        self.embeddings = torch.cat([self.embeddings, vectors])
        self.labels = torch.cat([self.labels, labels.detach().float().to(self.labels)])
        self.ids = [*self.ids, *ids]
        self._own = None
        if self._index is not None and self._index.approximate == (len(self) > APPROXIMATE_AFTER):
            self._index.add(vectors)
        else:
            self._index = None  # rebuilt on the next search (it crossed to the approximate kind)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and rows of the ``k`` nearest (fewer if the bank is smaller), (B, k) each."""
        if self._index is None or len(self._index) != len(self):
            self._index = InnerProductIndex(self.embeddings)
        return self._index.search(queries.to(self.embeddings), k)

    def own_neighbours(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and rows of each row's ``k`` nearest other rows (a row is never its own
        neighbour), (N, k) each; searched once and kept until the bank changes."""
        k = max(0, min(k, len(self) - 1))
        if self._own is None or self._own[1].shape[1] < k:
            sims, idx = self.search(self.embeddings, k + 1)
            own = torch.arange(len(self), device=idx.device).unsqueeze(1)
            # the row itself moves last (a duplicate may come first) and is cut off
            order = torch.argsort((idx == own).to(torch.int8), dim=1, stable=True)[:, :k]
            self._own = (sims.gather(1, order), idx.gather(1, order))
        return self._own[0][:, :k], self._own[1][:, :k]

    def describe(self, rows: torch.Tensor, sims: torch.Tensor) -> list[list[dict[str, Any]]]:
        """Per query: id, label and similarity of each neighbour (what a moderator is shown)."""
        labels = self.labels[rows.to(self.labels.device)].cpu().tolist()  # the neighbours' only
        return [[{"id": self.ids[j], "label": int(y), "similarity": round(s, 4)}
                 for j, y, s in zip(row, ys, sim, strict=True)]
                for row, ys, sim in zip(rows.cpu().tolist(), labels, sims.float().cpu().tolist(),
                                        strict=True)]

    def get_extra_state(self) -> dict[str, Any]:
        return {"ids": list(self.ids)}

    def set_extra_state(self, state: Any) -> None:
        ids = state.get("ids") if isinstance(state, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("a memory needs a list of string ids")
        if len(ids) != len(self):
            raise ValueError(f"{len(ids)} ids for a memory of {len(self)} memes")
        self.ids = list(ids)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # a saved bank has as many rows as it had then: take its shapes before copying
        for name in ("embeddings", "labels"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        self._index = self._own = None
        super()._load_from_state_dict(state_dict, prefix, *args)
