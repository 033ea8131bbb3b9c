"""The bundle's two encoders, trained by ``train.train_seed`` (see docs/bundle.md).

* :class:`AudioEncoder`: ``logmel`` (B, frames, n_mels) -> ``audio_emb`` (B, frames // 4, d_audio);
  exported through :class:`AudioEncoderGraph` (the classifier head is left out).
* :class:`FaceEncoder`: ``face`` (B, 1, 48, 48) -> ``face_emb`` (B, d_video) (+ ``face_logits``).

The bundle's third graph, the fusion model, is :class:`train.models.auxformer.AuxFormerDeploy`.
Only plain torch ops are used (Linear, Conv, LayerNorm, ``F.scaled_dot_product_attention``) so the
torch 2.13 dynamo ONNX exporter handles every module with dynamic batch and sequence lengths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Block, masked_mean

Tensor = torch.Tensor


class AudioEncoder(nn.Module):
    """Log-mel encoder with 4x time subsampling.

    Normalisation (per-mel mean and std buffers, set from training data with
    :meth:`set_normalization`) happens inside the module, so the exported graph takes the raw
    natural-log mel power of ``emosdk.features.log_mel``. The frames are trimmed to a multiple of
    4 and two stride-2 convolutions produce exactly ``frames // 4`` steps; step ``i`` is centred
    on frames ``[4i, 4i + 4)``. A small transformer encoder (depthwise-conv positions) follows.
    The classifier :attr:`head` is used for pre-training only and is not part of the exported graph.
    """

    frames_per_step = 4

    def __init__(
        self,
        n_mels: int = 64,
        d_audio: int = 128,
        n_layers: int = 3,
        n_heads: int = 4,
        ff_mult: int = 2,
        dropout: float = 0.1,
        n_classes: int = 6,
    ) -> None:
        super().__init__()
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        self.conv1 = nn.Conv1d(n_mels, d_audio, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(d_audio, d_audio, kernel_size=3, stride=2, padding=1)
        self.pos_conv = nn.Conv1d(d_audio, d_audio, kernel_size=15, padding=7, groups=d_audio)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            Block(d_audio, n_heads, ff_mult=ff_mult, dropout=dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_audio)
        self.head = nn.Sequential(
            nn.Linear(d_audio, d_audio),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d_audio, n_classes),
        )

    @torch.no_grad()
    def set_normalization(self, mean: Tensor, std: Tensor) -> None:
        """Store the per-mel mean and std (n_mels,) of the training log-mel frames."""
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std.clamp(min=1e-3))

    def forward(self, logmel: Tensor) -> Tensor:
        """logmel (B, frames, n_mels) -> audio_emb (B, frames // 4, d_audio)."""
        steps = logmel.shape[1] // self.frames_per_step
        x = logmel[:, : steps * self.frames_per_step]  # (B, 4*steps, M)
        x = ((x - self.mel_mean) / self.mel_std).transpose(1, 2)  # (B, M, 4*steps)
        x = F.gelu(self.conv1(x))  # (B, D, 2*steps)
        x = F.gelu(self.conv2(x))  # (B, D, steps)
        x = x + F.gelu(self.pos_conv(x))  # (B, D, steps)
        x = self.drop(x.transpose(1, 2))  # (B, steps, D)
        for layer in self.layers:
            x = layer(x)  # (B, steps, D)
        return self.norm(x)  # (B, steps, D)

    def classify(self, emb: Tensor, mask: Tensor | None = None) -> Tensor:
        """Utterance logits (B, n_classes) from audio_emb (B, steps, D), masked mean pooled."""
        if mask is None:
            mask = emb.new_ones(emb.shape[:2])
        return self.head(masked_mean(emb, mask))


class FaceEncoder(nn.Module):
    """Small VGG-style CNN for 48x48 grayscale faces.

    Four stages of 3x3 conv + BatchNorm + ReLU, each followed by 2x2 max pooling
    (48 -> 24 -> 12 -> 6 -> 3), global average pooling and a linear embedding ``face_emb``.
    :attr:`head` is the 7-class FER2013 classifier used for pre-training; :meth:`forward` returns
    both so the exported graph can carry ``face_logits`` as its second output.
    """

    def __init__(
        self,
        d_video: int = 128,
        widths: tuple[int, ...] = (32, 64, 128, 192),
        n_classes: int = 7,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(widths):
            convs = 1 if i == 0 else 2  # one conv at full resolution keeps the cost down
            for _ in range(convs):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
                layers.append(nn.ReLU(inplace=True))
                c_in = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.embed = nn.Linear(c_in, d_video)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_video, n_classes))

    def forward(self, face: Tensor) -> tuple[Tensor, Tensor]:
        """face (B, 1, S, S) -> (face_emb (B, d_video), face_logits (B, n_classes))."""
        x = self.features(face)  # (B, C, S/16, S/16)
        emb = self.embed(self.drop(x.mean(dim=(2, 3))))  # (B, d_video)
        return emb, self.head(emb)


class AudioEncoderGraph(nn.Module):
    """Export wrapper: ``logmel -> audio_emb`` (the classifier head is left out)."""

    def __init__(self, encoder: AudioEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, logmel: Tensor) -> Tensor:
        return self.encoder(logmel)
