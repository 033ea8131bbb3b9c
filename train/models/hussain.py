"""Hussain, Wang, Bouaynaya, Fathallah-Shaykh & Mihaylova, "Deep Learning for Audio Visual Emotion
Recognition", FUSION 2022 (``shared/papers/hussain-deep-learning-av-emotion.txt``; notes:
``shared/notes/anchors.md`` B.7): the PANNs Wavegram-Logmel-CNN14 audio network (Kong et al.,
"PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern Recognition", IEEE/ACM
TASLP 2020) and a visual network, fused at the intermediate level.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelSpec, PaperModel
from .layers import MaskedBatchNorm, masked_mean

Tensor = torch.Tensor

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


SPECS = (
    ModelSpec(
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
)
"""Registry entry: the paper's hyper-parameters (``paper``) and a tiny config (``smoke``)."""
