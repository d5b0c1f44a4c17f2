"""Projections on top of frozen towers and the three alignment objectives (CLIP, MERU, ITM).

LiT-style: both encoders stay locked and only the projections (plus temperature, curvature and
scales) learn, from cached pooled features, which is what makes this trainable on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memetrm.errors import ConfigError
from memetrm.layers import Batch, Curvature, LorentzLift, StepFn, Trainable, clamp_, mlp
from memetrm.layers import lorentz as L

OBJECTIVES = ("clip", "meru", "itm")
#: CLIP caps the logit scale at 100 so the softmax cannot become a hard argmax.
MAX_LOGIT_SCALE = math.log(100.0)
#: ITM re-ranks only each query's top candidates by contrastive similarity (as ALBEF does):
#: scoring all N x M pairs with the matching MLP is quadratic in memory.
ITM_RERANK_K = 16


#: Training options (``TrainConfig``) for alignment: MERU's and CLIP's weight decay, a cosine
#: schedule without warmup, no early stopping, and no ragged last batch (a 1-pair batch has no
#: negatives).
ALIGN_TRAIN = {"epochs": 30, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.2,
               "warmup_ratio": 0.0, "grad_clip": 0.0, "patience": 0, "drop_last": True}


@dataclass
class AlignConfig:
    objective: str = "clip"
    embed_dim: int = 256
    #: in the ITM head only: the projections are LayerNorm + Linear, as in CLIP
    dropout: float = 0.1
    temperature: float = 0.07
    curv_init: float = 1.0
    learn_curv: bool = True
    entail_weight: float = 0.2
    itm_weight: float = 1.0
    image_field: str = "image"
    text_field: str = "text"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose from {OBJECTIVES}")


class AlignModel(Trainable):
    """Image and text projections into a shared space: a unit sphere (clip/itm) or a hyperboloid.

    Embeddings are what ``similarity`` compares: L2-normalised vectors for ``clip``/``itm``,
    space components of Lorentz points for ``meru``.
    """

    def __init__(self, cfg: AlignConfig, image_dim: int, text_dim: int):
        super().__init__()
        self.cfg = cfg
        self.image_dim, self.text_dim = image_dim, text_dim
        d = cfg.embed_dim
        self.image_proj = mlp(image_dim, 0, 0, cfg.dropout, out_dim=d)
        self.text_proj = mlp(text_dim, 0, 0, cfg.dropout, out_dim=d)
        self.log_logit_scale = nn.Parameter(torch.tensor(1 / cfg.temperature).log())
        if cfg.objective == "meru":
            self.curvature = Curvature(cfg.curv_init, cfg.learn_curv)
            self.image_lift, self.text_lift = LorentzLift(d), LorentzLift(d)
        if cfg.objective == "itm":
            self.itm_head = mlp(4 * d, d, 1, cfg.dropout)

    @property
    def hyperbolic(self) -> bool:
        return self.cfg.objective == "meru"

    @property
    def curv(self) -> torch.Tensor:
        return self.curvature()

    @property
    def logit_scale(self) -> torch.Tensor:
        return clamp_(self.log_logit_scale, 0, MAX_LOGIT_SCALE).exp()

    def _embed(self, proj: nn.Module, x: torch.Tensor, lift: str) -> torch.Tensor:
        z = proj(x.float())
        if self.hyperbolic:
            return getattr(self, lift)(z, self.curv)
        return F.normalize(z, dim=-1)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(self.image_proj, x, "image_lift")

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        return self._embed(self.text_proj, x, "text_lift")

    def training_step(self, batch: Batch, step: StepFn) -> float:
        """The objective on a batch of matched pairs (row i of each field is a pair)."""
        loss, _ = self.loss(self.encode_image(batch[self.cfg.image_field]),
                            self.encode_text(batch[self.cfg.text_field]))
        step(loss)
        return loss.item()

    def similarity(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """(N, M) unscaled logits: cosine, or negative Lorentz distance."""
        if self.hyperbolic:
            return -L.pairwise_dist(img, txt, self.curv)
        return img @ txt.T

    def itm_logits(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """Match logit of corresponding (image, text) rows."""
        fused = torch.cat([img, txt, img * txt, (img - txt).abs()], dim=-1)
        return self.itm_head(fused).squeeze(-1)

    def loss(self, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Objective on a batch of matched embeddings (row i of each is a pair)."""
        sim = self.similarity(img, txt)
        logits = self.logit_scale * sim
        target = torch.arange(len(img), device=img.device)
        contrastive = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        parts = {"contrastive": contrastive.item()}
        total = contrastive
        if self.hyperbolic:
            # text entails image: the image should sit inside the text's entailment cone
            angle = L.oxy_angle(txt, img, self.curv)
            aperture = L.half_aperture(txt, self.curv)
            entail = torch.clamp(angle - aperture, min=0).mean()
            parts["entailment"] = entail.item()
            total = total + self.cfg.entail_weight * entail
        if self.cfg.objective == "itm":
            itm = self._itm_loss(img, txt, sim.detach())
            parts["itm"] = itm.item()
            total = total + self.cfg.itm_weight * itm
        return total, parts

    def _itm_loss(self, img: torch.Tensor, txt: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
        """BCE on the B positives plus one hard negative per image and per text.

        Negatives are sampled in proportion to ``softmax(sim)`` with the positive masked out, so
        the head learns from the pairs the contrastive space finds most confusable.
        """
        b = len(img)
        eye = torch.eye(b, dtype=torch.bool, device=img.device)
        w_i2t = F.softmax(sim, dim=1).masked_fill(eye, 0) + 1e-12 * ~eye
        w_t2i = F.softmax(sim.T, dim=1).masked_fill(eye, 0) + 1e-12 * ~eye
        neg_txt = torch.multinomial(w_i2t, 1).squeeze(1)
        neg_img = torch.multinomial(w_t2i, 1).squeeze(1)
        imgs = torch.cat([img, img, img[neg_img]])
        txts = torch.cat([txt, txt[neg_txt], txt])
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).to(img.device)
        return F.binary_cross_entropy_with_logits(self.itm_logits(imgs, txts), labels)

    @torch.no_grad()
    def retrieval_scores(self, img: torch.Tensor,
                         txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image->text (N, M), text->image (M, N)) ranking scores.

        ``itm`` re-ranks each query's top ``ITM_RERANK_K`` contrastive candidates by the
        matching head, placing them above every other candidate.
        """
        sim = self.similarity(img, txt)
        if self.cfg.objective != "itm":
            return sim, sim.T
        return self._rerank(img, txt, sim), self._rerank(txt, img, sim.T, swap=True)

    def _rerank(self, q: torch.Tensor, c: torch.Tensor, sim: torch.Tensor,
                swap: bool = False) -> torch.Tensor:
        k = min(ITM_RERANK_K, sim.shape[1])
        top = sim.topk(k, dim=1).indices  # (N, k)
        qq = q.unsqueeze(1).expand(-1, k, -1).reshape(-1, q.shape[-1])
        cc = c[top.reshape(-1)]
        itm = (self.itm_logits(cc, qq) if swap else self.itm_logits(qq, cc)).view(-1, k)
        scores = sim.clone()
        offset = sim.max() - itm.min() + 1
        scores.scatter_(1, top, itm + offset)
        return scores
