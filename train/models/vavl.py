"""VAVL: Goncalves, Leem, Lin, Sisman & Busso, "Versatile Audio-Visual Learning for Handling Single
and Multi Modalities in Emotion Regression and Classification Tasks", arXiv 2305.07216
(``shared/papers/vavl-versatile-av-learning.txt``); code ``ilucasgoncalves/VAVL``
``net/avmodel.py``, ``net/modelWrapper.py``, ``train.py`` (notes: ``shared/notes/anchors.md`` B.3).

The conformer it is built on is :class:`train.models.layers.Conformer` (shared with the unimodal
baselines of :mod:`train.models.unimodal`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .base import ModelSpec, PaperModel
from .layers import CONFORMER_SMOKE, Conformer, masked_mean, presence

Tensor = torch.Tensor


def ccc(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Concordance correlation coefficient over dim 0 (population moments).

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` (VAVL Eq. 3; Parthasarathy &
    Sundaram Eq. 2). ``weight`` (B,) of 0/1 restricts it to a subset of the samples without
    indexing (unpaired batches). Returns 0 when fewer than two samples count.
    """
    pred, target = pred.float(), target.float()
    w = torch.ones_like(pred) if weight is None else weight.to(pred.dtype)
    n = w.sum()
    n_safe = n.clamp(min=1.0)
    mp, mt = (w * pred).sum() / n_safe, (w * target).sum() / n_safe
    vp = (w * (pred - mp) ** 2).sum() / n_safe
    vt = (w * (target - mt) ** 2).sum() / n_safe
    cov = (w * (pred - mp) * (target - mt)).sum() / n_safe
    value = 2.0 * cov / (vp + vt + (mp - mt) ** 2 + 1e-8)
    return torch.where(n >= 2, value, torch.zeros_like(value))


def weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """Mean of values (B,) over the samples with weight (B,) 1; 0 (with a graph) if none."""
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def _vavl_mlp(d_in: int, hidden: tuple[int, int], d_out: int, dropout: float) -> nn.Module:
    """VAVL ``MLP``: projav2(dropout(relu(projav1(x)))) -> out_layer (no activation after 2)."""
    return nn.Sequential(
        nn.Linear(d_in, hidden[0]),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden[0], hidden[1]),
        nn.Linear(hidden[1], d_out),
    )


