"""Export the three bundle graphs from trained (or random) modules and check them.

Used by ``train/train_seed.py`` for the default model and by
``tests/fixtures/make_fixture_bundle.py`` for the tiny random test bundle.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import torch

from emosdk.export.onnx import export_onnx
from emosdk.features.audio import LogMelParams
from emosdk.features.face import FaceParams
from emosdk.models.bundle import StreamParams

from .models import AudioEncoder, AudioEncoderGraph, AuxFormerDeploy, FaceEncoder

logger = logging.getLogger("emosdk")

AUDIO_IN, AUDIO_OUT = ["logmel"], ["audio_emb"]
FACE_IN, FACE_OUT = ["face"], ["face_emb", "face_logits"]
FUSION_IN = ["audio", "audio_mask", "video", "video_mask"]
FUSION_OUT = ["logits", "logits_av", "logits_audio", "logits_video"]


def fusion_inputs(
    batch: int, ta: int, tv: int, d_audio: int, d_video: int, audio_on: bool, video_on: bool
) -> tuple[torch.Tensor, ...]:
    """Random fusion inputs; a modality that is off has an all-zero mask and zeroed features."""
    g = torch.Generator().manual_seed(batch * 100_003 + ta * 101 + tv)
    am = torch.full((batch, ta), float(audio_on))
    vm = torch.full((batch, tv), float(video_on))
    a = torch.randn(batch, ta, d_audio, generator=g) * am[..., None]
    v = torch.randn(batch, tv, d_video, generator=g) * vm[..., None]
    return a, am, v, vm


def export_graphs(
    audio_encoder: AudioEncoder,
    face_encoder: FaceEncoder,
    fusion: AuxFormerDeploy,
    out_dir: str | Path,
    audio: LogMelParams,
    face: FaceParams,
    stream: StreamParams,
    opset: int = 18,
) -> dict[str, Path]:
    """Export ``audio_encoder.onnx``, ``face_encoder.onnx`` and ``fusion.onnx`` into ``out_dir``.

    Every graph is checked against torch with onnxruntime at several shapes (see
    :func:`emosdk.export.onnx.export_onnx`), including windows with one modality fully masked.

    Returns:
        Role -> ONNX path, ready for :func:`emosdk.export.bundle.write_bundle`.
    """
    if stream.audio_frames_per_step != AudioEncoder.frames_per_step:
        raise ValueError("stream.audio_frames_per_step must match the audio encoder's subsampling")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for m in (audio_encoder, face_encoder, fusion):
        m.eval()
    frames = audio.num_frames(int(round(stream.window_s * audio.sample_rate)))
    steps = frames // stream.audio_frames_per_step
    tv = int(round(stream.window_s * stream.video_fps))
    d_audio = audio_encoder.norm.normalized_shape[0]
    d_video = face_encoder.embed.out_features
    g = torch.Generator().manual_seed(0)
    paths = {}
    paths["audio_encoder"] = export_onnx(
        AudioEncoderGraph(audio_encoder),
        (torch.randn(2, frames, audio.n_mels, generator=g) - 6.0,),
        out / "audio_encoder.onnx",
        AUDIO_IN,
        AUDIO_OUT,
        {"logmel": {0: "B", 1: "frames"}},
        opset=opset,
        check_inputs=[
            (torch.randn(1, 4, audio.n_mels, generator=g),),
            (torch.randn(3, 301, audio.n_mels, generator=g),),
        ],
        output_dim_names={"audio_emb": {0: "B", 1: "steps"}},
    )
    paths["face_encoder"] = export_onnx(
        face_encoder,
        (torch.randn(2, 1, face.size, face.size, generator=g),),
        out / "face_encoder.onnx",
        FACE_IN,
        FACE_OUT,
        {"face": {0: "B"}},
        opset=opset,
        check_inputs=[(torch.randn(1, 1, face.size, face.size, generator=g),)],
    )
    checks = [
        fusion_inputs(b, ta, t, d_audio, d_video, a_on, v_on)
        for b, ta, t, a_on, v_on in [
            (1, 1, 1, True, True),
            (3, 300, 30, True, True),
            (1, steps, tv, True, False),
            (3, steps, tv, False, True),
        ]
    ]
    paths["fusion"] = export_onnx(
        fusion,
        fusion_inputs(2, steps, tv, d_audio, d_video, True, True),
        out / "fusion.onnx",
        FUSION_IN,
        FUSION_OUT,
        {
            "audio": {0: "B", 1: "Ta"},
            "audio_mask": {0: "B", 1: "Ta"},
            "video": {0: "B", 1: "Tv"},
            "video_mask": {0: "B", 1: "Tv"},
        },
        opset=opset,
        check_inputs=checks,
    )
    return paths


def sweep_fusion(path: str | Path, d_audio: int, d_video: int) -> int:
    """Run a fusion ONNX graph over Ta = 1..300 and Tv = 1..30 at batch 1 and 3.

    Every length of each axis is paired with a length of the other, and each pair runs with both
    modalities, audio fully masked and video fully masked.

    Returns:
        Number of runs.

    Raises:
        AssertionError: on a wrong output shape or a non-finite logit.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pairs = {(ta, 1 + ta % 30) for ta in range(1, 301)}
    pairs |= {(ta, tv) for tv in range(1, 31) for ta in (1, 74, 300)}
    n = 0
    for (ta, tv), b, (a_on, v_on) in itertools.product(
        sorted(pairs), (1, 3), ((True, True), (False, True), (True, False))
    ):
        feeds = dict(
            zip(
                FUSION_IN,
                (t.numpy() for t in fusion_inputs(b, ta, tv, d_audio, d_video, a_on, v_on)),
            )
        )
        logits = sess.run(["logits"], feeds)[0]
        assert logits.shape[0] == b, (ta, tv, b, logits.shape)
        assert np.isfinite(logits).all(), f"non-finite logits at B={b} Ta={ta} Tv={tv}"
        n += 1
    return n
