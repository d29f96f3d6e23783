"""Polls that say why: a greyed-out button shows its reason in the tooltip."""
from __future__ import annotations


def poll_reason(cls, reason: str) -> bool:
    """An operator's poll from its disabled reason ('' when it can run)."""
    if reason:
        cls.poll_message_set(reason)
    return not reason
