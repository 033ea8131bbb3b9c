"""AuxFormer, as published and in the deploy form the SDK ships.

Sources (full texts in ``shared/papers/``; code notes in ``shared/notes/anchors.md`` B.1, B.2):

* Goncalves & Busso, "AuxFormer: Robust Approach to Audiovisual Emotion Recognition", ICASSP 2022
  (``auxformer-icassp2022.txt``);
* the journal extension, Goncalves & Busso, "Robust Audiovisual Emotion Recognition: Aligning
  Modalities, Capturing Temporal Information, and Handling Missing Features", IEEE TAC
  (``auxformer-journal-robust-av-emotion.txt``);
* code ``ilucasgoncalves/AuxFormer`` ``src/models.py``, ``modules/transformer.py``,
  ``src/training.py``.

* :class:`AuxFormer` (registry ``auxformer``): the published model, on fairseq's transformer
  (:class:`~train.models.layers.FairseqEncoder`); :func:`optimised_training_mask`, the paper's
  "optimized training".
* :class:`AuxFormerDeploy`: the deploy form, the bundle's fusion graph; :func:`auxformer_loss`;
  :class:`AuxFormerDeployModel` (registry ``auxformer_deploy``) puts it under the registry's
  contract.

AuxFormerDeploy keeps the paper's topology: cross-modal layers (audio queries over video
keys/values and the reverse), self-attention "memory" layers with a learned residual scale, two
auxiliary unimodal branches whose memory encoder is applied three times with shared weights and
whose head layers are shared between audio and video, and a loss of 1/3 per head. The deploy
changes are:

* head widths the inference engines fuse (``d_model / n_heads`` in 16..64 and a multiple of 8);
* key-padding masks from ``audio_mask`` / ``video_mask`` and no causal masks;
* a learned summary token prepended to each modality (always present, so every attention has at
  least one valid key and the outputs stay finite when a whole modality is masked) and masked
  mean pooling over the token and the present positions instead of the last time step;
* the final ``logits`` average the main head with the auxiliary heads of the *present* modalities
  (weights from the masks), so a missing modality's auxiliary head never contributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelSpec, PaperModel
from .layers import Block, FairseqEncoder, key_bias, last_valid, masked_mean, presence, sinusoid

Tensor = torch.Tensor


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

    def _embed(self, x: Tensor, proj: nn.Linear, tok: Tensor) -> Tensor:
        """x (B, T, d_in) -> [token; proj(x) * sqrt(d) + positions] (B, 1 + T, D)."""
        B, T = x.shape[0], x.shape[1]
        pos = torch.arange(T, device=x.device, dtype=torch.float32)  # (T,)
        h = proj(x) * math.sqrt(self.d_model) + sinusoid(pos, self.d_model, layout="halves")
        return self.embed_drop(torch.cat([tok.expand(B, -1, -1), h], dim=1))  # (B, 1+T, D)

    def forward(
        self,
        audio: Tensor,
        audio_mask: Tensor,
        video: Tensor,
        video_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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
    outputs: tuple[Tensor, ...],
    target: Tensor,
    audio_mask: Tensor,
    video_mask: Tensor,
    label_smoothing: float = 0.0,
) -> Tensor:
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


SPECS = (
    ModelSpec(
        "auxformer",
        AuxFormer,
        "av",
        "Goncalves & Busso, ICASSP 2022 + IEEE TAC journal; ilucasgoncalves/AuxFormer",
        paper=dict(d_model=130, n_heads=10, n_layers=5),
        smoke=dict(d_model=16, n_heads=2, n_layers=1, aux_hidden=(16, 8)),
    ),
    ModelSpec(
        "auxformer_deploy",
        AuxFormerDeployModel,
        "av",
        "train.models.AuxFormerDeploy (emosdk shipped fusion graph, AuxFormer deploy form)",
        paper=dict(d_model=64, n_heads=4, n_cross=2, n_mem=1),
        smoke=dict(d_model=16, n_heads=1, n_cross=1, n_mem=1, ff_mult=2),
    ),
)
"""Registry entries: the papers' hyper-parameters (``paper``) and a tiny config (``smoke``)."""