class VAVL(PaperModel):
    """VAVL (arXiv 2305.07216 Sec. 3, Alg. 1; code ``net/avmodel.py``, ``net/modelWrapper.py``).

    * ``acoustic``/``visual``: 1x1 Conv1d without bias to ``d_proj`` (50), then a Conformer
      (``d_proj -> d_model``, 3 layers each).
    * ``shared``: Conformer (``d_model -> d_model``, 2 layers) applied to either modality,
      residual over it (``feats += input``), LayerNorm, mean over the present steps -> (B, 512).
    * heads: ``mlp_a``/``mlp_v`` (512 -> 512 -> 256 -> C), ``fusion`` (``MultitaskFusion``:
      concat 1024 -> 512 -> 256 -> C), reconstruction ``rec_a``/``rec_v`` (512 -> 512 -> 256 ->
      d_audio / d_video) regressing the time-averaged input features (MSE).
    * stages: ``"unimodal"`` trains acoustic, visual, shared, unimodal and reconstruction heads
      with ``CE + rec_weight * MSE`` per modality, each over the samples where that modality is
      present (unpaired batches work); ``"fusion"`` trains only ``fusion`` with CE over the
      samples where both are present, everything else frozen and kept in eval mode (the code's
      ``'weights'`` step calls ``.eval()`` on them).
    * ``out["logits"]``, per sample: the fusion head when both modalities are present, else the
      present modality's head (Alg. 1 inference); the fusion head when neither is.
    * ``regression=True``: every head also outputs (valence, arousal); when ``batch`` has
      ``"valence"``/``"arousal"``, each present one adds ``1 - CCC`` of the corresponding head
      (the code's dimensional loss ``sum(1 - CCC) + MSE``; the rec weight stays ``rec_weight``).
      ``out["va"]`` (B, 2) follows the same per-sample head choice as ``logits``.

    Paper size (Sec. 4.3, code): d_proj 50, d_model 512, 8 heads (head_dim 64), conformer
    layers 3/3/2, dropout 0.1 (conformer), 0.2 (heads), rec_weight 2 (classification, code
    ``CE + 2 * MSE``). Training (not set here): Adam lr 5e-5, weight decay 5e-7, betas
    (0.95, 0.999), 20 epochs, batch 32.

    Deviations:

    * Alg. 1 takes three optimiser steps per batch (visual, acoustic, fusion). Here the stage
      ``"unimodal"`` loss is the sum of the visual and the acoustic loss, one step for both
      (the shared layers get both gradients at once instead of one after the other); run a
      ``"fusion"`` step after it for the third.
    * Conformer: no 4x subsampling, relative-position MHSA as in the Conformer paper (VAVL's
      own ``Conformer`` class is unpublished, anchors B.3), masked BatchNorm statistics.
    * the paper's text mentions a "1D temporal convolution" before the encoders; the code uses
      kernel size 1, which we follow.
    * masks: reconstruction targets and pooling use the present steps only.
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        n_classes: int,
        d_proj: int = 50,
        d_model: int = 512,
        n_heads: int = 8,
        n_layers_audio: int = 3,
        n_layers_video: int = 3,
        n_layers_shared: int = 2,
        ff_mult: int = 4,
        kernel: int = 31,
        dropout: float = 0.1,
        out_dropout: float = 0.2,
        head_hidden: tuple[int, int] = (512, 256),
        rec_weight: float = 2.0,
        regression: bool = False,
        soft_labels: bool = False,
    ) -> None:
        super().__init__(n_classes, soft_labels)
        self.stages = ["unimodal", "fusion"]
        self.regression, self.rec_weight = regression, rec_weight
        n_out = n_classes + (2 if regression else 0)

        def conformer(d_in: int, layers: int) -> Conformer:
            return Conformer(d_in, d_model, layers, n_heads, ff_mult, kernel, dropout)

        self.conv_1d_a = nn.Linear(d_audio, d_proj, bias=False)  # Conv1d(k=1, bias=False)
        self.conv_1d_v = nn.Linear(d_video, d_proj, bias=False)
        self.acoustic = conformer(d_proj, n_layers_audio)
        self.visual = conformer(d_proj, n_layers_video)
        self.shared = conformer(d_model, n_layers_shared)
        self.shared_norm = nn.LayerNorm(d_model)
        self.mlp_a = _vavl_mlp(d_model, head_hidden, n_out, out_dropout)
        self.mlp_v = _vavl_mlp(d_model, head_hidden, n_out, out_dropout)
        self.fusion = _vavl_mlp(2 * d_model, head_hidden, n_out, out_dropout)
        self.rec_a = _vavl_mlp(d_model, head_hidden, d_audio, out_dropout)
        self.rec_v = _vavl_mlp(d_model, head_hidden, d_video, out_dropout)
        self.set_stage("unimodal")

    def _trainable(self, stage: str) -> list[nn.Module] | None:
        if stage == "fusion":
            return [self.fusion]
        return [
            self.conv_1d_a,
            self.conv_1d_v,
            self.acoustic,
            self.visual,
            self.shared,
            self.shared_norm,
            self.mlp_a,
            self.mlp_v,
            self.rec_a,
            self.rec_v,
        ]

    def _frozen_eval(self) -> list[nn.Module]:
        if self.stage != "fusion":
            return []
        return [
            self.acoustic,
            self.visual,
            self.shared,
            self.shared_norm,
            self.mlp_a,
            self.mlp_v,
            self.rec_a,
            self.rec_v,
        ]

    def _shared(self, h: Tensor, mask: Tensor) -> Tensor:
        """Shared conformer with residual, LayerNorm, masked mean: (B, T, D) -> (B, D)."""
        feats = self.shared(h, mask) + h  # (B, T, D)
        return masked_mean(self.shared_norm(feats), mask)  # (B, D)

    def forward(
        self, audio: Tensor, audio_mask: Tensor, video: Tensor, video_mask: Tensor
    ) -> dict[str, Tensor]:
        audio = audio * audio_mask[..., None]  # (B, Ta, d_audio)
        video = video * video_mask[..., None]  # (B, Tv, d_video)
        rep_a = self._shared(self.acoustic(self.conv_1d_a(audio), audio_mask), audio_mask)
        rep_v = self._shared(self.visual(self.conv_1d_v(video), video_mask), video_mask)
        head_a, head_v = self.mlp_a(rep_a), self.mlp_v(rep_v)  # (B, C[+2])
        head_av = self.fusion(torch.cat([rep_a, rep_v], dim=1))  # (B, C[+2])
        pa = presence(audio_mask)[:, None]  # (B, 1)
        pv = presence(video_mask)[:, None]
        both = pa * pv
        chosen = both * head_av + pa * (1 - pv) * head_a + (1 - pa) * pv * head_v
        chosen = chosen + (1 - pa) * (1 - pv) * head_av  # (B, C[+2])
        C = self.n_classes
        out = {
            "logits": chosen[:, :C],
            "logits_av": head_av[:, :C],
            "logits_audio": head_a[:, :C],
            "logits_video": head_v[:, :C],
            "recon_audio": self.rec_a(rep_a),  # (B, d_audio)
            "recon_video": self.rec_v(rep_v),  # (B, d_video)
            "target_audio": masked_mean(audio, audio_mask),  # (B, d_audio)
            "target_video": masked_mean(video, video_mask),  # (B, d_video)
            "present_audio": pa[:, 0],  # (B,)
            "present_video": pv[:, 0],
        }
        if self.regression:
            out["va"], out["va_av"] = chosen[:, C:], head_av[:, C:]  # (B, 2) valence, arousal
            out["va_audio"], out["va_video"] = head_a[:, C:], head_v[:, C:]
        return out

    def _ccc_terms(self, va: Tensor, batch: Mapping[str, Tensor], weight: Tensor) -> Tensor:
        total = va.new_zeros(())
        if not self.regression:
            return total
        for col, key in enumerate(("valence", "arousal")):
            if key in batch:
                total = total + (1.0 - ccc(va[:, col], batch[key], weight))
        return total

    def _loss(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        pa, pv = out["present_audio"], out["present_video"]
        if self.stage == "fusion":
            both = pa * pv
            loss = weighted_mean(self.ce(out["logits_av"], batch), both)
            if self.regression:
                loss = loss + self._ccc_terms(out["va_av"], batch, both)
            return loss
        loss = out["logits"].new_zeros(())
        for m, p in (("audio", pa), ("video", pv)):
            rec = ((out[f"recon_{m}"] - out[f"target_{m}"]) ** 2).mean(dim=1)  # (B,)
            loss = loss + weighted_mean(self.ce(out[f"logits_{m}"], batch), p)
            loss = loss + self.rec_weight * weighted_mean(rec, p)
            if self.regression:
                loss = loss + self._ccc_terms(out[f"va_{m}"], batch, p)
        return loss


SPECS = (
    ModelSpec(
        "vavl",
        VAVL,
        "av",
        "Goncalves et al., VAVL, arXiv 2305.07216; ilucasgoncalves/VAVL",
        paper=dict(d_proj=50, d_model=512, n_heads=8),
        smoke=dict(
            **CONFORMER_SMOKE,
            n_layers_audio=1,
            n_layers_video=1,
            n_layers_shared=1,
            head_hidden=(16, 8),
        ),
    ),
)
"""Registry entry: the paper's hyper-parameters (``paper``) and a tiny config (``smoke``)."""
