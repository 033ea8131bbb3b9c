"""Shared layers of train/models/layers.py: the position tables and the parameter count."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from train.models import build_model  # noqa: E402
from train.models.layers import count_params, sinusoid  # noqa: E402


@pytest.mark.parametrize("dim", [6, 7, 64, 130])
def test_vaswani_sinusoid_is_the_papers_formula(dim: int) -> None:
    """PE(p, 2k) = sin(p / 10000^(2k/d)), PE(p, 2k+1) = cos(p / 10000^(2k/d))."""
    pos = np.arange(-5, 40, dtype=np.float64)
    want = np.zeros((len(pos), dim))
    for c in range(dim):
        ang = pos / 10000.0 ** (2 * (c // 2) / dim)
        want[:, c] = np.sin(ang) if c % 2 == 0 else np.cos(ang)
    got = sinusoid(torch.tensor(pos, dtype=torch.float32), dim).double().numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("dim", [6, 7, 16, 130])
def test_fairseq_sinusoid_is_fairseqs_table(dim: int) -> None:
    """fairseq SinusoidalPositionalEmbedding.get_embedding: sines then cosines, frequencies
    exp(-k log(10000) / (dim/2 - 1)), a zero column for odd dim; positions from 1."""
    half = dim // 2
    freq = np.exp(np.arange(half) * -(math.log(10000) / (half - 1)))
    ang = np.arange(1, 31)[:, None] * freq[None, :]
    want = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
    if dim % 2:
        want = np.concatenate([want, np.zeros((30, 1))], axis=1)
    pos = torch.arange(1, 31, dtype=torch.float32)
    got = sinusoid(pos, dim, layout="halves", spacing="fairseq").double().numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_the_three_tables_differ_and_halves_is_a_column_permutation() -> None:
    pos = torch.arange(20, dtype=torch.float32)
    inter = sinusoid(pos, 16)
    halves = sinusoid(pos, 16, layout="halves")
    fairseq = sinusoid(pos + 1, 16, layout="halves", spacing="fairseq")
    assert float((inter - halves).abs().max()) > 1.0
    assert float((halves - fairseq).abs().max()) > 0.5
    order = [*range(0, 16, 2), *range(1, 16, 2)]  # sin columns, then cos columns
    assert torch.equal(inter[:, order], halves)


def test_sinusoid_rejects_unknown_conventions() -> None:
    with pytest.raises(ValueError, match="layout"):
        sinusoid(torch.arange(3), 8, layout="concat")
    with pytest.raises(ValueError, match="spacing"):
        sinusoid(torch.arange(3), 8, spacing="t2t")


def test_count_params_trainable_or_all() -> None:
    """VAVL's fusion stage trains only its fusion head: the default counts what trains."""
    torch.manual_seed(0)
    model = build_model("vavl", 12, 10, 4, size="smoke")
    total = sum(p.numel() for p in model.parameters())
    assert count_params(model, trainable_only=False) == total
    head = count_params(model.fusion, trainable_only=False)
    assert count_params(model) == total - head  # stage "unimodal": the fusion head is frozen
    model.set_stage("fusion")
    assert count_params(model) == head
    assert count_params(model, trainable_only=False) == total
