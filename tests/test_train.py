"""Training: data layout and batching, a loss that really falls (the official trainer
never steps with a modern torchmetrics, spec §7), exact resume, checkpoints that load
and generate, audio dropout, DDP on two CPU processes, and the `train` command."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from vendor_model.checkpoint import load_bundle
from vendor_model.cli import main
from vendor_model.config import SamplerConfig
from vendor_model.data import (
    DatasetError,
    MotionItem,
    SpeechMotionDataset,
    Split,
    biwi_layout,
    collate,
    layout_from_json,
    load_layout,
    vocaset_layout,
)
from vendor_model.model import DiffSpeaker, TrainingBatch
from vendor_model.pipeline import generate
from vendor_model.train import STATE_SUFFIX, TrainConfig, Trainer, train
from vendor_model.untrusted import UntrustedFileError

from .conftest import TINY_ENCODER, speech_like, tiny_config, write_wav

SUBJECTS = ("subj_a", "subj_b", "subj_c")
N_VERTICES = 20
STORED_FPS = 60  # VOCASET-like: stored at 60 fps, every 2nd frame kept


def _envelope(audio: np.ndarray, frames: int) -> np.ndarray:
    hop = len(audio) / frames
    return np.array([np.sqrt(np.mean(audio[int(i * hop) : int((i + 1) * hop)] ** 2)) for i in range(frames)])


def make_dataset(root: Path) -> Path:
    """3 subjects x 3 sentences of ~1 s; the motion is a fixed vertex pattern scaled by the
    audio's loudness envelope (and by a per-subject gain), added to the subject's template."""
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=N_VERTICES * 3)
    templates = {}
    for s, subject in enumerate(SUBJECTS):
        templates[subject] = rng.normal(size=(N_VERTICES, 3))
        for sentence in (1, 2, 3):
            seconds = 0.9 + 0.1 * sentence
            t = np.arange(int(seconds * 16000)) / 16000
            audio = speech_like(seconds, seed=10 * s + sentence) * (0.6 + 0.4 * np.sin(2 * np.pi * (1.5 + sentence) * t))
            stem = f"{subject}_sentence{sentence:02d}"
            write_wav(root / "wav" / f"{stem}.wav", audio)
            envelope = _envelope(audio, int(seconds * STORED_FPS))
            offsets = (1 + 0.5 * s) * (envelope / envelope.max())[:, None] * pattern[None]
            np.save(root / "vertices_npy" / f"{stem}.npy", templates[subject].reshape(1, -1) + offsets)  # float64 like VOCASET
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump(templates, f)  # what the real file is; the loader reads it with the restricted unpickler
    splits = {
        "train": {"subjects": list(SUBJECTS), "sentences": [1, 2]},
        "val": {"subjects": list(SUBJECTS), "sentences": [3]},
        "test": {"subjects": list(SUBJECTS), "sentences": [3]},
    }
    (root / "dataset.json").write_text(json.dumps({"fps": STORED_FPS, "subsample": 2, "styles": list(SUBJECTS), "splits": splits}))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def layout(data_dir):
    return layout_from_json(data_dir)


def quick(out: Path, **overrides) -> TrainConfig:
    return TrainConfig(**{**dict(batch_size=3, log_every=1, checkpoint_every=None, out_dir=str(out), device="cpu"), **overrides})


def logged_losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


# ---- data -----------------------------------------------------------------------------------


def test_dataset_items(data_dir, layout):
    assert layout.motion_fps == 30 and layout.styles == SUBJECTS
    dataset = SpeechMotionDataset(layout, "train")
    assert len(dataset) == 6 and [e[0] for e in dataset.entries][:2] == ["subj_a_sentence01", "subj_a_sentence02"]
    item = dataset[3]  # subj_b, sentence 2: 1.1 s
    assert item.name == "subj_b_sentence02" and item.subject == "subj_b" and item.style == 1
    assert item.audio.dtype == np.float32 and item.audio.shape == (17600,)
    assert abs(item.audio.mean()) < 1e-4 and abs(item.audio.std() - 1) < 1e-3  # normalised like wav2vec's processor
    stored = np.load(data_dir / "vertices_npy" / "subj_b_sentence02.npy")
    template = pickle.loads((data_dir / "templates.pkl").read_bytes())["subj_b"].reshape(-1)
    assert item.offsets.dtype == np.float32 and item.offsets.shape == (33, 3 * N_VERTICES)  # 66 stored frames / 2
    np.testing.assert_allclose(item.offsets, stored[::2] - template, atol=1e-5)
    val = SpeechMotionDataset(layout, "val")
    assert [e[0] for e in val.entries] == [f"{s}_sentence03" for s in SUBJECTS]


def test_collate_pads_with_masks():
    items = [
        MotionItem(np.ones(100, np.float32), np.ones((4, 6), np.float32), 2, "a", "x"),
        MotionItem(np.full(60, 2, np.float32), np.full((7, 6), 3, np.float32), 0, "b", "y"),
    ]
    batch = collate(items)
    assert batch.audio.shape == (2, 100) and batch.offsets.shape == (2, 7, 6)
    assert batch.audio_mask.tolist() == [[1] * 100, [1] * 60 + [0] * 40]
    assert batch.frame_mask.tolist() == [[True] * 4 + [False] * 3, [True] * 7]
    assert batch.audio[1, 60:].abs().sum() == 0 and batch.offsets[0, 4:].abs().sum() == 0
    assert batch.audio[1, :60].eq(2).all() and batch.offsets[1].eq(3).all()
    assert batch.style.tolist() == [2, 0] and batch.style.dtype == torch.long
    with pytest.raises(DatasetError, match="outside the style list"):
        collate([MotionItem(np.ones(10, np.float32), np.ones((2, 6), np.float32), -1, "c", "z")])


def test_official_layouts(tmp_path):
    voca = vocaset_layout(tmp_path)
    assert (voca.fps, voca.subsample, voca.motion_fps) == (60, 2, 30)
    assert voca.styles[0] == "FaceTalk_170728_03272_TA" and len(voca.styles) == 8
    assert voca.splits["train"].sentences == tuple(range(1, 41)) and voca.splits["train"].subjects == voca.styles
    assert voca.splits["test"].subjects == ("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA")
    assert voca.splits["val"].sentences == tuple(range(21, 41)) and voca.skip_missing_motion
    biwi = biwi_layout(tmp_path)
    assert (biwi.motion_fps, biwi.styles) == (25, ("F2", "F3", "F4", "M3", "M4", "M5"))
    assert [biwi.splits[s].sentences[::len(biwi.splits[s].sentences) - 1] for s in ("train", "val", "test")] == [(1, 32), (33, 36), (37, 40)]
    with pytest.raises(DatasetError, match="no dataset.json"):
        load_layout(tmp_path)


def test_missing_and_misnamed_files_are_named(data_dir, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(data_dir, root)
    (root / "vertices_npy" / "subj_a_sentence02.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"subj_a_sentence02.wav.*vertices_npy/subj_a_sentence02.npy"):
        SpeechMotionDataset(layout_from_json(root), "train")
    lenient = dataclasses.replace(layout_from_json(root), skip_missing_motion=True)  # as FaceFormer does for VOCASET
    with pytest.warns(UserWarning, match="1 clip.*left out: subj_a_sentence02.wav"):
        assert len(SpeechMotionDataset(lenient, "train")) == 5
    (root / "wav" / "subj_a_sentence02.wav").unlink()
    write_wav(root / "wav" / "subj_a_sentence_two.wav", speech_like(0.5))
    with pytest.raises(DatasetError, match="subj_a_sentence_two.wav"):
        SpeechMotionDataset(layout_from_json(root), "train")
    (root / "wav" / "subj_a_sentence_two.wav").unlink()
    (root / "templates.pkl").write_bytes(pickle.dumps({"subj_a": np.zeros((20, 3)), "subj_b": np.zeros((20, 3))}))
    with pytest.raises(DatasetError, match="no template for subject 'subj_c'"):
        SpeechMotionDataset(layout_from_json(root), "train")
    (root / "templates.pkl").write_bytes(pickle.dumps({"subj_a": os.system}))  # a pickle that names a function
    with pytest.raises(UntrustedFileError, match="posix.system|os.system|nt.system"):
        SpeechMotionDataset(layout_from_json(root), "train")
    (root / "templates.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="templates.pkl"):
        SpeechMotionDataset(layout_from_json(root), "train")
    empty = dataclasses.replace(layout_from_json(data_dir), splits={"train": Split(("nobody",), (1,))})
    with pytest.raises(DatasetError, match=r"'train' split is empty.*nobody"):
        SpeechMotionDataset(empty, "train")


# ---- the training loop ----------------------------------------------------------------------


def test_weights_change_and_loss_falls(layout, tmp_path):
    torch.manual_seed(0)
    model = DiffSpeaker(tiny_config())
    before = {k: v.clone() for k, v in model.named_parameters()}
    assert before["denoiser.motion_decoder.weight"].abs().sum() == 0  # official zero-initialised head
    out = tmp_path / "run"
    train(model, layout, quick(out, lr=1e-3, max_steps=30))
    losses = logged_losses(out)
    assert len(losses) == 30
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)
    after = dict(model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k].detach())}
    assert {"denoiser.motion_decoder.weight", "denoiser.motion_decoder.bias", "denoiser.obj_vector.weight"} <= changed
    cnn = {k for k in before if k.startswith("audio_encoder.model.feature_extractor.")}
    assert cnn and not cnn & changed, "the convolutional front-end must stay frozen"
    rest = {k for k in before if k.startswith("audio_encoder.") and k not in cnn}
    assert any(k.startswith("audio_encoder.model.encoder.layers.") for k in changed)
    assert {"audio_encoder.model.feature_projection.projection.weight", "audio_encoder.model.masked_spec_embed"} <= changed
    assert len(rest & changed) >= 0.8 * len(rest)  # LayerDrop may skip a layer now and then
    assert all(not p.requires_grad for k, p in after.items() if k in cnn)


def test_the_official_learning_rate_also_learns(layout, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), layout, quick(out, max_steps=30))  # lr 1e-4, weight decay 0.01
    losses = logged_losses(out)
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])


def _state(path: Path) -> dict:
    return torch.load(path.with_name(path.name.replace(".safetensors", STATE_SUFFIX)), weights_only=True)


def test_resume_continues_exactly(layout, tmp_path):
    straight = train(tiny_config(), layout, quick(tmp_path / "a", batch_size=2, max_steps=15))  # 3 steps/epoch
    first = train(tiny_config(), layout, quick(tmp_path / "b", batch_size=2, max_steps=10))
    state = _state(first)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (10, 3, 1)  # stopped mid-epoch
    resumed = train(None, layout, quick(tmp_path / "b", batch_size=2, max_steps=15), resume=first.with_name("step-0000010" + STATE_SUFFIX))
    assert resumed.name == straight.name == "step-0000015.safetensors"
    a, b = load_bundle(straight).model.export_state_dict(), load_bundle(resumed).model.export_state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    opt_a, opt_b = _state(straight)["optimizer"], _state(resumed)["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert max(m["step"].item() for m in opt_a["state"].values()) == 15  # (a layer LayerDrop skipped has fewer)
    for index, moments in opt_a["state"].items():
        assert moments["step"] == opt_b["state"][index]["step"]
        torch.testing.assert_close(moments["exp_avg"], opt_b["state"][index]["exp_avg"], rtol=0, atol=1e-7)
        torch.testing.assert_close(moments["exp_avg_sq"], opt_b["state"][index]["exp_avg_sq"], rtol=0, atol=1e-9)
    assert logged_losses(tmp_path / "b")[10:] == pytest.approx(logged_losses(tmp_path / "a")[10:], rel=1e-5)


def test_lr_decay_lowers_the_rate_linearly_over_the_last_steps(layout, tmp_path):
    config = quick(tmp_path / "d", batch_size=2, max_steps=6, lr=1e-3, lr_decay_steps=4)
    trainer = Trainer(tiny_config(), layout, config)
    rates = []
    for trainer.step in range(6):
        rates.append(trainer.learning_rate())
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
    assert Trainer(tiny_config(), layout, dataclasses.replace(config, lr_decay_steps=None)).learning_rate() == 1e-3


def test_a_decay_added_on_resume_gives_what_a_run_started_with_it_gives(layout, tmp_path):
    straight = train(tiny_config(), layout, quick(tmp_path / "a", batch_size=2, max_steps=7, lr=1e-3, lr_decay_steps=3))
    first = train(tiny_config(), layout, quick(tmp_path / "b", batch_size=2, max_steps=4, lr=1e-3))  # constant so far
    resumed = train(None, layout, quick(tmp_path / "b", batch_size=2, max_steps=7, lr=1e-3, lr_decay_steps=3),
                    resume=first.with_name("step-0000004" + STATE_SUFFIX))
    a, b = load_bundle(straight).model.export_state_dict(), load_bundle(resumed).model.export_state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert _state(resumed)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 3)  # the last step's rate


def test_checkpoint_loads_and_generates(data_dir, layout, tmp_path):
    path = train(tiny_config(), layout, quick(tmp_path, max_steps=4, checkpoint_every=2))
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [
        "step-0000002.safetensors", "step-0000002" + STATE_SUFFIX, "step-0000004.safetensors", "step-0000004" + STATE_SUFFIX,
    ]
    bundle = load_bundle(path)
    assert bundle.style_names == SUBJECTS and bundle.cfg == tiny_config()
    templates = pickle.loads((data_dir / "templates.pkl").read_bytes())
    np.testing.assert_allclose(bundle.template, templates["subj_a"], atol=1e-6)
    assert bundle.info["step"] == 4 and bundle.info["train_config"]["lr"] == 1e-4 and "subj_a" in bundle.info["template"]
    result = generate(bundle.model, data_dir / "wav" / "subj_b_sentence03.wav", style=bundle.style_index("subj_c"), sampler=SamplerConfig(steps=5))
    assert result.offsets.shape == (1, 35, N_VERTICES, 3) and np.abs(result.offsets).sum() > 0  # int(59 / 50 * 30)
    with pytest.raises(ValueError, match="train state"):
        train(None, layout, quick(tmp_path, max_steps=5), resume=path)  # the weights, not the state


def test_validation_samples_and_scores(layout, tmp_path):
    trainer = Trainer(tiny_config(), layout, quick(tmp_path, max_steps=1, val_steps=3, lip_indices=(0, 5, 7)))
    metrics = trainer.validate()
    assert set(metrics) == {"val_loss", "val_position", "val_velocity", "val_lve"}
    # the untrained model outputs exactly zero offsets: the loss is that of the ground truth itself
    dataset = SpeechMotionDataset(layout, "val")
    gt = [torch.from_numpy(dataset[i].offsets) for i in range(3)]
    expected = np.mean([(g**2).mean().item() for g in gt])
    assert metrics["val_position"] == pytest.approx(expected, rel=1e-5)
    assert "validation at step 0" in (tmp_path / "train.log").read_text()


def test_audio_drop_feeds_silence(layout, tmp_path):
    def waveforms_seen(drop: float) -> list[torch.Tensor]:
        seen = []
        trainer = Trainer(tiny_config(), layout, quick(tmp_path / str(drop), max_steps=2, audio_drop_prob=drop))
        trainer.model.audio_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
        trainer.run()
        return seen

    silenced, control = waveforms_seen(1.0), waveforms_seen(0.0)
    assert len(silenced) == 2 and all(w.abs().sum() == 0 for w in silenced)
    assert len(control) == 2 and all(w.abs().sum() > 0 for w in control)

    # ... and so the loss cannot depend on what was said
    model = DiffSpeaker(tiny_config()).eval()
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=0.1)
    batch = collate([SpeechMotionDataset(layout, "train")[i] for i in (0, 3)])
    other = TrainingBatch(**{**vars(batch), "audio": torch.randn_like(batch.audio)})
    noise, steps = torch.randn_like(batch.offsets), torch.tensor([10, 500])

    @torch.no_grad()
    def loss(b: TrainingBatch, drop: float) -> torch.Tensor:
        return model.training_loss(b, audio_drop_prob=drop, noise=noise, timesteps=steps)["total"]

    assert loss(batch, 1.0) == loss(other, 1.0)
    assert loss(batch, 0.0) != loss(other, 0.0)


def test_motion_scale_trains_on_scaled_offsets(layout):
    # A model that predicts zero: its loss is the targets' own size, so training in
    # millimetres (motion_scale 1000) gives exactly 1000**2 times the loss in metres.
    batch = collate([SpeechMotionDataset(layout, "train")[i] for i in (0, 3)])
    steps = torch.tensor([10, 500])
    losses = []
    for scale in (1.0, 1000.0):
        torch.manual_seed(0)
        model = DiffSpeaker(tiny_config(motion_scale=scale)).eval()
        with torch.no_grad():
            losses.append(model.training_loss(batch, noise=torch.zeros_like(batch.offsets), timesteps=steps))
    for name in ("position", "velocity"):
        assert float(losses[0][name]) > 0
        assert float(losses[1][name]) == pytest.approx(1e6 * float(losses[0][name]), rel=1e-4)
    with pytest.raises(ValueError, match="motion_scale"):
        tiny_config(motion_scale=0.0)


def test_region_weights_multiply_that_regions_squared_errors(layout, tmp_path):
    from vendor_model.model import position_velocity_loss

    target = torch.randn(2, 5, 3 * N_VERTICES)
    mask = torch.ones(2, 5, dtype=torch.bool)
    weights = torch.ones(3 * N_VERTICES)
    weights[:6] = 10.0  # vertices 0 and 1
    plain = position_velocity_loss(torch.zeros_like(target), target, mask)
    weighted = position_velocity_loss(torch.zeros_like(target), target, mask, weights)
    extra = position_velocity_loss(torch.zeros_like(target[..., :6]), target[..., :6], mask)["position"] * 6 / (3 * N_VERTICES)
    assert float(weighted["position"]) == pytest.approx(float(plain["position"] + 9 * extra), rel=1e-5)

    with_regions = dataclasses.replace(layout, regions={"lips": (0, 1), "jaw": (1, 2)})
    trainer = Trainer(tiny_config(), with_regions, quick(tmp_path, max_steps=1, region_weights={"lips": 10.0, "jaw": 4.0}))
    assert trainer._loss_weights().reshape(-1, 3)[:4, 0].tolist() == [10.0, 10.0, 4.0, 1.0]
    assert Trainer(tiny_config(), layout, quick(tmp_path, max_steps=1))._loss_weights() is None
    with pytest.raises(ValueError, match="does not have"):
        Trainer(tiny_config(), layout, quick(tmp_path, max_steps=1, region_weights={"lips": 10.0}))._loss_weights()
    with pytest.raises(ValueError, match="must be positive"):
        quick(tmp_path, max_steps=1, region_weights={"lips": 0.0}).validate()


def test_lip_gap_loss_is_the_absolute_error_of_the_gap_between_lip_centres():
    from vendor_model.model import lip_gap_loss

    upper, lower = torch.tensor([0, 1]), torch.tensor([2, 3])
    target = torch.zeros(1, 2, 4, 3)
    pred = target.clone()
    pred[0, 0, 2, 1], pred[0, 0, 3, 1] = 1.0, 3.0  # frame 0: the lower lip's centre 2 up
    pred[0, 1, :2, 0] = -1.0  # frame 1: the upper lip 1 sideways
    pred[0, 1, 0, 2] = 5.0  # ... and one of its vertices forward, the other not: its centre 2.5
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert float(lip_gap_loss(pred.flatten(2), target.flatten(2), mask, upper, lower)) == pytest.approx((2 + 1 + 2.5) / 2)
    mask[0, 1] = False  # padded frames do not count
    assert float(lip_gap_loss(pred.flatten(2), target.flatten(2), mask, upper, lower)) == pytest.approx(2.0)
    moved_together = target.clone()
    moved_together[0, :, :, 1] = 7.0  # the whole mouth moves, the gap stays
    assert float(lip_gap_loss(moved_together.flatten(2), target.flatten(2), torch.ones(1, 2), upper, lower)) == 0.0


def test_lip_gap_loss_settles_on_the_median_where_the_squared_loss_settles_on_the_mean():
    # Three equally likely futures for one frame: shut, shut, 3 mm open. One prediction for all.
    from vendor_model.model import lip_gap_loss, position_velocity_loss

    upper, lower = torch.tensor([0]), torch.tensor([1])
    targets = torch.zeros(3, 1, 2, 3)
    targets[2, 0, 1, 1] = -3.0  # the lower lip 3 below the upper one
    mask = torch.ones(3, 1, dtype=torch.bool)
    settled = {}
    for name in ("squared", "absolute"):
        drop = torch.zeros((), requires_grad=True)
        optimiser = torch.optim.SGD([drop], lr=0.05)
        for _ in range(400):
            pred = torch.zeros(3, 1, 2, 3)
            pred[:, 0, 1, 1] = -drop  # how far the prediction opens the mouth
            loss = (position_velocity_loss(pred.flatten(2), targets.flatten(2), mask)["position"] if name == "squared"
                    else lip_gap_loss(pred.flatten(2), targets.flatten(2), mask, upper, lower))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        settled[name] = drop.item()
    assert settled["squared"] == pytest.approx(1.0, abs=0.05)  # a mouth that never shuts
    assert abs(settled["absolute"]) < 0.1  # the closure


def test_training_with_the_lip_gap_loss(layout, tmp_path):
    with_seams = dataclasses.replace(layout, regions={"upper_lip_seam": (0, 1), "lower_lip_seam": (2, 3)})
    torch.manual_seed(0)
    train(DiffSpeaker(tiny_config()), with_seams, quick(tmp_path / "run", max_steps=3, lip_gap_loss_weight=0.5))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert len(records) == 3 and all(r["lip_gap"] > 0 for r in records)
    assert all(r["loss"] == pytest.approx(r["position"] + r["velocity"] + 0.5 * r["lip_gap"], rel=1e-5) for r in records)
    with pytest.raises(ValueError, match="needs the regions upper_lip_seam, lower_lip_seam.*lacks upper_lip_seam, lower_lip_seam"):
        Trainer(tiny_config(), layout, quick(tmp_path / "bare", max_steps=1, lip_gap_loss_weight=0.5))
    with pytest.raises(ValueError, match="lip_gap_loss_weight must be 0 or more"):
        quick(tmp_path, max_steps=1, lip_gap_loss_weight=-1.0).validate()


def test_config_is_checked(layout, tmp_path):
    with pytest.raises(ValueError, match="epochs or max_steps"):
        TrainConfig().validate()
    with pytest.raises(ValueError, match="audio_drop_prob"):
        TrainConfig(max_steps=1, audio_drop_prob=1.5).validate()
    with pytest.raises(ValueError, match="4 styles but the data has 3"):
        Trainer(tiny_config(num_styles=4), layout, quick(tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="animates 21 vertices"):
        Trainer(tiny_config(n_vertices=21), layout, quick(tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="25 fps"):
        Trainer(tiny_config(fps=25), layout, quick(tmp_path, max_steps=1))


# ---- distributed ----------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, data_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    # frequent LayerDrop, so that the ranks skip different encoder layers
    encoder = dataclasses.replace(tiny_config().encoder, hf_config={**TINY_ENCODER, "layerdrop": 0.5})
    trainer = Trainer(tiny_config(encoder=encoder), layout_from_json(data_dir), quick(Path(out), batch_size=2, max_steps=3))
    trainer.model.audio_encoder.register_forward_pre_hook(lambda m, a: torch.save(a[0], f"{out}/audio{rank}.pt") if trainer.step == 0 else None)
    trainer.run()
    torch.save({k: v.detach().clone() for k, v in trainer.model.export_state_dict().items()}, f"{out}/rank{rank}.pt")


def test_ddp_two_cpu_processes_stay_in_sync(data_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(data_dir), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert not torch.equal(torch.load(tmp_path / "audio0.pt"), torch.load(tmp_path / "audio1.pt"))  # different shards
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    saved = load_bundle(tmp_path / "step-0000003.safetensors").model.export_state_dict()
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)
    assert saved["denoiser.motion_decoder.weight"].abs().sum() > 0
    state = _state(tmp_path / "step-0000003.safetensors")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert "2 process(es)" in (tmp_path / "train.log").read_text()


# ---- command line ---------------------------------------------------------------------------


def test_cli_train_end_to_end(data_dir, tmp_path, capsys):
    tiny = tiny_config()
    overrides = tmp_path / "tiny.json"
    overrides.write_text(json.dumps({
        "model": {"latent_dim": tiny.latent_dim, "ff_size": tiny.ff_size, "encoder": {"hf_config": TINY_ENCODER}},
        "train": {"log_every": 1, "device": "cpu", "lr": 3e-4, "audio_drop_prob": 0.25},
    }))
    out = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--config", str(overrides), "--steps", "3", "--batch-size", "2", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"wrote {out / 'step-0000003.safetensors'}" in captured.out and "random weights" in captured.err
    assert "step       3/3" in captured.out
    bundle = load_bundle(out / "step-0000003.safetensors")
    assert (bundle.cfg.n_vertices, bundle.cfg.fps, bundle.cfg.num_styles, bundle.cfg.latent_dim) == (20, 30, 3, 32)
    assert bundle.cfg.smooth_output and bundle.info["layout"] == "json"

    resume = ["train", "--data", str(data_dir), "--steps", "5", "--batch-size", "2", "--out", str(out), "--resume", str(out / f"step-0000003{STATE_SUFFIX}")]
    assert main(resume) == 0
    assert "resumed at step 3" in capsys.readouterr().out and (out / "step-0000005.safetensors").is_file()
    # the resumed run kept its own options (no --config given this time); the flags still win
    options = load_bundle(out / "step-0000005.safetensors").info["train_config"]
    assert (options["lr"], options["audio_drop_prob"], options["max_steps"], options["batch_size"]) == (3e-4, 0.25, 5, 2)
    # the file the run was started with serves its resume too; a changed model does not
    again = ["train", "--data", str(data_dir), "--steps", "4", "--out", str(tmp_path / "again"), "--resume", str(out / f"step-0000003{STATE_SUFFIX}")]
    assert main(again + ["--config", str(overrides)]) == 0 and (tmp_path / "again" / "step-0000004.safetensors").is_file()
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({"model": {"latent_dim": 2 * tiny.latent_dim}}))
    assert main(again + ["--config", str(changed)]) == 2
    assert "differs from the model of the run being resumed" in capsys.readouterr().err

    assert main(["train", "--data", str(data_dir), "--init", str(out / "step-0000005.safetensors"), "--steps", "1", "--out", str(tmp_path / "ft"), "--device", "cpu"]) == 0
    assert load_bundle(tmp_path / "ft" / "step-0000001.safetensors").info["origin"].startswith("fine-tuned from a model trained 5 steps")

    assert main(["train", "--data", str(tmp_path / "nowhere"), "--steps", "1"]) == 2
    assert "data folder not found" in capsys.readouterr().err
