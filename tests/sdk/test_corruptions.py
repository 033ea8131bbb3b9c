"""emosdk.corruptions on real recordings and real faces: each corruption does what its
documentation says (SNR, spectrum, decay time, band, level, box), deterministically."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from emosdk import corruptions as C
from emosdk.errors import InputError
from emosdk.robustness import read_audio

SR = 16_000


@pytest.fixture(scope="module")
def speech(speech_clips) -> np.ndarray:
    """A real CREMA-D utterance (actor 1002, anger) at 16 kHz."""
    x = read_audio(speech_clips[0])
    assert len(x) > SR and C.rms(x) > 1e-3
    return x


@pytest.fixture(scope="module")
def other_speech(av_clips) -> list[np.ndarray]:
    return [read_audio(p) for p in av_clips[:3]]


@pytest.fixture(scope="module")
def face(shared_data) -> np.ndarray:
    """A real FER2013 PublicTest face, 48x48, as the Recognizer reads it (BGR)."""
    path = sorted((shared_data / "fer2013" / "PublicTest" / "happy").glob("*.jpg"))[0]
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (48, 48, 3)
    return img


@pytest.fixture(scope="module")
def frame(decoded_clips) -> np.ndarray:
    """A real 480x360 frame of a CREMA-D video."""
    _, _, frames = decoded_clips[0]
    return frames[len(frames) // 2][1]


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 20 * math.log10(C.rms(clean) / C.rms(noisy - clean))


def psd_slope(x: np.ndarray, lo: float = 100.0, hi: float = 6000.0) -> float:
    """Slope of the power spectrum in log-log coordinates between lo and hi Hz."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    band = (f > lo) & (f < hi)
    edges = np.geomspace(lo, hi, 25)
    fc, pc = [], []
    for a, b in zip(edges, edges[1:]):
        sel = band & (f >= a) & (f < b)
        fc.append(math.sqrt(a * b))
        pc.append(spec[sel].mean())
    return float(np.polyfit(np.log10(fc), np.log10(pc), 1)[0])


# -- the table -------------------------------------------------------------------------------------
def test_the_table_has_every_corruption_of_the_issue_with_five_documented_levels():
    assert C.names("audio") == [
        "white_noise",
        "pink_noise",
        "babble",
        "reverb",
        "telephone",
        "opus",
        "clipping",
        "low_gain",
    ]
    assert C.names("video") == [
        "darken",
        "sensor_noise",
        "motion_blur",
        "jpeg",
        "downscale",
        "occlude_upper",
        "occlude_lower",
        "frame_rate",
    ]
    for c in C.CORRUPTIONS.values():
        assert len(c.levels) == 5 and c.description
        assert all(c.params(s) for s in C.SEVERITIES)
    assert [C.CORRUPTIONS["white_noise"].params(s)["snr_db"] for s in C.SEVERITIES] == [
        20,
        10,
        5,
        0,
        -5,
    ]
    assert C.CORRUPTIONS["reverb"].params(1)["rt60_s"] == 0.2
    assert C.CORRUPTIONS["reverb"].params(5)["rt60_s"] == 1.2
    assert [C.CORRUPTIONS["downscale"].params(s)["face_px"] for s in (1, 5)] == [40, 20]
    with pytest.raises(InputError, match="severity"):
        C.CORRUPTIONS["jpeg"].params(6)
    # a whole-number float (a severity read from JSON or numpy) is that severity: 3.0 passed
    # the membership check and then failed to index the table (an untyped TypeError)
    assert C.CORRUPTIONS["jpeg"].params(3.0) == C.CORRUPTIONS["jpeg"].params(np.int64(3))
    for bad in (3.5, True, "3"):
        with pytest.raises(InputError, match="severity"):
            C.CORRUPTIONS["jpeg"].params(bad)


