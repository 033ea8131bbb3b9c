"""Unimodal baselines: VAVL's baseline 4 (Goncalves et al., arXiv 2305.07216, Sec. 4.5.4,
``shared/papers/vavl-versatile-av-learning.txt``), also the AuxFormer journal's unimodal
baseline: a conformer over one modality, average pooling and two fully connected layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ModelSpec, PaperModel
from .layers import CONFORMER_SMOKE, Conformer, masked_mean

Tensor = torch.Tensor


class Unimodal(PaperModel):
    """Unimodal baseline: VAVL's baseline 4 (Sec. 4.5.4).

    1x1 projection (no bias) to ``d_proj`` (50), a Conformer of ``n_layers`` (5, "to match the
    structure of the full VAVL network"), masked mean over the present steps, and two fully
    connected layers ``d_model -> hidden -> C`` (ReLU, dropout). Consumes only ``modality``;
    the other input is ignored. Paper size as VAVL (d_model 512, 8 heads); the hidden width of
    the two-layer head is not given, 256 (VAVL's second head layer) is used.
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        n_classes: int,
        modality: str = "audio",
        d_proj: int = 50,
        d_model: int = 512,
        n_heads: int = 8,
        n_layers: int = 5,
        ff_mult: int = 4,
        kernel: int = 31,
        dropout: float = 0.1,
        out_dropout: float = 0.2,
        hidden: int = 256,
        soft_labels: bool = False,
    ) -> None:
        super().__init__(n_classes, soft_labels)
        if modality not in ("audio", "video"):
            raise ValueError(f"modality must be 'audio' or 'video', not {modality!r}")
        self.modalities = modality
        d_in = d_audio if modality == "audio" else d_video
        self.proj = nn.Linear(d_in, d_proj, bias=False)
        self.encoder = Conformer(d_proj, d_model, n_layers, n_heads, ff_mult, kernel, dropout)
        self.head = nn.Sequential(
            nn.Linear(d_model, hidden),
            nn.ReLU(),
            nn.Dropout(out_dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(
        self, audio: Tensor, audio_mask: Tensor, video: Tensor, video_mask: Tensor
    ) -> dict[str, Tensor]:
        x, mask = (audio, audio_mask) if self.modalities == "audio" else (video, video_mask)
        h = self.encoder(self.proj(x * mask[..., None]), mask)  # (B, T, D)
        logits = self.head(masked_mean(h, mask))  # (B, C)
        return {"logits": logits, f"logits_{self.modalities}": logits}


SPECS = (
    ModelSpec(
        "unimodal_audio",
        lambda **kw: Unimodal(modality="audio", **kw),
        "audio",
        "VAVL baseline 4 (unimodal conformer), audio",
        paper=dict(d_proj=50, d_model=512, n_heads=8, n_layers=5),
        smoke=dict(**CONFORMER_SMOKE, n_layers=1, hidden=8),
    ),
    ModelSpec(
        "unimodal_video",
        lambda **kw: Unimodal(modality="video", **kw),
        "video",
        "VAVL baseline 4 (unimodal conformer), video",
        paper=dict(d_proj=50, d_model=512, n_heads=8, n_layers=5),
        smoke=dict(**CONFORMER_SMOKE, n_layers=1, hidden=8),
    ),
)
"""Registry entries: the paper's hyper-parameters (``paper``) and a tiny config (``smoke``)."""
