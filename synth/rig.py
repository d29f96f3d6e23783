"""Articulation rig: phoneme timings -> articulatory parameters -> vertex offsets on the head.

    offsets = animate(segments, fps=30, style=STYLES["neutral"])   # (T, V, 3) float32 metres

1. Targets. Each phone sets some of the PARAMETERS to a target with a dominance (how much
   it matters to that phone): bilabials own lip_close, f/v own lower_lip_tuck, vowels own
   jaw_open (by height: aa > ae > ao/ah > eh > ih/uh/er > iy/uw). Unlisted parameters get
   target 0 with a low dominance, so neighbours decide them (coarticulation). Diphthongs
   are split into two targets (ay = aa then iy).
2. Coarticulation (Cohen & Massaro 1993). Each segment's dominance decays exponentially
   with the distance from its core (the middle half of the segment), faster after the
   segment than before it (anticipation reaches further); every parameter is the
   dominance-weighted mean of the targets. Silences ('sil', gaps over SILENCE_GAP_S, and
   before/after the speech) pull everything to rest, so speech starts and stops over
   ~60-100 ms. Closures are then enforced: p/b/m hold lip_close and f/v hold
   lower_lip_tuck at 1 over the segment core, widened to the frame nearest the centre,
   so a 40 ms 'p' is never skipped at 30 fps.
3. Style: gains on jaw vs lip movement, protrusion, press, a smile while speaking, a
   coarticulation rate (tempo), and a left/right gain (asymmetry). Contacts (closure,
   tuck) are never scaled: every speaker closes the lips for 'p'.
4. Deformation, on rest positions. The jaw rotates about a left-right hinge near the ears;
   each vertex follows by its jaw weight (harmonic over the mesh between the rigid jaw,
   weight 1, and the still parts, weight 0, with the lip seam pinned to a lens profile so
   the mouth opens as an oval). Lip shapes (round, protrude, spread, smile, press) are
   linear fields. Three contacts are corrections computed from the current pose, so they
   are met whatever the jaw does (the only nonlinear terms besides the rotation):
   lip_close moves the lips onto each other, lower_lip_tuck moves the lower lip to the
   upper incisors, tongue_up moves the tongue tip to the alveolar ridge.
   The upper face, eyes, skull and neck get exactly zero offset.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .head import MOUTH_Z, Head, build_head
from .segments import SILENCE, PhonemeSegment, validate_segments

PARAMETERS = ("jaw_open", "lip_close", "lip_press", "lower_lip_tuck", "round", "protrude", "spread", "smile",
              "tongue_up")
P = {name: i for i, name in enumerate(PARAMETERS)}
LINEAR = ("lip_press", "round", "protrude", "spread", "smile")  # parameters with a fixed displacement field

SILENCE_GAP_S = 0.15          # longer gaps between segments are silences
ANTICIPATION_RATE = 18.0      # 1/s: dominance decay before a segment (slower: anticipation)
CARRYOVER_RATE = 25.0         # 1/s: after a segment
CLOSURE_RAMP_S = 0.03         # raised-cosine shoulders of an enforced closure
MAX_JAW_ANGLE = math.radians(11.5)  # jaw_open = 1: ~2 cm between the lips
UPPER_LIP_SHARE = 0.35        # in a closure the upper lip travels this share of the gap


# ------------------------------------------------------------------- targets

def _target(default_dominance: float, **targets) -> tuple[np.ndarray, np.ndarray]:
    """-> (targets (P,), dominance (P,)). A value is a target with dominance 1, or (target, dominance)."""
    value, dominance = np.zeros(len(PARAMETERS)), np.full(len(PARAMETERS), default_dominance)
    for name, spec in targets.items():
        value[P[name]], dominance[P[name]] = spec if isinstance(spec, tuple) else (spec, 1.0)
    return value, dominance


_V, _C = 0.5, 0.15  # default dominance of unlisted parameters: vowels keep lips apart, consonants follow
TARGETS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "aa": _target(_V, jaw_open=0.85, spread=0.1),
    "ae": _target(_V, jaw_open=0.7, spread=0.35),
    "ah": _target(_V, jaw_open=0.6),
    "ao": _target(_V, jaw_open=0.6, round=0.4, protrude=0.25),
    "eh": _target(_V, jaw_open=0.45, spread=0.3),
    "er": _target(_V, jaw_open=0.3, round=0.35, protrude=0.3),
    "ih": _target(_V, jaw_open=0.3, spread=0.4),
    "iy": _target(_V, jaw_open=0.18, spread=0.75),
    "uh": _target(_V, jaw_open=0.3, round=0.45, protrude=0.3),
    "uw": _target(_V, jaw_open=0.15, round=0.9, protrude=0.7),
    "p": _target(_C, lip_close=(1.0, 2.0), lip_press=0.8, jaw_open=(0.1, 0.7)),
    "b": _target(_C, lip_close=(1.0, 2.0), lip_press=0.6, jaw_open=(0.12, 0.7)),
    "m": _target(_C, lip_close=(1.0, 2.0), lip_press=0.4, jaw_open=(0.12, 0.7)),
    "f": _target(_C, lower_lip_tuck=(1.0, 2.0), jaw_open=(0.15, 0.7), lip_close=(0.0, 0.8)),
    "v": _target(_C, lower_lip_tuck=(1.0, 2.0), jaw_open=(0.15, 0.7), lip_close=(0.0, 0.8)),
    "w": _target(_C, round=(1.0, 1.2), protrude=(0.8, 1.2), jaw_open=(0.15, 0.6), lip_close=(0.0, 0.5)),
    "th": _target(_C, tongue_up=(0.7, 1.2), jaw_open=(0.2, 0.6)),
    "dh": _target(_C, tongue_up=(0.7, 1.2), jaw_open=(0.2, 0.6)),
    "t": _target(_C, tongue_up=(1.0, 1.2), jaw_open=(0.18, 0.6)),
    "d": _target(_C, tongue_up=(1.0, 1.2), jaw_open=(0.18, 0.6)),
    "n": _target(_C, tongue_up=(1.0, 1.2), jaw_open=(0.18, 0.6)),
    "l": _target(_C, tongue_up=(1.0, 1.0), jaw_open=(0.28, 0.5)),
    "s": _target(_C, jaw_open=(0.08, 0.9), spread=(0.35, 0.6)),
    "z": _target(_C, jaw_open=(0.08, 0.9), spread=(0.35, 0.6)),
    "sh": _target(_C, round=(0.5, 0.9), protrude=(0.75, 0.9), jaw_open=(0.12, 0.7)),
    "zh": _target(_C, round=(0.5, 0.9), protrude=(0.75, 0.9), jaw_open=(0.12, 0.7)),
    "ch": _target(_C, round=(0.5, 0.9), protrude=(0.75, 0.9), jaw_open=(0.12, 0.7)),
    "jh": _target(_C, round=(0.5, 0.9), protrude=(0.75, 0.9), jaw_open=(0.12, 0.7)),
    "r": _target(_C, round=(0.4, 0.7), protrude=(0.35, 0.7), jaw_open=(0.2, 0.4)),
    "y": _target(_C, spread=(0.5, 0.6), jaw_open=(0.15, 0.5)),
    "k": _target(_C, jaw_open=(0.25, 0.4)),
    "g": _target(_C, jaw_open=(0.25, 0.4)),
    "ng": _target(_C, jaw_open=(0.25, 0.4)),
    "hh": _target(_C, jaw_open=(0.35, 0.2)),
    SILENCE: _target(1.0),
}
DIPHTHONGS = {"aw": ("aa", "uh"), "ay": ("aa", "iy"), "ey": ("eh", "iy"), "ow": ("ao", "uw"), "oy": ("ao", "iy")}
DIPHTHONG_SPLIT = 0.55        # share of the segment spent on the first target
CLOSURES = {"p": "lip_close", "b": "lip_close", "m": "lip_close", "f": "lower_lip_tuck", "v": "lower_lip_tuck"}


# --------------------------------------------------------------------- styles

@dataclass(frozen=True)
class Style:
    amplitude: float = 1.0    # gain on all non-contact movement
    jaw_ratio: float = 1.0    # in (0, 2): jaw gain x ratio, lip-shape gain x (2 - ratio)
    asymmetry: float = 0.0    # in [-1, 1]: +x side moves (1 + a) times, -x side (1 - a) times, smoothly
    smile_bias: float = 0.0   # smile added while speaking (not in silence)
    tempo: float = 1.0        # coarticulation rate factor: > 1 crisper, < 1 more blended
    protrusion: float = 1.0   # gain on protrude
    press: float = 1.0        # gain on lip_press

    def __post_init__(self):
        if not (self.amplitude > 0 and 0 < self.jaw_ratio < 2 and -1 <= self.asymmetry <= 1
                and self.tempo > 0 and self.protrusion >= 0 and self.press >= 0 and self.smile_bias >= 0):
            raise ValueError(f"style out of range: {self}")


STYLES: dict[str, Style] = {
    "neutral": Style(),
    "energetic": Style(amplitude=1.25, jaw_ratio=1.1, smile_bias=0.15, tempo=1.2, protrusion=1.1, press=1.1),
    "mumbler": Style(amplitude=0.55, jaw_ratio=0.8, tempo=0.8, protrusion=0.7, press=0.6),
    "precise": Style(amplitude=1.05, jaw_ratio=0.95, tempo=1.5, protrusion=1.1, press=1.3),
    "smiley": Style(jaw_ratio=0.95, smile_bias=0.45, protrusion=0.8, press=0.9),
    "wide_jaw": Style(amplitude=1.1, jaw_ratio=1.4, protrusion=0.8),
    "lip_heavy": Style(amplitude=1.1, jaw_ratio=0.65, protrusion=1.4, press=1.2),
    "lopsided": Style(asymmetry=0.35, smile_bias=0.1),
    "relaxed": Style(amplitude=0.85, asymmetry=0.05, smile_bias=0.05, tempo=0.75, protrusion=0.9, press=0.8),
}


# ------------------------------------------------------------ coarticulation

def frame_count(duration: float, fps: float) -> int:
    return max(0, math.ceil(duration * fps - 1e-9))


def _timeline(segments: Sequence[PhonemeSegment]) -> list[tuple[str, float, float]]:
    """(phone, start, end) with diphthongs split and silences made explicit: long gaps, and
    one second of rest before and after the speech."""
    out, previous_end = [], None
    for seg in segments:
        if previous_end is not None and seg.start - previous_end > SILENCE_GAP_S:
            out.append((SILENCE, previous_end, seg.start))
        if seg.phone in DIPHTHONGS:
            split = seg.start + DIPHTHONG_SPLIT * seg.duration
            out += [(DIPHTHONGS[seg.phone][0], seg.start, split), (DIPHTHONGS[seg.phone][1], split, seg.end)]
        else:
            out.append((seg.phone, seg.start, seg.end))
        previous_end = seg.end
    if not out:
        return [(SILENCE, -1.0, 1.0)]
    return [(SILENCE, out[0][1] - 1.0, out[0][1])] + out + [(SILENCE, out[-1][2], out[-1][2] + 1.0)]


def _core(start: float, end: float, phone: str) -> tuple[float, float]:
    """The part of a segment where its target is fully dominant: the middle half (a silence:
    all but 40 ms at each end)."""
    margin = min(0.04, 0.5 * (end - start)) if phone == SILENCE else 0.25 * (end - start)
    return start + margin, end - margin


def parameters(segments: Sequence[PhonemeSegment], fps: float = 30, style: Style = STYLES["neutral"],
               duration: float | None = None) -> np.ndarray:
    """Articulatory parameters per frame, (T, len(PARAMETERS)) float32 in [0, 1]; frame i is at
    i / fps seconds, T = ceil(duration * fps), duration defaulting to the last segment end."""
    segments = validate_segments(segments)
    if duration is None:
        duration = segments[-1].end if segments else 0.0
    t = np.arange(frame_count(duration, fps)) / fps                      # (T,)
    timeline = _timeline(segments)
    num, den = np.zeros((len(t), len(PARAMETERS))), np.zeros((len(t), len(PARAMETERS)))
    speaking_num, speaking_den = np.zeros(len(t)), np.zeros(len(t))
    for phone, start, end in timeline:
        lo, hi = _core(start, end, phone)
        before, after = np.maximum(lo - t, 0.0), np.maximum(t - hi, 0.0)
        decay = np.exp(-style.tempo * (ANTICIPATION_RATE * before + CARRYOVER_RATE * after))  # (T,)
        target, dominance = TARGETS[phone]
        weight = decay[:, None] * dominance                               # (T, P)
        num += weight * target
        den += weight
        speaking_num += decay * (phone != SILENCE)
        speaking_den += decay
    params = num / np.maximum(den, 1e-30)
    speaking = speaking_num / np.maximum(speaking_den, 1e-30)            # (T,) 1 in speech, 0 at rest

    jaw_gain, lip_gain = style.amplitude * style.jaw_ratio, style.amplitude * (2.0 - style.jaw_ratio)
    params[:, P["jaw_open"]] *= jaw_gain
    for name in ("round", "protrude", "spread", "smile"):
        params[:, P[name]] *= lip_gain
    params[:, P["protrude"]] *= style.protrusion
    params[:, P["lip_press"]] *= style.press
    params[:, P["smile"]] += style.smile_bias * speaking

    for phone, start, end in timeline:      # contacts last: they must win
        if phone in CLOSURES:
            half = max(0.25 * (end - start), 0.5 / fps)                  # covers the frame nearest the centre
            distance = np.maximum(np.abs(t - 0.5 * (start + end)) - half, 0.0) / CLOSURE_RAMP_S
            window = np.where(distance < 1.0, 0.5 + 0.5 * np.cos(np.pi * np.minimum(distance, 1.0)), 0.0)
            column = P[CLOSURES[phone]]
            params[:, column] = np.maximum(params[:, column], window)
    return np.clip(params, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- deformation

@dataclass(frozen=True, eq=False)
class Rig:
    head: Head
    jaw_weight: np.ndarray        # (V,) 0 still .. 1 rigid with the jaw
    fields: np.ndarray            # (len(LINEAR), V, 3) metres per unit parameter
    side: np.ndarray              # (V,) +1 upper lip side, -1 lower lip side, 0 elsewhere
    contact_weight: np.ndarray    # (V,) how much a vertex follows its lip's contact (1 on the seam)
    seam_x: np.ndarray            # (K,) rest x of the seam columns, rising
    tongue_weight: np.ndarray     # (V,) 1 at the tongue tip .. 0 at the root and off the tongue
    tongue_tip: int               # vertex index of the tongue tip


def _smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _edges(head: Head) -> np.ndarray:
    faces = [head.quads, head.triangles]
    pairs = np.concatenate([np.stack([f, np.roll(f, -1, axis=1)], -1).reshape(-1, 2) for f in faces])
    return np.unique(np.sort(pairs, axis=1), axis=0)                    # (E, 2)


def _harmonic(n: int, edges: np.ndarray, pinned: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weights minimising the sum over edges of squared differences, with `pinned` vertices
    held at `values`: a graph-Laplace solve by conjugate gradients."""
    a, b = edges.T
    degree = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)

    def laplace(w):
        return degree * w - np.bincount(a, w[b], n) - np.bincount(b, w[a], n)

    free = ~pinned
    w = np.where(pinned, values, 0.0)
    rhs = -laplace(w)[free]
    x = np.zeros(free.sum())
    r = rhs.copy()
    d, rr = r.copy(), r @ r
    for _ in range(4000):
        full = np.zeros(n)
        full[free] = d
        ad = laplace(full)[free]
        step = rr / (d @ ad)
        x, r = x + step * d, r - step * ad
        rr_new = r @ r
        if rr_new < 1e-20 * len(x):
            break
        d, rr = r + (rr_new / rr) * d, rr_new
    w[free] = x
    return w


