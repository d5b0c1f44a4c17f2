"""Trainable heads chosen by name: ``create_head("mlp", input_dims, hidden=512)``."""

from memetrm.heads.base import Batch, Head, HeadConfig, StepFn
from memetrm.heads.cross_attention import CrossAttentionHead
from memetrm.heads.hateclipper import HateCLIPperHead
from memetrm.heads.hyperbolic import HyperbolicHead
from memetrm.heads.registry import (
    create_head,
    from_pretrained,
    head_entry,
    list_heads,
    load_config,
    register_head,
    save_pretrained,
)
from memetrm.heads.simple import LinearHead, MLPHead
from memetrm.heads.trm import TRMAttHead, TRMHead

register_head("linear", LinearHead)
register_head("mlp", MLPHead)
register_head("cross-attention", CrossAttentionHead)
register_head("hyperbolic", HyperbolicHead)

# The seed's recipe (n=3, T=3 from its write-up, n_sup=8 from its config) and training overrides;
# hidden stays at 128 rather than the seed's 512 so a 30-epoch run fits on CPU.
_SEED_TRAIN = {"lr": 1e-4, "weight_decay": 0.05, "epochs": 30}
register_head("trm", TRMHead, train=_SEED_TRAIN)  # alias of trm-seed
register_head("trm-seed", TRMHead, train=_SEED_TRAIN, in_all=False)  # = trm
register_head("trm-act", TRMHead, train=_SEED_TRAIN, act=True)
# costly variants, by name only: the paper's depth and the token-sequence (attention) mode
register_head("trm-paper", TRMHead, train=_SEED_TRAIN, in_all=False, n=6, T=3, n_sup=16)
register_head("trm-att", TRMAttHead, in_all=False)
register_head("hateclipper-align", HateCLIPperHead, fusion="align")
register_head("hateclipper-cross", HateCLIPperHead, fusion="cross", map_dim=32)

__all__ = [
    "Batch",
    "Head",
    "HeadConfig",
    "StepFn",
    "create_head",
    "from_pretrained",
    "head_entry",
    "list_heads",
    "load_config",
    "register_head",
    "save_pretrained",
]
