"""Parthasarathy & Sundaram, "Detecting Expressions with Multimodal Transformers", IEEE SLT 2021
(arXiv 2012.00063; ``shared/papers/parthasarathy-multimodal-transformers.txt``; no public code,
notes: ``shared/notes/anchors.md`` B.6). Trained on CREMA-D as the AuxFormer journal's baseline 3.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ModelSpec, PaperModel
from .layers import Attention, key_bias, masked_mean, presence, sinusoid

Tensor = torch.Tensor


class PostLNLayer(nn.Module):
    """Vaswani et al. post-LN layer: ``LN(x + drop(MHA))`` then ``LN(x + drop(FFN))`` (ReLU)."""

    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = Attention(d, n_heads, dropout)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, kv: Tensor | None, bias: Tensor, gate: Tensor | None = None
    ) -> Tensor:
        """x (B, Tq, D); kv (B, Tk, D) or None; bias (B, 1, 1, Tk) -> (B, Tq, D).

        ``gate`` (B, 1, 1) scales the attention branch (0 where the keys' modality is missing).
        """
        att = self.attn(x, x if kv is None else kv, bias)  # (B, Tq, D)
        if gate is not None:
            att = att * gate
        x = self.ln1(x + self.drop(att))
        return self.ln2(x + self.drop(self.ff(x)))


class Parthasarathy(PaperModel):
    """Parthasarathy & Sundaram, IEEE SLT 2021, Sec. 3 and 4.3 (Fig. 3).

    Two encoders of self-attention layers (one per modality), then two cross-modal attention
    layers (audio queries over the video encoding and the reverse), their outputs "linearly
    combined using scalar trainable parameters alpha, beta" and a dense output layer.

    Paper size (Sec. 4.3): 512 nodes, 4 attention heads (head_dim 128), d_ff 2048 and dropout
    0.1 and sinusoidal positions from Vaswani et al. ("We follow the transformer architecture
    proposed in [15]"). The number of encoder layers is not given; 6 (Vaswani's base encoder)
    is an assumption, override ``n_layers``. Training (not set here): Adam lr 1e-5.

    Deviations:

    * the paper predicts arousal/valence per frame on synchronous 100-frame audio and video
      sequences (audio LLDs stacked to 4096-d) with a 1 - CCC loss; here the two sequences have
      their own lengths, each cross-modal output is mean-pooled over its present steps, the
      pooled vectors are combined as ``alpha * z_a + beta * z_v`` (alpha = beta = 0.5 at init)
      and classified with cross-entropy (as the AuxFormer journal's baseline 3 does).
    * the inputs are projected by a Linear layer to 512 (the paper feeds 4096-d features).
    * the cross-modal layers are full post-LN transformer layers (attention and feed-forward,
      residual from the query modality's encoding, as the AuxFormer journal describes them).
      When the other modality is entirely missing its keys are all masked, and the attention
      branch is set to zero (only the residual passes), so the result does not depend on how
      many padded steps the missing modality has. The pooled vector of a missing modality is 0,
      so ``fused`` is then the present modality's term alone.
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        n_classes: int,
        d_model: int = 512,
        n_heads: int = 4,
        n_layers: int = 6,
        d_ff: int = 2048,
        dropout: float = 0.1,
        soft_labels: bool = False,
    ) -> None:
        super().__init__(n_classes, soft_labels)
        self.d = d_model
        self.proj_a = nn.Linear(d_audio, d_model)
        self.proj_v = nn.Linear(d_video, d_model)
        self.enc_a = nn.ModuleList(
            PostLNLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.enc_v = nn.ModuleList(
            PostLNLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.cross_a = PostLNLayer(d_model, n_heads, d_ff, dropout)  # audio <- video
        self.cross_v = PostLNLayer(d_model, n_heads, d_ff, dropout)  # video <- audio
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.beta = nn.Parameter(torch.tensor(0.5))
        self.out = nn.Linear(d_model, n_classes)
        self.drop = nn.Dropout(dropout)

    def _encode(self, x: Tensor, mask: Tensor, proj: nn.Linear, layers: nn.ModuleList) -> Tensor:
        pos = sinusoid(torch.arange(x.shape[1], device=x.device), self.d)  # (T, D)
        h = self.drop(proj(x * mask[..., None]) + pos[None])  # (B, T, D)
        bias = key_bias(mask)
        for layer in layers:
            h = layer(h, None, bias)
        return h  # (B, T, D)

    def forward(
        self, audio: Tensor, audio_mask: Tensor, video: Tensor, video_mask: Tensor
    ) -> dict[str, Tensor]:
        ha = self._encode(audio, audio_mask, self.proj_a, self.enc_a)  # (B, Ta, D)
        hv = self._encode(video, video_mask, self.proj_v, self.enc_v)  # (B, Tv, D)
        has_a, has_v = presence(audio_mask)[:, None, None], presence(video_mask)[:, None, None]
        za = self.cross_a(ha, hv, key_bias(video_mask), has_v)  # (B, Ta, D)
        zv = self.cross_v(hv, ha, key_bias(audio_mask), has_a)  # (B, Tv, D)
        fused = self.alpha * masked_mean(za, audio_mask) + self.beta * masked_mean(zv, video_mask)
        logits = self.out(fused)  # (B, C)
        return {"logits": logits, "logits_av": logits}


SPECS = (
    ModelSpec(
        "parthasarathy",
        Parthasarathy,
        "av",
        "Parthasarathy & Sundaram, Detecting expressions with multimodal transformers, SLT 2021",
        paper=dict(d_model=512, n_heads=4, n_layers=6, d_ff=2048),
        smoke=dict(d_model=16, n_heads=2, n_layers=1, d_ff=32),
    ),
)
"""Registry entry: the paper's hyper-parameters (``paper``) and a tiny config (``smoke``)."""