def _lens(u):
    """Opening profile across the mouth (u = x / corner x): 1 mid-mouth, 0 at the corners."""
    return (1.0 - np.minimum(np.abs(u), 1.0) ** 2.5) ** 0.4


@lru_cache(maxsize=4)
def build_rig(head: Head) -> Rig:
    """Per-vertex weights and displacement fields for `head` (cached per head object)."""
    v = head.vertices.astype(np.float64)
    V = len(v)
    x, y, z = v.T
    reg = {name: np.isin(np.arange(V), idx) for name, idx in head.regions.items()}
    seam_upper, seam_lower = head.seam[0, 1:-1], head.seam[1, 1:-1]
    seam_x = v[head.seam[0], 0]
    corner_x = seam_x[-1]

    # Jaw weights: pinned still / rigid parts, a lens profile on the seam, harmonic between.
    pocket = reg["mouth_interior"] & ~reg["lips"]
    still = reg["upper_face"] | reg["skull"] | reg["neck"] | reg["nose"] | reg["eyes"] | reg["upper_teeth"] \
        | (pocket & (z > MOUTH_Z))
    rigid = reg["chin"] | reg["lower_teeth"] | reg["tongue"] | (pocket & (z < MOUTH_Z))
    values = rigid.astype(float)
    pinned = still | rigid
    lens = _lens(v[seam_upper, 0] / corner_x)
    for index, value in ((seam_upper, 0.5 - 0.5 * lens), (seam_lower, 0.5 + 0.5 * lens), (head.seam[0, [0, -1]], 0.5)):
        pinned[index], values[index] = True, value
    jaw_weight = _harmonic(V, _edges(head), pinned, values)

    # Which lip a vertex belongs to, and how strongly it follows its lip's contacts.
    side = np.zeros(V)
    side[reg["upper_lip"]], side[reg["lower_lip"]] = 1.0, -1.0
    height = np.where(side > 0, 0.014, 0.013)
    contact = _smoothstep(1.0 - np.abs(z - MOUTH_Z) / height) * _smoothstep(1.0 - (np.abs(x) - corner_x) / 0.008)
    contact = np.where(reg["lips"] & (side != 0), contact, 0.0)

    # Linear fields. mouth: broad falloff round the mouth on the front of the face (zero well
    # before the nose tip, the eyes and the neck); lips: the lips, outer and inner.
    skin_front = reg["skin"] & (y < -0.04) | reg["lips"]
    mouth = np.where(skin_front, _smoothstep(1.0 - np.hypot(x / 0.045, (z - MOUTH_Z) / 0.03)), 0.0)
    lips = np.where(reg["lips"], _smoothstep(1.0 - np.hypot(x / (corner_x + 0.006), (z - MOUTH_Z) / 0.014)), 0.0)
    corner = np.minimum((x / corner_x) ** 2, 1.5)                          # 0 mid-mouth, 1 at the corners
    cheek = np.where(reg["cheeks"], _smoothstep(1.0 - np.hypot((np.abs(x) - 0.035) / 0.02,
                                                               (z - MOUTH_Z - 0.03) / 0.015)), 0.0)
    across = np.maximum(1.0 - (x / corner_x) ** 2, 0.0)                   # 1 mid-mouth, 0 at the corners
    zero = np.zeros(V)
    fields = np.stack([
        # lip_press: lips roll in and squeeze toward the seam
        np.stack([zero, 0.002 * lips, -0.25 * (z - MOUTH_Z) * lips], -1),
        # round: corners in, lips forward, a small O opening mid-mouth
        np.stack([-0.65 * x * mouth, -0.006 * lips, 0.001 * side * across * lips], -1),
        # protrude: lips forward and a little narrower
        np.stack([-0.08 * x * lips, -0.007 * lips, zero], -1),
        # spread: corners out and back
        np.stack([0.35 * x * mouth, 0.003 * corner * mouth, zero], -1),
        # smile: corners out, back and up; cheeks up and forward
        np.stack([0.28 * x * mouth, 0.004 * corner * mouth - 0.002 * cheek,
                  0.006 * corner * mouth + 0.003 * cheek], -1),
    ])

    tongue = reg["tongue"]
    tip = int(np.flatnonzero(tongue)[np.argmin(y[tongue])])
    length = y[tongue].max() - y[tip]
    tongue_weight = np.where(tongue, _smoothstep(1.0 - (y - y[tip]) / (0.6 * length)), 0.0)
    return Rig(head, jaw_weight.astype(np.float32), fields.astype(np.float32), side.astype(np.float32),
               contact.astype(np.float32), seam_x, tongue_weight.astype(np.float32), tip)


