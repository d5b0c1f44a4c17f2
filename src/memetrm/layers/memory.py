"""A memory of labelled examples: embeddings and labels as buffers (saved with the weights), ids
beside them, inner-product search through faiss.

Search is exact (``IndexFlatIP``) up to ``APPROXIMATE_AFTER`` rows and approximate past it
(HNSW, ``HNSW_LINKS`` links per node): exact search reads every row for every query, so its
time grows with the memory (``benchmarks/memory_scale.py`` measures where HNSW overtakes it).
HNSW's ``efSearch`` (how many candidates a query keeps) is chosen when the index is built: the
smallest of ``EF_SEARCH`` whose recall@10 against exact search reaches ``RECALL_FLOOR`` for
held-out queries (the last rows, added to the graph only afterwards: a query already in the
graph is linked to its neighbours and overstates the recall), so the recall holds on the
memory's own data whatever its shape. The index is derived from the embeddings: the exact one is
built on the first search after loading; an HNSW graph (minutes at a million rows) is saved
beside the weights (``index_bytes``) and attached on load (``attach_index``), and either is
extended in place by ``add``. The bank's own neighbours (each row's nearest other rows, never
itself) are searched once and kept until it changes: the neighbours a training meme retrieves
while the bank holds the training set, and what a leave-one-out calibration scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

#: rows past which the memory searches an approximate (HNSW) index instead of an exact one:
#: there one exact query takes about half of a 10 ms budget on one core, while HNSW is already
#: faster but pays its build on every load (``python -m benchmarks.memory_scale --crossover``)
APPROXIMATE_AFTER = 100_000
HNSW_LINKS = 32
#: ``efSearch`` values tried, smallest first, until recall@``RECALL_K`` reaches ``RECALL_FLOOR``
EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
RECALL_FLOOR, RECALL_K = 0.95, 10
#: the last rows of a memory, kept out of its graph until they have calibrated ``efSearch``
CALIBRATION_QUERIES = 200


def _threads() -> None:
    """faiss uses as many threads as torch (one, in a server worker that set it so)."""
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k rows (B, k) that a search found (B, k)."""
    return float(np.mean([len({*f} & {*e}) / len(e) for f, e in zip(found, exact, strict=True)]))


