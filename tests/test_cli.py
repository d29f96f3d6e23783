"""`python -m vendor_model`: convert an official checkpoint, describe a model, generate
offsets; bad input is one `error:` line and exit code 2, and output files are replaced
atomically."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vendor_model.checkpoint import load_bundle
from vendor_model.cli import main
from vendor_model.config import SamplerConfig
from vendor_model.pipeline import generate

from .conftest import speech_like, tiny_model
from .test_checkpoint import lightning_checkpoint

TEMPLATE = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An official-style .ckpt, its template (.npy), the encoder's head count (JSON),
    a 1.2 s speech clip (16 kHz WAV) and the converted model (.safetensors)."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("cli")
    model = tiny_model(seed=0)
    ckpt = folder / "diffspeaker_tiny.ckpt"
    lightning_checkpoint(model, ckpt)
    template = folder / "template.npy"
    np.save(template, TEMPLATE)
    encoder_config = folder / "encoder.json"
    encoder_config.write_text(json.dumps({"num_attention_heads": 4}))
    wav = folder / "line.wav"
    sf.write(wav, speech_like(1.2), 16000, subtype="FLOAT")
    official = ["--preset", "vocaset", "--encoder-config", str(encoder_config)]
    converted = folder / "tiny.safetensors"
    assert main(["convert", str(ckpt), str(converted), "--template", str(template), *official]) == 0
    return dict(model=model, ckpt=ckpt, template=template, wav=wav, official=official, converted=converted)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ---- convert and info -----------------------------------------------------------------------


def test_convert_writes_a_model_with_the_weights_and_template(files, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["convert", str(files["ckpt"]), str(out), "--template", str(files["template"]), *files["official"]]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert _listing(tmp_path) == ["m.safetensors"]
    bundle = load_bundle(out)
    assert bundle.cfg.n_vertices == 20 and bundle.cfg.fps == 30 and bundle.cfg.num_styles == 3
    np.testing.assert_array_equal(bundle.template, TEMPLATE)
    for key, value in files["model"].export_state_dict().items():
        assert torch.equal(bundle.model.export_state_dict()[key], value), key


def test_convert_can_name_the_styles(files, tmp_path, capsys):
    out = tmp_path / "named.safetensors"
    assert main(["convert", str(files["ckpt"]), str(out), "--styles", "calm, lively ,wide", *files["official"]]) == 0
    assert load_bundle(out).style_names == ("calm", "lively", "wide")
    assert main(["info", str(out)]) == 0
    assert "0=calm, 1=lively, 2=wide" in capsys.readouterr().out


def test_convert_with_the_wrong_number_of_style_names_is_a_bad_input(files, tmp_path, capsys):
    out = tmp_path / "named.safetensors"
    code = main(["convert", str(files["ckpt"]), str(out), "--styles", "calm,lively", *files["official"]])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "styles" in err
    assert not out.exists()


def test_info_describes_the_converted_model(files, capsys):
    assert main(["info", str(files["converted"])]) == 0
    out = capsys.readouterr().out
    assert "20 vertices" in out and "30 fps" in out
    assert "template included" in out
    assert "0=style_0, 1=style_1, 2=style_2" in out
    assert "imported_from" in out and "diffspeaker_tiny.ckpt" in out  # provenance is kept


def test_info_reads_an_official_checkpoint_directly(files, capsys):
    assert main(["info", str(files["ckpt"]), *files["official"]]) == 0
    out = capsys.readouterr().out
    assert "20 vertices" in out and "template not included" in out


# ---- generate -------------------------------------------------------------------------------


def test_generate_writes_offsets_fps_seeds_and_template(files, tmp_path, capsys):
    out = tmp_path / "offsets.npz"
    assert main(["generate", str(files["converted"]), str(files["wav"]), "-o", str(out), "--steps", "3", "--device", "cpu"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = load_bundle(files["converted"]).model
    frames = model.num_frames(19200)
    with np.load(out) as data:
        assert data["offsets"].shape == (1, frames, 20, 3) and data["offsets"].dtype == np.float32
        assert int(data["fps"]) == 30
        assert data["seeds"].tolist() == [0]
        assert int(data["style"]) == 0 and str(data["style_name"]) == "style_0"
        np.testing.assert_array_equal(data["template"], TEMPLATE)
        loaded = generate(model, str(files["wav"]), sampler=SamplerConfig(steps=3, seed=0), device="cpu")
        np.testing.assert_array_equal(data["offsets"], loaded.offsets)
        original = generate(files["model"], str(files["wav"]), sampler=SamplerConfig(steps=3, seed=0), device="cpu")
        np.testing.assert_allclose(data["offsets"], original.offsets, atol=1e-6, rtol=0)


def test_generate_takes_and_seed(files, tmp_path):
    out = tmp_path / "takes.npz"
    code = main(["generate", str(files["converted"]), str(files["wav"]), "-o", str(out),
                 "--steps", "2", "--takes", "2", "--seed", "5", "--style", "style_2", "--device", "cpu"])
    assert code == 0
    with np.load(out) as data:
        assert data["seeds"].tolist() == [5, 6]
        assert data["offsets"].shape[0] == 2
        assert int(data["style"]) == 2
        assert not np.allclose(data["offsets"][0], data["offsets"][1], atol=1e-4)


def test_generate_from_the_official_checkpoint_matches_the_converted_model(files, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    common = ["--steps", "2", "--seed", "3", "--device", "cpu"]
    assert main(["generate", str(files["converted"]), str(files["wav"]), "-o", str(a), *common]) == 0
    assert main(["generate", str(files["ckpt"]), str(files["wav"]), "-o", str(b), "--template", str(files["template"]),
                 *files["official"], *common]) == 0
    with np.load(a) as first, np.load(b) as second:
        np.testing.assert_allclose(first["offsets"], second["offsets"], atol=1e-6)
        np.testing.assert_array_equal(second["template"], TEMPLATE)


def test_an_existing_output_is_replaced_atomically(files, tmp_path):
    out = tmp_path / "offsets.npz"
    out.write_bytes(b"an older take")
    assert main(["generate", str(files["converted"]), str(files["wav"]), "-o", str(out), "--steps", "1", "--device", "cpu"]) == 0
    assert _listing(tmp_path) == ["offsets.npz"]  # no temporary files left behind
    with np.load(out) as data:
        assert data["offsets"].shape[0] == 1


def test_an_output_name_without_the_npz_suffix_still_gets_the_data(files, tmp_path):
    out = tmp_path / "take_one"
    assert main(["generate", str(files["converted"]), str(files["wav"]), "-o", str(out), "--steps", "1", "--device", "cpu"]) == 0
    assert _listing(tmp_path) == ["take_one"]
    with np.load(out) as data:
        assert data["offsets"].shape[0] == 1


# ---- bad input ------------------------------------------------------------------------------


def _assert_bad_input(code, capsys):
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return lines[0]


def test_a_missing_audio_file_is_one_error_line_and_no_output(files, tmp_path, capsys):
    out = tmp_path / "offsets.npz"
    code = main(["generate", str(files["converted"]), str(tmp_path / "nowhere.wav"), "-o", str(out), "--device", "cpu"])
    assert "nowhere.wav" in _assert_bad_input(code, capsys)
    assert _listing(tmp_path) == []


def test_a_file_that_is_not_a_model_is_one_error_line_and_no_output(files, tmp_path, capsys):
    out = tmp_path / "offsets.npz"
    for name, content in (("notes.safetensors", b"hello"), ("notes.ckpt", b"hello, not a checkpoint")):
        fake = tmp_path / name
        fake.write_bytes(content)
        code = main(["generate", str(fake), str(files["wav"]), "-o", str(out), "--device", "cpu"])
        assert name in _assert_bad_input(code, capsys)
    code = main(["info", str(tmp_path / "missing.safetensors")])
    assert "missing.safetensors" in _assert_bad_input(code, capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, words",
    [(["--style", "angry"], "unknown style"), (["--style", "7"], "does not exist"), (["--steps", "0"], "steps")],
)
def test_bad_generation_options_are_one_error_line(files, tmp_path, capsys, extra, words):
    out = tmp_path / "offsets.npz"
    code = main(["generate", str(files["converted"]), str(files["wav"]), "-o", str(out), "--device", "cpu", *extra])
    assert words in _assert_bad_input(code, capsys)
    assert not out.exists()


def test_a_failed_run_leaves_an_existing_output_untouched(files, tmp_path, capsys):
    out = tmp_path / "offsets.npz"
    out.write_bytes(b"the take the artist liked")
    code = main(["generate", str(files["converted"]), str(tmp_path / "nowhere.wav"), "-o", str(out), "--device", "cpu"])
    _assert_bad_input(code, capsys)
    assert out.read_bytes() == b"the take the artist liked"
    assert _listing(tmp_path) == ["offsets.npz"]


def test_a_template_with_the_wrong_vertex_count_is_one_error_line(files, tmp_path, capsys):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((7, 3), np.float32))
    out = tmp_path / "m.safetensors"
    code = main(["convert", str(files["ckpt"]), str(out), "--template", str(wrong), *files["official"]])
    assert "vertices" in _assert_bad_input(code, capsys)
    assert not out.exists()


def test_an_encoder_config_that_does_not_fit_the_weights_is_one_error_line(files, tmp_path, capsys):
    wrong = tmp_path / "encoder.json"
    wrong.write_text(json.dumps({"num_attention_heads": 4, "num_conv_pos_embedding_groups": 8}))
    code = main(["info", str(files["ckpt"]), "--preset", "vocaset", "--encoder-config", str(wrong)])
    _assert_bad_input(code, capsys)


def test_an_output_path_that_is_a_folder_is_one_error_line(files, tmp_path, capsys):
    folder = tmp_path / "renders.npz"
    folder.mkdir()
    code = main(["generate", str(files["converted"]), str(files["wav"]), "-o", str(folder), "--steps", "1", "--device", "cpu"])
    assert "renders.npz" in _assert_bad_input(code, capsys)
    assert _listing(tmp_path) == ["renders.npz"] and _listing(folder) == []


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage" in capsys.readouterr().err
