"""The papers' audio-visual emotion models behind one forward contract.

Sources (full texts in ``shared/papers/``; code notes in ``shared/notes/anchors.md`` section B):

* ``auxformer``: Goncalves & Busso, "AuxFormer", ICASSP 2022, and the journal extension "Robust
  Audiovisual Emotion Recognition: Aligning Modalities, Capturing Temporal Information, and
  Handling Missing Features" (IEEE TAC); code ``ilucasgoncalves/AuxFormer`` ``src/models.py`` and
  ``modules/transformer.py`` (anchors B.1).
* ``auxformer_deploy``: :class:`train.models.AuxFormerDeploy`, the variant the SDK ships.
* ``vavl``: Goncalves, Leem, Lin, Sisman & Busso, "Versatile Audio-Visual Learning for Handling
  Single and Multi Modalities in Emotion Regression and Classification Tasks" (arXiv
  2305.07216); code ``ilucasgoncalves/VAVL`` ``net/avmodel.py``, ``net/modelWrapper.py``,
  ``train.py`` (anchors B.3).
* ``mult``: Tsai et al., "Multimodal Transformer for Unaligned Multimodal Language Sequences",
  ACL 2019, audio-visual form (text branch removed) as the AuxFormer journal's baseline 2; code
  ``yaohungt/Multimodal-Transformer`` (anchors B.4).
* ``parthasarathy``: Parthasarathy & Sundaram, "Detecting Expressions with Multimodal
  Transformers", IEEE SLT 2021 (anchors B.6).
* ``unimodal_audio`` / ``unimodal_video``: VAVL's baseline 4 (Sec. 4.5.4), a conformer encoder
  over one modality, average pooling and two fully connected layers.
* ``hussain``: Hussain, Wang, Bouaynaya, Fathallah-Shaykh & Mihaylova, "Deep Learning for Audio
  Visual Emotion Recognition" (FUSION 2022): PANNs Wavegram-Logmel-CNN14 audio network
  (Kong et al., TASLP 2020) and a visual network, fused at the intermediate level (anchors B.7).

Contract (all models)::

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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from train.models import MASK_NEG, Attention, AuxFormerDeploy, auxformer_loss, key_bias, masked_mean

Tensor = torch.Tensor

# -------------------------------------------------------------------------------------------
# Hussain et al. front-end constants (see :class:`Hussain`)
# -------------------------------------------------------------------------------------------
HUSSAIN_SAMPLE_RATE = 16000
"""Sample rate of the raw waveform samples carried in the hussain audio frames."""
HUSSAIN_N_MELS = 64
"""Log-mel bands at the start of each hussain audio frame (PANNs uses 64)."""
HUSSAIN_HOP = 160
"""Waveform samples per 10 ms frame at 16 kHz (the log-mel hop)."""
HUSSAIN_D_AUDIO = HUSSAIN_N_MELS + HUSSAIN_HOP
"""Width of a hussain audio frame: ``[log-mel (64) | the frame's 160 waveform samples]`` = 224."""
HUSSAIN_TIME_STRIDE = 32
"""Total time downsampling of the CNN14 trunk (five 2x poolings); inputs are padded internally to
a multiple of it with masked frames."""


# -------------------------------------------------------------------------------------------
# Shared helpers
# -------------------------------------------------------------------------------------------
def presence(mask: Tensor) -> Tensor:
    """(B,) 1.0 where a sequence mask (B, T) has at least one present position, else 0.0."""
    return (mask.sum(dim=1) > 0).to(mask.dtype)


def valid_length(mask: Tensor) -> Tensor:
    """(B,) index of the last present position + 1 (0 when none): the unpadded length."""
    t = torch.arange(1, mask.shape[1] + 1, device=mask.device, dtype=mask.dtype)  # (T,)
    return (mask * t).amax(dim=1)  # (B,)


def last_valid(h: Tensor, mask: Tensor) -> Tensor:
    """h (B, T, D) at the last present step of each sample -> (B, D); step 0 when none is."""
    idx = (valid_length(mask) - 1.0).clamp(min=0.0).long()  # (B,)
    return h.gather(1, idx.view(-1, 1, 1).expand(-1, 1, h.shape[2])).squeeze(1)  # (B, D)


def attention_bias(q_mask: Tensor, k_mask: Tensor, causal: bool) -> Tensor:
    """Additive attention bias: masked keys, plus fairseq's future mask when ``causal``.

    fairseq/MulT (``buffered_future_mask``) masks key ``j`` for query ``i`` when
    ``j > i + |S_kv - S_q|`` with the *padded* batch lengths. Here the offset uses each sample's
    unpadded lengths (:func:`valid_length`), so padding cannot move the mask.

    Returns:
        (B, 1, 1, Tk) without ``causal``, (B, 1, Tq, Tk) with it.
    """
    bias = key_bias(k_mask)  # (B, 1, 1, Tk)
    if not causal:
        return bias
    off = (valid_length(k_mask) - valid_length(q_mask)).abs()  # (B,)
    i = torch.arange(q_mask.shape[1], device=q_mask.device, dtype=q_mask.dtype)  # (Tq,)
    j = torch.arange(k_mask.shape[1], device=k_mask.device, dtype=k_mask.dtype)  # (Tk,)
    future = j[None, None, :] > i[None, :, None] + off[:, None, None]  # (B, Tq, Tk)
    return bias + (future.to(q_mask.dtype) * MASK_NEG)[:, None]  # (B, 1, Tq, Tk)


def fairseq_sinusoid(length: int, dim: int, device: torch.device) -> Tensor:
    """fairseq ``SinusoidalPositionalEmbedding`` table for positions 1..length: (length, dim).

    As in MulT/AuxFormer (padding_idx 0, so the first real position is 1; frequencies
    ``exp(-k * log(10000) / (dim/2 - 1))``; sin half then cos half; a zero column for odd dim).
    """
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -scale)  # (D/2,)
    pos = torch.arange(1, length + 1, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    ang = pos * freq[None, :]  # (T, D/2)
    table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)  # (T, 2*(D/2))
    if dim % 2:
        table = torch.cat([table, table.new_zeros(length, 1)], dim=1)  # (T, D)
    return table


