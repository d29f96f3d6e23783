"""Driving a character's own ARKit shape keys: name matching and a bounded weight solve.

    keys = match_arkit_names(names_on_the_mesh)        # {"jawOpen": "Jaw_Open", ...}
    fit = solve_weights(deltas, motion, mask)          # weights (T, K) in [0, 1] + the fit error

A character made for face capture carries Apple's 52 ARKit blendshapes. Rather than adding
new shape keys, the generated motion is expressed as weights of the existing mouth and jaw
keys, per frame: a least-squares fit of the key shapes to the motion on the mouth's
vertices, each weight kept in [0, 1], with a small ridge term so near-duplicate keys
(mouthLeft and jawLeft, say) share the motion instead of fighting over it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Apple's ARFaceAnchor.BlendShapeLocation names, in its documentation's order.
ARKIT_NAMES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
# The keys speech moves: the ones solved for (eyes, brows, nose and tongue are left alone).
SPEECH_NAMES = (
    "jawOpen", "jawForward", "jawLeft", "jawRight", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft",
    "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "cheekPuff",
)
_CANONICAL = {name.lower(): name for name in ARKIT_NAMES}
_DUPLICATE = re.compile(r"\.[0-9]{3}$")                    # Blender's "jawOpen.001"
_SIDE = re.compile(r"(?:[\s._-]|(?<=[a-z]))(l|r|left|right)$", re.IGNORECASE)  # _L, .R, Left, _right, mouthSmileL
_INDEX_PREFIX = re.compile(r"^[a-z]?\d+[\s._-]+", re.IGNORECASE)  # "A25_Jaw_Open", "12_jawOpen"
_PREFIXES = ("arkit", "blendshape", "bs", "shape", "shapes", "key", "sk")


def canonical_arkit_name(name: str) -> str | None:
    """The ARKit name a shape-key name stands for, or None.

    Case and separators do not matter, and common decorations are tolerated:
    "jawOpen", "JawOpen", "jaw_open", "ARKit_jawOpen", "bs.mouthSmile_L",
    "blendShape1.mouthSmileLeft", "A38_Mouth_Smile_Left", "Face:mouthSmile.R", "jawOpen.001"."""
    stem = _DUPLICATE.sub("", name.strip())
    stem = re.split(r"[:|/]", stem)[-1]                     # namespaces: "Face:jawOpen"
    tries = [(stem, "")]
    match = _SIDE.search(stem)
    if match:  # "mouthSmile_L"; but "mouthRollLower" ends in r too, so the name as it is is tried first
        tries.append((stem[:match.start()], "left" if match.group(1).lower() in ("l", "left") else "right"))
    for stem, side in tries:
        parts = [p for p in re.split(r"[\s._-]+", _INDEX_PREFIX.sub("", stem)) if p]
        while len(parts) > 1 and re.sub(r"\d+$", "", parts[0].lower()) in _PREFIXES:
            parts = parts[1:]                              # "bs_", "blendShape1.", "ARKit_"
        key = "".join(parts).lower() + side
        if key in _CANONICAL:
            return _CANONICAL[key]
    return None


def match_arkit_names(names: Iterable[str], wanted: Iterable[str] = ARKIT_NAMES) -> dict[str, str]:
    """{ARKit name: the mesh's key name} for the wanted names found among `names`. When two
    keys stand for the same name, the exact spelling wins, else the first one."""
    wanted = set(wanted)
    found: dict[str, str] = {}
    for name in names:
        canonical = canonical_arkit_name(name)
        if canonical in wanted and (canonical not in found or name == canonical):
            found[canonical] = name
    return {name: found[name] for name in ARKIT_NAMES if name in found}


# --------------------------------------------------------------------------- solve


@dataclass(frozen=True)
class WeightFit:
    weights: np.ndarray      # (T, K) in [lower, upper]
    rms_error: np.ndarray    # (T,) per-frame RMS vertex error over the fitted vertices (motion units)
    max_error: np.ndarray    # (T,) per-frame largest vertex error over the fitted vertices
    motion_rms: np.ndarray   # (T,) per-frame RMS of the motion itself, for scale

    @property
    def overall_rms(self) -> float:
        """RMS vertex error over all frames and fitted vertices."""
        return float(np.sqrt(np.mean(self.rms_error ** 2))) if self.rms_error.size else 0.0

    def summary(self) -> str:
        worst = float(self.max_error.max(initial=0.0))
        return f"fit error {worst * 1000:.2g} mm at worst, {self.overall_rms * 1000:.2g} mm RMS"


def solve_weights(deltas: np.ndarray, target_offsets: np.ndarray, vertex_mask: np.ndarray | None = None,
                  lower: float = 0.0, upper: float = 1.0, ridge: float = 1e-4, iterations: int = 300) -> WeightFit:
    """Per frame, weights w (K,) in [lower, upper] minimising
    |sum_k w_k deltas[k] - target_offsets[t]|^2 + ridge * sum_k |deltas[k]|^2 w_k^2
    over the vertices in vertex_mask (default: wherever some key moves a vertex).

    deltas (K, V, 3): each key's shape minus its basis; target_offsets (T, V, 3).
    Solved on the K x K normal equations: ADMM (one factorisation for all frames, vectorised
    over them), then each frame's active set is polished with an exact solve."""
    deltas = np.asarray(deltas, np.float64)
    motion = np.asarray(target_offsets, np.float64)
    if deltas.ndim != 3 or motion.ndim != 3 or deltas.shape[1:] != motion.shape[1:] or deltas.shape[2] != 3:
        raise ValueError(f"deltas (K, V, 3) and target_offsets (T, V, 3) must share V, got {deltas.shape} and {motion.shape}")
    if not lower < upper:
        raise ValueError(f"lower must be below upper, got {lower} and {upper}")
    if vertex_mask is None:
        vertex_mask = np.any(np.abs(deltas) > 1e-7, axis=(0, 2))
    mask = np.asarray(vertex_mask, bool)
    a = deltas[:, mask].reshape(len(deltas), -1).T                       # (M, K) one column per key
    y = motion[:, mask].reshape(len(motion), -1)                          # (T, M)
    k = a.shape[1]
    if k == 0 or a.shape[0] == 0:
        weights = np.zeros((len(motion), k))
    else:
        gram = a.T @ a                                                    # (K, K)
        gram += ridge * np.diag(np.maximum(np.diag(gram), 1e-30))        # relative: small keys are not penalised more
        rhs = y @ a                                                       # (T, K)
        weights = _admm_box(gram, rhs, lower, upper, iterations)
        weights = _polish(gram, rhs, weights, lower, upper)
    residual = (weights @ a.T - y).reshape(len(motion), -1, 3) if k else y.reshape(len(motion), -1, 3)
    err = np.linalg.norm(residual, axis=-1)                               # (T, Vm)
    size = np.linalg.norm(y.reshape(len(motion), -1, 3), axis=-1)
    return WeightFit(weights, _rms(err), err.max(axis=1, initial=0.0), _rms(size))


def _rms(x: np.ndarray) -> np.ndarray:
    """(T, N) -> (T,) root mean square per row (0 for no columns)."""
    return np.sqrt(np.mean(x ** 2, axis=1)) if x.shape[1] else np.zeros(len(x))


def _admm_box(gram, rhs, lower, upper, iterations):
    """min 1/2 w'Gw - b'w s.t. lower <= w <= upper, for every row b of rhs (T, K)."""
    k = len(gram)
    rho = float(np.trace(gram)) / k                                       # a step on the problem's own scale
    solve = np.linalg.inv(gram + rho * np.eye(k))                         # symmetric: rows can use it directly
    z = np.clip(rhs @ np.linalg.pinv(gram), lower, upper)
    u = np.zeros_like(z)
    for _ in range(iterations):
        x = (rhs + rho * (z - u)) @ solve
        z_new = np.clip(x + u, lower, upper)
        u += x - z_new
        if np.max(np.abs(z_new - z), initial=0.0) < 1e-9 * max(1.0, upper - lower):
            z = z_new
            break
        z = z_new
    return z


def _polish(gram, rhs, weights, lower, upper):
    """A primal active-set method started from the ADMM answer, for all frames at once:
    weights at a bound that the gradient pushes outward stay there, the others get the exact
    solution of their subproblem (stepping only as far as the bounds allow), until the set
    stops changing."""
    w = weights.copy()
    tol = 1e-9 * (upper - lower)
    previous = np.zeros(w.shape, bool)
    settled = np.zeros(len(w), bool)
    full_step = np.zeros(len(w), bool)
    for _ in range(2 * w.shape[1] + 2):
        grad = w @ gram - rhs
        held = ((w <= lower + tol) & (grad > 0)) | ((w >= upper - tol) & (grad < 0))   # (T, K)
        settled |= full_step & np.all(held == previous, axis=1)   # same set after a full step: optimal
        rows = np.flatnonzero(~settled)
        if not len(rows):
            break
        # Each frame's subproblem as one K x K system: free weights get their normal equations
        # with the held ones moved to the right-hand side; held weights get w_k = their bound.
        free = ~held[rows]                                                   # (R, K)
        pinned = np.where(free, 0.0, w[rows])
        system = gram[None] * (free[:, :, None] & free[:, None, :]) + held[rows][:, :, None] * np.eye(len(gram))
        right = np.where(free, rhs[rows] - pinned @ gram, pinned)
        goal = np.linalg.solve(system, right[..., None])[..., 0]             # one batched call: no per-frame overhead
        step = goal - w[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(step < 0, (lower - w[rows]) / step, np.where(step > 0, (upper - w[rows]) / step, np.inf))
        alpha = np.minimum(1.0, room.min(axis=1))                         # (R,) as far as the bounds allow
        w[rows] = np.clip(w[rows] + alpha[:, None] * step, lower, upper)
        full_step[:] = False
        full_step[rows] = alpha >= 1.0
        previous = held
    return w
