"""The contract every registered model follows (:class:`PaperModel`) and its registry entry
(:class:`ModelSpec`).

::

    model = build_model(name, d_audio, d_video, n_classes, size="paper" | "smoke", **overrides)
    out = model(audio, audio_mask, video, video_mask)
    #   audio (B, Ta, d_audio), audio_mask (B, Ta), video (B, Tv, d_video), video_mask (B, Tv);
    #   masks are 1.0 = present, 0.0 = missing or padding; a missing modality = mask all zero.
    #   out: dict of tensors, always out["logits"] (B, n_classes), the evaluation prediction.
    loss = model.compute_loss(out, batch)  # scalar, for the current stage
    model.stages, model.set_stage(stage), model.modalities

Masks everywhere: features at masked positions are zeroed before the first layer, masked keys get
an additive attention bias of ``MASK_NEG``, convolutions see masked positions as zeros (the same
as their own zero padding) and every pooling is masked. Padding appended at the end of a
sequence therefore does not change any output, whatever the padded features hold, and a fully
missing modality gives finite outputs. This is the main deviation shared by every model: the
public codes take zero-padded batches without masks, so there padding leaks into attention and
pooling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class PaperModel(nn.Module):
    """Common contract: ``forward`` -> dict, ``compute_loss``, ``stages``/``set_stage``.

    Subclasses set :attr:`modalities` and :attr:`stages`, implement ``forward`` and
    ``_loss(out, batch)``. ``soft_labels=True`` trains every cross-entropy against
    ``batch["soft"]`` (the perceived label distribution) instead of ``batch["label"]``.
    """

    modalities: str = "av"

    def __init__(self, n_classes: int, soft_labels: bool = False) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.soft_labels = soft_labels
        self.stages: list[str] = ["main"]
        self.stage = "main"

    # stage handling ----------------------------------------------------------------------
    def _trainable(self, stage: str) -> list[nn.Module] | None:
        """Modules trained in ``stage``; None = all of them."""
        return None

    def _frozen_eval(self) -> list[nn.Module]:
        """Modules kept in eval mode in the current stage even under ``model.train()``."""
        return []

    def set_stage(self, stage: str) -> None:
        """Select the training stage: sets ``requires_grad`` and what compute_loss optimises."""
        if stage not in self.stages:
            raise ValueError(f"{type(self).__name__}: unknown stage {stage!r} ({self.stages})")
        self.stage = stage
        keep = self._trainable(stage)
        if keep is None:
            for p in self.parameters():
                p.requires_grad_(True)
        else:
            for p in self.parameters():
                p.requires_grad_(False)
            for m in keep:
                for p in m.parameters():
                    p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> PaperModel:
        super().train(mode)
        if mode:
            for m in self._frozen_eval():
                m.eval()
        return self

    # losses --------------------------------------------------------------------------------
    def ce(self, logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """Per-sample cross-entropy (B,) against the hard or the soft labels."""
        if self.soft_labels:
            return -(batch["soft"] * F.log_softmax(logits, dim=-1)).sum(dim=-1)
        return F.cross_entropy(logits, batch["label"], reduction="none")

    def compute_loss(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        """Scalar training loss of ``out`` (this model's forward on ``batch``), current stage."""
        return self._loss(out, batch)

    def _loss(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        return self.ce(out["logits"], batch).mean()


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: how to build it and where it comes from.

    Attributes:
        name: registry key.
        factory: ``factory(d_audio=, d_video=, n_classes=, **config)`` -> :class:`PaperModel`.
        modalities: ``"av"``, ``"audio"`` or ``"video"``.
        source: paper / code it follows.
        paper: constructor config of ``size="paper"`` (the papers' hyper-parameters).
        smoke: constructor config of ``size="smoke"`` (tiny, for CI).
    """

    name: str
    factory: Callable[..., PaperModel]
    modalities: str
    source: str
    paper: Mapping[str, Any] = field(default_factory=dict)
    smoke: Mapping[str, Any] = field(default_factory=dict)
