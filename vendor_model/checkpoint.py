"""Checkpoints: our own format, and import of the official Lightning `.ckpt` files.

Our format is one `.safetensors` file: the weights under the official key names
(`audio_encoder.*`, `denoiser.*`), the template mesh as tensor `template` (V, 3),
and JSON metadata (model config, style names, free-form info). Safetensors holds
only tensors, so loading can never run code.

Official checkpoints are pickles and therefore untrusted: they are read through
`untrusted.load_torch_file` (weights-only unpickling) and only their `state_dict`
is used, mapped strictly onto our modules.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .config import OFFICIAL_STYLE_NAMES, EncoderConfig, ModelConfig, preset, wav2vec2_base_config
from .fileio import atomic_output
from .lip_closure import LipClosure
from .model import DiffSpeaker
from .untrusted import load_torch_file

FORMAT = "diffspeaker"
FORMAT_VERSION = 1
_OFFICIAL_TOPOLOGIES = {5023: "vocaset", 23370: "biwi"}


@dataclass
class ModelBundle:
    """A ready-to-use model with what an artist needs to drive it."""

    model: DiffSpeaker
    template: np.ndarray | None  # (V, 3) neutral mesh in the model's topology, if known
    style_names: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)  # provenance: source file, licence, notes

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg

    def style_index(self, style: int | str) -> int:
        """A style given by index or by name."""
        if isinstance(style, int) or str(style).isdigit():
            index = int(style)
            if not 0 <= index < len(self.style_names):
                raise ValueError(f"style {index} does not exist; this model has {len(self.style_names)} styles (0..{len(self.style_names) - 1})")
            return index
        if style not in self.style_names:
            raise ValueError(f"unknown style {style!r}; available: {', '.join(self.style_names)}")
        return self.style_names.index(style)

    def lip_closure(self) -> LipClosure | None:
        """The model's p/b/m lip closure step, or None where it cannot have one: it needs the
        rest mesh, the inner lip rows (info["regions"] "upper_lip_seam" / "lower_lip_seam")
        and a speech front-end that recognises phonemes (hama)."""
        regions = self.info.get("regions") or {}
        upper, lower = regions.get("upper_lip_seam"), regions.get("lower_lip_seam")
        if self.template is None or not upper or not lower:
            return None
        if not hasattr(self.model.audio_encoder, "bilabial_probability"):
            return None
        return LipClosure(np.asarray(self.template, dtype=np.float64).reshape(-1, 3),
                          tuple(int(i) for i in upper), tuple(int(i) for i in lower))


def default_style_names(cfg: ModelConfig) -> tuple[str, ...]:
    return tuple(f"style_{i}" for i in range(cfg.num_styles))


# ---- our format ---------------------------------------------------------------------------


def save_bundle(bundle: ModelBundle, path: str | Path, weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write a bundle atomically (temporary file + rename, never a half-written file).
    `weights_dtype=torch.float16` halves the file (for models shipped in the repository);
    loading always computes in float32."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        k: v.detach().cpu().to(weights_dtype if v.is_floating_point() else v.dtype).contiguous().clone()
        for k, v in bundle.model.export_state_dict().items()
    }
    if bundle.template is not None:
        tensors["template"] = torch.from_numpy(np.array(bundle.template, dtype=np.float32).reshape(-1, 3))  # a copy: the head may be read-only
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_config": json.dumps(bundle.cfg.to_dict()),
        "style_names": json.dumps(list(bundle.style_names)),
        "info": json.dumps(bundle.info),
    }
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def read_config(path: str | Path) -> ModelConfig:
    """The model config of one of our `.safetensors` files, from its header only
    (instant, whatever the file size): enough to check a mesh before loading."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable .safetensors model file ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not a DiffSpeaker model (no '{FORMAT}' metadata)")
    return ModelConfig.from_dict(json.loads(metadata["model_config"]))


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Load one of our `.safetensors` checkpoints."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    cfg = read_config(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable .safetensors model file ({exc})") from exc
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer version (format {metadata['format_version']}); update the add-on")
    template = tensors.pop("template", None)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}  # float16 files compute in float32
    model = DiffSpeaker.from_weights(cfg, tensors, str(path))
    return ModelBundle(
        model=model.to(device).eval(),
        template=None if template is None else template.cpu().numpy(),
        style_names=tuple(json.loads(metadata.get("style_names", "[]"))) or default_style_names(cfg),
        info=json.loads(metadata.get("info", "{}")),
    )


# ---- official checkpoints -----------------------------------------------------------------


