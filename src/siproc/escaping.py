"""Control characters as text: what may not reach a handler's event line, its environment or a
log line raw, and how it is written instead.

The set: every C0 and C1 control character, DEL, and the Unicode line and paragraph
separators (U+2028, U+2029), which some line readers split on (Python's str.splitlines among
them). Each is written ``\\xNN`` (below U+0100) or ``\\uNNNN``.
"""

from __future__ import annotations

__all__ = ["CONTROL_CHARACTERS", "escaped"]

#: The control characters, as a regular-expression character class body.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"


def escaped(char: str) -> str:
    """``\\xNN`` or ``\\uNNNN`` for one character."""
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
