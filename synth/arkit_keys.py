"""ARKit-style mouth and jaw shape keys for the project's head, made with its rig.

    shapes = arkit_shapes()            # {"jawOpen": (V, 3) offsets in metres, ...}

For tests and demos of driving a character's own ARKit keys: each key is one rig pose
(a parameter at 1, or half of one: Left keys move the character's left side, +x), or a
plain displacement field where the rig has no such parameter (jawForward, jawLeft/Right,
mouthUpperUp, mouthLowerDown). Corrective keys are deltas against the pose they correct,
as in ARKit: mouthClose closes the lips of an open jaw, so jawOpen + mouthClose is the
rig's jaw_open + lip_close.
"""
from __future__ import annotations

import numpy as np

from .head import Head, build_head
from .rig import PARAMETERS, build_rig, deform


def _pose(rig, **values) -> np.ndarray:
    params = np.zeros((1, len(PARAMETERS)), np.float32)
    for name, value in values.items():
        params[0, PARAMETERS.index(name)] = value
    return deform(rig, params)[0].astype(np.float64)


def arkit_shapes(head: Head | None = None) -> dict[str, np.ndarray]:
    """ARKit name -> (V, 3) float32 offsets from the rest head."""
    head = build_head() if head is None else head
    rig = build_rig(head)
    x = head.vertices[:, 0].astype(np.float64)
    left = 0.5 * (1.0 + np.tanh(x / 0.006))[:, None]           # the character's left: +x, smooth at the middle
    right = 1.0 - left
    jaw = rig.jaw_weight[:, None].astype(np.float64)
    upper = (rig.side > 0)[:, None] * rig.contact_weight[:, None].astype(np.float64)
    lower = (rig.side < 0)[:, None] * rig.contact_weight[:, None].astype(np.float64)
    smile, spread, press = _pose(rig, smile=1.0), _pose(rig, spread=1.0), _pose(rig, lip_press=1.0)
    open_jaw = _pose(rig, jaw_open=1.0)
    shapes = {
        "jawOpen": open_jaw,
        "jawForward": jaw * (0.0, -0.004, 0.0),
        "jawLeft": jaw * (0.004, 0.0, 0.0),
        "jawRight": jaw * (-0.004, 0.0, 0.0),
        "mouthClose": _pose(rig, jaw_open=1.0, lip_close=1.0) - open_jaw,
        "mouthFunnel": _pose(rig, round=1.0),
        "mouthPucker": _pose(rig, protrude=1.0),
        "mouthSmileLeft": left * smile,
        "mouthSmileRight": right * smile,
        "mouthStretchLeft": left * spread,
        "mouthStretchRight": right * spread,
        "mouthPressLeft": left * press,
        "mouthPressRight": right * press,
        "mouthRollLower": _pose(rig, lower_lip_tuck=1.0),
        "mouthUpperUpLeft": left * upper * (0.0, 0.0, 0.003),
        "mouthUpperUpRight": right * upper * (0.0, 0.0, 0.003),
        "mouthLowerDownLeft": left * lower * (0.0, 0.0, -0.003),
        "mouthLowerDownRight": right * lower * (0.0, 0.0, -0.003),
    }
    return {name: delta.astype(np.float32) for name, delta in shapes.items()}
