"""Specification of diffspeaker_blender.core.bake_math: offsets into shape keys and keyframes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffspeaker_blender.core.bake_math import (
    KEY_PREFIX,
    compact_basis,
    compact_key_name,
    exact_key_name,
    exact_key_schedule,
    exact_keys,
    fcurve_points,
    is_tool_key,
    parse_tool_key,
    reconstruct,
)
from diffspeaker_blender.core.timing import resampled_length, scene_fps

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES, N_VERTS = 300, 5023  # 10 s at 30 fps on a FLAME-sized mesh
TRUE_RANK = 6
NOISE_M = 2e-6  # per coordinate; its per-vertex maximum over 1.5M samples stays well under 1e-4
BOUND_M = 1e-4


def low_rank_motion(n_frames: int, n_verts: int, rank: int, noise_m: float, seed: int = 0) -> np.ndarray:
    """Offsets (T, V, 3) float32: `rank` smooth temporal patterns times random vertex
    fields, amplitudes from 5 mm down to 0.3 mm (each one matters at 0.1 mm), plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / 30.0
    amplitude = np.geomspace(5e-3, 3e-4, rank)  # (rank,) metres
    temporal = np.stack([np.sin(2 * np.pi * (0.4 + 0.37 * k) * t + k) for k in range(rank)], axis=1)
    fields = rng.standard_normal((rank, n_verts, 3)) * amplitude[:, None, None]
    motion = np.einsum("tk,kvc->tvc", temporal, fields)
    return (motion + noise_m * rng.standard_normal(motion.shape)).astype(np.float32)


def max_vertex_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=-1).max())


def brute_force_rank(offsets: np.ndarray, bound: float) -> int:
    """Smallest K whose rank-K SVD truncation meets the bound, by full SVD and trying every K."""
    x = offsets.reshape(offsets.shape[0], -1).astype(np.float64)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    for k in range(len(s) + 1):
        approx = (u[:, :k] * s[:k]) @ vt[:k]
        if max_vertex_error(x.reshape(offsets.shape), approx.reshape(offsets.shape)) <= bound:
            return k
    raise AssertionError("full rank must reproduce the input")


@pytest.fixture(scope="module")
def motion() -> np.ndarray:
    return low_rank_motion(N_FRAMES, N_VERTS, TRUE_RANK, NOISE_M)


@pytest.fixture(scope="module")
def bake(motion):
    return compact_basis(motion, max_error_m=BOUND_M)


# --------------------------------------------------------------------------------------
# Compact mode
# --------------------------------------------------------------------------------------


def test_compact_meets_the_bound_with_about_the_true_rank(motion, bake):
    assert TRUE_RANK <= bake.rank <= TRUE_RANK + 1
    assert not bake.capped
    assert bake.basis.shape == (bake.rank, N_VERTS, 3) and bake.basis.dtype == np.float32
    assert bake.weights.shape == (N_FRAMES, bake.rank) and bake.weights.dtype == np.float32
    assert bake.target_error_m == BOUND_M
    error = max_vertex_error(reconstruct(bake), motion)
    assert error <= BOUND_M
    assert bake.max_error_m == pytest.approx(error, abs=1e-7)  # reconstruct() rounds to float32


def test_compact_rank_is_the_smallest_that_meets_the_bound(motion, bake):
    fewer = compact_basis(motion, max_error_m=BOUND_M, max_keys=bake.rank - 1)
    assert fewer.capped and fewer.max_error_m > BOUND_M


@pytest.mark.parametrize(
    "n_frames, n_verts",
    [pytest.param(40, 30, id="frames<coords"), pytest.param(60, 5, id="frames>coords")],
)
@pytest.mark.parametrize("bound", [3e-4, 1e-4, 1e-5])
def test_compact_rank_matches_brute_force_svd(n_frames, n_verts, bound):
    offsets = low_rank_motion(n_frames, n_verts, rank=5, noise_m=3e-6, seed=1)
    bake = compact_basis(offsets, max_error_m=bound)
    assert bake.rank == brute_force_rank(offsets, bound)
    assert max_vertex_error(reconstruct(bake), offsets) <= bound


def test_weights_peak_at_plus_one_and_sliders_contain_them(bake):
    w = bake.weights
    np.testing.assert_array_equal(w.max(axis=0), np.ones(bake.rank, dtype=np.float32))
    assert np.abs(w).max() == 1.0
    assert bake.slider_range.shape == (bake.rank, 2) and bake.slider_range.dtype == np.float32
    low, high = bake.slider_range[:, 0], bake.slider_range[:, 1]
    assert np.all(low <= w.min(axis=0)) and np.all(w.max(axis=0) <= high)
    # 0 (the rest pose) is always reachable: Blender clamps values to the slider range.
    assert np.all(low <= 0) and np.all(high >= 0) and np.all(low >= -1)


def test_positive_only_weights_still_have_zero_in_the_slider_range():
    offsets = np.zeros((10, 4, 3), dtype=np.float32)
    offsets[:, 1, 2] = np.linspace(0.2, 1.0, 10) * 0.01  # a key that never returns to rest
    bake = compact_basis(offsets)
    assert bake.rank == 1
    assert bake.weights.min() > 0
    np.testing.assert_array_equal(bake.slider_range, [[0.0, 1.0]])


