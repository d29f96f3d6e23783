"""hama's phoneme recogniser: the PyTorch port (vendor_model/hama_asr.py) against hama's
native engine, for speed and agreement.

    .venv/bin/python bench/hama_asr.py                     # 3 s, 13 s and 30 s of espeak-ng speech
    .venv/bin/python bench/hama_asr.py --seconds 10 --repeats 9

Prints, per clip length, the median time of each (2 threads), their ratio, the largest
difference in log-probability and the share of frames where both pick the same phone.
The native engine exists for Linux and macOS only; the port runs everywhere.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vendor_model.audio import load_audio  # noqa: E402

TEXT = ("She sells sea shells by the sea shore, and the big brown bear bumps into a map of Bombay "
        "while the quick fox jumps over the lazy dog. ")


def espeak_speech(seconds: float) -> np.ndarray:
    """(N,) float32 at 16 kHz, RMS 0.05 (as the model's front-end feeds hama), `seconds` long."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the test speech (apt install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), TEXT * 6], check=True, capture_output=True)
        x = load_audio(str(path))
    x = np.tile(x, int(np.ceil(seconds * 16000 / len(x))))[: int(seconds * 16000)]
    return np.clip(x * 0.05 / np.sqrt(np.mean(x * x)), -1, 1).astype(np.float32)


def median_time(run, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", nargs="+", type=float, default=[3.0, 13.0, 30.0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    import hama
    from hama import _engine

    from vendor_model.frontends import _hama_session

    port = _hama_session()
    native = hama.ASRModel() if _engine.available() else None
    print(f"{'clip':>6s} {'port':>8s} {'native':>8s} {'ratio':>6s} {'max |diff|':>11s} {'same phone':>11s}")
    for seconds in args.seconds:
        x = espeak_speech(seconds)
        with torch.no_grad():
            port_s, ours = median_time(lambda: port(torch.from_numpy(x)).numpy(), args.repeats)
        if native is None:
            print(f"{seconds:5.0f}s {port_s:7.3f}s {'-':>8s} (no native engine on this platform)")
            continue
        feeds = {"waveform": x[None], "waveform_lengths": np.array([len(x)], dtype=np.int64)}
        native_s, theirs = median_time(lambda: native.session.run(["log_probs"], feeds)[0][0], args.repeats)
        n = min(len(ours), len(theirs))  # the native engine stops at 30 s
        print(f"{seconds:5.0f}s {port_s:7.3f}s {native_s:7.3f}s {native_s / port_s:5.1f}x "
              f"{np.abs(ours[:n] - theirs[:n]).max():11.4f} {np.mean(ours[:n].argmax(1) == theirs[:n].argmax(1)):11.3f}")


if __name__ == "__main__":
    main()
