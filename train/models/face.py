"""The face encoder of issue 17: a small ResNet for 48x48 grayscale faces, built for CPU cost.

:class:`FaceResNet` keeps the bundle's face-encoder contract of :class:`train.models.FaceEncoder`:
``face`` (B, 1, 48, 48) -> (``face_emb`` (B, d_video), ``face_logits`` (B, 7)). Where the seed's
VGG runs two full convolutions at 24x24 and 12x12 (84 M multiply-adds per face), this net puts
one cheap 16-channel convolution at full resolution, halves the resolution with a strided
convolution, and spends its parameters at 6x6 and 3x3 where they cost little: the default
widths (32, 64, 128, 256) with blocks (1, 1, 2, 1) hold 1.55 M parameters at 44 M
multiply-adds, about half the seed's training time per epoch on the shared CPU.

Only Conv2d, BatchNorm2d, ReLU, Linear and a mean: the dynamo ONNX exporter folds the batch
norms and onnxruntime runs the graph with a dynamic batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BN, identity or 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = None
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class FaceResNet(nn.Module):
    """Small ResNet face encoder.

    Layout for 48x48 input and the defaults: stem 3x3 conv 1 -> 16 at 48x48; then one stage per
    width, the first block of each halving the resolution (24, 12, 6, 3); global average pooling;
    dropout; a linear embedding ``face_emb``; :attr:`head` (ReLU, dropout, linear) gives the
    7 FER2013 ``face_logits`` from the embedding, as in :class:`train.models.FaceEncoder`.

    Args:
        d_video: embedding size (the fusion model's video input).
        stem: channels of the full-resolution stem convolution.
        widths: channels per stage.
        blocks: basic blocks per stage.
        n_classes: classes of the pre-training head.
        dropout: before the embedding and before the head.
    """

    def __init__(
        self,
        d_video: int = 128,
        stem: int = 16,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        blocks: tuple[int, ...] = (1, 1, 2, 1),
        n_classes: int = 7,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or min(blocks) < 1:
            raise ValueError(f"widths {widths} and blocks {blocks} must pair up, blocks >= 1")
        layers: list[nn.Module] = [
            nn.Conv2d(1, stem, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        ]
        c = stem
        for w, n in zip(widths, blocks, strict=True):
            for j in range(n):
                layers.append(BasicBlock(c, w, 2 if j == 0 else 1))
                c = w
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.embed = nn.Linear(c, d_video)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_video, n_classes))
        self.config = {
            "d_video": d_video,
            "stem": stem,
            "widths": list(widths),
            "blocks": list(blocks),
            "n_classes": n_classes,
            "dropout": dropout,
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # no zero-init of the blocks' last batch norm (the ImageNet trick): measured here it held
        # the training loss at the class prior for 500+ steps; with unit init it falls at once

    def forward(self, face: Tensor) -> tuple[Tensor, Tensor]:
        """face (B, 1, S, S) -> (face_emb (B, d_video), face_logits (B, n_classes))."""
        x = self.features(face)  # (B, C, S/2^stages, S/2^stages)
        emb = self.embed(self.drop(x.mean(dim=(2, 3))))  # (B, d_video)
        return emb, self.head(emb)


def multiply_adds(model: nn.Module, size: int = 48) -> int:
    """Multiply-adds of one forward pass on a (1, 1, size, size) face (convolutions + linears)."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple, out: Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    model.train(was)
    for h in hooks:
        h.remove()
    return total
