"""The models: the bundle's seed modules and the papers' audio-visual emotion models.

One file per paper, each model beside its paper's hyper-parameters and citation:

* :mod:`~train.models.seed`: :class:`AudioEncoder`, :class:`FaceEncoder` and
  :class:`AudioEncoderGraph`, the bundle's encoders (``python -m train.train_seed``);
* :mod:`~train.models.auxformer`: AuxFormer (Goncalves & Busso, ICASSP 2022 and IEEE TAC) and its
  deploy form :class:`AuxFormerDeploy`, the bundle's fusion graph;
* :mod:`~train.models.vavl`: VAVL (Goncalves et al., arXiv 2305.07216);
* :mod:`~train.models.mult`: MulT, audio-visual (Tsai et al., ACL 2019);
* :mod:`~train.models.parthasarathy`: Parthasarathy & Sundaram (IEEE SLT 2021);
* :mod:`~train.models.unimodal`: the unimodal conformer baselines (VAVL's baseline 4);
* :mod:`~train.models.hussain`: Hussain et al. (FUSION 2022), PANNs Wavegram-Logmel-CNN14;
* :mod:`~train.models.layers`: the layers they share; :mod:`~train.models.base`: the forward
  contract (:class:`PaperModel`) and :class:`ModelSpec`; :mod:`~train.models.registry`:
  :data:`MODELS` and :func:`build_model`.

The registered models (``build_model(name, d_audio, d_video, n_classes, size="paper")``) share one
forward contract, described in :mod:`train.models.base`.
"""

from .auxformer import (
    AuxFormer,
    AuxFormerDeploy,
    AuxFormerDeployModel,
    auxformer_loss,
    optimised_training_mask,
)
from .base import ModelSpec, PaperModel
from .hussain import (
    HUSSAIN_D_AUDIO,
    HUSSAIN_HOP,
    HUSSAIN_N_MELS,
    HUSSAIN_SAMPLE_RATE,
    HUSSAIN_TIME_STRIDE,
    Hussain,
    hussain_audio_frames,
)
from .layers import MASK_NEG, Attention, Block, count_params, key_bias, masked_mean, sinusoid
from .mult import MulT
from .parthasarathy import Parthasarathy
from .registry import MODELS, build_model
from .seed import AudioEncoder, AudioEncoderGraph, FaceEncoder
from .unimodal import Unimodal
from .vavl import VAVL

__all__ = [
    "HUSSAIN_D_AUDIO",
    "HUSSAIN_HOP",
    "HUSSAIN_N_MELS",
    "HUSSAIN_SAMPLE_RATE",
    "HUSSAIN_TIME_STRIDE",
    "MASK_NEG",
    "MODELS",
    "VAVL",
    "Attention",
    "AudioEncoder",
    "AudioEncoderGraph",
    "AuxFormer",
    "AuxFormerDeploy",
    "AuxFormerDeployModel",
    "Block",
    "FaceEncoder",
    "Hussain",
    "ModelSpec",
    "MulT",
    "PaperModel",
    "Parthasarathy",
    "Unimodal",
    "auxformer_loss",
    "build_model",
    "count_params",
    "hussain_audio_frames",
    "key_bias",
    "masked_mean",
    "optimised_training_mask",
    "sinusoid",
]