def exact_top_k(queries: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` largest inner products, (B, k), by brute force (no index kept)."""
    import faiss

    return faiss.knn(queries, keys, k, metric=faiss.METRIC_INNER_PRODUCT)[1]


class InnerProductIndex:
    """faiss top-k by inner product over fixed rows (unit-norm rows: cosine similarity).

    ``params`` records what searches: ``kind`` exact or hnsw, and for HNSW its links, the
    ``ef_search`` chosen and the held-out recall it gave."""

    def __init__(self, keys: torch.Tensor, approximate_after: int | None = None):
        import faiss

        self.dim = keys.shape[1]
        limit = APPROXIMATE_AFTER if approximate_after is None else approximate_after
        self.approximate = len(keys) > limit
        self.params: dict[str, Any] = {"kind": "hnsw" if self.approximate else "exact"}
        if self.approximate:
            self.index = faiss.IndexHNSWFlat(self.dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
            x = keys.detach().float().cpu().contiguous().numpy()
            graph = len(x) - min(CALIBRATION_QUERIES, len(x) // 2)
            self.add(keys[:graph])
            self.calibrate(x[:graph], x[graph:])
            keys = keys[graph:]
        else:
            self.index = faiss.IndexFlatIP(self.dim)
        self.add(keys)

    def __len__(self) -> int:
        return self.index.ntotal

    def to_bytes(self) -> bytes:
        """The HNSW graph as faiss writes it, without its rows (they are the memory's
        embeddings, saved with the weights), to be saved beside the weights."""
        import faiss

        writer = faiss.VectorIOWriter()
        faiss.write_index(self.index, writer, faiss.IO_FLAG_SKIP_STORAGE)
        return faiss.vector_to_array(writer.data).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, params: dict[str, Any], keys: torch.Tensor
                   ) -> InnerProductIndex:
        """The HNSW graph saved by ``to_bytes`` over the rows ``keys``, with its recorded
        ``params``; a ``ValueError`` says why it does not fit them (then build a new one)."""
        import faiss

        ef = params.get("ef_search")
        if params.get("kind") != "hnsw" or params.get("links") != HNSW_LINKS \
                or isinstance(ef, bool) or not isinstance(ef, int) or not 1 <= ef <= EF_SEARCH[-1]:
            raise ValueError(f"index parameters {params!r} are not an HNSW index this version "
                             "builds")
        reader = faiss.VectorIOReader()
        faiss.copy_array_to_vector(np.frombuffer(data, np.uint8), reader.data)
        try:
            index = faiss.read_index(reader, faiss.IO_FLAG_SKIP_STORAGE)
        except RuntimeError as e:
            raise ValueError(f"not a faiss index ({str(e).splitlines()[0]})") from e
        if not isinstance(index, faiss.IndexHNSWFlat) or index.storage is not None \
                or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"a {type(index).__name__}, not an inner-product HNSW graph")
        if (index.ntotal, index.d) != tuple(keys.shape):
            raise ValueError(f"a graph of {index.ntotal} rows of width {index.d} for a memory "
                             f"of {keys.shape[0]} of width {keys.shape[1]}")
        self = cls.__new__(cls)
        self.dim, self.approximate, self.params = index.d, True, dict(params)
        # the rows come from the memory; faiss borrows them (this object keeps them alive)
        self.rows = faiss.IndexFlatIP(index.d)
        self.rows.add(keys.detach().float().cpu().contiguous().numpy())
        index.storage, index.own_fields, index.hnsw.efSearch = self.rows, False, ef
        self.index = index
        # a graph over other rows leads searches astray: sampled rows must find themselves
        sample = np.unique(np.linspace(0, len(keys) - 1, min(len(keys), 32)).astype(np.int64))
        x = self.rows.reconstruct_batch(sample)
        _threads()
        found = index.search(x, 1)[0][:, 0] >= (x * x).sum(1) - 1e-4
        if found.mean() < 0.9:
            raise ValueError(f"a graph over other rows: {int(found.sum())} of {len(x)} sampled "
                             "rows found themselves")
        return self

    def calibrate(self, indexed: np.ndarray, queries: np.ndarray) -> None:
        """Set ``efSearch`` to the smallest of ``EF_SEARCH`` whose recall@``RECALL_K`` reaches
        ``RECALL_FLOOR`` for ``queries`` outside the graph, against exact search among the
        ``indexed`` rows (the largest if none does; ``params`` says what it reached)."""
        k = min(RECALL_K, len(indexed))
        exact = exact_top_k(queries, indexed, k)
        _threads()
        for ef in EF_SEARCH:
            self.index.hnsw.efSearch = ef
            recall = recall_at_k(self.index.search(queries, k)[1], exact)
            if recall >= RECALL_FLOOR:
                break
        self.params.update(links=HNSW_LINKS, ef_search=ef, recall_floor=RECALL_FLOOR,
                           held_out_recall=round(recall, 4), held_out=len(queries))

    def add(self, keys: torch.Tensor) -> None:
        if len(keys):
            _threads()
            self.index.add(keys.detach().float().cpu().contiguous().numpy())

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and rows of the ``k`` nearest (fewer if there are fewer rows), (B, k)."""
        k = min(k, len(self))
        if not k or not len(queries):
            empty = torch.zeros(len(queries), 0, device=queries.device)
            return empty, empty.long()
        _threads()
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

    def _built(self) -> InnerProductIndex:
        if self._index is None or len(self._index) != len(self):
            self._index = InnerProductIndex(self.embeddings)
        return self._index

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and rows of the ``k`` nearest (fewer if the bank is smaller), (B, k) each."""
        return self._built().search(queries.to(self.embeddings), k)

    def index_bytes(self) -> tuple[bytes, dict[str, Any]] | None:
        """The approximate index (built now if it is not yet) and its parameters, to save
        beside the weights; None for a memory searched exactly (built fast on load)."""
        if len(self) <= APPROXIMATE_AFTER:
            return None
        index = self._built()
        return index.to_bytes(), dict(index.params)

    def attach_index(self, data: bytes, params: dict[str, Any]) -> None:
        """Search through a saved ``index_bytes`` from now on (checked against the rows: a
        ``ValueError`` says why it does not fit, and the bank builds its own on the next search)."""
        if len(self) <= APPROXIMATE_AFTER:
            raise ValueError(f"a memory of {len(self)} rows is searched exactly")
        self._index = InnerProductIndex.from_bytes(data, params, self.embeddings)

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
