"""Light speech front-ends for models trained from scratch (e.g. on synthetic TTS speech).

Two `SpeechEncoder`s, both emitting 50 feature frames per second, so the rest of the
pipeline (interpolation to the motion rate, cross-attention) is unchanged:

* `LogMelEncoder` (kind "logmel"): an 80-band log-mel spectrogram computed here in
  torch (25 ms Hann window, 10 ms hop, mel filters built by `mel_filterbank`), made
  loudness-independent (floor relative to the utterance's loudest bin, then per-band
  mean/variance normalisation over the utterance), then a small trainable network:
  conv (100 fps) -> strided conv (50 fps) -> `layers` residual depthwise-conv blocks.
* `PhonemePosteriorEncoder` (kind "hama"): frame-level phoneme log-posteriors of the
  pretrained `hama` phoneme recogniser (frozen, CPU, float32; 191 CTC classes at 50 fps),
  then a trainable LayerNorm -> linear -> the same residual blocks. hama's weights and
  phone list come from the `hama` package (imported lazily); the network runs in PyTorch
  (`vendor_model.hama_asr`), so it runs on every platform, Windows included.

Both read their architecture from `EncoderConfig.hf_config` (the name is kept for
compatibility with the wav2vec2 encoders); build a complete one with
`logmel_encoder_config(...)` / `hama_encoder_config(...)`. Keys:

    hidden_size   output width C (the denoiser's audio_dim)              (256)
    layers        residual conv blocks at 50 fps                          (4)
    kernel        odd temporal kernel of the blocks' depthwise conv       (7)
    dropout       dropout inside the blocks (training only)               (0.1)
  logmel only:
    n_mels        mel bands                                               (80)
    mel_scale     "slaney" (linear < 1 kHz, log above) or "htk"           ("slaney")
    top_db        log floor, dB below the utterance's loudest mel bin     (80.0)
    spec_augment  training-only masking: {"freq_masks", "freq_width" (bands),
                  "time_masks", "time_width" (10 ms frames)}, or false/None for none
  hama only:
    n_classes     width of hama's posterior output                        (191)
    input_rms     the (unit-variance) waveform is scaled to this RMS and clipped
                  to [-1, 1] before hama, which is level-sensitive        (0.05)

Padding: `attention_mask` (B, S) marks real samples (1) as a prefix of each row; the
features of a padded row equal those of the unpadded clip, and frames past a row's
`num_features(length)` are zero.

Weights: the modules hold only trainable parameters (the mel filters and the window
are rebuilt on the fly, hama's weights live in the hama package), so `state_dict`
keys are clean (`conv_in.weight`, `blocks.0.fc1.weight`, ...) and a model built on
the meta device loads with `assign=True`.
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import SAMPLE_RATE, EncoderConfig
from .encoders import SpeechEncoder
from .hama_asr import HamaRecogniser, read_pack

__all__ = [
    "HamaUnavailableError",
    "LogMelEncoder",
    "PhonemePosteriorEncoder",
    "ResidualConvBlock",
    "hama_available",
    "hama_encoder_config",
    "hama_log_posteriors",
    "hama_phone_inventory",
    "is_bilabial",
    "hz_to_mel",
    "log_mel_spectrogram",
    "logmel_encoder_config",
    "mel_filterbank",
    "mel_frequencies",
    "mel_to_hz",
]

WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms: 100 spectrogram frames per second
N_FFT = 512
FEATURE_HOP = 2 * HOP_LENGTH  # 320 samples = 20 ms: 50 feature frames per second

_COMMON_DEFAULTS: dict[str, Any] = {"hidden_size": 256, "layers": 4, "kernel": 7, "dropout": 0.1}
_SPEC_AUGMENT_DEFAULTS = {"freq_masks": 2, "freq_width": 10, "time_masks": 2, "time_width": 10}
LOGMEL_DEFAULTS: dict[str, Any] = {
    **_COMMON_DEFAULTS, "n_mels": 80, "mel_scale": "slaney", "top_db": 80.0, "spec_augment": dict(_SPEC_AUGMENT_DEFAULTS),
}
HAMA_DEFAULTS: dict[str, Any] = {**_COMMON_DEFAULTS, "n_classes": 191, "input_rms": 0.05}


def logmel_encoder_config(**overrides: Any) -> EncoderConfig:
    """A complete log-mel `EncoderConfig` (every key written out, so a checkpoint does
    not depend on these defaults staying the same)."""
    return EncoderConfig(kind="logmel", hf_config=_complete("logmel", LOGMEL_DEFAULTS, overrides))


def hama_encoder_config(**overrides: Any) -> EncoderConfig:
    """A complete phoneme-posterior (hama) `EncoderConfig`."""
    return EncoderConfig(kind="hama", hf_config=_complete("hama", HAMA_DEFAULTS, overrides))


def _complete(kind: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown {kind} encoder settings {unknown}; the {kind} front-end takes {sorted(defaults)} "
            f"(build its config with vendor_model.frontends.{kind}_encoder_config())"
        )
    cfg = {**defaults, **given}
    for key in ("hidden_size", "layers", "kernel"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < (0 if key == "layers" else 1):
            raise ValueError(f"{kind} encoder setting {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["kernel"] % 2 == 0:
        raise ValueError(f"{kind} encoder kernel must be odd (same-length convolution), got {cfg['kernel']}")
    if not 0.0 <= float(cfg["dropout"]) < 1.0:
        raise ValueError(f"{kind} encoder dropout must be in [0, 1), got {cfg['dropout']}")
    return cfg


# ---- mel scale and filters ------------------------------------------------------------------

_SLANEY_F_SP = 200.0 / 3  # Hz per mel below the break
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15 mel at 1 kHz
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    """HTK: 2595 log10(1 + f/700). Slaney (Auditory Toolbox): linear 3 mel per 200 Hz
    below 1 kHz, logarithmic (27 mel per factor 6.4) above."""
    f = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'slaney' or 'htk', got {scale!r}")
    linear = f / _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(f >= _SLANEY_MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float, scale: str = "slaney") -> np.ndarray:
    m = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'slaney' or 'htk', got {scale!r}")
    return np.where(
        m >= _SLANEY_MIN_LOG_MEL,
        _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL)),
        _SLANEY_F_SP * m,
    )


def mel_frequencies(n_mels: int, fmin: float = 0.0, fmax: float = SAMPLE_RATE / 2, scale: str = "slaney") -> np.ndarray:
    """n_mels + 2 frequencies (Hz) equally spaced in mel: band k rises from [k] to its
    centre [k + 1] and falls to [k + 2]."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2), scale)


