"""The built-in models' training recipes (synth/*.json) are complete, valid configs."""
import json
from pathlib import Path

import pytest

from vendor_model.cli import _read_configs
from vendor_model.config import ModelConfig, preset
from vendor_model.train import TrainConfig

SYNTH = Path(__file__).resolve().parents[1] / "synth"
RECIPES = ["default_model.json", "default_logmel_model.json"]


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_builds_a_model_and_a_training_config(name):
    spec = json.loads((SYNTH / name).read_text())
    model = ModelConfig.from_dict({**preset("vocaset").to_dict(), **spec["model"]})
    assert model.latent_dim == spec["model"]["latent_dim"]
    train = TrainConfig.from_dict({**spec["train"], "max_steps": 1}).validate()
    assert train.phone_loss_weight > 0


def test_the_one_run_recipe_is_the_default_with_the_lip_gap_loss_from_the_start():
    """`--config synth/default_model.json --config synth/default_lip_gap.json`: later files win."""
    default = json.loads((SYNTH / "default_model.json").read_text())
    one_run = _read_configs([str(SYNTH / "default_model.json"), str(SYNTH / "default_lip_gap.json")])
    assert one_run["model"] == default["model"]
    assert one_run["train"] == {**default["train"], "lip_gap_loss_weight": 0.5}


def test_a_config_file_without_the_expected_sections_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"optimizer": {}}')
    with pytest.raises(ValueError, match="bad.json"):
        _read_configs([str(SYNTH / "default_model.json"), str(bad)])
