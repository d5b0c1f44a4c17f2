"""The head contract every classifier on top of frozen features follows.

A batch is a flat dict of tensors (``memetrm.layers.Batch``): ``batch[field]`` is the pooled
(B, D) embedding of a field (``image``, ``text``, ``caption``, ...), ``batch[f"{field}.tokens"]``
(B, L, D) and ``batch[f"{field}.mask"]`` (B, L) its token features when the head
``needs_tokens``, and ``batch["label"]`` (B,) float labels during training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

import torch
import torch.nn.functional as F

from memetrm.errors import ConfigError
from memetrm.layers import Batch, MemoryBank, MetricFn, StepFn, Trainable


class NotFittedError(ConfigError, AttributeError):
    """A fitted value read before the head was fitted (scikit-learn's ``NotFittedError``): it
    has no default, so an unfitted head cannot pass for a fitted one."""


class Prediction(TypedDict, total=False):
    """What ``Head.predict`` returns, per row; only ``prob`` is always there."""

    #: p(positive), (B,)
    prob: torch.Tensor
    #: p after every refinement step, (B, S): ``Recursive`` heads
    trace: torch.Tensor
    #: steps a row ran before it halted, (B,): ``Recursive`` heads
    steps: torch.Tensor
    #: memory rows of the nearest memes, (B, k): ``Memory`` heads
    neighbours: torch.Tensor
    #: their similarities, (B, k)
    neighbour_similarity: torch.Tensor


@dataclass
class HeadConfig:
    """Base of every head's options; a head without options uses it as is."""


@dataclass
class TokenFusionConfig(HeadConfig):
    """Width and depth of the attention stacks of the token-level fusion heads."""

    d_model: int = 128
    heads: int = 4
    layers: int = 2
    ffn_mult: int = 2
    hidden: int = 256
    dropout: float = 0.1


class Head(Trainable):
    """A binary classifier over a batch of frozen features; ``forward`` returns logits (B,)."""

    config_class: ClassVar[type[HeadConfig]] = HeadConfig
    #: whether the head reads ``<field>.tokens`` (extraction then stores token features)
    needs_tokens: ClassVar[bool] = False
    #: False for heads fitted exactly (a convex probe): seeds would repeat one fit, so a run
    #: selected on dev fits once (cross-validation still varies its folds by seed)
    seeded: ClassVar[bool] = True
    #: one line for ``memetrm list``; the class docstring's first line by default
    description: ClassVar[str] = ""
    #: the registered name it was created under (set by ``create_head``)
    name: str = ""

    #: attributes fitted with the weights (scikit-learn's ``attr_``), apart from the
    #: hyperparameters in ``cfg``: chosen by ``solve``, ``calibrate`` or a memory's
    #: ``fit_memory``. They are the module's extra state (``get_extra_state``), so they travel
    #: with ``state_dict()`` (an EMA copy, an ensemble member, a saved model); config.json's
    #: "fitted" is a readable copy. A cross-validated refit starts from the best fold's.
    fitted_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: HeadConfig, input_dims: dict[str, int],
                 token_dims: dict[str, int] | None = None):
        super().__init__()
        self.cfg = cfg
        self.input_dims = dict(input_dims)
        self.token_dims = dict(token_dims or {})
        self.fields = list(self.input_dims)

    def __getattr__(self, name: str) -> Any:
        if name in type(self).fitted_attrs:  # never set: reading it is an error, not a default
            raise NotFittedError(f"head {self.name or type(self).__name__!r} is not fitted: "
                                 f"{name} is chosen by training")
        return super().__getattr__(name)

    def fitted(self) -> dict[str, Any]:
        """The fitted state so far, JSON-ready (empty before fitting)."""
        return {a: self.__dict__[a] for a in self.fitted_attrs if a in self.__dict__}

    def is_fitted(self) -> bool:
        """Whether every fitted attribute is set (scikit-learn's ``check_is_fitted``)."""
        return all(a in self.__dict__ for a in self.fitted_attrs)

    def get_extra_state(self) -> dict[str, Any]:
        return self.fitted()

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"the fitted state of a head is a mapping, got {state!r}")
        self.set_fitted(**state)

    def set_fitted(self, **state: Any) -> None:
        unknown = set(state) - set(self.fitted_attrs)
        if unknown:
            raise ConfigError(f"head {self.name or type(self).__name__!r} has no fitted "
                              f"attribute(s) {sorted(unknown)}; it has {list(self.fitted_attrs)}")
        for name, value in state.items():
            setattr(self, name, value)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits, shape (B,)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.float())

    def training_step(self, batch: Batch, step: StepFn) -> float:
        """One batch of training. Heads with deep supervision override this hook."""
        loss = self.loss(self(batch), batch["label"])
        step(loss)
        return loss.item()

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        """``{"prob": (B,)}``; capabilities add their keys (see ``Prediction``)."""
        return {"prob": torch.sigmoid(self(batch))}


class Recursive:
    """Capability of a head that refines its answer over steps (the TRM): ``predict`` adds
    ``steps`` (and ``trace`` when it ran every step), ``reasoning_trace`` the full-depth trace."""

    def reasoning_trace(self, batch: Batch) -> torch.Tensor:
        """(B, S) probability after every step, at full depth."""
        raise NotImplementedError


class Memory:
    """Capability of a head that keeps labelled memes and lets the nearest vote: ``remember``
    after training, ``add`` later without retraining, ``neighbours`` and ``explain`` to show a
    moderator which precedents drove a score; ``predict`` adds ``neighbours`` and
    ``neighbour_similarity``. The memes live in ``self.bank`` (a ``MemoryBank``)."""

    bank: MemoryBank

    def memory_key(self, batch: Batch) -> torch.Tensor:
        """(B, D) unit-norm vectors under which memes are stored and looked up."""
        raise NotImplementedError

    @property
    def memory_ids(self) -> list[str]:
        return self.bank.ids

    def remember(self, train: Batch, ids: list[str]) -> None:
        """The memory becomes the training memes, in the order of ``train["row"]`` (the
        training engine's neighbour context: before training, and again once it is done)."""
        self.bank.reset()
        self.add(train, ids)

    def fit_memory(self, train: Batch, ids: list[str], metric: MetricFn) -> dict[str, Any]:
        """After training: the memory becomes the training memes, and whatever the head fits on
        them (how the neighbours vote) is chosen on them, each scored leave-one-out, never on
        dev. Returns what was chosen."""
        self.remember(train, ids)
        return {}

    def add(self, batch: Batch, ids: list[str]) -> None:
        """Append labelled memes (``batch["label"]``); the learned weights are untouched."""
        self.bank.add(self.memory_key(batch), batch["label"], ids)

    def neighbours(self, batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities and memory rows of the k nearest memes, (B, k) each."""
        return self.bank.search(self.memory_key(batch), k)

    def explain(self, out: Prediction) -> list[list[dict[str, Any]]] | None:
        """Id, label and similarity of each row's neighbours, or None without them."""
        if "neighbours" not in out:
            return None
        return self.bank.describe(out["neighbours"], out["neighbour_similarity"])


def memories(model: torch.nn.Module) -> list[Memory]:
    """The memories of a model: itself, or the members of an ensemble that have one."""
    return [m for m in model.modules() if isinstance(m, Memory)]