def mel_filterbank(
    n_mels: int = 80, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
    fmin: float = 0.0, fmax: float | None = None, scale: str = "slaney",
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, area-normalised (each triangle has
    height 2 / bandwidth in Hz, as librosa's norm="slaney")."""
    fmax = sample_rate / 2 if fmax is None else fmax
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_frequencies(n_mels, fmin, fmax, scale)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))


# ---- log-mel spectrogram --------------------------------------------------------------------


def _frames(lengths: torch.Tensor, hop: int) -> torch.Tensor:
    """Frames that hold real signal for `lengths` samples: length // hop + 1 (0 for 0)."""
    return torch.where(lengths > 0, lengths // hop + 1, torch.zeros_like(lengths))


def _time_mask(valid: torch.Tensor, total: int) -> torch.Tensor:
    """(B,) valid frame counts -> (B, total) float mask."""
    return (torch.arange(total, device=valid.device)[None] < valid[:, None]).float()


def _lengths(waveform: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long, device=waveform.device)
    if attention_mask.shape != waveform.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, waveform {tuple(waveform.shape)}")
    return attention_mask.to(torch.long).sum(dim=1)


def log_mel_spectrogram(
    waveform: torch.Tensor,
    lengths: torch.Tensor | None = None,
    filterbank: torch.Tensor | np.ndarray | None = None,
    top_db: float | None = 80.0,
) -> torch.Tensor:
    """(B, S) waveform -> (B, n_mels, S // 160 + 1) natural-log mel power.

    Frame t is centred on sample 160 t (25 ms periodic Hann window, 512-point FFT, zero
    padding at both ends, so a clip and the same clip followed by zeros agree on the
    clip's frames). Powers are floored `top_db` dB below the loudest bin of each row's
    real frames (and at 1e-10), so scaling the waveform only shifts the result.
    """
    if waveform.dim() != 2:
        raise ValueError(f"expected a (batch, samples) waveform, got shape {tuple(waveform.shape)}")
    x = waveform.float()
    if filterbank is None:
        filterbank = mel_filterbank()
    fb = torch.as_tensor(filterbank, dtype=torch.float32, device=x.device)
    window = torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32, device=x.device)
    padded = F.pad(x, (N_FFT // 2, N_FFT // 2))
    spec = torch.stft(padded, N_FFT, HOP_LENGTH, WIN_LENGTH, window, center=False, return_complex=True)
    mel = torch.matmul(fb, spec.real.square() + spec.imag.square())  # (B, n_mels, T)
    if top_db is not None:
        if lengths is None:
            peak = mel.amax(dim=(1, 2))
        else:
            valid = _time_mask(_frames(lengths, HOP_LENGTH), mel.shape[-1])
            peak = (mel * valid[:, None]).amax(dim=(1, 2))
        mel = torch.maximum(mel, (peak * 10.0 ** (-float(top_db) / 10.0))[:, None, None])
    return torch.log(mel.clamp_min(1e-10))


# ---- trainable part -------------------------------------------------------------------------


class ResidualConvBlock(nn.Module):
    """x + FF(LayerNorm(depthwise-conv(x))) with a 2x GELU feed-forward (ConvNeXt style).
    Works on (B, T, C); padded frames are zeroed before the convolution and after."""

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.dwconv((x * mask).transpose(1, 2)).transpose(1, 2)
        y = self.fc2(self.dropout(F.gelu(self.fc1(self.norm(y)))))
        return (x + self.dropout(y)) * mask


class _FrontEnd:
    """What the front-ends here share: the residual trunk at 50 fps after their own
    input stage, the frame count, strict weight loading and the (no-op) freezing."""

    def _build_trunk(self, hidden: int) -> None:
        self.blocks = nn.ModuleList(
            ResidualConvBlock(hidden, int(self.hp["kernel"]), float(self.hp["dropout"])) for _ in range(int(self.hp["layers"]))
        )
        self.norm_out = nn.LayerNorm(hidden)

    def _trunk(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # h (B, Ta, C); mask (B, Ta, 1), 0 on padded frames
        for block in self.blocks:
            h = block(h, mask)
        return self.norm_out(h) * mask

    def num_features(self, num_samples: int) -> int:
        return num_samples // FEATURE_HOP + 1 if num_samples > 0 else 0

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str, assign: bool = False) -> None:
        """Strict: every expected key present with its shape, nothing else."""
        expected = self.state_dict()
        missing, unknown = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
        wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(expected[k].shape)})"
                 for k in sorted(set(expected) & set(state_dict)) if tuple(state_dict[k].shape) != tuple(expected[k].shape)]
        if missing or unknown or wrong:
            raise ValueError(
                f"speech encoder weights in {source} do not fit the configured {self.cfg.kind} front-end: "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unknown {unknown[:5]}{' ...' if len(unknown) > 5 else ''}, "
                f"wrong shape {wrong[:5]}{' ...' if len(wrong) > 5 else ''}"
            )
        self.load_state_dict(dict(state_dict), strict=True, assign=assign)

    def freeze_feature_extractor(self) -> None:
        """No-op: the fixed front part (mel analysis, or the hama recogniser) has no
        torch parameters; everything with parameters is meant to be trained."""


