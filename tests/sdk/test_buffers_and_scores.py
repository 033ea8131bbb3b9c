"""Buffers, masks, smoothing and calibration between the graphs and a result."""

import numpy as np
import pytest

from emosdk.buffers import AudioBuffer, FrameBuffer, FrameEntry, step_mask
from emosdk.scores import Calibration, Smoother, softmax


def test_audio_buffer_places_samples_by_time_and_marks_gaps():
    buf = AudioBuffer(16000, capacity_s=2.0)
    buf.write(0.0, np.ones(1600, np.float32))  # 0-100 ms
    buf.write(200.0, np.full(1600, 2.0, np.float32))  # 200-300 ms, a 100 ms gap before it
    pcm, valid = buf.read(0.0, 300.0)
    assert len(pcm) == 4800
    assert valid[:1600].all() and not valid[1600:3200].any() and valid[3200:].all()
    assert (pcm[1600:3200] == 0).all() and (pcm[3200:] == 2.0).all()


def test_audio_buffer_forgets_beyond_capacity_and_reads_outside_as_invalid():
    buf = AudioBuffer(16000, capacity_s=1.0)
    for k in range(30):  # 3 s in 100 ms chunks
        buf.write(k * 100.0, np.full(1600, float(k), np.float32))
    pcm, valid = buf.read(1000.0, 3000.0)
    assert not valid[: 16000 - 17].any()  # older than the ring: gone
    assert valid[-16000 + 1 :].all() and pcm[-1] == 29.0
    future, fvalid = buf.read(3000.0, 3500.0)
    assert not fvalid.any() and (future == 0).all()


def test_audio_buffer_chunk_longer_than_capacity_keeps_the_newest():
    buf = AudioBuffer(16000, capacity_s=0.5)
    x = np.arange(32000, dtype=np.float32)
    buf.write(0.0, x)
    pcm, valid = buf.read(1500.0, 2000.0)
    assert valid.all() and pcm[-1] == 31999.0


def test_frame_grid_nearest_frame_and_masks():
    fb = FrameBuffer(capacity_s=5.0)
    for i in range(10):  # 10 fps for 1 s, no face in frames 5..9
        emb = np.full(4, float(i), np.float32) if i < 5 else None
        fb.add(FrameEntry(i * 100.0, emb))
    video, mask, seen = fb.grid(0.0, 1000.0, fps=5.0, dim=4)
    assert video.shape == (5, 4) and seen == 5
    np.testing.assert_array_equal(mask, [1, 1, 0, 0, 0])  # slot centres 100..900 ms
    assert video[0, 0] in (0.0, 1.0) and (video[3:] == 0).all()
    _, mask_far, seen_far = fb.grid(5000.0, 6000.0, fps=5.0, dim=4)
    assert seen_far == 0 and not mask_far.any()


def test_step_mask_majority_rule():
    valid = np.r_[np.ones(640, bool), np.zeros(640, bool), np.ones(300, bool), np.zeros(340, bool)]
    np.testing.assert_array_equal(step_mask(valid, 3, 640), [1, 0, 0])


def test_smoother_ema_and_disabled():
    s = Smoother(0.5)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(s(a), a)
    np.testing.assert_allclose(s(b), [0.5, 0.5])
    s.reset()
    np.testing.assert_allclose(s(b), b)
    assert Smoother(0.5, enabled=False)(a) is a


def test_calibration_moves_a_biased_rest_state_towards_neutral():
    cal = Calibration()
    rest = np.array([0.1, 0.6, 0.3])  # this person's resting face reads as class 1
    for _ in range(5):
        cal.add(rest)
    base = cal.finish(neutral_index=2)
    assert base is not None
    adjusted = cal.apply(rest)
    assert adjusted.sum() == pytest.approx(1.0)
    assert adjusted[1] < rest[1] and adjusted[2] > rest[2]
    cal.reset()
    np.testing.assert_array_equal(cal.apply(rest), rest)
    assert Calibration().finish(None) is None


def test_softmax_is_stable():
    p = softmax(np.array([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0], atol=1e-12)
