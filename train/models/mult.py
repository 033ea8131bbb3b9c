"""MulT, audio-visual: Tsai et al., "Multimodal Transformer for Unaligned Multimodal Language
Sequences", ACL 2019, with the text branch removed, as the AuxFormer journal's baseline 2
(``shared/papers/auxformer-journal-robust-av-emotion.txt`` Sec. 4.5.2); code
``yaohungt/Multimodal-Transformer`` ``src/models.py`` (notes: ``shared/notes/anchors.md`` B.4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelSpec, PaperModel
from .layers import FairseqEncoder, last_valid

Tensor = torch.Tensor


class MulT(PaperModel):
    """MulT, audio-visual (``yaohungt/Multimodal-Transformer`` ``src/models.py::MULTModel``).

    The AuxFormer journal's baseline 2 (Sec. 4.5.2): the text branch removed, so 2 cross-modal
    transformers (audio <- video, video <- audio) instead of 6. Each input is projected by a 1x1
    Conv1d without bias to ``d_model``; each target modality's cross-modal output (one partner,
    so ``d_model`` wide, not ``2 d_model``) goes through a self-attention "mem" transformer of
    ``max(n_layers, 3)`` layers; the last steps are concatenated (2d) -> residual MLP -> output.
    All encoders add fairseq sinusoidal positions and scale by sqrt(d).

    Paper size (``main.py`` defaults): d 30, 5 layers, 5 heads (head_dim 6), attn_dropout 0.1
    (mem), attn_dropout_a = attn_dropout_v = 0.0 (cross-modal), relu 0.1, res 0.1, embed 0.25,
    out 0.0, causal mask on. Training (not set here): Adam lr 1e-3, batch 24, clip 1.0. With
    ``d_audio=130, d_video=4096, n_classes=4`` the model has exactly 358,384 parameters, the
    AuxFormer journal's Table 5 count for baseline 2.

    Deviations: last *present* step instead of ``h[-1]``, key masks and per-sample causal
    offsets (see :class:`AuxFormer`); both inputs are always projected (the code skips the
    projection of an input that already has ``d_model`` features). Loss: cross-entropy (MulT's
    IEMOCAP setting).
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        n_classes: int,
        d_model: int = 30,
        n_heads: int = 5,
        n_layers: int = 5,
        attn_dropout: float = 0.1,
        attn_dropout_a: float = 0.0,
        attn_dropout_v: float = 0.0,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        out_dropout: float = 0.0,
        causal: bool = True,
        soft_labels: bool = False,
    ) -> None:
        super().__init__(n_classes, soft_labels)
        d = d_model
        self.out_dropout = out_dropout
        self.proj_a = nn.Linear(d_audio, d, bias=False)  # Conv1d(k=1, bias=False)
        self.proj_v = nn.Linear(d_video, d, bias=False)

        def enc(layers: int, attn: float) -> FairseqEncoder:
            return FairseqEncoder(
                d,
                n_heads,
                layers,
                attn,
                relu_dropout,
                res_dropout,
                embed_dropout,
                causal,
                pos_emb=True,
            )

        # MulT get_network: 'av' (a with v) uses attn_dropout_v, 'va' uses attn_dropout_a
        self.trans_a_with_v = enc(n_layers, attn_dropout_v)
        self.trans_v_with_a = enc(n_layers, attn_dropout_a)
        self.trans_a_mem = enc(max(n_layers, 3), attn_dropout)
        self.trans_v_mem = enc(max(n_layers, 3), attn_dropout)
        self.proj1 = nn.Linear(2 * d, 2 * d)
        self.proj2 = nn.Linear(2 * d, 2 * d)
        self.out_layer = nn.Linear(2 * d, n_classes)

    def forward(
        self, audio: Tensor, audio_mask: Tensor, video: Tensor, video_mask: Tensor
    ) -> dict[str, Tensor]:
        a = self.proj_a(audio * audio_mask[..., None])  # (B, Ta, D)
        v = self.proj_v(video * video_mask[..., None])  # (B, Tv, D)
        h_a = self.trans_a_mem(self.trans_a_with_v(a, audio_mask, v, video_mask), audio_mask)
        h_v = self.trans_v_mem(self.trans_v_with_a(v, video_mask, a, audio_mask), video_mask)
        last = torch.cat([last_valid(h_a, audio_mask), last_valid(h_v, video_mask)], dim=1)
        z = F.dropout(F.relu(self.proj1(last)), p=self.out_dropout, training=self.training)
        logits = self.out_layer(self.proj2(z) + last)  # (B, C)
        return {"logits": logits, "logits_av": logits}


SPECS = (
    ModelSpec(
        "mult",
        MulT,
        "av",
        "Tsai et al., MulT, ACL 2019 (audio-visual); yaohungt/Multimodal-Transformer",
        paper=dict(d_model=30, n_heads=5, n_layers=5),
        smoke=dict(d_model=8, n_heads=2, n_layers=1),
    ),
)
"""Registry entry: the paper's hyper-parameters (``paper``) and a tiny config (``smoke``)."""