class LogMelEncoder(_FrontEnd, SpeechEncoder):
    """Log-mel spectrogram (100 fps) -> conv -> strided conv (50 fps) -> residual blocks."""

    feature_fps = 50.0

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.hp = _complete("logmel", LOGMEL_DEFAULTS, cfg.hf_config)
        self.feature_dim = int(self.hp["hidden_size"])
        n_mels, hidden = int(self.hp["n_mels"]), self.feature_dim
        augment = self.hp["spec_augment"]
        if augment is True:
            augment = dict(_SPEC_AUGMENT_DEFAULTS)
        if augment:
            bad = sorted(set(augment) - set(_SPEC_AUGMENT_DEFAULTS))
            if bad:
                raise ValueError(f"unknown spec_augment settings {bad}; expected {sorted(_SPEC_AUGMENT_DEFAULTS)}")
            augment = {**_SPEC_AUGMENT_DEFAULTS, **augment}
        self.spec_augment: dict[str, int] | None = augment or None
        # A numpy array, not a buffer: it stays out of the state_dict and is real even
        # when the module is built on the meta device.
        self._filterbank = mel_filterbank(n_mels, scale=self.hp["mel_scale"]).astype(np.float32)
        if (self._filterbank.sum(axis=1) <= 0).any():
            raise ValueError(f"{n_mels} mel bands are too many for a {N_FFT}-point FFT: some bands are empty")

        self.conv_in = nn.Conv1d(n_mels, hidden, 3, padding=1)
        self.conv_down = nn.Conv1d(hidden, hidden, 3, stride=2, padding=1)
        self.norm_in = nn.LayerNorm(hidden)
        self._build_trunk(hidden)

    def features(self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised log-mel (B, n_mels, S // 160 + 1) with padded frames zeroed, and
        the (B,) real-sample counts. Spec-augment is applied in training mode."""
        lengths = _lengths(waveform, attention_mask)
        x = waveform.float()
        if attention_mask is not None:
            x = x * attention_mask.to(x.dtype)
        logmel = log_mel_spectrogram(x, lengths, self._filterbank, self.hp["top_db"])
        valid = _time_mask(_frames(lengths, HOP_LENGTH), logmel.shape[-1])[:, None]  # (B, 1, T)
        count = valid.sum(-1, keepdim=True).clamp_min(1.0)
        mean = (logmel * valid).sum(-1, keepdim=True) / count
        var = (((logmel - mean) * valid) ** 2).sum(-1, keepdim=True) / count
        normed = (logmel - mean) * torch.rsqrt(var + 1e-5) * valid
        if self.training and self.spec_augment:
            normed = self._augment(normed, _frames(lengths, HOP_LENGTH))
        return normed, lengths

    def _augment(self, mel: torch.Tensor, valid_frames: torch.Tensor) -> torch.Tensor:
        """SpecAugment-style masking (set to 0, the normalised mean) of random mel-band
        ranges and time ranges, independently per row."""
        aug = self.spec_augment
        batch, n_mels, total = mel.shape
        keep = torch.ones_like(mel)
        bands = torch.arange(n_mels, device=mel.device)
        frames = torch.arange(total, device=mel.device)
        for _ in range(int(aug["freq_masks"])):
            width = torch.randint(0, int(aug["freq_width"]) + 1, (batch,), device=mel.device).clamp(max=n_mels)
            start = (torch.rand(batch, device=mel.device) * (n_mels - width + 1)).long()
            hit = (bands[None] >= start[:, None]) & (bands[None] < (start + width)[:, None])
            keep = keep * (~hit).float()[:, :, None]
        for _ in range(int(aug["time_masks"])):
            width = torch.randint(0, int(aug["time_width"]) + 1, (batch,), device=mel.device)
            width = torch.minimum(width, valid_frames)
            start = (torch.rand(batch, device=mel.device) * (valid_frames - width + 1).float()).long()
            hit = (frames[None] >= start[:, None]) & (frames[None] < (start + width)[:, None])
            keep = keep * (~hit).float()[:, None, :]
        return mel * keep

    def forward(self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mel, lengths = self.features(waveform, attention_mask)
        dtype = self.conv_in.weight.dtype
        mask100 = _time_mask(_frames(lengths, HOP_LENGTH), mel.shape[-1]).to(dtype)[:, None]
        h = F.gelu(self.conv_in(mel.to(dtype))) * mask100
        h = F.gelu(self.conv_down(h)).transpose(1, 2)  # (B, Ta, C), Ta = S // 320 + 1
        mask = _time_mask(_frames(lengths, FEATURE_HOP), h.shape[1]).to(dtype)[..., None]
        h = self.norm_in(h) * mask
        return self._trunk(h, mask)


# ---- hama phoneme posteriors ----------------------------------------------------------------


class HamaUnavailableError(RuntimeError):
    """The hama phoneme recogniser cannot run on this machine."""


_HAMA_LOCK = threading.Lock()
_HAMA_SESSION: Any = None
HAMA_ASR_ASSET = "asr_waveform.hama"  # inside the hama package's assets


def _hama_unavailable(reason: str) -> HamaUnavailableError:
    return HamaUnavailableError(
        f"the phoneme-posterior speech front-end (kind 'hama') needs the 'hama' phoneme recogniser's weights, but {reason}. "
        "Install them with `pip install hama==1.7.0`, or use a model with the log-mel front-end (kind 'logmel') instead."
    )


def _hama_pack() -> bytes:
    """The recogniser's weight pack inside the installed hama package."""
    from importlib import resources

    try:
        return resources.files("hama.assets").joinpath(HAMA_ASR_ASSET).read_bytes()
    except (ImportError, OSError) as exc:
        raise _hama_unavailable(f"it is not installed ({exc})") from exc


def _import_hama():
    """Fail early, with advice, where the hama package (weights and phone list) is missing."""
    try:
        import hama  # noqa: F401
        from hama.vocab import Vocabulary  # noqa: F401
    except ImportError as exc:
        raise _hama_unavailable(f"it is not installed ({exc})") from exc


def hama_available() -> bool:
    """Whether the hama phoneme recogniser can run here: whether the hama package (its weights
    and phone list) is installed. The network itself runs in PyTorch on every platform."""
    try:
        _import_hama()
    except HamaUnavailableError:
        return False
    return True


def _hama_session() -> HamaRecogniser:
    """One process-wide recogniser (loading takes ~50 ms; the weights are 4.7 MB)."""
    global _HAMA_SESSION
    with _HAMA_LOCK:
        if _HAMA_SESSION is None:
            _import_hama()
            from hama.vocab import Vocabulary

            tokens = list(Vocabulary.load(None).decoder) + ["<wb>", "<blank>"]  # hama's own ASR class order
            _HAMA_SESSION = HamaRecogniser(read_pack(_hama_pack()), tokens)
        return _HAMA_SESSION


def hama_phone_inventory() -> list[str]:
    """hama's ASR output classes, in posterior order (ends with '<wb>', '<blank>')."""
    return list(_hama_session().tokens)


def is_bilabial(symbol: str) -> bool:
    """True for hama's p, b and m classes, with or without aspiration, length or syllabic marks."""
    return symbol.rstrip("\u02b0\u0329\u02d0") in ("p", "b", "m")


class _PosteriorCache:
    """Recently computed posteriors by the waveform's digest. Training shows the same clips
    every epoch and hama (~0.1 s per second of speech) would otherwise dominate a CPU step."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes, self.bytes, self.items = max_bytes, 0, OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: bytes) -> np.ndarray | None:
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key: bytes, value: np.ndarray) -> None:
        with self.lock:
            if key not in self.items:
                self.items[key] = value
                self.bytes += value.nbytes
            while self.bytes > self.max_bytes and self.items:
                self.bytes -= self.items.popitem(last=False)[1].nbytes


_POSTERIOR_CACHE = _PosteriorCache()


def hama_log_posteriors(samples: np.ndarray) -> np.ndarray:
    """(N,) float32 16 kHz samples in [-1, 1] -> (T, n_classes) CTC log-posteriors, T = N // 320 + 1.
    Results are cached by content (read-only arrays: copy before changing one)."""
    wav = np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1)
    key = hashlib.blake2b(wav.tobytes(), digest_size=16).digest()
    cached = _POSTERIOR_CACHE.get(key)
    if cached is not None:
        return cached
    recogniser = _hama_session()
    with torch.no_grad():
        result = recogniser(torch.from_numpy(wav[0])).numpy().astype(np.float32)
    result.flags.writeable = False
    _POSTERIOR_CACHE.put(key, result)
    return result


class PhonemePosteriorEncoder(_FrontEnd, SpeechEncoder):
    """hama CTC log-posteriors (frozen, 50 fps) -> LayerNorm -> linear -> residual blocks."""

    feature_fps = 50.0

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        _import_hama()  # fail early, with advice, where hama cannot run
        self.cfg = cfg
        self.hp = _complete("hama", HAMA_DEFAULTS, cfg.hf_config)
        self.feature_dim = int(self.hp["hidden_size"])
        n_classes, hidden = int(self.hp["n_classes"]), self.feature_dim
        self.norm_in = nn.LayerNorm(n_classes)
        self.proj = nn.Linear(n_classes, hidden)
        self._build_trunk(hidden)

    def posteriors(self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) normalised waveform -> hama log-posteriors (B, Ta, n_classes) float32 on
        the CPU (zero on padded frames) and the (B,) feature-frame counts. Each row's
        real samples are scaled to `input_rms` RMS and clipped to [-1, 1] first."""
        lengths = _lengths(waveform, attention_mask).cpu()
        samples = waveform.detach().float().cpu().numpy()
        n_classes, total = int(self.hp["n_classes"]), self.num_features(waveform.shape[1])
        out = torch.zeros(waveform.shape[0], total, n_classes)
        frames = torch.tensor([self.num_features(int(n)) for n in lengths])
        for row, n in enumerate(lengths.tolist()):
            if n == 0:
                continue
            x = samples[row, :n].astype(np.float64)
            rms = float(np.sqrt(np.mean(x * x)))
            if rms > 1e-8:
                x = x * (float(self.hp["input_rms"]) / rms)
            lp = hama_log_posteriors(np.clip(x, -1.0, 1.0).astype(np.float32))
            if lp.shape[1] != n_classes:
                raise ValueError(f"hama returned {lp.shape[1]} classes but this model was built for {n_classes} (n_classes)")
            lp_t = torch.from_numpy(lp.copy())  # the cached array is read-only
            want = int(frames[row])
            if lp_t.shape[0] != want:  # another hama frame rate: resample to 50 fps
                lp_t = F.interpolate(lp_t.T[None], size=want, mode="linear", align_corners=True)[0].T
            out[row, :want] = lp_t
        return out, frames

    def bilabial_probability(self, waveform: torch.Tensor) -> np.ndarray:
        """(1, S) normalised waveform -> (Ta,) probability of p, b or m per feature frame
        (feature_fps), from the same posteriors the model hears (they come from the cache)."""
        post, frames = self.posteriors(waveform)
        classes = [i for i, symbol in enumerate(hama_phone_inventory()) if is_bilabial(symbol)]
        return post[0, : int(frames[0]), classes].exp().sum(dim=-1).numpy()

    def forward(self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            post, frames = self.posteriors(waveform, attention_mask)
        dtype, device = self.proj.weight.dtype, self.proj.weight.device
        mask = _time_mask(frames, post.shape[1]).to(device=device, dtype=dtype)[..., None]
        h = self.proj(self.norm_in(post.to(device=device, dtype=dtype))) * mask
        h = F.gelu(h)
        return self._trunk(h, mask)
