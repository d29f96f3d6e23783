"""The articulation rig (`synth.rig`) and the phoneme segment contract (`synth.segments`):
phoneme timings in, per-frame vertex offsets on the synthetic head out."""
from __future__ import annotations

import math

import numpy as np
import pytest

from synth import rig
from synth.head import build_head
from synth.segments import ARPABET, PHONES, PhonemeSegment, validate_segments

MM = 1e-3
STILL = ("upper_face", "eyes", "skull", "neck")


@pytest.fixture(scope="module")
def head():
    return build_head()


def speak(*spec, start=0.0):
    """('aa', 0.2), ('p', 0.04), ... -> back-to-back segments from `start`."""
    out, t = [], start
    for phone, duration in spec:
        out.append(PhonemeSegment(phone, t, t + duration))
        t += duration
    return out


def frame_at(seconds, fps):
    return round(seconds * fps)


def lip_gap(head, offsets, frame):
    """Vertical distance between the upper and lower lip mid-mouth, metres (0 = lips meet)."""
    upper, lower = head.seam[:, head.seam.shape[1] // 2]
    pose = head.vertices + offsets[frame]
    return float(pose[upper, 2] - pose[lower, 2])


def mouth_width(head, offsets, frame):
    left, right = head.seam[0, [0, -1]]
    pose = head.vertices + offsets[frame]
    return float(np.linalg.norm(pose[right] - pose[left]))


SENTENCE = speak(("sil", 0.3), ("hh", 0.06), ("ah", 0.08), ("l", 0.06), ("ow", 0.18), ("w", 0.07), ("er", 0.12),
                 ("l", 0.05), ("d", 0.06), ("sil", 0.25), ("p", 0.05), ("ae", 0.14), ("p", 0.04), ("b", 0.04),
                 ("m", 0.05), ("iy", 0.1), ("f", 0.07), ("v", 0.05), ("uw", 0.16), ("s", 0.1), ("t", 0.04),
                 ("aa", 0.2), ("sil", 0.4))


# ---------------------------------------------------------------- segments

def test_phone_set_is_arpabet_without_stress_plus_silence():
    assert len(ARPABET) == 39 and len(set(ARPABET)) == 39
    assert all(p.islower() and p.isalpha() for p in ARPABET)
    assert PHONES == ARPABET + ("sil",)
    assert set(rig.TARGETS) | set(rig.DIPHTHONGS) == set(PHONES), "every phone has a target"


@pytest.mark.parametrize("bad, message", [
    ([PhonemeSegment("AA1", 0, 0.1)], "no stress digits"),
    ([PhonemeSegment("xx", 0, 0.1)], "unknown phone"),
    ([PhonemeSegment("aa", 0.1, 0.1)], "non-positive duration"),
    ([PhonemeSegment("aa", -0.1, 0.1)], "before 0"),
    ([PhonemeSegment("aa", 0, 0.2), PhonemeSegment("b", 0.1, 0.3)], "before the previous end"),
], ids=["stress", "unknown", "empty", "negative", "overlap"])
def test_validate_segments_refuses(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_segments(bad)


def test_validate_segments_accepts_gaps():
    segments = speak(("aa", 0.1)) + speak(("b", 0.1), start=0.5)
    assert validate_segments(segments) == tuple(segments)


# ------------------------------------------------------------ shape, timing

@pytest.mark.parametrize("fps", [25, 30, 60])
def test_output_shape_follows_fps_and_duration(head, fps):
    offsets = rig.animate(SENTENCE, fps=fps)
    end = SENTENCE[-1].end
    assert offsets.shape == (math.ceil(end * fps - 1e-9), len(head.vertices), 3)
    assert offsets.dtype == np.float32
    params = rig.parameters(SENTENCE, fps)
    assert params.shape == (len(offsets), len(rig.PARAMETERS)) and params.dtype == np.float32
    assert params.min() >= 0 and params.max() <= 1
    longer = rig.animate(SENTENCE, fps=fps, duration=end + 1.0)
    assert len(longer) == math.ceil((end + 1.0) * fps - 1e-9)
    np.testing.assert_allclose(longer[:len(offsets)], offsets, atol=1e-7)
    assert np.abs(longer[-1]).max() < 0.01 * MM, "rest after the speech"


def test_frame_count_is_not_fooled_by_rounding():
    assert rig.frame_count(0.1, 30) == 3 and rig.frame_count(1.0, 30) == 30 and rig.frame_count(1.01, 30) == 31


# ------------------------------------------------------------------- rest

@pytest.mark.parametrize("style", list(rig.STYLES))
def test_silence_is_exact_rest(style):
    offsets = rig.animate(speak(("sil", 1.0)), style=rig.STYLES[style])
    assert offsets.shape[0] == 30 and not offsets.any()


def test_long_pause_returns_to_rest_and_short_gap_does_not(head):
    pause = speak(("aa", 0.2)) + speak(("aa", 0.2), start=0.8)
    offsets = rig.animate(pause, fps=30)
    assert np.abs(offsets[frame_at(0.5, 30)]).max() < 0.1 * MM
    short = speak(("aa", 0.2)) + speak(("aa", 0.2), start=0.3)
    assert lip_gap(head, rig.animate(short), frame_at(0.25, 30)) > 8 * MM, "a 100 ms gap is not a pause"


def test_speech_starts_and_stops_over_60_to_120_ms():
    jaw = rig.parameters(speak(("sil", 0.5), ("aa", 0.4), ("sil", 0.7)), fps=1000)[:, rig.P["jaw_open"]]
    t, peak = np.arange(len(jaw)) / 1000, jaw.max()
    rise = t[(jaw > 0.9 * peak) & (t < 0.7)][0] - t[(jaw > 0.1 * peak) & (t < 0.7)][0]
    fall = t[(jaw < 0.1 * peak) & (t > 0.7)][0] - t[(jaw < 0.9 * peak) & (t > 0.7)][0]
    assert 0.06 <= rise <= 0.12 and 0.06 <= fall <= 0.12, (rise, fall)


# -------------------------------------------------------------- contacts

@pytest.mark.parametrize("fps", [25, 30, 60])
@pytest.mark.parametrize("phase", [0.0, 0.007, 0.013, 0.02])
def test_a_40_ms_p_between_vowels_closes_the_lips(head, fps, phase):
    """The frame nearest the p's centre has the lips together, wherever the p falls between frames."""
    segments = speak(("sil", 0.2), ("aa", 0.2 + phase), ("p", 0.04), ("aa", 0.2), ("sil", 0.3))
    offsets = rig.animate(segments, fps=fps)
    p = segments[2]
    assert abs(lip_gap(head, offsets, frame_at(p.centre, fps))) < 1 * MM
    for vowel in (segments[1], segments[3]):
        frames = range(math.ceil(vowel.start * fps), math.floor(vowel.end * fps) + 1)
        assert max(lip_gap(head, offsets, f) for f in frames) > 8 * MM, "each aa opens the mouth"


@pytest.mark.parametrize("style", list(rig.STYLES))
@pytest.mark.parametrize("bilabial", ["p", "b", "m"])
def test_every_style_closes_for_bilabials(head, style, bilabial):
    segments = speak(("aa", 0.2), (bilabial, 0.04), ("aa", 0.2))
    offsets = rig.animate(segments, style=rig.STYLES[style])
    assert abs(lip_gap(head, offsets, frame_at(segments[1].centre, 30))) < 1 * MM


def test_vowel_height_sets_the_opening(head):
    gaps = {}
    for vowel in ("aa", "ae", "ah", "eh", "ih", "iy"):
        segments = speak(("sil", 0.3), (vowel, 0.2), ("sil", 0.3))
        gaps[vowel] = lip_gap(head, rig.animate(segments), frame_at(0.4, 30))
    assert gaps["aa"] > gaps["ae"] > gaps["ah"] > gaps["eh"] > gaps["ih"] > gaps["iy"] > 0, gaps
    assert gaps["aa"] > 10 * MM


@pytest.mark.parametrize("labiodental", ["f", "v"])
def test_f_and_v_bring_the_lower_lip_to_the_upper_teeth(head, labiodental):
    edge = head.landmarks["upper_incisor_edge"]
    lower = head.seam[1, head.seam.shape[1] // 2]
    segments = speak(("aa", 0.2), (labiodental, 0.06), ("aa", 0.2))
    offsets = rig.animate(segments)
    at_f = np.linalg.norm(head.vertices[lower] + offsets[frame_at(segments[1].centre, 30), lower] - edge)
    at_rest = np.linalg.norm(head.vertices[lower] - edge)
    assert at_f < 3.5 * MM and at_rest > 6 * MM, (at_f, at_rest)


def test_rounding_narrows_and_spreading_widens_the_mouth(head):
    rest = mouth_width(head, np.zeros((1, len(head.vertices), 3)), 0)
    widths = {}
    for vowel in ("uw", "iy"):
        widths[vowel] = mouth_width(head, rig.animate(speak(("sil", 0.3), (vowel, 0.2), ("sil", 0.3))),
                                    frame_at(0.4, 30))
    assert widths["uw"] < rest - 8 * MM and widths["iy"] > rest + 3 * MM, (rest, widths)


def test_alveolars_raise_the_tongue_tip(head):
    tip = rig.build_rig(head).tongue_tip
    segments = speak(("aa", 0.2), ("t", 0.06), ("aa", 0.2))
    offsets = rig.animate(segments)
    rise = offsets[frame_at(segments[1].centre, 30), tip, 2] - offsets[frame_at(segments[0].centre, 30), tip, 2]
    assert rise > 5 * MM


def test_diphthongs_glide_between_two_targets():
    params = rig.parameters(speak(("sil", 0.3), ("ay", 0.3), ("sil", 0.3)), fps=100)
    early, late = params[35], params[55]
    assert early[rig.P["jaw_open"]] > late[rig.P["jaw_open"]] and late[rig.P["spread"]] > early[rig.P["spread"]]


# ------------------------------------------------------------ whole motion

@pytest.mark.parametrize("style", list(rig.STYLES))
def test_upper_face_eyes_skull_and_neck_stay_still(head, style):
    offsets = rig.animate(SENTENCE, style=rig.STYLES[style])
    still = np.concatenate([head.regions[name] for name in STILL])
    assert np.abs(offsets[:, still]).max() < 0.05 * MM
    assert np.abs(offsets[:, head.regions["jaw"]]).max() > 5 * MM


def test_motion_has_no_jumps(head):
    """Vertex speed stays under 0.45 m/s however finely it is sampled: a jump would not shrink
    with the frame interval."""
    for fps in (30, 240):
        offsets = rig.animate(SENTENCE, fps=fps)
        step = np.linalg.norm(np.diff(offsets, axis=0), axis=-1).max()
        assert step * fps < 0.45, (fps, step)


def test_styles_change_amplitude_and_symmetry(head):
    assert len(rig.STYLES) >= 8
    energy = {name: float(np.abs(rig.animate(SENTENCE, style=style)).mean()) for name, style in rig.STYLES.items()}
    assert energy["energetic"] > 1.15 * energy["neutral"] > 1.15 * energy["mumbler"], energy
    left, right = head.seam[0, [0, -1]]
    segments = speak(("sil", 0.3), ("iy", 0.2), ("sil", 0.3))
    for name, expect_symmetric in (("neutral", True), ("lopsided", False)):
        offsets = rig.animate(segments, style=rig.STYLES[name])[frame_at(0.4, 30)]
        moved = np.linalg.norm(offsets[[left, right]], axis=1)
        assert (abs(moved[0] - moved[1]) < 1e-6) == expect_symmetric, (name, moved)
        if not expect_symmetric:
            assert max(moved) > 1.3 * min(moved)


def test_style_values_are_checked():
    with pytest.raises(ValueError):
        rig.Style(jaw_ratio=2.5)
    with pytest.raises(ValueError):
        rig.Style(amplitude=0)
