"""Errors shared by the codec modules."""

from __future__ import annotations

__all__ = ["CodecUnavailableError"]


class CodecUnavailableError(RuntimeError):
    """The library a codec needs is missing or broken; the message says which and why."""