@pytest.mark.parametrize("name", C.names("audio"))
def test_every_audio_corruption_at_every_severity_gives_pcm_the_recognizer_takes(
    name, speech, other_speech
):
    c = C.CORRUPTIONS[name]
    outs = []
    for s in C.SEVERITIES:
        ctx = C.Context(C.rng_for(0, name, s, 7), talkers=other_speech)
        y = c(speech, s, ctx)
        assert y.dtype == np.float32 and y.shape == speech.shape
        assert np.isfinite(y).all() and np.abs(y).max() <= 0.99 + 1e-6
        assert not np.array_equal(y, speech)
        again = c(speech, s, C.Context(C.rng_for(0, name, s, 7), talkers=other_speech))
        np.testing.assert_array_equal(y, again)  # the same seed gives the same signal
        outs.append(y)
    # each severity is a different condition
    assert len({o.tobytes() for o in outs}) == 5


@pytest.mark.parametrize("name", C.names("audio"))
def test_every_audio_corruption_passes_an_empty_clip_through(name, other_speech):
    # as clip_peaks and fit_full_scale always did: no samples in, no samples out (the telephone
    # band raised numpy's untyped FFT error, Opus a BackendUnavailableError to install PyAV)
    empty = np.zeros(0, np.float32)
    for s in (1, 5):
        y = C.CORRUPTIONS[name](empty, s, C.Context(C.rng_for(0, name, s, 0), talkers=other_speech))
        assert y.dtype == np.float32 and y.shape == (0,)


@pytest.mark.parametrize("name", [n for n in C.names("video") if n != "frame_rate"])
def test_every_image_corruption_at_every_severity_on_a_face_crop_and_a_frame(name, face, frame):
    c = C.CORRUPTIONS[name]
    for img, box in ((face, None), (frame, (165, 99, 107, 108))):
        prev = None
        for s in C.SEVERITIES:
            y = c(img, s, C.Context(C.rng_for(0, name, s, 3), box=box))
            assert y.dtype == np.uint8 and y.flags.c_contiguous  # as the Recognizer takes them
            if not (name == "downscale" and box is None):
                assert y.shape == img.shape
            again = c(img, s, C.Context(C.rng_for(0, name, s, 3), box=box))
            np.testing.assert_array_equal(y, again)
            assert prev is None or not np.array_equal(y, prev)
            prev = y


def test_rng_for_is_fixed_per_file_corruption_and_severity():
    a = C.rng_for(0, "white_noise", 3, 10).standard_normal(4)
    np.testing.assert_array_equal(a, C.rng_for(0, "white_noise", 3, 10).standard_normal(4))
    for other in (
        C.rng_for(1, "white_noise", 3, 10),
        C.rng_for(0, "pink_noise", 3, 10),
        C.rng_for(0, "white_noise", 4, 10),
        C.rng_for(0, "white_noise", 3, 11),
    ):
        assert not np.array_equal(a, other.standard_normal(4))


# -- audio ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("snr", [20, 5, -5])
def test_noise_is_mixed_at_the_stated_snr(speech, snr):
    rng = np.random.default_rng(0)
    for exponent in (0.0, 1.0):
        y = C.mix_at_snr(speech, C.colored_noise(len(speech), exponent, rng), snr)
        assert snr_db(speech, y) == pytest.approx(snr, abs=0.01)


def test_a_loud_mixture_is_scaled_to_full_scale_not_clipped(speech):
    loud = (speech * (0.9 / np.abs(speech).max())).astype(np.float32)  # recorded near full scale
    c = C.CORRUPTIONS["white_noise"]
    y = c(loud, 5, C.Context(C.rng_for(0, "white_noise", 5, 0)))
    raw = C.mix_at_snr(loud, C.colored_noise(len(loud), 0.0, C.rng_for(0, "white_noise", 5, 0)), -5)
    assert np.abs(raw).max() > 1.0  # -5 dB of white noise on this clip exceeds full scale...
    np.testing.assert_allclose(y, raw * (0.99 / np.abs(raw).max()), rtol=1e-5, atol=1e-7)


