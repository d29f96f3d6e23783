"""Specification of diffspeaker_blender.core.cleanup: face regions, per-region compact
bakes, and keyframes derived from raw values (smoothing, intensity, offset, decimation)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from diffspeaker_blender.core import cleanup, timing
from diffspeaker_blender.core.bake_math import compact_basis
from diffspeaker_blender.core.cleanup import CleanupSettings, apply_cleanup, reconstruct

MM = 1e-3


def offsets_of(curves, shapes, frames):
    return reconstruct(curves, shapes, frames)


def vertex_error(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1).max())


def toy_shapes() -> tuple[np.ndarray, tuple]:
    """Three keys on six vertices: two "lips" keys on vertices 0-2, one "jaw" key on 3-5."""
    shapes = np.zeros((3, 6, 3), dtype=np.float32)
    shapes[0, :3, 2] = [0.010, 0.008, 0.004]
    shapes[1, :3, 0] = [0.002, -0.003, 0.001]
    shapes[2, 3:, 2] = [-0.012, -0.006, -0.003]
    return shapes, ("lips", "lips", "jaw")


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------


def test_regions_are_made_disjoint_by_priority_and_the_rest_is_other():
    regions = {"upper_face": [0, 1, 2], "jaw": np.array([2, 3, 4]), "lips": np.array([4, 5])}
    out = dict(cleanup.disjoint_regions(regions, 8))
    assert list(out) == ["lips", "jaw", "upper_face", "other"]
    assert out["lips"].tolist() == [4, 5]
    assert out["jaw"].tolist() == [2, 3]  # 4 went to the lips
    assert out["upper_face"].tolist() == [0, 1]
    assert out["other"].tolist() == [6, 7]


def test_masks_work_like_index_arrays_and_empty_regions_are_dropped():
    mask = np.zeros(5, bool)
    mask[[1, 2]] = True
    out = cleanup.disjoint_regions({"lips": mask, "jaw": [1], "upper_face": []}, 5)
    assert [(name, idx.tolist()) for name, idx in out] == [("lips", [1, 2]), ("other", [0, 3, 4])]


def test_without_regions_the_whole_mesh_is_one_face_region():
    for regions in (None, {}):
        (name, idx), = cleanup.disjoint_regions(regions, 4)
        assert name == "face" and idx.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [{"lips": [0, 9]}, {"lips": np.ones(3, bool)}, {"jaw": [-1]}])
def test_bad_regions_are_refused_with_the_vertex_count(bad):
    with pytest.raises(ValueError, match="vert"):
        cleanup.disjoint_regions(bad, 5)


def test_the_default_head_has_known_regions_and_other_meshes_do_not():
    from synth.head import build_head

    head = build_head()
    regions = cleanup.cleanup_regions_for(len(head.vertices))
    assert set(regions) == {"lips", "jaw", "upper_face"}
    out = dict(cleanup.disjoint_regions(regions, len(head.vertices)))
    assert set(out) == {"lips", "jaw", "upper_face", "other"}
    assert sum(idx.size for idx in out.values()) == len(head.vertices)
    assert np.isin(head.regions["upper_lip"], out["lips"]).all()  # lips win over the jaw
    assert np.isin(head.regions["chin"], out["jaw"]).all()
    assert cleanup.cleanup_regions_for(144) is None
    assert cleanup.DEFAULT_HEAD_VERTICES == len(head.vertices)


def test_regional_bake_keeps_each_key_in_its_region_and_the_bound_everywhere():
    rng = np.random.default_rng(0)
    t = np.arange(60) / 30
    n_verts = 40
    offsets = np.zeros((60, n_verts, 3))
    for k in range(4):  # motion that crosses region borders
        offsets += (2e-3 * np.sin(2 * np.pi * (0.7 + 0.5 * k) * t))[:, None, None] * rng.standard_normal((n_verts, 3))
    regions = cleanup.disjoint_regions({"lips": np.arange(10), "jaw": np.arange(5, 25)}, n_verts)
    bake = cleanup.regional_compact_basis(offsets.astype(np.float32), regions, 1e-4, 64)
    index = dict(regions)
    assert set(bake.key_regions) == {"lips", "jaw", "other"}
    for shape, region in zip(bake.compact.basis, bake.key_regions, strict=True):
        outside = np.setdiff1d(np.arange(n_verts), index[region])
        assert not shape[outside].any(), region
    rebuilt = bake.compact.weights.astype(np.float64) @ bake.compact.basis.reshape(bake.compact.rank, -1)
    assert vertex_error(rebuilt.reshape(offsets.shape), offsets) <= 1e-4
    assert bake.compact.max_error_m <= 1e-4 and not bake.compact.capped


def test_one_region_is_exactly_the_plain_compact_bake():
    offsets = np.random.default_rng(1).standard_normal((20, 8, 3)).astype(np.float32) * 1e-3
    plain = compact_basis(offsets, 1e-4, 64)
    regional = cleanup.regional_compact_basis(offsets, cleanup.disjoint_regions(None, 8), 1e-4, 64)
    np.testing.assert_array_equal(regional.compact.basis, plain.basis)
    np.testing.assert_array_equal(regional.compact.weights, plain.weights)
    assert regional.key_regions == ("face",) * plain.rank


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


def test_settings_round_trip_through_a_plain_dict_and_are_read_only():
    settings = CleanupSettings(smoothing={"jaw": 1.5}, intensity={"lips": 0.5}, time_offset=-2.5,
                               decimate_max_error_mm=0.2)
    assert CleanupSettings.from_dict(settings.to_dict()) == settings
    assert CleanupSettings.from_dict(CleanupSettings().to_dict()) == CleanupSettings()
    assert settings.sigma("jaw") == 1.5 and settings.sigma("lips") == 0.0
    assert settings.gain("lips") == 0.5 and settings.gain("jaw") == 1.0
    with pytest.raises(TypeError):
        settings.smoothing["jaw"] = 3.0


@pytest.mark.parametrize("kwargs", [
    {"smoothing": {"jaw": -1.0}}, {"intensity": {"lips": 99.0}}, {"time_offset": float("nan")},
    {"decimate_max_error_mm": 0.0},
], ids=["negative sigma", "huge intensity", "nan offset", "zero error"])
def test_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        CleanupSettings(**kwargs)


def test_default_settings_give_back_the_raw_curves_exactly():
    raw = np.random.default_rng(2).standard_normal((3, 25)).astype(np.float32)
    shapes, regions = toy_shapes()
    curves = apply_cleanup(raw, regions, shapes, CleanupSettings(), start_frame=5)
    for k, (frames, values) in enumerate(curves):
        np.testing.assert_array_equal(frames, 5 + np.arange(25))
        np.testing.assert_array_equal(values, raw[k])


# --------------------------------------------------------------------------------------
# Smoothing, intensity, offset
# --------------------------------------------------------------------------------------


def test_smoothing_spreads_an_impulse_as_a_gaussian_and_keeps_constants():
    impulse = np.zeros((1, 41))
    impulse[0, 20] = 1.0
    out = cleanup.smooth(impulse, 2.0)[0]
    distance = np.arange(41) - 20
    expected = np.where(np.abs(distance) <= 8, np.exp(-0.5 * (distance / 2.0) ** 2), 0.0)  # cut at 4 sigma
    np.testing.assert_allclose(out, expected / expected.sum(), atol=1e-12)
    np.testing.assert_allclose(cleanup.smooth(np.full((2, 9), 0.7), 3.0), 0.7)
    np.testing.assert_array_equal(cleanup.smooth(impulse, 0.0), impulse)


def test_smoothing_holds_the_ends_as_blender_does():
    # A curve at rest before the clip and held after it: edge-repeat padding means the
    # first value stays the rest value and a held end stays where it is.
    ramp = np.concatenate([np.zeros(10), np.linspace(0, 1, 10), np.ones(10)])[None]
    out = cleanup.smooth(ramp, 1.5)[0]
    assert out[0] == pytest.approx(0.0) and out[-1] == pytest.approx(1.0)
    assert np.all(np.diff(out) >= -1e-12)  # still monotone: no ringing


def test_smoothing_reduces_jitter():
    rng = np.random.default_rng(3)
    t = np.arange(120)
    clean = np.sin(2 * np.pi * t / 40)[None]
    noisy = clean + 0.05 * rng.standard_normal(clean.shape)
    settings = CleanupSettings(smoothing={"face": 2.0})
    (_, smoothed), = apply_cleanup(noisy, ["face"], None, settings)
    jitter_before = np.abs(np.diff(noisy[0], 2)).mean()
    jitter_after = np.abs(np.diff(smoothed, 2)).mean()
    assert jitter_after < 0.15 * jitter_before
    assert np.abs(smoothed - clean[0]).max() < np.abs(noisy[0] - clean[0]).max()


def test_smoothing_one_region_leaves_the_others_alone():
    raw = np.random.default_rng(4).standard_normal((3, 30)).astype(np.float32)
    shapes, regions = toy_shapes()
    curves = apply_cleanup(raw, regions, shapes, CleanupSettings(smoothing={"jaw": 2.0}))
    np.testing.assert_array_equal(curves[0][1], raw[0])
    np.testing.assert_array_equal(curves[1][1], raw[1])
    assert not np.array_equal(curves[2][1], raw[2])


@pytest.mark.parametrize("region, gain", [("lips", 0.0), ("jaw", 1.5)], ids=["lips still", "jaw x1.5"])
def test_intensity_scales_its_region_and_leaves_the_others_unchanged(region, gain):
    raw = np.random.default_rng(5).standard_normal((3, 30)).astype(np.float32)
    shapes, regions = toy_shapes()
    frames = np.arange(30, dtype=np.float64)
    before = offsets_of(apply_cleanup(raw, regions, shapes, CleanupSettings()), shapes, frames)
    after = offsets_of(apply_cleanup(raw, regions, shapes, CleanupSettings(intensity={region: gain})), shapes, frames)
    scaled = slice(0, 3) if region == "lips" else slice(3, None)  # toy_shapes: vertices 0-2 lips, 3- jaw
    kept = slice(3, None) if region == "lips" else slice(0, 3)
    np.testing.assert_allclose(after[:, scaled], gain * before[:, scaled], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(after[:, kept], before[:, kept])


def test_time_offset_shifts_the_frames_only():
    raw = np.random.default_rng(7).standard_normal((3, 12)).astype(np.float32)
    shapes, regions = toy_shapes()
    plain = apply_cleanup(raw, regions, shapes, CleanupSettings(), start_frame=1)
    shifted = apply_cleanup(raw, regions, shapes, CleanupSettings(time_offset=2.5), start_frame=1)
    for (f0, v0), (f1, v1) in zip(plain, shifted, strict=True):
        np.testing.assert_array_equal(f1, f0 + 2.5)
        np.testing.assert_array_equal(v1, v0)


# --------------------------------------------------------------------------------------
# Decimation
# --------------------------------------------------------------------------------------


def test_decimation_keeps_only_the_corners_of_piecewise_linear_curves():
    corners = [0, 7, 20, 29]
    curve = np.interp(np.arange(30), corners, [0.0, 1.0, -0.5, 0.25])
    raw = np.stack([curve, 0.5 * curve, np.interp(np.arange(30), [0, 29], [0.2, 0.9])]).astype(np.float32)
    shapes, regions = toy_shapes()
    curves = apply_cleanup(raw, regions, shapes, CleanupSettings(decimate_max_error_mm=1e-3))
    assert curves[0][0].tolist() == corners
    assert curves[1][0].tolist() == corners
    assert curves[2][0].tolist() == [0, 29]  # a straight line needs its ends only


def test_a_flat_curve_keeps_its_two_ends():
    raw = np.zeros((3, 50), dtype=np.float32)
    shapes, regions = toy_shapes()
    for frames, values in apply_cleanup(raw, regions, shapes, CleanupSettings(decimate_max_error_mm=0.1)):
        assert frames.tolist() == [0, 49] and values.tolist() == [0, 0]


@pytest.mark.parametrize("max_error_mm", [0.01, 0.1, 0.5])
def test_decimation_bound_holds_on_every_vertex_at_every_time(max_error_mm):
    rng = np.random.default_rng(8)
    raw = np.cumsum(rng.standard_normal((3, 80)), axis=1).astype(np.float32) * 0.1
    shapes, regions = toy_shapes()
    settings = CleanupSettings(smoothing={"lips": 1.0}, intensity={"jaw": 1.3}, decimate_max_error_mm=max_error_mm)
    curves = apply_cleanup(raw, regions, shapes, settings, start_frame=3)
    full = apply_cleanup(raw, regions, shapes, CleanupSettings(smoothing={"lips": 1.0}, intensity={"jaw": 1.3}),
                         start_frame=3)
    times = 3 + np.linspace(0, 79, 79 * 7 + 1)  # grid frames and fractions between them
    error = vertex_error(offsets_of(curves, shapes, times), offsets_of(full, shapes, times))
    assert error <= max_error_mm * MM * (1 + 1e-9)
    assert sum(len(f) for f, _ in curves) < sum(len(f) for f, _ in full)


def test_overlapping_regions_are_decimated_together_so_errors_cannot_add_up():
    # Two "regions" whose keys move the same vertex the same way: decimated apart, each
    # could use the whole budget and the errors would add.
    shapes = np.zeros((2, 1, 3), dtype=np.float32)
    shapes[:, 0, 2] = 0.01
    curve = np.sin(np.arange(40) / 3.0).astype(np.float32)
    raw = np.stack([curve, curve])
    settings = CleanupSettings(decimate_max_error_mm=0.5)
    curves = apply_cleanup(raw, ["a", "b"], shapes, settings)
    full = apply_cleanup(raw, ["a", "b"], shapes, CleanupSettings())
    times = np.linspace(0, 39, 400)
    assert vertex_error(offsets_of(curves, shapes, times), offsets_of(full, shapes, times)) <= 0.5 * MM * (1 + 1e-9)


def test_the_order_of_operations_does_not_matter_and_reapplying_is_the_same():
    raw = np.random.default_rng(9).standard_normal((3, 40)).astype(np.float32)
    shapes, regions = toy_shapes()
    # The settings are the state: any path of operator calls that ends in the same state
    # derives the same curves from raw.
    settings = CleanupSettings(smoothing={"jaw": 1.0}, decimate_max_error_mm=0.2, time_offset=1.0)
    once = apply_cleanup(raw, regions, shapes, settings)
    again = apply_cleanup(raw, regions, shapes, CleanupSettings.from_dict(settings.to_dict()))
    for (f0, v0), (f1, v1) in zip(once, again, strict=True):
        np.testing.assert_array_equal(f0, f1)
        np.testing.assert_array_equal(v0, v1)


# --------------------------------------------------------------------------------------
# A realistic clip: the project's rig on the project's head
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def rig_clip():
    """About 8 s of synthetic speech (seeded phonemes, a few pauses) animated by the rig at
    30 fps, baked per region and resampled to a 24 fps scene: (regional bake, raw (K, n))."""
    from synth import rig
    from synth.head import build_head
    from synth.segments import ARPABET, PhonemeSegment

    rng = np.random.default_rng(3)
    segments, t = [], 0.2
    for _ in range(60):
        duration = rng.uniform(0.05, 0.18)
        segments.append(PhonemeSegment(str(rng.choice(ARPABET)), t, t + duration))
        t += duration + (0.3 if rng.random() < 0.08 else 0.0)
    head = build_head()
    offsets = rig.animate(segments, fps=30, duration=t + 0.3)  # (T, V, 3)
    regions = cleanup.disjoint_regions(cleanup.cleanup_regions_for(len(head.vertices)), len(head.vertices))
    bake = cleanup.regional_compact_basis(offsets, regions, 1e-4, 64)
    raw = timing.resample_motion(bake.compact.weights, 30, 24).T  # (K, n)
    return bake, raw.astype(np.float32)


@pytest.mark.parametrize("max_error_mm", [0.1, 0.2])
def test_decimation_removes_most_keys_of_a_speech_clip_within_the_bound(max_error_mm):
    bake, raw = rig_clip()
    shapes = bake.compact.basis
    settings = CleanupSettings(decimate_max_error_mm=max_error_mm)
    curves = apply_cleanup(raw, bake.key_regions, shapes, settings, start_frame=1)
    full = apply_cleanup(raw, bake.key_regions, shapes, CleanupSettings(), start_frame=1)
    n = raw.shape[1]
    times = 1 + np.concatenate([np.arange(n), np.arange(n - 1) + 0.5])
    error = vertex_error(offsets_of(curves, shapes, times), offsets_of(full, shapes, times))
    kept = sum(len(frames) for frames, _ in curves)
    removed = 1 - kept / raw.size
    print(f"\nrig clip: {raw.shape[0]} keys x {n} frames, max error {max_error_mm} mm: "
          f"removed {removed:.1%} of the keyframes, achieved max error {error / MM:.5f} mm")
    assert error <= max_error_mm * MM * (1 + 1e-9)
    assert removed > 0.5
