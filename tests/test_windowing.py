"""Long clips are cut into overlapping windows and joined by a linear cross-fade."""
from __future__ import annotations

import numpy as np
import pytest

from vendor_model.windowing import crossfade_weights, join_windows, plan_windows


def test_a_clip_that_fits_is_one_window():
    assert plan_windows(300, 3000, 30) == [(0, 300)]
    assert plan_windows(3000, 3000, 30) == [(0, 3000)]


@pytest.mark.parametrize("frames", [3001, 4500, 18000, 18017])
def test_windows_cover_the_clip_with_full_length_and_overlap(frames):
    windows = plan_windows(frames, 3000, 30)
    assert windows[0][0] == 0 and windows[-1][1] == frames
    assert all(end - start == 3000 for start, end in windows)
    assert all(a[1] - b[0] >= 30 for a, b in zip(windows, windows[1:]))  # neighbours share >= 30 frames
    strides = np.diff([start for start, _ in windows])
    assert strides.max() - strides.min() <= 1  # evenly spaced
    assert len(windows) == int(np.ceil((frames - 30) / (3000 - 30)))  # and as few as possible


def test_overlap_must_leave_room():
    with pytest.raises(ValueError, match="less than half the window"):
        plan_windows(100, 40, 20)


@pytest.mark.parametrize("frames, window, overlap", [(1000, 300, 40), (3001, 3000, 30), (9000, 3000, 30), (8950, 3000, 1400)])
def test_crossfade_weights_sum_to_one_everywhere(frames, window, overlap):
    windows = plan_windows(frames, window, overlap)
    total = np.zeros(frames)
    for (start, end), weight in zip(windows, crossfade_weights(windows)):
        total[start:end] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_join_reproduces_a_signal_that_all_windows_agree_on():
    signal = np.sin(np.linspace(0, 20, 500))[None, :, None] * np.ones((2, 1, 3))  # (K, T, F)
    windows = plan_windows(500, 120, 30)
    joined = join_windows([signal[:, s:e] for s, e in windows], windows, 500)
    np.testing.assert_allclose(joined, signal, atol=1e-6)


def test_a_disagreement_between_windows_is_spread_over_the_overlap():
    """Two windows that differ by a constant D join without a jump: the step per frame is D / overlap."""
    windows = plan_windows(200, 120, 40)
    offset = 1.0
    chunks = [np.zeros((1, e - s, 1), dtype=np.float32) + offset * i for i, (s, e) in enumerate(windows)]
    joined = join_windows(chunks, windows, 200)[0, :, 0]
    shared = windows[0][1] - windows[1][0]
    assert np.abs(np.diff(joined)).max() <= offset / shared + 1e-6
    assert joined[0] == 0 and joined[-1] == offset
