"""Every tensor the model makes along the way lives on the model's device.

No GPU is needed to check this: PyTorch's "meta" device stands in for one. An operation
that mixes a meta tensor with a CPU tensor raises, exactly where a CUDA run would fail
with "Expected all tensors to be on the same device" (it did, on the first GPU run).
"""
import torch

from tests.conftest import tiny_model
from vendor_model.frontends import logmel_encoder_config
from vendor_model.model import TrainingBatch, lip_gap_loss
from vendor_model.sampler import SamplingJob, sample_fast, sample_reference

META = torch.device("meta")


def _model():
    return tiny_model(encoder=logmel_encoder_config(hidden_size=16, layers=1, n_mels=20)).to(META)


def test_a_training_step_with_every_loss_stays_on_the_models_device():
    model = _model().train()
    batch_size, samples, frames, width = 2, 8000, 15, model.cfg.nfeats
    batch = TrainingBatch(
        audio=torch.zeros(batch_size, samples, device=META),
        audio_mask=torch.ones(batch_size, samples, dtype=torch.long, device=META),
        offsets=torch.zeros(batch_size, frames, width, device=META),
        frame_mask=torch.ones(batch_size, frames, dtype=torch.bool, device=META),
        style=torch.zeros(batch_size, dtype=torch.long, device=META),
        phones=torch.zeros(batch_size, 26, dtype=torch.long, device=META),
    )
    phone_head = torch.nn.Linear(model.audio_encoder.feature_dim, 40).to(META)
    lips = (torch.tensor([0, 1], device=META), torch.tensor([2, 3], device=META))
    losses = model.training_loss(batch, audio_drop_prob=0.5, weights=torch.ones(width, device=META), phone_head=phone_head, lips=lips)
    assert {"position", "velocity", "total", "phone", "lip_gap"} <= set(losses)
    assert all(loss.device == META for loss in losses.values())
    assert lip_gap_loss(batch.offsets, batch.offsets, batch.frame_mask, *lips).device == META


def test_the_audio_memory_and_both_samplers_with_guidance_stay_on_the_models_device():
    model = _model().eval()
    takes, frames = 2, 12
    with torch.no_grad():
        memory = model.audio_memory(torch.zeros(1, 8000, device=META), frames)  # (1, T, d)
    assert memory.device == META and memory.shape == (1, frames, model.cfg.latent_dim)
    memory = torch.stack([memory, memory])  # (2, 1, T, d): conditional + audio-free
    for run in (sample_fast, sample_reference):
        job = SamplingJob(
            memory=memory,
            style=torch.zeros(takes, dtype=torch.long, device=META),
            init_noise=torch.zeros(takes, frames, model.cfg.nfeats, device=META),
            plan=model.schedule.plan(3, "ddim"),
            guidance=torch.full((frames,), 1.5, device=META),
        )
        with torch.no_grad():
            out = run(model.denoiser, job)
        assert out.device == META and out.shape == (takes, frames, model.cfg.nfeats)