def test_constant_pose_is_one_key_at_one_not_a_mean():
    # No mean subtraction: a held pose is a single key at weight 1, not a "mean" plus nothing.
    pose = np.random.default_rng(3).standard_normal((50, 3)).astype(np.float32) * 0.01
    bake = compact_basis(np.repeat(pose[None], 20, axis=0))
    assert bake.rank == 1
    np.testing.assert_allclose(bake.weights, 1.0, rtol=1e-6)
    np.testing.assert_allclose(bake.basis[0], pose, atol=1e-8)


def test_all_silent_clip_needs_no_keys():
    bake = compact_basis(np.zeros((N_FRAMES, 20, 3), dtype=np.float32))
    assert bake.rank == 0 and not bake.capped and bake.max_error_m == 0.0
    assert bake.basis.shape == (0, 20, 3) and bake.weights.shape == (N_FRAMES, 0)
    assert bake.slider_range.shape == (0, 2)
    np.testing.assert_array_equal(reconstruct(bake), np.zeros((N_FRAMES, 20, 3)))


def test_silent_frames_get_exactly_zero_weights(motion):
    offsets = motion.copy()
    silent = np.r_[0:30, 200:230, 299]
    offsets[silent] = 0
    bake = compact_basis(offsets)
    assert not bake.capped
    assert np.all(bake.weights[silent] == 0)
    assert np.all(reconstruct(bake)[silent] == 0)  # the template exactly
    assert np.all(np.abs(bake.weights[30:200]).max(axis=0) > 0)


def test_motion_below_the_bound_needs_no_keys():
    offsets = np.full((30, 10, 3), 1e-5, dtype=np.float32)  # |offset| = 1.7e-5 m everywhere
    bake = compact_basis(offsets, max_error_m=1e-4)
    assert bake.rank == 0 and bake.max_error_m == pytest.approx(np.sqrt(3) * 1e-5)


def test_key_cap_is_respected_and_reported():
    noise = (np.random.default_rng(4).standard_normal((120, 400, 3)) * 3e-3).astype(np.float32)
    bake = compact_basis(noise, max_error_m=1e-4, max_keys=5)
    assert bake.rank == 5 and bake.capped
    assert bake.max_error_m > 1e-4
    assert bake.max_error_m == pytest.approx(max_vertex_error(reconstruct(bake), noise), abs=1e-7)


def test_cap_not_reported_when_the_cap_is_exactly_enough(motion, bake):
    exact_cap = compact_basis(motion, max_error_m=BOUND_M, max_keys=bake.rank)
    assert exact_cap.rank == bake.rank and not exact_cap.capped