def test_white_noise_is_flat_and_pink_noise_falls_3_db_per_octave():
    rng = np.random.default_rng(1)
    assert psd_slope(C.colored_noise(SR * 4, 0.0, rng)) == pytest.approx(0.0, abs=0.1)
    assert psd_slope(C.colored_noise(SR * 4, 1.0, rng)) == pytest.approx(-1.0, abs=0.1)
    x = C.colored_noise(12345, 1.0, rng)
    assert x.shape == (12345,) and C.rms(x) == pytest.approx(1.0, rel=1e-4)


def test_babble_is_other_speakers_speech(speech, other_speech):
    b = C.babble(len(speech), other_speech, np.random.default_rng(0))
    assert b.shape == speech.shape and C.rms(b) == pytest.approx(1.0, rel=1e-4)

    # speech, not noise: its envelope fluctuates far more than that of stationary noise
    def envelope_cv(x):
        frames = x[: len(x) // 400 * 400].reshape(-1, 400)
        e = np.sqrt((frames**2).mean(axis=1))
        return e.std() / e.mean()

    noise = C.colored_noise(len(speech), 1.0, np.random.default_rng(0))
    assert envelope_cv(b) > 2 * envelope_cv(noise)
    with pytest.raises(InputError, match="another speaker"):
        C.babble(100, [], np.random.default_rng(0))


@pytest.mark.parametrize(("rt60", "drr"), [(0.2, 6.0), (0.7, 0.0), (1.2, -6.0)])
def test_room_impulse_response_decays_in_rt60_with_the_stated_direct_to_reverberant_ratio(
    rt60, drr
):
    h = C.room_impulse_response(rt60, drr, np.random.default_rng(0), SR).astype(np.float64)
    assert h[0] == 1.0
    tail = h[1:]
    assert 10 * math.log10(1.0 / np.sum(tail**2)) == pytest.approx(drr, abs=0.01)
    # Schroeder backward integration: the -5 to -25 dB slope extrapolated to -60 dB
    edc = np.cumsum(tail[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(edc)) / SR
    sel = (edc_db < -5) & (edc_db > -25)
    slope = np.polyfit(t[sel], edc_db[sel], 1)[0]
    assert -60 / slope == pytest.approx(rt60, rel=0.1)


def test_reverberation_keeps_loudness_and_smears_the_speech_more_with_rt60(speech):
    def envelope_cv(x):  # syllables stand out less in a reverberant room
        e = np.sqrt((x[: len(x) // 400 * 400].reshape(-1, 400) ** 2).mean(axis=1))
        return e.std() / e.mean()

    values = [envelope_cv(speech)]
    for rt60, drr in ((0.2, 6.0), (0.7, 0.0), (1.2, -6.0)):
        y = C.reverberate(speech, rt60, drr, np.random.default_rng(0))
        assert C.rms(y) == pytest.approx(C.rms(speech), rel=1e-4)
        values.append(envelope_cv(y))
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] < 0.8 * values[0]


def test_telephone_keeps_300_to_3400_hz_and_companding_quantises(speech):
    y = C.telephone(speech)
    assert y.shape == speech.shape
    f = np.fft.rfftfreq(len(y), 1 / SR)
    spec = np.abs(np.fft.rfft(y)) ** 2
    inside = spec[(f > 350) & (f < 3300)].sum()
    assert spec[f > 3600].sum() < 1e-3 * inside
    assert spec[f < 250].sum() < 1e-3 * inside
    q = C.mu_law(speech)
    assert len(np.unique(q)) <= 255 and np.corrcoef(q, speech)[0, 1] > 0.99


def test_opus_round_trip_lines_up_and_loses_more_at_lower_bitrates(speech):
    errors = []
    for bitrate in (24_000, 6_000):
        y = C.opus_round_trip(speech, bitrate)
        assert y.shape == speech.shape and y.dtype == np.float32
        lags = np.arange(-50, 51)
        mid = slice(2000, len(speech) - 2000)
        corr = [np.dot(np.roll(y, -k)[mid], speech[mid]) for k in lags]
        assert abs(int(lags[int(np.argmax(corr))])) <= 3  # the codec delay is removed
        errors.append(C.rms(y - speech))
    assert errors[0] < errors[1]
    assert snr_db(speech, C.opus_round_trip(speech, 24_000)) > 5


def test_clipping_cuts_the_peaks_at_the_fraction_and_keeps_loudness(speech):
    prev = 0.0
    for s in C.SEVERITIES:
        frac = C.CORRUPTIONS["clipping"].params(s)["clip_fraction"]
        y = C.clip_peaks(speech, frac)
        assert C.rms(y) == pytest.approx(C.rms(speech), rel=1e-4)
        top = np.abs(y).max()
        share = float(np.mean(np.abs(y) >= top * (1 - 1e-6)))  # samples stuck at the ceiling
        assert share > prev
        prev = share


def test_low_gain_lowers_the_level_on_a_16_bit_grid(speech):
    for gain in (-10, -50):
        y = C.low_gain(speech, gain)
        assert np.allclose(y * 32768, np.round(y * 32768))
    assert 20 * math.log10(C.rms(C.low_gain(speech, -10)) / C.rms(speech)) == pytest.approx(
        -10, abs=0.05
    )
    assert C.rms(C.low_gain(speech, -50)) < 0.01 * C.rms(speech)


def test_audio_errors_say_what_was_expected(speech):
    with pytest.raises(InputError, match="float mono PCM"):
        C.mix_at_snr((speech * 32767).astype(np.int16), speech, 10)
    with pytest.raises(InputError, match="clip_fraction"):
        C.clip_peaks(speech, 0.0)
    with pytest.raises(InputError, match="rt60"):
        C.room_impulse_response(0.0, 0.0, np.random.default_rng(0))


@pytest.mark.parametrize("rt60", [0.002, float("nan")])
def test_a_room_too_short_for_a_tail_is_an_input_error(speech, rt60):
    # at 16 kHz the tail starts 2.5 ms (40 samples) after the direct path: a 2 ms response has
    # no tail to carry the direct-to-reverberant ratio (it divided by zero)
    with pytest.raises(InputError, match="rt60_s: expected"):
        C.reverberate(speech, rt60, 0.0, np.random.default_rng(0))


# -- images ---------------------------------------------------------------------------------------
def test_darkening_lowers_brightness_with_each_severity(frame):
    means = [frame.mean()]
    for s in C.SEVERITIES:
        means.append(C.CORRUPTIONS["darken"](frame, s, C.Context(np.random.default_rng(0))).mean())
    assert all(a > b for a, b in zip(means, means[1:]))
    assert means[1] == pytest.approx(0.6 * means[0], rel=0.02)  # severity 1: scale 0.6, gamma 1


def test_sensor_noise_has_the_stated_variance_on_a_flat_grey():
    grey = np.full((200, 200, 3), 128, np.uint8)
    y = C.sensor_noise(grey, 0.04, 0.01, np.random.default_rng(0)).astype(np.float64) / 255
    expected = math.sqrt(0.04**2 + 0.01 * 128 / 255)
    assert y.std() == pytest.approx(expected, rel=0.05)
    assert y.mean() == pytest.approx(128 / 255, abs=0.005)


def test_motion_blur_spreads_a_vertical_edge_over_its_length():
    img = np.zeros((40, 80), np.uint8)
    img[:, 40:] = 255
    y = C.motion_blur(img, 10.0, 0.0).astype(int)
    row = y[20]
    ramp = np.flatnonzero((row > 5) & (row < 250))
    assert 8 <= len(ramp) <= 12  # a horizontal blur of 10 px
    np.testing.assert_array_equal(C.motion_blur(img, 10.0, 90.0), img)  # vertical: no change
    assert abs(int(y.sum()) - int(img.astype(int).sum())) < 0.01 * img.astype(int).sum()


def test_motion_blur_on_a_face_crop_grows_with_severity(face):
    def sharpness(x):
        return np.abs(cv2.Laplacian(x.astype(np.float64), cv2.CV_64F)).mean()

    values = [sharpness(face)]
    for s in C.SEVERITIES:
        ctx = C.Context(C.rng_for(0, "motion_blur", s, 0))
        values.append(sharpness(C.CORRUPTIONS["motion_blur"](face, s, ctx)))
    assert all(a > b for a, b in zip(values, values[1:]))


def test_jpeg_loses_more_at_lower_quality_and_keeps_grey_and_colour_shapes(frame, face):
    err = [np.abs(C.jpeg(frame, q).astype(int) - frame).mean() for q in (25, 7)]
    assert 0 < err[0] < err[1]
    grey = face[..., 0]
    assert C.jpeg(grey, 10).shape == grey.shape
    assert C.jpeg(face[..., :1], 10).shape == (48, 48, 1)


def test_resize_matches_opencv_area_when_shrinking(frame):
    ours = C.resize(frame, 97, 131).astype(int)
    ref = cv2.resize(frame, (131, 97), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(ours - ref).max() <= 2
    assert C.resize(frame, 720, 960).shape == (720, 960, 3)


def test_shrink_face_gives_a_face_of_the_stated_width(frame, face):
    assert C.shrink_face(face, None, 20).shape == (20, 20, 3)
    assert C.shrink_face(face, None, 60).shape == face.shape  # never enlarged
    box = (165, 99, 107, 108)
    y = C.shrink_face(frame, box, 25)
    assert y.shape == frame.shape
    h, w = frame.shape[:2]
    f = 25 / 107
    nh, nw = round(h * f), round(w * f)
    top, left = (h - nh) // 2, (w - nw) // 2
    inner = y[top : top + nh, left : left + nw]
    np.testing.assert_array_equal(inner, C.resize(frame, nh, nw))
    outside = np.ones(y.shape[:2], bool)
    outside[top : top + nh, left : left + nw] = False
    assert len(np.unique(y[outside].reshape(-1, 3), axis=0)) == 1  # one flat background colour


def test_occlusion_covers_the_stated_part_of_the_box_only(frame, face):
    box = (165, 99, 107, 108)
    up = C.occlude(frame, box, "upper", 1.0)
    changed = np.any(up != frame, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 99 and ys.max() < 99 + 54 and xs.min() >= 165 and xs.max() < 165 + 107
    assert (up[99 : 99 + 54, 165 : 165 + 107] == 128).all()
    low = C.occlude(frame, box, "lower", 0.4)
    rows = round(0.4 * 108 / 2)
    assert (low[99 + 108 - rows : 99 + 108, 165 : 165 + 107] == 128).all()
    np.testing.assert_array_equal(low[: 99 + 108 - rows], frame[: 99 + 108 - rows])
    crop = C.occlude(face, None, "upper", 0.5)
    assert (crop[:12] == 128).all() and np.array_equal(crop[12:], face[12:])
    with pytest.raises(InputError, match="upper"):
        C.occlude(face, None, "left", 0.5)


def test_frame_times_at_a_dropped_rate_pick_fewer_frames():
    times = np.arange(0, 2200, 1000 / 29.97)
    at5 = C.nearest_frames(times, C.frame_times(times[0], times[-1], 5.0))
    at1 = C.nearest_frames(times, C.frame_times(times[0], times[-1], 1.0))
    assert len(at5) == 11 and len(at1) == 3 and at1 == [0, 30, 60]
    assert C.frame_rate_fps(5) == 0.5


def test_image_errors_say_what_was_expected(face):
    with pytest.raises(InputError, match="uint8"):
        C.darken(face.astype(np.float32) / 255, 0.5)
    with pytest.raises(InputError, match="box"):
        C.occlude(face, (100, 100, 10, 10), "upper", 1.0)
    with pytest.raises(InputError, match="frame_rate_fps"):
        C.CORRUPTIONS["frame_rate"](face, 1, C.Context(np.random.default_rng(0)))
