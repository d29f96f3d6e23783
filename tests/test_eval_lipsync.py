"""Forced alignment of a real clip (vendor_model.alignment) and the lip-sync evaluation script
end to end on a random model (bench/eval_lipsync.py). Needs pocketsphinx (the `train` extra)
and Debian's pocketsphinx-testdata clips; skips with the reason otherwise."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("pocketsphinx", reason="pocketsphinx (the train extra) is not installed")

from bench import eval_lipsync  # noqa: E402
from bench.real_speech_clips import LICENCES, list_clips, read_sphinx_transcription  # noqa: E402
from vendor_model.alignment import AlignmentError, align, align_full, normalize_transcript  # noqa: E402
from vendor_model.frontends import hama_available  # noqa: E402

BUILTIN_DEFAULT = eval_lipsync.ROOT / "diffspeaker_blender" / "models" / "default.safetensors"


@pytest.fixture(scope="module")
def clips():
    found = {c.name: c for c in list_clips()}
    if "librivox-0880" not in found or "cards-001" not in found:
        pytest.skip("Debian's pocketsphinx-testdata clips are not installed (/usr/share/pocketsphinx/test/data)")
    return found


def test_the_clip_list_has_transcripts_and_licences(clips):
    assert clips["librivox-0880"].transcript == "he was not an ill disposed young man"
    assert clips["goforward"].path.suffix == ".raw"
    assert all(c.collection in LICENCES for c in clips.values())


def test_sphinx_transcription_lines_are_parsed(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("<s> ten of clubs  </s> (001)\n<s> he was </s> (a-0880)\n")
    assert read_sphinx_transcription(path) == {"001": "ten of clubs", "a-0880": "he was"}
    assert normalize_transcript("<s> He was, NOT! </s> (utt-1)") == ["he", "was", "not"]


def test_a_real_clip_aligns_to_its_words_with_contiguous_phones(clips):
    clip = clips["librivox-0880"]
    result = align_full(clip.path, clip.transcript)
    assert [w.word for w in result.words] == clip.transcript.split()
    phones = result.phones
    assert phones[0].start == 0.0
    assert all(a.end == pytest.approx(b.start) for a, b in zip(phones, phones[1:]))  # contiguous
    assert all(p.end > p.start for p in phones)  # ordered, non-empty
    assert phones[-1].end == pytest.approx(result.duration, abs=1e-6)
    assert result.duration == pytest.approx(2.99, abs=0.01)  # 47840 samples at 16 kHz
    assert phones[0].phone == phones[-1].phone == "sil"
    assert all(p.phone.islower() and p.phone.isalpha() for p in phones)
    assert [p.phone for p in phones if p.word == "man"] == ["m", "ae", "n"]
    assert all(w.start < w.end <= v.start + 1e-9 for w, v in zip(result.words, result.words[1:]))
    assert align(clip.path, clip.transcript) == list(phones)


def test_unknown_words_are_refused_before_decoding(clips):
    with pytest.raises(AlignmentError, match="qwzxv"):
        align(clips["cards-001"].path, "ten of qwzxv")


def test_eval_lipsync_runs_end_to_end_on_a_random_model(tmp_path, clips):
    output = tmp_path / "report.json"
    report = eval_lipsync.main([
        "--demo-random", "--clips", "cards-001", "--steps", "2", "--device", "cpu",
        "--alignments", str(tmp_path / "absent.json"),  # forces alignment on the fly
        "--output", str(output),
    ])
    saved = json.loads(output.read_text())
    assert saved["model"] == "demo-random" and [r["clip"] for r in saved["clips"]] == ["cards-001"]
    row = report["clips"][0]
    assert row["frames"] == pytest.approx(row["duration_s"] * row["fps"], abs=1)
    assert row["n_bilabials"] == 1 and row["n_open_vowels"] == 2  # "ten of clubs": b; ah, ah
    for key in ("closure_rate", "opening_rate"):
        assert 0.0 <= row[key] <= 1.0
    assert abs(row["lag_s"]) <= 0.2 and np.isfinite(row["jitter_mm_per_frame2"])
    assert math.isnan(row["rest_in_silence"]) == (row["n_silence_frames"] == 0)
    assert saved["summary"]["clips"] == 1


@pytest.mark.skipif(not hama_available(), reason="the built-in default listens through hama, which cannot run here")
def test_eval_lipsync_scores_the_lip_closure_step_unless_told_not_to(tmp_path, clips):
    def run(*extra):
        return eval_lipsync.main([
            str(BUILTIN_DEFAULT), "--clips", "librivox-0880", "--steps", "2", "--device", "cpu",
            "--alignments", str(tmp_path / "absent.json"), "--output", str(tmp_path / "r.json"), *extra,
        ])

    closed, alone = run(), run("--no-lip-closure")
    assert closed["lip_closure"] is not None and alone["lip_closure"] is None
    assert alone["clips"][0]["lip_closures"] == 0 and closed["clips"][0]["lip_closures"] >= 1  # "ill disposed ... man"
    # the step only ever lowers the opening, and only near a heard p/b/m
    assert min(closed["clips"][0]["bilabial_min_mm"]) <= min(alone["clips"][0]["bilabial_min_mm"])


def test_eval_lipsync_needs_lip_regions(tmp_path, clips):
    bundle = eval_lipsync.demo_random_bundle()
    upper = tmp_path / "upper.txt"
    upper.write_text("1, 2, 3")
    lower = tmp_path / "lower.npy"
    np.save(lower, np.array([4, 5]))
    got = eval_lipsync.lip_regions({}, upper, lower, bundle.cfg.n_vertices)
    assert got[0].tolist() == [1, 2, 3] and got[1].tolist() == [4, 5]
    with pytest.raises(SystemExit, match="lips-upper"):
        eval_lipsync.lip_regions({}, None, None, bundle.cfg.n_vertices)


def handmade_synthetic_set(root):
    """A hand-made held-out set: one clip whose lips meet for its 'm' and part 5 mm for its 'aa'
    (the rig's motion, frames 15-21), and one sentence outside the test split."""
    from .conftest import write_wav

    data = root / "synth"
    for folder in ("wav", "segments", "vertices_npy"):
        (data / folder).mkdir(parents=True)
    (data / "dataset.json").write_text(json.dumps({
        "fps": 30, "splits": {"test": {"subjects": ["neutral"], "sentences": [1]}},
        "regions": {"upper_lip_seam": [0], "lower_lip_seam": [1]},
    }))
    template = np.array([[0, 0.001, 0], [0, -0.001, 0], [0.05, 0, 0]], dtype=np.float32)  # upper, lower, other
    np.savez(data / "templates.npz", neutral=template)
    vertices = np.repeat(template[None], 30, axis=0)
    vertices[15:22, 1, 1] -= 0.005
    for number in (1, 2):
        write_wav(data / "wav" / f"neutral_{number:02d}.wav", 0.1 * np.sin(np.arange(16000) * 0.05))
        np.save(data / "vertices_npy" / f"neutral_{number:02d}.npy", vertices)
        (data / "segments" / f"neutral_{number:02d}.json").write_text(json.dumps({"segments": [
            {"phone": "m", "start": 0.2, "end": 0.3}, {"phone": "aa", "start": 0.5, "end": 0.7}]}))
    return data


def test_ground_truth_mode_scores_the_held_out_clips_own_motion(tmp_path):
    data = handmade_synthetic_set(tmp_path)
    report = eval_lipsync.main(["--ground-truth", "--heldout", str(data), "--output", str(tmp_path / "gt.json")])
    assert [row["clip"] for row in report["clips"]] == ["neutral_01"]  # sentence 2 is not in the test split
    summary = report["summary"]
    assert (summary["closure_rate"], summary["opening_rate"]) == (1.0, 1.0)
    assert summary["opening_max_mm"] == pytest.approx(5.0, abs=1e-3)
    assert summary["bilabial_min_mm_median"] == pytest.approx(0.0, abs=1e-6)  # how far each segment got
    assert summary["open_vowel_max_mm_median"] == pytest.approx(5.0, abs=1e-3)
    with pytest.raises(SystemExit):
        eval_lipsync.main(["--ground-truth"])  # needs --heldout


@pytest.mark.parametrize("zero_snr", [True, False])
def test_denoiser_probe_shows_whether_the_first_sampling_step_matches_training(tmp_path, zero_snr):
    """bench/denoiser_probe.py scores one denoiser call per noise level. With zero terminal SNR
    the training input at t=999 is pure noise, so its row is the first sampling step's row;
    with the official schedule x_999 still holds 6.8 % of the motion, so the two differ."""
    from bench import denoiser_probe
    from vendor_model.checkpoint import ModelBundle
    from vendor_model.config import DiffusionConfig

    from .conftest import tiny_model

    data = handmade_synthetic_set(tmp_path)
    diffusion = DiffusionConfig(rescale_betas_zero_snr=zero_snr, timestep_spacing="trailing" if zero_snr else "leading")
    model = tiny_model(n_vertices=3, smooth_output=False, motion_scale=1000.0, diffusion=diffusion)
    template = np.load(data / "templates.npz")["neutral"]
    bundle = ModelBundle(model, template, ("neutral", "calm", "loud"))
    summaries = denoiser_probe.probe(bundle, data, timesteps=(999, 500))
    first_step = 999 if zero_snr else 981
    assert list(summaries) == ["t=999", "t=500", f"pure noise (t={first_step})", "rig motion"]
    assert summaries["rig motion"]["clips"] == 1  # only the test split
    assert (summaries["rig motion"]["closure_rate"], summaries["rig motion"]["opening_rate"]) == (1.0, 1.0)
    same = summaries["t=999"]["opening_max_mm"] == summaries[f"pure noise (t={first_step})"]["opening_max_mm"]
    assert same == zero_snr
