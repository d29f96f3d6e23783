"""The auxiliary frame-wise phone loss: labels from a synthetic set's phone timings, at the
speech encoder's frame rate; ignored where the audio was dropped; trained and resumed with
the training-only phone head, which never reaches the model's checkpoint."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vendor_model.checkpoint import load_bundle
from vendor_model.data import DatasetError, MotionItem, SpeechMotionDataset, collate, layout_from_json
from vendor_model.model import DiffSpeaker, phone_loss
from vendor_model.phones import IGNORE, PHONE_INDEX, PHONES, frame_phones
from vendor_model.train import STATE_SUFFIX, TrainConfig, train

from .conftest import tiny_config
from .test_train import logged_losses, make_dataset


def test_frame_phones_labels_each_frame_by_its_centre():
    segments = [{"phone": "sil", "start": 0.0, "end": 0.05}, {"phone": "m", "start": 0.05, "end": 0.09},
                {"phone": "aa", "start": 0.09, "end": 0.15}]
    # 50 fps: centres 0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15 (past the end)
    labels = frame_phones(segments, 8, 50.0)
    assert labels.dtype == np.int64
    assert [PHONES[i] if i != IGNORE else None for i in labels] == ["sil", "sil", "m", "m", "aa", "aa", "aa", None]
    assert frame_phones([], 3, 50.0).tolist() == [IGNORE] * 3
    with pytest.raises(ValueError, match="unknown phone 'AA1'.*lowercase ARPAbet"):
        frame_phones([{"phone": "AA1", "start": 0, "end": 1}], 4, 50.0)


def test_the_synthetic_data_speaks_the_same_phone_set():
    from synth import segments

    assert segments.PHONES == PHONES and len(PHONES) == 40 and PHONES[-1] == "sil"


def add_segments(root: Path) -> Path:
    """Each clip: silence, then alternating 'm' and 'aa' every 0.1 s."""
    (root / "segments").mkdir()
    for wav in sorted((root / "wav").glob("*.wav")):
        phones = [{"phone": "sil", "start": 0.0, "end": 0.1}]
        t = 0.1
        while t < 1.3:
            phones.append({"phone": "m" if len(phones) % 2 else "aa", "start": t, "end": t + 0.1})
            t += 0.1
        (root / "segments" / f"{wav.stem}.json").write_text(json.dumps({"segments": phones}))
    return root


@pytest.fixture(scope="module")
def phone_layout(tmp_path_factory):
    return layout_from_json(add_segments(make_dataset(tmp_path_factory.mktemp("phones"))))


def test_items_carry_labels_at_the_requested_rate(phone_layout):
    plain = SpeechMotionDataset(phone_layout, "train")[0]
    assert plain.phones is None
    item = SpeechMotionDataset(phone_layout, "train", phone_fps=50.0)[0]  # subj_a sentence 1: 1.0 s
    assert item.phones.shape == (51,) and item.phones.dtype == np.int64
    assert (item.phones[:5] == PHONE_INDEX["sil"]).all() and (item.phones[5:10] == PHONE_INDEX["m"]).all()
    assert (item.phones[10:15] == PHONE_INDEX["aa"]).all()


def test_missing_or_broken_timings_are_named(phone_layout, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(phone_layout.root, root)
    (root / "segments" / "subj_b_sentence01.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"segments/subj_b_sentence01.json.*phone_loss_weight to 0"):
        SpeechMotionDataset(layout_from_json(root), "train", phone_fps=50.0)
    assert len(SpeechMotionDataset(layout_from_json(root), "train")) == 6  # without the phone loss nothing is needed
    (root / "segments" / "subj_b_sentence01.json").write_text(json.dumps({"segments": [{"phone": "x", "start": 0, "end": 1}]}))
    dataset = SpeechMotionDataset(layout_from_json(root), "train", phone_fps=50.0)
    with pytest.raises(DatasetError, match=r"subj_b_sentence01.json: cannot read its phone segments.*unknown phone 'x'"):
        dataset[2]


def test_collate_pads_labels_with_ignore():
    def item(phones):
        return MotionItem(np.ones(100, np.float32), np.ones((4, 6), np.float32), 0, "a", "x", phones)

    batch = collate([item(np.array([1, 2, 3])), item(np.array([4]))])
    assert batch.phones.tolist() == [[1, 2, 3], [4, IGNORE, IGNORE]]
    assert collate([item(None)]).phones is None
    with pytest.raises(DatasetError, match="some clips of the batch have phone labels"):
        collate([item(np.array([1])), item(None)])


def test_phone_loss_ignores_dropped_clips_and_fits_lengths():
    logits = torch.randn(2, 4, len(PHONES), requires_grad=True)
    phones = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, IGNORE, IGNORE, IGNORE, IGNORE]])  # longer than 4 frames: cut
    both = phone_loss(logits, phones, torch.tensor([True, True]))
    expected = torch.nn.functional.cross_entropy(torch.cat([logits[0], logits[1, :2]]), torch.tensor([0, 1, 2, 3, 6, 7]))
    torch.testing.assert_close(both, expected)
    first = phone_loss(logits, phones, torch.tensor([True, False]))
    torch.testing.assert_close(first, torch.nn.functional.cross_entropy(logits[0], phones[0, :4]))
    nothing = phone_loss(logits, phones, torch.tensor([False, False]))
    assert nothing.item() == 0.0 and nothing.requires_grad
    with pytest.raises(ValueError, match="needs phone labels"):
        phone_loss(logits, None, torch.tensor([True, True]))


def quick(out: Path, **overrides) -> TrainConfig:
    settings = dict(batch_size=3, log_every=1, checkpoint_every=None, out_dir=str(out), device="cpu", lr=1e-3, phone_loss_weight=1.0)
    return TrainConfig(**{**settings, **overrides})


def phone_losses(out: Path) -> list[float]:
    return [r["phone"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "phone" in r]


def test_training_with_the_phone_loss_learns_the_labels(phone_layout, tmp_path):
    torch.manual_seed(0)
    model = DiffSpeaker(tiny_config())
    path = train(model, phone_layout, quick(tmp_path / "run", max_steps=30))
    phone = phone_losses(tmp_path / "run")
    assert len(phone) == 30 and phone[0] == pytest.approx(np.log(len(PHONES)), rel=0.3)  # a fresh head: near chance
    assert np.mean(phone[-5:]) < 0.5 * np.mean(phone[:5]), phone
    totals = logged_losses(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == pytest.approx(r["position"] + r["velocity"] + r["phone"], rel=1e-5) for r in records)
    assert len(totals) == 30
    bundle = load_bundle(path)  # the model's checkpoint: no phone head, loads strictly
    assert bundle.info["train_config"]["phone_loss_weight"] == 1.0
    assert not any("phone" in key for key in bundle.model.export_state_dict())


def test_resume_restores_the_phone_head(phone_layout, tmp_path):
    straight = train(tiny_config(), phone_layout, quick(tmp_path / "a", batch_size=2, max_steps=6))
    first = train(tiny_config(), phone_layout, quick(tmp_path / "b", batch_size=2, max_steps=4))
    state = first.with_name("step-0000004" + STATE_SUFFIX)
    resumed = train(None, phone_layout, quick(tmp_path / "b", batch_size=2, max_steps=6), resume=state)
    a, b = load_bundle(straight).model.export_state_dict(), load_bundle(resumed).model.export_state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert phone_losses(tmp_path / "b")[4:] == pytest.approx(phone_losses(tmp_path / "a")[4:], rel=1e-5)
    with pytest.raises(ValueError, match="phone loss on exactly when the saved run had it"):
        train(None, phone_layout, quick(tmp_path / "b", max_steps=8, phone_loss_weight=0.0), resume=state)


def test_the_phone_loss_is_checked(phone_layout, tmp_path):
    with pytest.raises(ValueError, match="phone_loss_weight must be 0 or more"):
        quick(tmp_path, max_steps=1, phone_loss_weight=-1.0).validate()
    bare = dataclasses.replace(phone_layout, segments_dir="nowhere")
    with pytest.raises(FileNotFoundError, match="phone_loss_weight to 0"):
        train(tiny_config(), bare, quick(tmp_path / "c", max_steps=1))
