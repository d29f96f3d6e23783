"""Publishing a checkpoint as the built-in model: float16 file, head template and regions."""
from __future__ import annotations

import numpy as np
import pytest

from synth.head import build_head
from synth.publish import publish
from vendor_model.checkpoint import ModelBundle, load_bundle, save_bundle

from .conftest import tiny_model


def test_publish_writes_a_half_size_model_with_the_head_and_its_regions(tmp_path):
    head = build_head()
    checkpoint = save_bundle(ModelBundle(tiny_model(n_vertices=len(head.vertices)), None, ("a", "b", "c"), {"step": 7}),
                             tmp_path / "step.safetensors")
    published = publish(checkpoint, tmp_path / "default.safetensors")
    assert published.stat().st_size < 0.6 * checkpoint.stat().st_size
    bundle = load_bundle(published)
    assert bundle.info["step"] == 7 and bundle.info["checkpoint"] == "step.safetensors"
    assert bundle.info["regions"]["upper_lip"] == head.regions["upper_lip"].tolist()
    np.testing.assert_array_equal(np.asarray(bundle.template), np.asarray(head.vertices, dtype=np.float32))
    assert bundle.cfg.diffusion.sample_method == "official"  # kept unless asked


def test_publish_can_set_the_default_sampling_update_and_guidance(tmp_path):
    head = build_head()
    checkpoint = save_bundle(ModelBundle(tiny_model(n_vertices=len(head.vertices)), None, ("a", "b", "c")),
                             tmp_path / "step.safetensors")
    diffusion = load_bundle(publish(checkpoint, tmp_path / "ddim.safetensors", sample_method="ddim")).cfg.diffusion
    assert (diffusion.sample_method, diffusion.guidance_scale) == ("ddim", 0.0)
    diffusion = load_bundle(publish(checkpoint, tmp_path / "guided.safetensors", guidance=2.0)).cfg.diffusion
    assert (diffusion.sample_method, diffusion.guidance_scale) == ("official", 2.0)


def test_a_checkpoint_for_another_mesh_is_refused(tmp_path):
    checkpoint = save_bundle(ModelBundle(tiny_model(), None, ("a", "b", "c")), tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match="the project's head has"):
        publish(checkpoint, tmp_path / "default.safetensors")
