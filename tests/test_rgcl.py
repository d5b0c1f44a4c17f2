"""The ``rgcl`` and ``trm-retrieval`` heads and the faiss-backed memory they share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memetrm.config import RunConfig
from memetrm.heads import create_head
from memetrm.layers import memory as memory_layer
from memetrm.layers.memory import InnerProductIndex, MemoryBank
from memetrm.serving.predictor import Predictor
from memetrm.training.runner import run

from . import fakes  # noqa: F401  (registers test-fake)
from .test_selection import write_dataset

pytest.importorskip("faiss")


def _batch(n: int, dims: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Features whose first coordinate carries the label, plus a row index as FeatureSet gives."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    out = {f: torch.randn(n, d, generator=gen) for f, d in dims.items()}
    first = next(iter(dims))
    out[first][:, 0] += 3 * (2 * y - 1)
    return {**out, "label": y, "row": torch.arange(n)}


def test_faiss_search_matches_brute_force_and_the_approximate_index_finds_the_same() -> None:
    gen = torch.Generator().manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(500, 16, generator=gen), dim=-1)
    queries = keys[:20] + 0.01 * torch.randn(20, 16, generator=gen)
    sims, idx = InnerProductIndex(keys).search(queries, 5)
    ref_sims, ref_idx = (queries @ keys.T).topk(5, dim=1)
    assert torch.equal(idx, ref_idx) and torch.allclose(sims, ref_sims, atol=1e-5)
    approx = InnerProductIndex(keys, approximate_after=100)
    assert approx.approximate and torch.equal(approx.search(queries, 1)[1][:, 0], torch.arange(20))


def test_memory_bank_index_follows_adds_and_crosses_to_approximate(monkeypatch) -> None:
    bank = MemoryBank(4)
    eye = torch.eye(4)
    bank.add(eye[:2], torch.tensor([0.0, 1.0]), ["a", "b"])
    assert bank.search(eye[1:2], 1)[1].item() == 1
    bank.add(eye[2:], torch.tensor([0.0, 1.0]), ["c", "d"])  # extends the built index in place
    assert bank.search(eye[3:4], 1)[1].item() == 3 and len(bank._index) == 4
    monkeypatch.setattr(memory_layer, "APPROXIMATE_AFTER", 4)
    bank.add(eye[:1], torch.tensor([1.0]), ["e"])
    bank.search(eye[:1], 1)
    assert bank._index.approximate and bank.describe(*reversed(bank.search(eye[3:4], 1)))[0][0][
        "id"] == "d"


def test_rgcl_retrieves_same_label_positives_never_itself_and_opposite_label_negatives() -> None:
    dims = {"text": 8, "caption": 6}
    head = create_head("rgcl", dims, embed_dim=8, hidden=16, pseudo_gold=2, hard_negatives=2)
    train = _batch(40, dims)
    head.begin_epoch(train)
    batch = {k: v[:10] for k, v in train.items()}
    z = head.memory_key(batch)
    pos = head._retrieved(z, batch, same=True, k=2)
    neg = head._retrieved(z, batch, same=False, k=2)
    y = train["label"]
    assert (pos != batch["row"].unsqueeze(1)).all()  # never its own positive
    assert (y[pos] == batch["label"].unsqueeze(1)).all()
    assert (y[neg] != batch["label"].unsqueeze(1)).all()
    # the index is over the current embeddings, rebuilt by every epoch
    head.eval()
    with torch.no_grad():
        head.embedder[0].weight.add_(torch.randn_like(head.embedder[0].weight))
        first = head.memory_key({f: train[f][:1] for f in dims})  # row 0, label 0

    def own_similarity() -> float:
        return head._index[0][0].search(first, 1)[0].item()

    assert own_similarity() < 0.999
    head.begin_epoch(train)
    assert own_similarity() > 0.999


def test_rgcl_contrastive_term_trains_and_separates_the_labels() -> None:
    dims = {"text": 8}
    train = _batch(64, dims)
    head = create_head("rgcl", dims, embed_dim=8, hidden=16, dropout=0.0, lam=1.0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)

    def step(loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()

    def margin() -> float:
        with torch.no_grad():
            z = head.memory_key(train)
        same = train["label"].unsqueeze(0) == train["label"].unsqueeze(1)
        sims = z @ z.T
        return float(sims[same].mean() - sims[~same].mean())

    start = margin()
    head.train()
    for _ in range(3):
        head.begin_epoch(train)
        head.training_step(train, step)
        loss_c = head.contrastive_loss(torch.nn.functional.normalize(head.embedding(train), dim=-1),
                                       train)
    assert torch.isfinite(loss_c) and margin() > start


def test_trm_retrieval_reads_neighbours_without_itself_and_labels_only_when_asked() -> None:
    dims = {"text": 8}
    train = _batch(30, dims)
    head = create_head("trm-retrieval", dims, k=4, hidden=16, heads=2)
    head.remember(train, [str(i) for i in range(30)])
    sims, rows = head.bank.own_neighbours(4)
    assert rows.shape == (30, 4) and (rows != torch.arange(30).unsqueeze(1)).all()
    head.train()
    tokens, _ = head.embed({k: v[:5] for k, v in train.items()})
    assert tokens.shape == (5, 5, 16)  # the meme and its 4 neighbours
    tokens.sum().backward()
    assert head.label_emb.weight.grad is not None
    blind = create_head("trm-retrieval", dims, k=4, hidden=16, heads=2, labels=False)
    blind.remember(train, [str(i) for i in range(30)])
    blind.embed(train)[0].sum().backward()
    assert blind.label_emb.weight.grad is None


def test_memory_bank_own_neighbours_never_hold_the_row_itself_even_beside_a_duplicate() -> None:
    bank = MemoryBank(4)
    rows = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0],
                                                       [1.0, 1, 0, 0], [0, 0, 1.0, 0]]), dim=-1)
    bank.add(rows, torch.tensor([0.0, 1, 0, 1]), list("abcd"))
    _, idx = bank.own_neighbours(2)
    assert idx[:2, 0].tolist() == [1, 0] and (idx != torch.arange(4).unsqueeze(1)).all()
    bank.add(rows[:1], torch.tensor([1.0]), ["e"])  # the bank changed: searched afresh
    assert bank.own_neighbours(3)[1].shape == (5, 3)


def test_trm_retrieval_with_ema_scores_dev_with_neighbours() -> None:
    """The EMA copy is the model scored on dev: it holds the training memes too."""
    from memetrm.features import FeatureSet
    from memetrm.training import TrainConfig, fit

    dims = {"text": 8}
    tr, dv = _batch(40, dims), _batch(20, dims, seed=1)
    train = FeatureSet([f"t{i}" for i in range(40)], {"text": tr["text"]}, tr["label"])
    dev = FeatureSet([f"d{i}" for i in range(20)], {"text": dv["text"]}, dv["label"])
    seen: list[int] = []

    def score(model, fs, device) -> float:
        seen.append(model.embed(fs.batch(device=device))[0].shape[1])
        return 0.5

    head = create_head("trm-retrieval", dims, k=3, hidden=16, heads=2)
    result = fit(head, train, dev, TrainConfig(epochs=2, batch_size=16, ema=0.9), score=score,
                 device="cpu")
    assert result.head is not head and seen == [4, 4]  # the meme and its 3 neighbours
    assert result.head.bank.ids == train.ids


def test_trm_retrieval_trains_end_to_end_and_explains_with_neighbours(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d", [i % 2 for i in range(30)])
    res = run(RunConfig(dataset=str(root), encoder="test-fake", head="trm-retrieval", seeds=1,
                        fields=["text"], cache_dir=str(tmp_path / "c"), bootstrap=0,
                        head_cfg={"hidden": 16, "heads": 2, "k": 3},
                        train={"epochs": 2, "lr": 3e-3}, device="cpu", save=str(tmp_path / "m")))
    assert 0 <= res["splits"]["test"]["auroc"]["mean"] <= 1
    out = Predictor(tmp_path / "m", device="cpu").predict([None], [{"text": "cat bad bad"}])[0]
    assert len(out["neighbours"]) == 3 and {"id", "label", "similarity"} <= set(out["neighbours"][0])
