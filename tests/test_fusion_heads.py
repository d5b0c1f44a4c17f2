"""The token-level fusion heads: what each architecture promises beyond the shared contract."""

from __future__ import annotations

import pytest
import torch

from memetrm.heads import create_head, head_entry, list_heads
from memetrm.layers import Attention

DIMS = {"image": 6, "text": 5}


def tokens(b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for f, (length, d) in {"image": (5, 6), "text": (7, 5)}.items():
        batch[f] = torch.randn(b, d, generator=g)
        batch[f"{f}.tokens"] = torch.randn(b, length, d, generator=g)
        batch[f"{f}.mask"] = torch.ones(b, length, dtype=torch.bool)
    batch["text.mask"][0, 4:] = False
    return batch


def test_gated_cross_attention_ignores_the_image_at_init_and_not_after() -> None:
    torch.manual_seed(0)
    head = create_head("gated-xattn", DIMS, DIMS).eval()
    a, b = tokens(seed=0), tokens(seed=0)
    b["image.tokens"] = torch.randn_like(b["image.tokens"]) * 5  # other media, same text
    with torch.no_grad():
        assert torch.allclose(head(a), head(b))  # tanh(0) = 0: a text-only model at init
        for layer in head.gated:
            layer.attn_gate.fill_(0.5)
        assert not torch.allclose(head(a), head(b))


def test_padding_never_changes_any_token_head() -> None:
    torch.manual_seed(0)
    for name in ("perceiver", "qformer", "gated-xattn"):
        head = create_head(name, DIMS, DIMS).eval()
        a = tokens()
        b = {k: v.clone() for k, v in a.items()}
        b["text.tokens"][0, 4:] = 100.0  # padded positions of example 0
        with torch.no_grad():
            assert torch.allclose(head(a), head(b), atol=1e-5), name


def test_attention_with_no_valid_key_leaves_the_query_unchanged() -> None:
    attn = Attention(8, 2, 0.0).eval()
    x, kv = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    out = attn(x, kv, mask)
    assert torch.isfinite(out).all() and torch.equal(out[1], x[1])
    assert not torch.equal(out[0], x[0])


@pytest.mark.parametrize("name", [n for n in list_heads() if head_entry(n).cls.needs_tokens])
@pytest.mark.parametrize("blank", ["image", "text", "both"])
def test_a_row_whose_tokens_are_all_masked_gives_finite_outputs(name: str, blank: str) -> None:
    """A meme with no valid token in a field (an empty text, say) must not turn into NaN, in
    training or at inference, nor change the other rows' answers."""
    torch.manual_seed(0)
    head = create_head(name, DIMS, DIMS)
    batch = tokens()
    masked = {k: v.clone() for k, v in batch.items()}
    for f in (["image", "text"] if blank == "both" else [blank]):
        masked[f"{f}.mask"][1] = False
    masked["label"] = batch["label"] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    head.train()
    loss = head.loss(head(masked), masked["label"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    head.eval()
    with torch.no_grad():
        out, ref = head.predict(masked)["prob"], head.predict(batch)["prob"]
    assert torch.isfinite(out).all()
    keep = torch.tensor([True, False, True, True])
    assert torch.allclose(out[keep], ref[keep], atol=1e-5)


def test_every_attention_block_guards_rows_without_keys() -> None:
    from memetrm.layers import CrossBlock, attend
    from memetrm.layers.recursion import AttentionBlock

    x, kv = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    assert torch.equal(attend(mha, x, kv, mask)[1], torch.zeros(3, 8))
    assert torch.isfinite(CrossBlock(8, 2, 0.0).eval()(x, kv, mask)).all()
    assert torch.isfinite(AttentionBlock(8, 2, 2.0, 0.0).eval()(kv, mask)).all()
