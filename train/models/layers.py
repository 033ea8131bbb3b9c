"""Layers shared by the models of this package (one file per paper beside it).

* masks and positions: :data:`MASK_NEG`, :func:`key_bias`, :func:`masked_mean`, :func:`presence`,
  :func:`valid_length`, :func:`last_valid`, :func:`attention_bias`, :func:`sinusoid`;
* :class:`Attention` (``F.scaled_dot_product_attention`` with an additive key bias) and
  :class:`Block` (pre-LN block of the seed encoders and AuxFormerDeploy);
* fairseq's transformer as the MulT and AuxFormer codes use it: :class:`FairseqLayer`,
  :class:`FairseqEncoder`;
* the conformer of VAVL and the unimodal baselines: :func:`rel_shift`, :class:`RelPosMHSA`,
  :class:`ConformerBlock`, :class:`Conformer`;
* :class:`MaskedBatchNorm` (conformer, Hussain's CNN14) and :func:`count_params`.

Masks are (B, T) tensors of 1.0 = present, 0.0 = missing or padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor

MASK_NEG = -1.0e4
"""Additive attention bias of a missing key (finite and fp16-safe; exp(-1e4) is exactly 0)."""


# -------------------------------------------------------------------------------------------
# Masks and positions
# -------------------------------------------------------------------------------------------


def key_bias(mask: Tensor) -> Tensor:
    """Additive attention bias (B, 1, 1, T) from a presence mask (B, T) of 1.0 / 0.0."""
    return ((1.0 - mask) * MASK_NEG)[:, None, None, :]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x (B, T, D) over the positions where mask (B, T) is 1; zeros if none are."""
    w = mask.unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)  # (B, D)


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


SINUSOID_LAYOUTS = ("interleaved", "halves")
SINUSOID_SPACINGS = ("vaswani", "fairseq")


def sinusoid(
    positions: Tensor, dim: int, layout: str = "interleaved", spacing: str = "vaswani"
) -> Tensor:
    """Sinusoidal encoding of positions (P,) (any real values) -> (P, dim) float32.

    The models use three tables that differ (by up to 2.0 per value), so each names its own:

    * ``layout="interleaved", spacing="vaswani"`` (Vaswani et al. 2017; Parthasarathy &
      Sundaram, the conformer's relative positions): columns ``sin(p w_0), cos(p w_0),
      sin(p w_1), ...`` with ``w_k = 10000^(-2k/dim)``; an odd ``dim`` ends with a sine.
    * ``layout="halves", spacing="fairseq"`` (fairseq ``SinusoidalPositionalEmbedding``, as the
      MulT and AuxFormer codes use it): all sines, then all cosines, with
      ``w_k = 10000^(-k/(dim//2 - 1))``, k < dim // 2, and a zero column for an odd ``dim``.
      fairseq numbers positions from 1 (0 is its padding index): pass ``1..T``.
    * ``layout="halves", spacing="vaswani"`` (AuxFormerDeploy, positions ``0..T-1``).

    Computed on the fly from ``positions``, so an exported graph keeps dynamic lengths.
    """
    if layout not in SINUSOID_LAYOUTS:
        raise ValueError(f"layout must be one of {SINUSOID_LAYOUTS}, not {layout!r}")
    if spacing not in SINUSOID_SPACINGS:
        raise ValueError(f"spacing must be one of {SINUSOID_SPACINGS}, not {spacing!r}")
    n = (dim + 1) // 2 if layout == "interleaved" else dim // 2
    k = torch.arange(n, device=positions.device, dtype=torch.float32)  # (n,)
    if spacing == "vaswani":
        freq = torch.exp(k * (-2.0 * math.log(10000.0) / dim))  # (n,)
    else:
        freq = torch.exp(k * -(math.log(10000.0) / max(dim // 2 - 1, 1)))  # (n,)
    ang = positions.float()[:, None] * freq[None, :]  # (P, n)
    P = positions.shape[0]
    if layout == "interleaved":
        return torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).reshape(P, -1)[:, :dim]
    table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)  # (P, 2n)
    if dim % 2:
        table = torch.cat([table, table.new_zeros(P, 1)], dim=-1)  # (P, dim)
    return table


# -------------------------------------------------------------------------------------------
# Attention and the pre-LN block (seed encoders, AuxFormerDeploy)
# -------------------------------------------------------------------------------------------


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

    def forward(self, x: Tensor, kv: Tensor, bias: Tensor | None = None) -> Tensor:
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

    def _mix(self, res: Tensor, branch: Tensor) -> Tensor:
        branch = self.drop(branch)
        if self.alpha is None:
            return res + branch
        return res * self.alpha + branch * (1.0 - self.alpha)

    def forward(self, x: Tensor, kv: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """x (B, Tq, D); kv (B, Tk, D) for cross-attention or None for self-attention."""
        h = self.ln_q(x)
        src = h if kv is None else self.ln_kv(kv)
        x = self._mix(x, self.attn(h, src, bias))  # (B, Tq, D)
        return self._mix(x, self.ff(self.ln_ff(x)))  # (B, Tq, D)


# -------------------------------------------------------------------------------------------
# Batch norm with masked statistics
# -------------------------------------------------------------------------------------------


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


# -------------------------------------------------------------------------------------------
# fairseq / MulT transformer (AuxFormer and MulT)
# -------------------------------------------------------------------------------------------


def _xavier_linear(d_in: int, d_out: int, bias: bool = True) -> nn.Linear:
    """fairseq ``Linear``: xavier-uniform weight, zero bias."""
    m = nn.Linear(d_in, d_out, bias=bias)
    nn.init.xavier_uniform_(m.weight)
    if bias:
        nn.init.zeros_(m.bias)
    return m


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
            pos = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float32)
            pos = sinusoid(pos, self.d, layout="halves", spacing="fairseq")  # (T, D)
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
        p = self.pos(sinusoid(rel, D).to(x.dtype)).reshape(-1, H, dk).transpose(0, 1)
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


CONFORMER_SMOKE = dict(d_proj=8, d_model=16, n_heads=2, kernel=5, ff_mult=2)
"""Tiny conformer widths of the ``size="smoke"`` configs (VAVL, unimodal baselines)."""


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters: those that train in the current stage (``requires_grad``), or all of
    them with ``trainable_only=False`` (a model's size, whatever stage it is in)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
