"""Torch modules behind the three graphs of a model bundle (see docs/bundle.md).

* :class:`AudioEncoder`: ``logmel`` (B, frames, n_mels) -> ``audio_emb`` (B, frames // 4, d_audio).
* :class:`FaceEncoder`: ``face`` (B, 1, 48, 48) -> ``face_emb`` (B, d_video) (+ ``face_logits``).
* :class:`AuxFormerDeploy`: ``audio, audio_mask, video, video_mask`` -> ``logits`` (B, n_labels)
  (+ ``logits_av, logits_audio, logits_video``).

AuxFormerDeploy follows AuxFormer (Goncalves & Busso, ICASSP 2022; notes in
``shared/notes/anchors.md`` B.1): cross-modal layers (audio queries over video keys/values and the
reverse), self-attention "memory" layers with a learned residual scale, two auxiliary unimodal
branches whose memory encoder is applied three times with shared weights and whose head layers
are shared between audio and video, and a loss of 1/3 per head. The deploy changes are:

* head widths the inference engines fuse (``d_model / n_heads`` in 16..64 and a multiple of 8);
* key-padding masks from ``audio_mask`` / ``video_mask`` and no causal masks;
* a learned summary token prepended to each modality (always present, so every attention has at
  least one valid key and the outputs stay finite when a whole modality is masked) and masked
  mean pooling over the token and the present positions instead of the last time step;
* the final ``logits`` average the main head with the auxiliary heads of the *present* modalities
  (weights from the masks), so a missing modality's auxiliary head never contributes.

Only plain torch ops are used (Linear, Conv, LayerNorm, ``F.scaled_dot_product_attention``) so the
torch 2.13 dynamo ONNX exporter handles every module with dynamic batch and sequence lengths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_NEG = -1.0e4
"""Additive attention bias of a missing key (finite and fp16-safe; exp(-1e4) is exactly 0)."""


def sinusoid(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal position table of shape (length, dim), computed on the fly (export-friendly)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    i = torch.arange(dim // 2, device=device, dtype=torch.float32)[None, :]  # (1, D/2)
    ang = pos * torch.exp(i * (-2.0 * math.log(10000.0) / dim))  # (T, D/2)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)  # (T, D)


def key_bias(mask: torch.Tensor) -> torch.Tensor:
    """Additive attention bias (B, 1, 1, T) from a presence mask (B, T) of 1.0 / 0.0."""
    return ((1.0 - mask) * MASK_NEG)[:, None, None, :]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T, D) over the positions where mask (B, T) is 1; zeros if none are."""
    w = mask.unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)  # (B, D)


class Attention(nn.Module):
    """Multi-head attention on F.scaled_dot_product_attention with an additive key bias."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from x (B, Tq, D) over kv (B, Tk, D); bias is (B, 1, 1, Tk) or None."""
        B, Tq, D = x.shape
        Tk = kv.shape[1]
        H, hd = self.n_heads, self.head_dim
        q = self.q(x).reshape(B, Tq, H, hd).transpose(1, 2)  # (B, H, Tq, hd)
        k, v = self.kv(kv).reshape(B, Tk, 2, H, hd).permute(2, 0, 3, 1, 4)  # 2 x (B, H, Tk, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Tq, hd)
        return self.out(y.transpose(1, 2).reshape(B, Tq, D))  # (B, Tq, D)