def _jaw_offsets(rig: Rig, jaw_open: np.ndarray) -> np.ndarray:
    """(T,) -> (T, V, 3): rotation about the hinge (x axis), blended by jaw weight."""
    angle = MAX_JAW_ANGLE * jaw_open[:, None]                          # (T, 1)
    rel = rig.head.vertices - rig.head.landmarks["jaw_hinge"]          # (V, 3)
    cos, sin = np.cos(angle) - 1.0, np.sin(angle)
    dy = cos * rel[:, 1] - sin * rel[:, 2]
    dz = sin * rel[:, 1] + cos * rel[:, 2]
    return rig.jaw_weight[:, None] * np.stack([np.zeros_like(dy), dy, dz], -1)


def _along_seam(rig: Rig, per_column: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(T, K, 3) values on the seam columns -> (T, len(index), 3) interpolated at the vertices' x."""
    xs = rig.head.vertices[index, 0]
    i = np.clip(np.searchsorted(rig.seam_x, xs) - 1, 0, len(rig.seam_x) - 2)
    f = np.clip((xs - rig.seam_x[i]) / (rig.seam_x[i + 1] - rig.seam_x[i]), 0.0, 1.0)[None, :, None]
    return (1 - f) * per_column[:, i] + f * per_column[:, i + 1]


def deform(rig: Rig, params: np.ndarray, asymmetry: float = 0.0) -> np.ndarray:
    """(T, len(PARAMETERS)) parameters -> (T, V, 3) float32 vertex offsets in metres."""
    params = np.asarray(params, np.float32)
    offsets = _jaw_offsets(rig, params[:, P["jaw_open"]])               # (T, V, 3)
    linear = params[:, [P[name] for name in LINEAR]]                    # (T, L)
    offsets += np.einsum("tl,lvc->tvc", linear, rig.fields)

    # Contacts: measure the pose so far, then move the lips (or the tongue tip) onto the
    # contact, in proportion to the parameter: at 1 it is met whatever the jaw and lip shapes did.
    verts, marks = rig.head.vertices, rig.head.landmarks
    upper, lower = rig.head.seam
    lips = np.flatnonzero(rig.contact_weight)                           # (L,)
    follow = rig.contact_weight[lips][None, :, None]                    # (1, L, 1)
    on_upper = (rig.side[lips] > 0)[None, :, None]
    gap = offsets[:, lower] - offsets[:, upper]                         # (T, K, 3) lower lip minus upper
    close = params[:, P["lip_close"], None, None] * follow * _along_seam(rig, gap, lips)
    offsets[:, lips] += np.where(on_upper, UPPER_LIP_SHARE, UPPER_LIP_SHARE - 1.0) * close

    edge = marks["upper_incisor_edge"]        # f/v: lower lip just in front of and below the incisor edge
    goal = np.array([0.0, edge[1] - 0.0025 - verts[lower[len(lower) // 2], 1], edge[2] - 0.001 - MOUTH_Z])
    goal = goal * _lens(verts[lower, 0] / rig.seam_x[-1])[:, None]      # (K, 3) offsets; the corners stay put
    tuck = params[:, P["lower_lip_tuck"], None, None] * follow          # (T, L, 1)
    offsets[:, lips] += np.where(on_upper, 0.0, tuck * _along_seam(rig, goal[None] - offsets[:, lower], lips))
    offsets[:, lips, 2] += np.where(on_upper, tuck * 0.002, 0.0)[..., 0]  # the upper lip lifts off the teeth

    tongue = np.flatnonzero(rig.tongue_weight)
    goal = marks["alveolar_ridge"] + np.array([0.0, 0.002, -0.003]) - verts[rig.tongue_tip]
    reach = goal - offsets[:, rig.tongue_tip]                           # (T, 3)
    offsets[:, tongue] += params[:, P["tongue_up"], None, None] * rig.tongue_weight[tongue, None] * reach[:, None]

    if asymmetry:  # a gain that depends on rest x only, so lips that meet still meet
        offsets *= (1.0 + asymmetry * np.tanh(verts[:, 0] / 0.025))[None, :, None]
    return offsets.astype(np.float32)


def animate(segments: Sequence[PhonemeSegment], fps: float = 30, style: Style = STYLES["neutral"],
            head: Head | None = None, duration: float | None = None) -> np.ndarray:
    """Phoneme segments -> (T, V, 3) float32 vertex offsets (metres) on `head` (default:
    `build_head()`), T = ceil(duration * fps)."""
    head = build_head() if head is None else head
    return deform(build_rig(head), parameters(segments, fps, style, duration), style.asymmetry)