def sinusoid_at(pos: Tensor, dim: int) -> Tensor:
    """Vaswani sinusoidal encoding of arbitrary (float) positions pos (P,) -> (P, dim)."""
    i = torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32)  # (D/2,)
    ang = pos[:, None].float() * torch.exp(i * (-math.log(10000.0) / dim))[None, :]  # (P, D/2)
    out = torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).reshape(pos.shape[0], -1)
    return out[:, :dim]  # (P, D), interleaved sin/cos


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


class MaskedBatchNorm(nn.Module):
    """BatchNorm over channel dim 1 whose training statistics skip masked positions.

    ``x`` (B, C, ...) and ``mask`` broadcastable to it with size 1 on dim 1 (e.g. (B, 1, T) or
    (B, 1, T, 1)). In eval mode it is a plain affine map with the running statistics (what the
    exported graphs contain). A training batch with no present position normalises with the
    running statistics and does not update them. Parameters and buffers have
    ``nn.BatchNorm*`` names, momentum 0.1, eps 1e-5.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _shape(self, x: Tensor) -> list[int]:
        return [1, x.shape[1]] + [1] * (x.dim() - 2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        shape = self._shape(x)
        if self.training:
            dims = [d for d in range(x.dim()) if d != 1]
            x32 = x.float()  # statistics in float32 (fp16 sums over B*T overflow under AMP)
            m = mask.float().expand_as(x32[:, :1])  # (B, 1, ...)
            n = m.sum()
            if float(n) > 1.0:
                mean = (x32 * m).sum(dim=dims) / n  # (C,)
                var = (((x32 - mean.view(shape)) ** 2) * m).sum(dim=dims) / n  # (C,)
                with torch.no_grad():
                    unbiased = var * n / (n - 1.0)
                    self.running_mean.lerp_(mean.detach(), self.momentum)
                    self.running_var.lerp_(unbiased.detach(), self.momentum)
                y = (x32 - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
                return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)
        running_mean, running_var = self.running_mean, self.running_var
        if self.training:  # a later pass updates the buffers in place: autograd keeps copies
            running_mean, running_var = running_mean.clone(), running_var.clone()
        scale = self.weight / torch.sqrt(running_var + self.eps)  # (C,)
        shift = self.bias - running_mean * scale  # (C,)
        return (x * scale.view(shape) + shift.view(shape)).to(x.dtype)


def _xavier_linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    """fairseq ``Linear``: xavier-uniform weight, zero bias."""
    m = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_uniform_(m.weight)
    if bias:
        nn.init.zeros_(m.bias)
    return m


# -------------------------------------------------------------------------------------------
# Base class
# -------------------------------------------------------------------------------------------
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


# -------------------------------------------------------------------------------------------
# fairseq / MulT transformer (AuxFormer and MulT)
# -------------------------------------------------------------------------------------------
class FairseqLayer(nn.Module):
    """MulT/AuxFormer ``TransformerEncoderLayer`` (pre-LN, ``normalize_before=True``).

    One LayerNorm (``layer_norms[0]``) normalises the queries and the keys/values, ReLU FFN
    ``d -> 4d -> d`` with fairseq's xavier init. With ``scalar=True`` (AuxFormer's "learnable
    scaling weights", ``alpha ~ U(0, 1)``) both sub-blocks compute
    ``residual * alpha + branch * (1 - alpha)`` (AuxFormer ``modules/transformer.py``).
    """

    def __init__(
        self,
        d: int,
        n_heads: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        scalar: bool = False,
    ) -> None:
        super().__init__()
        self.attn = Attention(d, n_heads, attn_dropout)
        for lin in (self.attn.q, self.attn.kv, self.attn.out):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.fc1 = _xavier_linear(d, 4 * d)
        self.fc2 = _xavier_linear(4 * d, d)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout
        self.alpha = nn.Parameter(torch.rand(1)) if scalar else None

    def _mix(self, residual: Tensor, branch: Tensor) -> Tensor:
        branch = F.dropout(branch, p=self.res_dropout, training=self.training)
        if self.alpha is None:
            return residual + branch
        return residual * self.alpha + branch * (1.0 - self.alpha)

    def forward(self, x: Tensor, kv: Tensor | None, bias: Tensor) -> Tensor:
        """x (B, Tq, D); kv (B, Tk, D) or None (self-attention); bias (B, 1, 1|Tq, Tk)."""
        h = self.layer_norms[0](x)  # (B, Tq, D)
        src = h if kv is None else self.layer_norms[0](kv)  # (B, Tk, D)
        x = self._mix(x, self.attn(h, src, bias))  # (B, Tq, D)
        h = F.relu(self.fc1(self.layer_norms[1](x)))  # (B, Tq, 4D)
        h = self.fc2(F.dropout(h, p=self.relu_dropout, training=self.training))  # (B, Tq, D)
        return self._mix(x, h)


class FairseqEncoder(nn.Module):
    """MulT/AuxFormer ``TransformerEncoder``: scale, positions, dropout, layers, final LN.

    The input (and the keys/values of a cross-modal encoder) is multiplied by ``sqrt(d)``, gets
    fairseq sinusoidal positions when ``pos_emb`` (zero at masked positions, as fairseq zeroes
    the positions of its padding), then ``embed_dropout``. Causal masking follows
    :func:`attention_bias`.
    """

    def __init__(
        self,
        d: int,
        n_heads: int,
        n_layers: int,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        causal: bool = False,
        scalar: bool = False,
        pos_emb: bool = False,
    ) -> None:
        super().__init__()
        self.d, self.causal, self.pos_emb, self.embed_dropout = d, causal, pos_emb, embed_dropout
        self.layers = nn.ModuleList(
            FairseqLayer(d, n_heads, attn_dropout, relu_dropout, res_dropout, scalar)
            for _ in range(n_layers)
        )
        self.layer_norm = nn.LayerNorm(d)

    def _embed(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x * math.sqrt(self.d)  # (B, T, D)
        if self.pos_emb:
            pos = fairseq_sinusoid(x.shape[1], self.d, x.device)  # (T, D)
            x = x + pos[None] * mask[..., None]
        return F.dropout(x, p=self.embed_dropout, training=self.training)

    def forward(
        self, x: Tensor, mask: Tensor, kv: Tensor | None = None, kv_mask: Tensor | None = None
    ) -> Tensor:
        """x (B, Tq, D) with mask (B, Tq); kv (B, Tk, D), kv_mask (B, Tk) -> (B, Tq, D)."""
        h = self._embed(x, mask)  # (B, Tq, D)
        if kv is None or kv_mask is None:
            src, bias = None, attention_bias(mask, mask, self.causal)
        else:
            src, bias = self._embed(kv, kv_mask), attention_bias(mask, kv_mask, self.causal)
        for layer in self.layers:
            h = layer(h, src, bias)  # (B, Tq, D)
        return self.layer_norm(h)


class AuxFormer(PaperModel):
    """AuxFormer (ICASSP 2022 Sec. 4.2, journal Sec. 3; code ``src/models.py::AUXFORMER``).

    Topology (code): ``trans_a_with_v`` (audio queries over video keys/values, positions,
    attention dropout 0) -> ``trans_a_mem`` (self-attention with learnable scalar alpha) -> last
    step; the same for video; concat (2d) -> residual MLP ``proj2(drop(relu(proj1(x)))) + x`` ->
    ``out_layer``. Auxiliary branches apply ``a_mem`` (resp. ``v_mem``) **three times with the
    same weights** to the projected input, take the last step and go through
    ``proj_aux1 (d->512) -> proj_aux2 (512->256) -> proj_aux3 (256->d)`` + residual ->
    ``out_layer_aux``; those four layers are **shared** by the audio and the video branch.

    Paper size (ICASSP 2022 Sec. 5.1 and journal Sec. 4.3, argparse defaults of ``main.py``):
    d_model 130 (the ICASSP code's ``d_v``; the refreshed code's 50 goes with 50-d EMOCA inputs),
    5 layers, 10 heads (head_dim 13), attn_dropout 0.1 (0 in the cross-modal encoders),
    relu_dropout 0.1, res_dropout 0.1, embed_dropout 0.25, out_dropout 0.2, causal mask on
    (``--attn_mask`` is ``store_false``). Training (not set here): Adam lr 7.25e-4, batch 32,
    clip 0.8, ReduceLROnPlateau(patience 5, factor 0.1). With ``d_audio=130, d_video=4096,
    n_classes=4`` the model has exactly 7,054,748 parameters, the journal's Table 5 count; with
    ``aux=False`` (baseline 1) 4,776,994, also Table 5.

    Deviations:

    * the audio input always goes through a 1x1 projection without bias (``conv_1d_a``). The
      ICASSP code feeds 130-d audio as is; the journal's parameter count includes a 130x130
      audio projection, and our inputs can have any width.
    * "last time step": the public code takes ``h[-1]``, the last *padded* step. We take the last
      *present* step of each sample (:func:`last_valid`), so padding does not decide the token.
      A sample with no present step uses step 0 (a constant of the zeroed input).
    * masks: masked keys are excluded and the causal offset uses unpadded lengths
      (:func:`attention_bias`); the code has no padding masks.
    * prediction ``out["logits"]`` = mean of the three heads (code ``training.py``), also when
      a modality is missing (as in the code; :class:`train.models.AuxFormerDeploy` drops it).

    Outputs: ``logits`` (B, C), ``logits_av``, ``logits_audio``, ``logits_video`` (B, C).
    Loss: cross-entropy of each head, weights 1/3 (``loss_weights``).
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        n_classes: int,
        d_model: int = 130,
        n_heads: int = 10,
        n_layers: int = 5,
        attn_dropout: float = 0.1,
        relu_dropout: float = 0.1,
        res_dropout: float = 0.1,
        embed_dropout: float = 0.25,
        out_dropout: float = 0.2,
        causal: bool = True,
        aux: bool = True,
        aux_hidden: tuple[int, int] = (512, 256),
        loss_weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        soft_labels: bool = False,
    ) -> None:
        super().__init__(n_classes, soft_labels)
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        self.aux, self.out_dropout, self.loss_weights = aux, out_dropout, loss_weights
        d = d_model
        self.conv_1d_a = nn.Linear(d_audio, d, bias=False)  # Conv1d(k=1, bias=False)
        self.conv_1d_v = nn.Linear(d_video, d, bias=False)

        def enc(cross: bool = False, scalar: bool = False) -> FairseqEncoder:
            return FairseqEncoder(
                d,
                n_heads,
                n_layers,
                attn_dropout=0.0 if cross else attn_dropout,
                relu_dropout=relu_dropout,
                res_dropout=res_dropout,
                embed_dropout=embed_dropout,
                causal=causal,
                scalar=scalar,
                pos_emb=cross,
            )

        self.trans_a_with_v = enc(cross=True)
        self.trans_v_with_a = enc(cross=True)
        self.trans_a_mem = enc(scalar=True)
        self.trans_v_mem = enc(scalar=True)
        self.proj1 = nn.Linear(2 * d, 2 * d)
        self.proj2 = nn.Linear(2 * d, 2 * d)
        self.out_layer = nn.Linear(2 * d, n_classes)
        if aux:
            self.a_mem = enc()
            self.v_mem = enc()
            self.proj_aux1 = nn.Linear(d, aux_hidden[0])
            self.proj_aux2 = nn.Linear(aux_hidden[0], aux_hidden[1])
            self.proj_aux3 = nn.Linear(aux_hidden[1], d)
            self.out_layer_aux = nn.Linear(d, n_classes)

    def _aux_head(self, h: Tensor) -> Tensor:
        """Shared auxiliary MLP with residual: (B, D) -> (B, C)."""
        p = self.out_dropout
        z = F.dropout(F.relu(self.proj_aux1(h)), p=p, training=self.training)  # (B, 512)
        z = F.dropout(F.relu(self.proj_aux2(z)), p=p, training=self.training)  # (B, 256)
        return self.out_layer_aux(self.proj_aux3(z) + h)  # (B, C)

    def forward(
        self, audio: Tensor, audio_mask: Tensor, video: Tensor, video_mask: Tensor
    ) -> dict[str, Tensor]:
        a = self.conv_1d_a(audio * audio_mask[..., None])  # (B, Ta, D)
        v = self.conv_1d_v(video * video_mask[..., None])  # (B, Tv, D)
        h_av = self.trans_a_with_v(a, audio_mask, v, video_mask)  # (B, Ta, D)
        rep_a = last_valid(self.trans_a_mem(h_av, audio_mask), audio_mask)  # (B, D)
        h_va = self.trans_v_with_a(v, video_mask, a, audio_mask)  # (B, Tv, D)
        rep_v = last_valid(self.trans_v_mem(h_va, video_mask), video_mask)  # (B, D)
        av = torch.cat([rep_a, rep_v], dim=1)  # (B, 2D)
        z = F.dropout(F.relu(self.proj1(av)), p=self.out_dropout, training=self.training)
        logits_av = self.out_layer(self.proj2(z) + av)  # (B, C)
        out = {"logits_av": logits_av}
        if not self.aux:
            out["logits"] = logits_av
            return out
        ha = a
        for _ in range(3):  # same weights three times (code: h_a1, h_a2, h_a3)
            ha = self.a_mem(ha, audio_mask)  # (B, Ta, D)
        hv = v
        for _ in range(3):
            hv = self.v_mem(hv, video_mask)  # (B, Tv, D)
        out["logits_audio"] = self._aux_head(last_valid(ha, audio_mask))  # (B, C)
        out["logits_video"] = self._aux_head(last_valid(hv, video_mask))  # (B, C)
        out["logits"] = (logits_av + out["logits_audio"] + out["logits_video"]) / 3.0
        return out

    def _loss(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        if not self.aux:
            return self.ce(out["logits_av"], batch).mean()
        w_av, w_a, w_v = self.loss_weights
        return (
            w_av * self.ce(out["logits_av"], batch).mean()
            + w_a * self.ce(out["logits_audio"], batch).mean()
            + w_v * self.ce(out["logits_video"], batch).mean()
        )


def optimised_training_mask(
    batch: Mapping[str, Tensor],
    generator: torch.Generator | None = None,
    p_audio: float = 0.2,
    p_video: float = 0.2,
    per_sample: bool = False,
) -> dict[str, Tensor]:
    """AuxFormer's "optimized training": drop the audio or the video of some training data.

    ``per_sample=False`` (public code, ``src/training.py``): one draw ``r ~ U(0, 1)`` per batch;
    ``r < p_audio`` zeroes the audio of the whole batch, ``p_audio <= r < p_audio + p_video`` the
    video. ``per_sample=True`` (journal Sec. 3.6: "we randomly split each batch in three
    groups"): the same draw for each sample. A dropped modality gets zero features and an
    all-zero mask. Returns a new dict (the input is not modified); other keys are passed on.
    """
    out = dict(batch)
    B = batch["audio"].shape[0]
    device = batch["audio"].device
    n = B if per_sample else 1
    r = torch.rand(n, generator=generator).to(device)  # (n,)
    drop_a = (r < p_audio).float().expand(B)  # (B,)
    drop_v = ((r >= p_audio) & (r < p_audio + p_video)).float().expand(B)
    for key, drop in (("audio", drop_a), ("video", drop_v)):
        keep = 1.0 - drop  # (B,)
        out[key] = batch[key] * keep[:, None, None]
        out[f"{key}_mask"] = batch[f"{key}_mask"] * keep[:, None]
    return out


# -------------------------------------------------------------------------------------------
# MulT (audio-visual)
# -------------------------------------------------------------------------------------------
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


# -------------------------------------------------------------------------------------------
# Conformer (VAVL and the unimodal baselines)
# -------------------------------------------------------------------------------------------
def rel_shift(x: Tensor) -> Tensor:
    """(B, H, T, 2T-1) scores over relative positions T-1 .. -(T-1) -> (B, H, T, T).

    Output ``[i, j]`` is the input at relative position ``i - j`` (Transformer-XL / ESPnet
    ``RelPositionMultiHeadedAttention.rel_shift``: pad one column, reshape, drop one row).
    """
    B, H, T, P = x.shape
    padded = torch.cat([x.new_zeros(B, H, T, 1), x], dim=-1)  # (B, H, T, P+1)
    padded = padded.reshape(B, H, P + 1, T)  # (B, H, 2T, T)
    return padded[:, :, 1:].reshape(B, H, T, P)[:, :, :, :T]  # (B, H, T, T)


class RelPosMHSA(nn.Module):
    """Multi-head self-attention with relative sinusoidal positions (Conformer Sec. 2.1).

    ``scores = ((q + u) k^T + rel_shift((q + v) (W_pos r)^T)) / sqrt(d_head)`` with ``r`` the
    sinusoid of the relative distance ``i - j`` (Transformer-XL), masked keys biased by
    ``MASK_NEG``. Scores depend on ``i - j`` only, so appended padding changes nothing.
    """

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d {d} must be a multiple of n_heads {n_heads}")
        self.h, self.dk, self.dropout = n_heads, d // n_heads, dropout
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.pos = nn.Linear(d, d, bias=False)
        self.u_bias = nn.Parameter(torch.zeros(n_heads, self.dk))
        self.v_bias = nn.Parameter(torch.zeros(n_heads, self.dk))
        nn.init.xavier_uniform_(self.u_bias)
        nn.init.xavier_uniform_(self.v_bias)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x (B, T, D), bias (B, 1, 1, T) -> (B, T, D)."""
        B, T, D = x.shape
        H, dk = self.h, self.dk
        q = self.q(x).reshape(B, T, H, dk)  # (B, T, H, dk)
        k = self.k(x).reshape(B, T, H, dk).transpose(1, 2)  # (B, H, T, dk)
        v = self.v(x).reshape(B, T, H, dk).transpose(1, 2)  # (B, H, T, dk)
        rel = torch.arange(T - 1, -T, -1, device=x.device, dtype=torch.float32)  # (2T-1,)
        p = self.pos(sinusoid_at(rel, D).to(x.dtype)).reshape(-1, H, dk).transpose(0, 1)
        ac = (q + self.u_bias).transpose(1, 2) @ k.transpose(-1, -2)  # (B, H, T, T)
        bd = rel_shift((q + self.v_bias).transpose(1, 2) @ p.transpose(-1, -2)[None])
        att = torch.softmax((ac + bd) / math.sqrt(dk) + bias, dim=-1)  # (B, H, T, T)
        att = F.dropout(att, p=self.dropout, training=self.training)
        return self.out((att @ v).transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class ConformerBlock(nn.Module):
    """Conformer block (Gulati et al. 2020; sooftware/conformer layout).

    ``x + 1/2 FFN(x)`` -> ``+ MHSA`` (relative positions) -> ``+ Conv`` -> ``+ 1/2 FFN`` ->
    LayerNorm. FFN: LN, Linear(d, 4d), Swish, Dropout, Linear(4d, d), Dropout. Conv module: LN,
    pointwise Conv(d, 2d), GLU, depthwise Conv(k=31, no bias), BatchNorm, Swish, pointwise
    Conv(d, d), Dropout. The depthwise convolution sees masked positions as zeros and the
    BatchNorm is :class:`MaskedBatchNorm` (masked statistics in training).
    """

    def __init__(
        self, d: int, n_heads: int, ff_mult: int = 4, kernel: int = 31, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.ff1, self.ff2 = (
            nn.Sequential(
                nn.LayerNorm(d),
                nn.Linear(d, ff_mult * d),
                nn.SiLU(),
                nn.Dropout(dropout),
                nn.Linear(ff_mult * d, d),
                nn.Dropout(dropout),
            )
            for _ in range(2)
        )
        self.ln_att = nn.LayerNorm(d)
        self.att = RelPosMHSA(d, n_heads, dropout)
        self.ln_conv = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d, bias=False)
        self.bn = MaskedBatchNorm(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.ln_out = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, bias: Tensor) -> Tensor:
        """x (B, T, D), mask (B, T), bias (B, 1, 1, T) -> (B, T, D)."""
        x = x + 0.5 * self.ff1(x)
        x = x + self.drop(self.att(self.ln_att(x), bias))
        m = mask[:, None, :]  # (B, 1, T)
        c = F.glu(self.pw1(self.ln_conv(x).transpose(1, 2)), dim=1) * m  # (B, D, T)
        c = F.silu(self.bn(self.dw(c), m))  # (B, D, T)
        x = x + self.drop(self.pw2(c).transpose(1, 2))  # (B, T, D)
        x = x + 0.5 * self.ff2(x)
        return self.ln_out(x)


class Conformer(nn.Module):
    """Conformer encoder: Linear(input_dim -> encoder_dim) + Dropout, then the blocks.

    sooftware/conformer puts a 4x Conv2d subsampling before the input projection; VAVL needs
    ``output + input`` over its shared encoder (same length), and its ``Conformer`` class is not
    published (anchors B.3), so there is no subsampling here.
    """

    def __init__(
        self,
        input_dim: int,
        encoder_dim: int,
        n_layers: int,
        n_heads: int = 8,
        ff_mult: int = 4,
        kernel: int = 31,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_projection = nn.Linear(input_dim, encoder_dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            ConformerBlock(encoder_dim, n_heads, ff_mult, kernel, dropout) for _ in range(n_layers)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, input_dim), mask (B, T) -> (B, T, encoder_dim)."""
        bias = key_bias(mask)  # (B, 1, 1, T)
        h = self.drop(self.input_projection(x))  # (B, T, D)
        for layer in self.layers:
            h = layer(h, mask, bias)
        return h


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


# -------------------------------------------------------------------------------------------
# Parthasarathy & Sundaram
# -------------------------------------------------------------------------------------------
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
        pos = sinusoid_at(torch.arange(x.shape[1], device=x.device), self.d)  # (T, D)
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


# -------------------------------------------------------------------------------------------
# Hussain et al. (PANNs Wavegram-Logmel-CNN14 + visual network)
# -------------------------------------------------------------------------------------------
def hussain_audio_frames(logmel: Tensor, waveform: Tensor) -> Tensor:
    """Audio sequence for :class:`Hussain`: ``[log-mel | waveform samples]`` per 10 ms frame.

    Args:
        logmel: (..., T, 64) log-mel frames (10 ms hop).
        waveform: (..., N) the 16 kHz waveform; zero-padded or trimmed to ``160 T`` samples.

    Returns:
        (..., T, HUSSAIN_D_AUDIO): frame ``t`` = log-mel frame ``t`` and samples
        ``[160 t, 160 t + 160)``.
    """
    T = logmel.shape[-2]
    n = T * HUSSAIN_HOP
    wave = F.pad(waveform, (0, max(0, n - waveform.shape[-1])))[..., :n]  # (..., 160 T)
    wave = wave.reshape(*wave.shape[:-1], T, HUSSAIN_HOP)  # (..., T, 160)
    return torch.cat([logmel, wave.to(logmel.dtype)], dim=-1)  # (..., T, 224)


def _repeat_mask(mask: Tensor, k: int) -> Tensor:
    """Frame mask (B, T) -> (B, T * k), each frame's value repeated k times."""
    B, T = mask.shape
    return mask[:, :, None].expand(B, T, k).reshape(B, T * k)


class ConvPreWavBlock(nn.Module):
    """PANNs ``ConvPreWavBlock``: two Conv1d k=3 (dilation 1, 2), BN, ReLU, max pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=2, dilation=2, bias=False)
        self.bn1, self.bn2 = MaskedBatchNorm(c_out), MaskedBatchNorm(c_out)

    def forward(self, x: Tensor, m: Tensor, pool: int) -> Tensor:
        """x (B, C, N), m (B, 1, N) -> (B, C', N / pool)."""
        x = F.relu(self.bn1(self.conv1(x), m)) * m
        x = F.relu(self.bn2(self.conv2(x), m)) * m
        return F.max_pool1d(x, pool)


class ConvBlock(nn.Module):
    """PANNs ``ConvBlock``: two 3x3 Conv2d, BN, ReLU, average pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1, self.bn2 = MaskedBatchNorm(c_out), MaskedBatchNorm(c_out)

    def forward(self, x: Tensor, m: Tensor, pool: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """x (B, C, T, F), m (B, 1, T, 1) -> pooled x and its mask (present if any is)."""
        x = F.relu(self.bn1(self.conv1(x), m)) * m
        x = F.relu(self.bn2(self.conv2(x), m)) * m
        if pool != (1, 1):
            x = F.avg_pool2d(x, pool)
            m = F.max_pool2d(m, (pool[0], 1))
        return x, m


class Hussain(PaperModel):
    """Hussain et al. 2022 (Sec. III, Fig. 2): Wavegram-Logmel-CNN14 audio + visual network.

    **Audio input.** The Wavegram-Logmel CNN needs the raw waveform, so each 10 ms frame of the
    audio sequence is ``[log-mel (HUSSAIN_N_MELS = 64) | the HUSSAIN_HOP = 160 waveform samples
    of that frame at 16 kHz]``, ``d_audio = HUSSAIN_D_AUDIO = 224``. Frame ``t`` holds samples
    ``[160 t, 160 t + 160)`` of the clip; concatenated over time they give back the waveform.
    :func:`hussain_audio_frames` builds the sequence from a log-mel and a waveform.

    **Audio network** (PANNs ``Wavegram_Logmel_Cnn14``, Kong et al. 2020): Wavegram branch
    ``pre_conv0`` (Conv1d 1->64, k 11, stride 5) + BN, ``pre_block1..3`` (64, 128, 128 channels,
    dilations 1 and 2, max pooling), reshape 128 channels to 4 groups x 32 "frequency bins",
    ``pre_block4`` (ConvBlock 4->64, pool (2, 1)); log-mel branch ``bn0`` over the mel bins,
    ``conv_block1`` (1->64, pool 2x2); the two concatenated (128 channels) -> ``conv_block2..6``
    (128, 256, 512, 1024, 2048; pool 2x2, last 1x1; dropout 0.2) -> mean over frequency ->
    max + mean over time -> dropout 0.5 -> ``fc1`` (2048, ReLU) = the 2048-d embedding ``A``.
    The paper fine-tunes it with "three additional FC layers" (sizes not given: 2048 -> 512 ->
    256 -> C here, ReLU, dropout 0.5) for the audio loss ``L_a``, binary cross-entropy
    (Eq. 1) against the one-hot label.

    **Visual network.** The paper's Faster R-CNN (ResNet-50) face detector runs upstream; the
    video sequence holds per-frame face embeddings. Each frame goes through
    ``Linear(d_video -> d_visual) + ReLU + dropout``, the frames are mean-pooled over the
    present ones into ``V``, and a Linear layer classifies it (``L_v`` = ``L_cls``, cross-entropy;
    the bounding-box term ``L_bb`` belongs to the detector and is not part of this model).

    **Fusion** (Sec. III-C, "intermediate level fusion"): ``F = [A, V]`` -> FC layers
    (``2048 + d_visual -> 512 -> C``) -> ``logits_av``; ``out["logits"] = logits_av``.
    Loss (Eq. 4): ``L_(a,v) + alpha L_a + beta L_v`` with cross-entropy for ``L_(a,v)``;
    alpha = beta = 1 (not given in the paper).

    Deviations:

    * PANNs runs at 32 kHz (5 * 4 * 4 * 4 = 320 samples per Wavegram frame, 10 ms). At 16 kHz
      the last Wavegram pooling is 2 instead of 4 (5 * 4 * 4 * 2 = 160 samples = one 10 ms
      log-mel frame), so both branches stay frame-aligned.
    * masks: masked frames are zeroed, every convolution output is re-masked, BatchNorm uses
      masked statistics, the time mean is over present frames, and the input is padded inside
      to a multiple of ``HUSSAIN_TIME_STRIDE`` (32) frames, so padding does not change pooling
      windows. PANNs's SpecAugment and mixup are training-data augmentation and not part of
      this module.
    * no weights are loaded: PANNs' AudioSet checkpoint (32 kHz) does not match the 16 kHz
      Wavegram path; ``load_state_dict`` of compatible tensors is up to the caller.
    """

    def __init__(
        self,
        d_audio: int,
        d_video: int,
        n_classes: int,
        wave_channels: tuple[int, int, int] = (64, 128, 128),
        wave_groups: int = 4,
        conv_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048),
        d_embed: int = 2048,
        audio_hidden: tuple[int, int] = (512, 256),
        d_visual: int = 512,
        fusion_hidden: int = 512,
        dropout: float = 0.2,
        out_dropout: float = 0.5,
        alpha: float = 1.0,
        beta: float = 1.0,
        soft_labels: bool = False,
    ) -> None:
        super().__init__(n_classes, soft_labels)
        if d_audio != HUSSAIN_D_AUDIO:
            raise ValueError(
                f"hussain needs d_audio = {HUSSAIN_D_AUDIO} "
                f"(log-mel {HUSSAIN_N_MELS} + {HUSSAIN_HOP} waveform samples per frame)"
            )
        half = HUSSAIN_N_MELS // 2
        if wave_channels[2] != wave_groups * half:
            raise ValueError(f"wave_channels[2] must be wave_groups * {half}")
        if len(conv_channels) != 6:
            raise ValueError("conv_channels needs six widths (conv_block1..6)")
        self.wave_groups, self.dropout, self.out_dropout = wave_groups, dropout, out_dropout
        self.alpha, self.beta = alpha, beta
        self.pre_conv0 = nn.Conv1d(1, wave_channels[0], 11, stride=5, padding=5, bias=False)
        self.pre_bn0 = MaskedBatchNorm(wave_channels[0])
        self.pre_block1 = ConvPreWavBlock(wave_channels[0], wave_channels[0])
        self.pre_block2 = ConvPreWavBlock(wave_channels[0], wave_channels[1])
        self.pre_block3 = ConvPreWavBlock(wave_channels[1], wave_channels[2])
        self.pre_block4 = ConvBlock(wave_groups, conv_channels[0])
        self.bn0 = MaskedBatchNorm(HUSSAIN_N_MELS)
        self.conv_block1 = ConvBlock(1, conv_channels[0])
        c = conv_channels
        self.conv_block2 = ConvBlock(2 * c[0], c[1])
        self.conv_block3 = ConvBlock(c[1], c[2])
        self.conv_block4 = ConvBlock(c[2], c[3])
        self.conv_block5 = ConvBlock(c[3], c[4])
        self.conv_block6 = ConvBlock(c[4], c[5])
        self.fc1 = nn.Linear(c[5], d_embed)
        self.audio_head = nn.Sequential(
            nn.Linear(d_embed, audio_hidden[0]),
            nn.ReLU(),
            nn.Dropout(out_dropout),
            nn.Linear(audio_hidden[0], audio_hidden[1]),
            nn.ReLU(),
            nn.Dropout(out_dropout),
            nn.Linear(audio_hidden[1], n_classes),
        )
        self.visual_frame = nn.Sequential(
            nn.Linear(d_video, d_visual), nn.ReLU(), nn.Dropout(out_dropout)
        )
        self.visual_head = nn.Linear(d_visual, n_classes)
        self.fusion = nn.Sequential(
            nn.Linear(d_embed + d_visual, fusion_hidden),
            nn.ReLU(),
            nn.Dropout(out_dropout),
            nn.Linear(fusion_hidden, n_classes),
        )

    def _audio_embedding(self, audio: Tensor, mask: Tensor) -> Tensor:
        """audio (B, T, 224), mask (B, T) -> A (B, d_embed)."""
        pad = (-audio.shape[1]) % HUSSAIN_TIME_STRIDE
        audio = F.pad(audio * mask[..., None], (0, 0, 0, pad))  # (B, T', 224), T' % 32 == 0
        mask = F.pad(mask, (0, pad))  # (B, T')
        B, T = mask.shape
        drop = self.dropout
        # Wavegram branch: waveform (B, 1, 160 T) -> (B, C0, 32 T) -> 8 T -> 2 T -> T
        wave = audio[:, :, HUSSAIN_N_MELS:].reshape(B, 1, T * HUSSAIN_HOP)
        m32 = _repeat_mask(mask, 32)[:, None]  # (B, 1, 32 T)
        a1 = F.relu(self.pre_bn0(self.pre_conv0(wave), m32)) * m32  # (B, C0, 32 T)
        a1 = self.pre_block1(a1, m32, 4)  # (B, C0, 8 T)
        a1 = self.pre_block2(a1, _repeat_mask(mask, 8)[:, None], 4)  # (B, C1, 2 T)
        a1 = self.pre_block3(a1, _repeat_mask(mask, 2)[:, None], 2)  # (B, C2, T)
        a1 = a1.reshape(B, self.wave_groups, -1, T).transpose(2, 3)  # (B, G, T, 32)
        m = mask[:, None, :, None]  # (B, 1, T, 1)
        a1, _ = self.pre_block4(a1, m, (2, 1))  # (B, c0, T/2, 32)
        # log-mel branch: bn0 over the mel bins, conv_block1
        x = audio[:, :, :HUSSAIN_N_MELS].transpose(1, 2)[:, :, :, None]  # (B, 64, T, 1)
        x = (self.bn0(x, m) * m).transpose(1, 3)  # (B, 1, T, 64)
        x, m = self.conv_block1(x, m, (2, 2))  # (B, c0, T/2, 32), m (B, 1, T/2, 1)
        x = F.dropout(torch.cat([x, a1], dim=1), p=drop, training=self.training)  # (B, 2c0, ..)
        for block in (self.conv_block2, self.conv_block3, self.conv_block4, self.conv_block5):
            x, m = block(x, m, (2, 2))
            x = F.dropout(x, p=drop, training=self.training)
        x, m = self.conv_block6(x, m, (1, 1))  # (B, c5, T/32, 2)
        x = F.dropout(x, p=drop, training=self.training).mean(dim=3)  # (B, c5, T/32)
        m = m[:, 0, :, 0]  # (B, T/32)
        # max over time: values are >= 0 after ReLU and masked steps are 0, so a plain max is
        # the max over the present steps (0 when none is)
        x = x.amax(dim=2) + masked_mean(x.transpose(1, 2), m)  # (B, c5)
        x = F.dropout(x, p=self.out_dropout, training=self.training)
        return F.relu(self.fc1(x))  # (B, d_embed)

    def forward(
        self, audio: Tensor, audio_mask: Tensor, video: Tensor, video_mask: Tensor
    ) -> dict[str, Tensor]:
        emb_a = self._audio_embedding(audio, audio_mask)  # (B, d_embed)
        logits_audio = self.audio_head(
            F.dropout(emb_a, p=self.out_dropout, training=self.training)
        )  # (B, C)
        frames = self.visual_frame(video * video_mask[..., None])  # (B, Tv, d_visual)
        emb_v = masked_mean(frames, video_mask)  # (B, d_visual)
        logits_video = self.visual_head(emb_v)  # (B, C)
        logits_av = self.fusion(torch.cat([emb_a, emb_v], dim=1))  # (B, C)
        return {
            "logits": logits_av,
            "logits_av": logits_av,
            "logits_audio": logits_audio,
            "logits_video": logits_video,
        }

    def _loss(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        if self.soft_labels:
            target = batch["soft"]
        else:
            target = F.one_hot(batch["label"], self.n_classes).to(out["logits"].dtype)
        l_a = F.binary_cross_entropy_with_logits(out["logits_audio"], target)  # Eq. 1
        l_v = self.ce(out["logits_video"], batch).mean()
        l_av = self.ce(out["logits_av"], batch).mean()
        return l_av + self.alpha * l_a + self.beta * l_v  # Eq. 4


# -------------------------------------------------------------------------------------------
# The shipped deploy variant, under the same contract
# -------------------------------------------------------------------------------------------
class AuxFormerDeployModel(PaperModel):
    """:class:`train.models.AuxFormerDeploy` (the shipped fusion graph) under this contract.

    ``self.net`` is the AuxFormerDeploy module itself (its state dict loads into the bundle's
    class with the ``net.`` prefix removed). Loss: :func:`train.models.auxformer_loss` (1/3 per
    head, an auxiliary term dropped for samples without that modality). ``logits`` average the
    main head with the present modalities' auxiliary heads. Paper size = the shipped
    configuration (d_model 64, 4 heads, 2 cross-modal + 1 memory layer per direction).
    """

    def __init__(
        self, d_audio: int, d_video: int, n_classes: int, soft_labels: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(n_classes, soft_labels)
        self.net = AuxFormerDeploy(d_audio, d_video, n_classes, **kwargs)

    def forward(
        self, audio: Tensor, audio_mask: Tensor, video: Tensor, video_mask: Tensor
    ) -> dict[str, Tensor]:
        logits, l_av, l_a, l_v = self.net(audio, audio_mask, video, video_mask)
        return {"logits": logits, "logits_av": l_av, "logits_audio": l_a, "logits_video": l_v}

    def _loss(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        if self.soft_labels:
            pa, pv = presence(batch["audio_mask"]), presence(batch["video_mask"])
            loss = (
                self.ce(out["logits_av"], batch)
                + pa * self.ce(out["logits_audio"], batch)
                + pv * self.ce(out["logits_video"], batch)
            )
            return (loss / 3.0).mean()
        outs = (out["logits"], out["logits_av"], out["logits_audio"], out["logits_video"])
        return auxformer_loss(outs, batch["label"], batch["audio_mask"], batch["video_mask"])


# -------------------------------------------------------------------------------------------
# Registry
# -------------------------------------------------------------------------------------------
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


_CONFORMER_SMOKE = dict(d_proj=8, d_model=16, n_heads=2, kernel=5, ff_mult=2)

MODELS: dict[str, ModelSpec] = {
    "auxformer": ModelSpec(
        "auxformer",
        AuxFormer,
        "av",
        "Goncalves & Busso, ICASSP 2022 + IEEE TAC journal; ilucasgoncalves/AuxFormer",
        paper=dict(d_model=130, n_heads=10, n_layers=5),
        smoke=dict(d_model=16, n_heads=2, n_layers=1, aux_hidden=(16, 8)),
    ),
    "auxformer_deploy": ModelSpec(
        "auxformer_deploy",
        AuxFormerDeployModel,
        "av",
        "train.models.AuxFormerDeploy (emosdk shipped fusion graph, AuxFormer deploy form)",
        paper=dict(d_model=64, n_heads=4, n_cross=2, n_mem=1),
        smoke=dict(d_model=16, n_heads=1, n_cross=1, n_mem=1, ff_mult=2),
    ),
    "vavl": ModelSpec(
        "vavl",
        VAVL,
        "av",
        "Goncalves et al., VAVL, arXiv 2305.07216; ilucasgoncalves/VAVL",
        paper=dict(d_proj=50, d_model=512, n_heads=8),
        smoke=dict(
            **_CONFORMER_SMOKE,
            n_layers_audio=1,
            n_layers_video=1,
            n_layers_shared=1,
            head_hidden=(16, 8),
        ),
    ),
    "mult": ModelSpec(
        "mult",
        MulT,
        "av",
        "Tsai et al., MulT, ACL 2019 (audio-visual); yaohungt/Multimodal-Transformer",
        paper=dict(d_model=30, n_heads=5, n_layers=5),
        smoke=dict(d_model=8, n_heads=2, n_layers=1),
    ),
    "parthasarathy": ModelSpec(
        "parthasarathy",
        Parthasarathy,
        "av",
        "Parthasarathy & Sundaram, Detecting expressions with multimodal transformers, SLT 2021",
        paper=dict(d_model=512, n_heads=4, n_layers=6, d_ff=2048),
        smoke=dict(d_model=16, n_heads=2, n_layers=1, d_ff=32),
    ),
    "unimodal_audio": ModelSpec(
        "unimodal_audio",
        lambda **kw: Unimodal(modality="audio", **kw),
        "audio",
        "VAVL baseline 4 (unimodal conformer), audio",
        paper=dict(d_proj=50, d_model=512, n_heads=8, n_layers=5),
        smoke=dict(**_CONFORMER_SMOKE, n_layers=1, hidden=8),
    ),
    "unimodal_video": ModelSpec(
        "unimodal_video",
        lambda **kw: Unimodal(modality="video", **kw),
        "video",
        "VAVL baseline 4 (unimodal conformer), video",
        paper=dict(d_proj=50, d_model=512, n_heads=8, n_layers=5),
        smoke=dict(**_CONFORMER_SMOKE, n_layers=1, hidden=8),
    ),
    "hussain": ModelSpec(
        "hussain",
        Hussain,
        "av",
        "Hussain et al., Deep Learning for Audio Visual Emotion Recognition, FUSION 2022; "
        "PANNs Wavegram-Logmel-CNN14 (Kong et al. 2020)",
        paper=dict(),
        smoke=dict(
            wave_channels=(4, 8, 32),
            wave_groups=1,
            conv_channels=(4, 8, 8, 8, 8, 8),
            d_embed=16,
            audio_hidden=(16, 8),
            d_visual=8,
            fusion_hidden=8,
        ),
    ),
}
"""All models under the contract, by name."""


def build_model(
    name: str, d_audio: int, d_video: int, n_classes: int, size: str = "paper", **overrides: Any
) -> PaperModel:
    """Build a registered model.

    Args:
        name: a key of :data:`MODELS`.
        d_audio, d_video: input feature widths (``hussain`` needs ``HUSSAIN_D_AUDIO``).
        n_classes: number of classes.
        size: ``"paper"`` (the papers' hyper-parameters) or ``"smoke"`` (tiny, 1 layer, for CI).
        **overrides: constructor arguments replacing the size's config (e.g. ``n_layers=2``,
            ``regression=True`` for ``vavl``, ``soft_labels=True``, ``causal=False``).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    if size not in ("paper", "smoke"):
        raise ValueError(f"size must be 'paper' or 'smoke', not {size!r}")
    spec = MODELS[name]
    config = dict(spec.paper if size == "paper" else spec.smoke)
    config.update(overrides)
    model = spec.factory(d_audio=d_audio, d_video=d_video, n_classes=n_classes, **config)
    model.modalities = spec.modalities
    return model


def count_parameters(model: nn.Module) -> int:
    """All parameters (trainable or frozen by the current stage)."""
    return sum(p.numel() for p in model.parameters())