class Block(nn.Module):
    """Pre-LN transformer block: (cross- or self-) attention then a ReLU feed-forward network.

    With ``scalar=True`` the residual and the branch are mixed by a learned scalar alpha
    (``residual * alpha + branch * (1 - alpha)``), AuxFormer's "learnable scaling" of its memory
    layers; otherwise the branch is added to the residual.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ff_mult: int = 4,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        cross: bool = False,
        scalar: bool = False,
    ) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_kv = nn.LayerNorm(d_model) if cross else None
        self.attn = Attention(d_model, n_heads, attn_dropout)
        self.ln_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * d_model, d_model),
        )
        self.drop = nn.Dropout(dropout)
        self.alpha = nn.Parameter(torch.rand(1)) if scalar else None

    def _mix(self, res: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        branch = self.drop(branch)
        if self.alpha is None:
            return res + branch
        return res * self.alpha + branch * (1.0 - self.alpha)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, Tq, D); kv (B, Tk, D) for cross-attention or None for self-attention."""
        h = self.ln_q(x)
        src = h if kv is None else self.ln_kv(kv)
        x = self._mix(x, self.attn(h, src, bias))  # (B, Tq, D)
        return self._mix(x, self.ff(self.ln_ff(x)))  # (B, Tq, D)


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
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-mel mean and std (n_mels,) of the training log-mel frames."""
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std.clamp(min=1e-3))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
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

    def classify(self, emb: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
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

    def forward(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """face (B, 1, S, S) -> (face_emb (B, d_video), face_logits (B, n_classes))."""
        x = self.features(face)  # (B, C, S/16, S/16)
        emb = self.embed(self.drop(x.mean(dim=(2, 3))))  # (B, d_video)
        return emb, self.head(emb)


class AuxFormerDeploy(nn.Module):
    """AuxFormer audio-visual fusion in deploy form (see the module docstring).

    Args:
        d_audio: width of the audio encoder's steps.
        d_video: width of the face encoder's embedding.
        n_classes: number of output labels.
        d_model: model width; ``d_model / n_heads`` must be a multiple of 8 in 16..64.
        n_heads: attention heads.
        n_cross: cross-modal layers per direction.
        n_mem: self-attention memory layers per direction (and per auxiliary encoder).
        aux_repeats: times each auxiliary memory encoder is applied with shared weights.
        ff_mult: feed-forward expansion.
        dropout: residual / feed-forward dropout.
        embed_dropout: dropout on the projected inputs.
        out_dropout: dropout in the output MLPs.
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        n_classes: int = 6,
        d_model: int = 64,
        n_heads: int = 4,
        n_cross: int = 2,
        n_mem: int = 1,
        aux_repeats: int = 3,
        ff_mult: int = 4,
        dropout: float = 0.1,
        embed_dropout: float = 0.1,
        out_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        head_dim = d_model // n_heads
        if d_model % n_heads or head_dim % 8 or not 16 <= head_dim <= 64:
            raise ValueError(f"head_dim {d_model}/{n_heads} must be a multiple of 8 in 16..64")
        self.d_model = d_model
        self.aux_repeats = aux_repeats
        self.proj_a = nn.Linear(d_audio, d_model, bias=False)  # AuxFormer: 1x1 conv, no bias
        self.proj_v = nn.Linear(d_video, d_model, bias=False)
        self.tok_a = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)  # always-present tokens
        self.tok_v = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.embed_drop = nn.Dropout(embed_dropout)

        def stack(n: int, cross: bool = False, scalar: bool = False) -> nn.ModuleList:
            return nn.ModuleList(
                Block(d_model, n_heads, ff_mult, dropout, cross=cross, scalar=scalar)
                for _ in range(n)
            )

        self.a_with_v = stack(n_cross, cross=True)  # audio queries, video keys/values
        self.v_with_a = stack(n_cross, cross=True)  # video queries, audio keys/values
        self.a_mem = stack(n_mem, scalar=True)
        self.v_mem = stack(n_mem, scalar=True)
        self.ln_a = nn.LayerNorm(d_model)
        self.ln_v = nn.LayerNorm(d_model)
        self.av_proj1 = nn.Linear(2 * d_model, 2 * d_model)
        self.av_proj2 = nn.Linear(2 * d_model, 2 * d_model)
        self.out_av = nn.Linear(2 * d_model, n_classes)
        # auxiliary unimodal branches: own memory encoders, head layers shared by both
        self.aux_a_mem = stack(n_mem, scalar=True)
        self.aux_v_mem = stack(n_mem, scalar=True)
        self.ln_aux_a = nn.LayerNorm(d_model)
        self.ln_aux_v = nn.LayerNorm(d_model)
        self.aux_head = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.ReLU(),
            nn.Dropout(out_dropout),
            nn.Linear(4 * d_model, 2 * d_model),
            nn.ReLU(),
            nn.Dropout(out_dropout),
            nn.Linear(2 * d_model, d_model),
        )
        self.out_aux = nn.Linear(d_model, n_classes)
        self.out_drop = nn.Dropout(out_dropout)

    def _embed(self, x: torch.Tensor, proj: nn.Linear, tok: torch.Tensor) -> torch.Tensor:
        """x (B, T, d_in) -> [token; proj(x) * sqrt(d) + positions] (B, 1 + T, D)."""
        B, T = x.shape[0], x.shape[1]
        h = proj(x) * math.sqrt(self.d_model) + sinusoid(T, self.d_model, x.device)  # (B, T, D)
        return self.embed_drop(torch.cat([tok.expand(B, -1, -1), h], dim=1))  # (B, 1+T, D)

    def forward(
        self,
        audio: torch.Tensor,
        audio_mask: torch.Tensor,
        video: torch.Tensor,
        video_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fuse one window.

        Args:
            audio: (B, Ta, d_audio) audio encoder steps.
            audio_mask: (B, Ta) 1.0 where a step is present.
            video: (B, Tv, d_video) face embeddings.
            video_mask: (B, Tv) 1.0 where a frame is present.

        Returns:
            logits (B, C): main head averaged with the present modalities' auxiliary heads;
            logits_av, logits_audio, logits_video (B, C): the three heads, for the loss.
        """
        B = audio.shape[0]
        one = audio_mask.new_ones(B, 1)
        a_valid = torch.cat([one, audio_mask], dim=1)  # (B, 1+Ta)
        v_valid = torch.cat([one, video_mask], dim=1)  # (B, 1+Tv)
        a_bias, v_bias = key_bias(a_valid), key_bias(v_valid)  # (B, 1, 1, 1+T)
        a = self._embed(audio * audio_mask.unsqueeze(-1), self.proj_a, self.tok_a)  # (B, 1+Ta, D)
        v = self._embed(video * video_mask.unsqueeze(-1), self.proj_v, self.tok_v)  # (B, 1+Tv, D)

        # cross-modal layers, then the memory layers over each modality's own sequence
        ha = a
        for blk in self.a_with_v:
            ha = blk(ha, kv=v, bias=v_bias)  # (B, 1+Ta, D)
        for blk in self.a_mem:
            ha = blk(ha, bias=a_bias)
        hv = v
        for blk in self.v_with_a:
            hv = blk(hv, kv=a, bias=a_bias)  # (B, 1+Tv, D)
        for blk in self.v_mem:
            hv = blk(hv, bias=v_bias)
        av = torch.cat(
            [masked_mean(self.ln_a(ha), a_valid), masked_mean(self.ln_v(hv), v_valid)], dim=-1
        )  # (B, 2D)
        av = av + self.av_proj2(self.out_drop(F.relu(self.av_proj1(av))))
        logits_av = self.out_av(av)  # (B, C)

        # auxiliary unimodal branches (memory encoder applied aux_repeats times, shared weights)
        ua, uv = a, v
        for _ in range(self.aux_repeats):
            for blk in self.aux_a_mem:
                ua = blk(ua, bias=a_bias)  # (B, 1+Ta, D)
            for blk in self.aux_v_mem:
                uv = blk(uv, bias=v_bias)  # (B, 1+Tv, D)
        ua = masked_mean(self.ln_aux_a(ua), a_valid)  # (B, D)
        uv = masked_mean(self.ln_aux_v(uv), v_valid)  # (B, D)
        logits_audio = self.out_aux(ua + self.aux_head(ua))  # (B, C)
        logits_video = self.out_aux(uv + self.aux_head(uv))  # (B, C)

        pa = (audio_mask.sum(dim=1, keepdim=True) > 0).to(audio.dtype)  # (B, 1)
        pv = (video_mask.sum(dim=1, keepdim=True) > 0).to(audio.dtype)  # (B, 1)
        logits = (logits_av + pa * logits_audio + pv * logits_video) / (1.0 + pa + pv)
        return logits, logits_av, logits_audio, logits_video


def auxformer_loss(
    outputs: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    audio_mask: torch.Tensor,
    video_mask: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """AuxFormer loss: cross-entropy on the main and both auxiliary heads, 1/3 each.

    An auxiliary head's term is dropped for samples whose modality is fully masked (there is
    nothing for it to predict from, and inference excludes it there too).

    Args:
        outputs: the model's (logits, logits_av, logits_audio, logits_video).
        target: (B,) class indices.
        audio_mask, video_mask: (B, Ta), (B, Tv) presence masks given to the model.
        label_smoothing: passed to the cross-entropy.
    """
    _, logits_av, logits_a, logits_v = outputs
    pa = (audio_mask.sum(dim=1) > 0).float()  # (B,)
    pv = (video_mask.sum(dim=1) > 0).float()
    ce = dict(target=target, reduction="none", label_smoothing=label_smoothing)
    loss = (
        F.cross_entropy(logits_av, **ce)
        + pa * F.cross_entropy(logits_a, **ce)
        + pv * F.cross_entropy(logits_v, **ce)
    )
    return (loss / 3.0).mean()


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class AudioEncoderGraph(nn.Module):
    """Export wrapper: ``logmel -> audio_emb`` (the classifier head is left out)."""

    def __init__(self, encoder: AudioEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.encoder(logmel)