@pytest.mark.parametrize(
    "offsets, kwargs, message",
    [
        pytest.param(np.zeros((10, 3)), {}, "frames, vertices, 3", id="2d"),
        pytest.param(np.zeros((10, 5, 2)), {}, "frames, vertices, 3", id="xy-only"),
        pytest.param(np.zeros((0, 5, 3)), {}, "at least one frame", id="no-frames"),
        pytest.param(np.full((2, 5, 3), np.nan), {}, "NaN", id="nan"),
        pytest.param(np.zeros((2, 5, 3)), {"max_error_m": 0.0}, "max_error_m", id="zero-bound"),
        pytest.param(np.zeros((2, 5, 3)), {"max_error_m": -1e-4}, "max_error_m", id="negative-bound"),
        pytest.param(np.zeros((2, 5, 3)), {"max_keys": 0}, "max_keys", id="no-keys"),
    ],
)
def test_compact_rejects_bad_input(offsets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compact_basis(offsets, **kwargs)


# --------------------------------------------------------------------------------------
# Exact mode
# --------------------------------------------------------------------------------------


def test_exact_keys_are_the_offsets():
    offsets = low_rank_motion(12, 9, rank=3, noise_m=0.0).astype(np.float64)
    exact = exact_keys(offsets)
    assert exact.n_keys == 12
    assert exact.shapes.dtype == np.float32
    np.testing.assert_array_equal(exact.shapes, offsets.astype(np.float32))


def constant_fcurve(frames: np.ndarray, values: np.ndarray, at: float) -> float:
    """What Blender shows at frame `at` for CONSTANT keyframes (0 when there are none)."""
    if frames.size == 0:
        return 0.0
    i = np.searchsorted(frames, at, side="right") - 1
    return float(values[max(i, 0)])  # before the first key, its value is held


@pytest.mark.parametrize("model_fps", [pytest.param(30, id="model30fps"), pytest.param(25, id="model25fps")])
@pytest.mark.parametrize(
    "fps, base",
    [pytest.param(24, 1.0, id="24fps"), pytest.param(24, 1.001, id="23.976fps"),
     pytest.param(30, 1.0, id="30fps"), pytest.param(60, 1.0, id="60fps")],
)
def test_exact_schedule_has_one_key_on_per_scene_frame(fps, base, model_fps):
    n_frames, start = 75, 11.0
    rate = scene_fps(fps, base)
    schedule = exact_key_schedule(n_frames, start, model_fps, rate)
    n_scene = resampled_length(n_frames, model_fps, rate)
    assert len(schedule.frames) == len(schedule.values) == n_frames
    assert schedule.shown_key.shape == (n_scene,)

    for at in np.arange(start - 3, start + n_scene + 3):
        on = [k for k in range(n_frames)
              if constant_fcurve(schedule.frames[k], schedule.values[k], at) != 0.0]
        inside = 0 <= at - start < n_scene
        if not inside:
            assert on == [], f"frame {at} is outside the clip but keys {on} are on"
            continue
        step = int(at - start)
        assert on == [schedule.shown_key[step]], f"frame {at}: keys {on} on"
        assert constant_fcurve(schedule.frames[on[0]], schedule.values[on[0]], at) == 1.0
        # The nearest model frame is shown.
        assert abs(on[0] / model_fps - step / rate) <= 0.5 / model_fps + 1e-9

    shown = set(schedule.shown_key.tolist())
    if rate >= model_fps:
        # No model frame is dropped, except perhaps the last: the scene range stops at or
        # before its time (resampled_length, as in compact mode).
        assert set(range(n_frames - 1)) <= shown
    for k in range(n_frames):
        assert len(schedule.frames[k]) == (3 if k in shown else 0)


def test_exact_schedule_at_equal_rates_is_one_key_per_frame():
    schedule = exact_key_schedule(5, 1.0, 30, 30)
    np.testing.assert_array_equal(schedule.shown_key, np.arange(5))
    np.testing.assert_array_equal(schedule.frames[2], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(schedule.values[2], [0.0, 1.0, 0.0])
    assert schedule.values[2].dtype == np.float32


def test_exact_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one frame"):
        exact_key_schedule(0, 1.0, 30, 24)
    with pytest.raises(ValueError, match="frame rate"):
        exact_key_schedule(10, 1.0, 30, 0)
    with pytest.raises(ValueError, match="scene_start_frame"):
        exact_key_schedule(10, float("inf"), 30, 24)


# --------------------------------------------------------------------------------------
# Key names
# --------------------------------------------------------------------------------------


def test_key_names():
    assert KEY_PREFIX == "DS_"
    assert compact_key_name(0) == "DS_basis_000"
    assert compact_key_name(42) == "DS_basis_042"
    assert exact_key_name(0) == "DS_frame_0000"
    assert exact_key_name(299) == "DS_frame_0299"


@pytest.mark.parametrize("index", [0, 1, 7, 63, 999, 1000, 12345])
def test_key_names_round_trip(index):
    assert parse_tool_key(compact_key_name(index)) == ("basis", index)
    assert parse_tool_key(exact_key_name(index)) == ("frame", index)
    assert is_tool_key(compact_key_name(index)) and is_tool_key(exact_key_name(index))


@pytest.mark.parametrize(
    "name",
    ["Basis", "jawOpen", "DS", "DS_", "ds_basis_000", "DS_basis_7", "DS_basis_0007", "DS_frame_000",
     "DS_basis_000.001", " DS_basis_000", "DS_basis_-01", "DS_smile", "DS_basis_\u0661\u0662\u0663", "", None],
)
def test_artist_and_look_alike_names_are_not_ours(name):
    assert not is_tool_key(name)
    assert parse_tool_key(name) is None


@pytest.mark.parametrize("index", [-1, 1.5, True])
def test_key_names_reject_bad_indices(index):
    with pytest.raises(ValueError, match="non-negative integer"):
        compact_key_name(index)
    with pytest.raises(ValueError, match="non-negative integer"):
        exact_key_name(index)


# --------------------------------------------------------------------------------------
# Bulk keyframes
# --------------------------------------------------------------------------------------


def test_fcurve_points_interleave_frames_and_values():
    out = fcurve_points(np.array([1.0, 2.0, 3.5]), np.array([0.0, 1.0, -0.25]))
    assert out.dtype == np.float32 and out.shape == (6,)
    np.testing.assert_array_equal(out, [1.0, 0.0, 2.0, 1.0, 3.5, -0.25])
    assert fcurve_points(np.zeros(0), np.zeros(0)).shape == (0,)
    pairs = out.reshape(-1, 2)  # what keyframe_points[i].co reads back
    np.testing.assert_array_equal(pairs[:, 0], [1.0, 2.0, 3.5])


def test_fcurve_points_rejects_mismatched_input():
    with pytest.raises(ValueError, match="same length"):
        fcurve_points(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="1-D"):
        fcurve_points(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        fcurve_points(np.array([1.0, np.nan]), np.zeros(2))


# --------------------------------------------------------------------------------------
# Purity
# --------------------------------------------------------------------------------------


def test_core_modules_import_without_blender_or_torch():
    # Run apart: this test process already has torch (conftest) and maybe bpy loaded.
    code = (
        "import sys; import diffspeaker_blender.core.bake_math, diffspeaker_blender.core.timing; "
        "print(sorted({'bpy', 'torch', 'scipy'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