def official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of an official Lightning checkpoint, read without unpickling code."""
    data = load_torch_file(path)
    state = data.get("state_dict", data) if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping) or "denoiser.vertice_map.weight" not in state:
        raise ValueError(f"{path} is not a DiffSpeaker checkpoint: it has no 'state_dict' with denoiser weights")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state_dict entries that are not tensors: {bad[:5]}")
    return dict(state)


def infer_encoder_config(state: Mapping[str, torch.Tensor], overrides: Mapping[str, Any] | None = None, kind: str = "wav2vec2") -> EncoderConfig:
    """Rebuild the speech encoder's architecture from its weight shapes. Stride and head
    count cannot be read from weights: the wav2vec2-base values are used unless
    `overrides` (e.g. a transformers config.json) says otherwise."""
    prefix = "audio_encoder."
    hf = wav2vec2_base_config()
    conv = sorted(
        (int(m.group(1)), state[k]) for k in state if (m := re.fullmatch(rf"{prefix}feature_extractor\.conv_layers\.(\d+)\.conv\.weight", k))
    )
    if not conv:
        raise ValueError("the checkpoint has no speech encoder weights (audio_encoder.*); give a local encoder directory instead")
    hf["conv_dim"] = [int(w.shape[0]) for _, w in conv]
    hf["conv_kernel"] = [int(w.shape[-1]) for _, w in conv]
    hf["conv_bias"] = f"{prefix}feature_extractor.conv_layers.0.conv.bias" in state
    layer_norm_everywhere = f"{prefix}feature_extractor.conv_layers.1.layer_norm.weight" in state
    hf["feat_extract_norm"] = "layer" if layer_norm_everywhere else "group"
    hf["do_stable_layer_norm"] = layer_norm_everywhere  # true of the "large-lv60" family
    hidden = int(state[f"{prefix}feature_projection.projection.weight"].shape[0])
    hf["hidden_size"] = hidden
    hf["num_attention_heads"] = 12 if hidden == 768 else max(hidden // 64, 1)
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}encoder\.layers\.(\d+)\.", k))}
    hf["num_hidden_layers"] = max(layers) + 1 if layers else 0
    hf["intermediate_size"] = int(state[f"{prefix}encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0])
    pos = state.get(f"{prefix}encoder.pos_conv_embed.conv.weight_v", state.get(f"{prefix}encoder.pos_conv_embed.conv.parametrizations.weight.original1"))
    if pos is not None:
        hf["num_conv_pos_embeddings"] = int(pos.shape[-1])
        hf["num_conv_pos_embedding_groups"] = hidden // int(pos.shape[1])
    if len(hf["conv_stride"]) != len(hf["conv_dim"]):
        raise ValueError("the encoder's convolution stack is not the standard 7 layers; pass its config.json")
    hf.update(overrides or {})
    return EncoderConfig(kind=kind, hf_config=hf)


def infer_official_config(
    state: Mapping[str, torch.Tensor],
    preset_name: str | None = None,
    encoder: EncoderConfig | None = None,
    **overrides: Any,
) -> ModelConfig:
    """Model config of an official checkpoint from its weight shapes and the preset
    of its dataset (fps, period, smoothing)."""
    d, nfeats = state["denoiser.vertice_map.weight"].shape
    if nfeats % 3:
        raise ValueError(f"the checkpoint's input width {nfeats} is not 3 x vertices")
    n_vertices = nfeats // 3
    if preset_name is None:
        preset_name = _OFFICIAL_TOPOLOGIES.get(n_vertices)
        if preset_name is None and not {"fps", "period"} <= set(overrides):
            raise ValueError(
                f"the checkpoint animates {n_vertices} vertices, which is neither VOCASET (5023) nor BIWI (23370): "
                "say which preset it follows (--preset) or give its fps and period"
            )
    layers = {int(m.group(1)) for k in state if (m := re.match(r"denoiser\.transformer_decoder\.layers\.(\d+)\.", k))}
    shapes = dict(
        n_vertices=n_vertices,
        latent_dim=int(d),
        ff_size=int(state["denoiser.transformer_decoder.layers.0.linear1.weight"].shape[0]),
        num_layers=max(layers) + 1,
        num_styles=int(state["denoiser.obj_vector.weight"].shape[0]),
        encoder=encoder or infer_encoder_config(state),
    )
    # A custom topology borrows the VOCASET defaults for what it overrides not (heads, dropout, ...).
    return dataclasses.replace(preset(preset_name or "vocaset", **shapes), **overrides)


def import_official(
    path: str | Path,
    *,
    preset_name: str | None = None,
    template: np.ndarray | None = None,
    encoder_hf_config: Mapping[str, Any] | None = None,
    encoder_kind: str = "wav2vec2",
    **overrides: Any,
) -> ModelBundle:
    """An official DiffSpeaker `.ckpt` as a ModelBundle (weights strictly mapped)."""
    state = official_state_dict(path)
    encoder = infer_encoder_config(state, encoder_hf_config, encoder_kind)
    cfg = infer_official_config(state, preset_name, encoder, **overrides)
    if template is not None and np.asarray(template).size != cfg.nfeats:
        raise ValueError(f"the template has {np.asarray(template).size // 3} vertices but the checkpoint animates {cfg.n_vertices}")
    model = DiffSpeaker.from_weights(cfg, state, str(path))
    dataset = preset_name or _OFFICIAL_TOPOLOGIES.get(cfg.n_vertices)
    names = OFFICIAL_STYLE_NAMES.get(dataset or "", ())
    return ModelBundle(
        model=model.eval(),
        template=None if template is None else np.asarray(template, dtype=np.float32).reshape(-1, 3),
        style_names=names if len(names) == cfg.num_styles else default_style_names(cfg),
        info={"source": Path(path).name, "imported_from": "official DiffSpeaker checkpoint", "dataset": dataset},
    )


def load_any(path: str | Path, device: str | torch.device = "cpu", **official_options: Any) -> ModelBundle:
    """Our `.safetensors` format, or an official `.ckpt` (imported on the fly)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_bundle(path, device)
    bundle = import_official(path, **official_options)
    bundle.model.to(device)
    return bundle
