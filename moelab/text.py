"""Readable token text: SentencePiece byte-fallback pieces decoded, word-start markers as spaces.

    >>> readable_pieces(["▁The", "▁dash", "<0xE2>", "<0x80>", "<0x94>", "<0x0A>"])
    [' The', ' dash', '—', '', '', '\\n']
    >>> readable_text(["▁caf", "<0xC3>", "<0xA9>"])
    ' café'

SentencePiece (Mixtral's tokenizer) spells a character that is not in its vocabulary as
one `<0xNN>` piece per UTF-8 byte: "—" is `<0xE2><0x80><0x94>`. One piece alone is not a
character, so `readable_pieces` decodes each run of byte pieces as UTF-8 and puts the
character on the run's first piece; the other pieces of that character become
`continuation` ("" by default), so the list stays one string per token, as coloured-token
figures need. Bytes that do not form valid UTF-8 stay as written (`<0xE2>`). '▁'
(SentencePiece) and 'Ġ'/'Ċ' (byte-level BPE) become a space / newline.
"""

from __future__ import annotations

import re

__all__ = ["readable_pieces", "readable_text", "byte_value"]

_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_value(piece: str) -> int | None:
    """The byte of a byte-fallback piece ('<0x0A>' -> 10), None for any other piece.

        >>> byte_value("<0x0A>"), byte_value("▁the")
        (10, None)
    """
    m = _BYTE.match(piece)
    return int(m.group(1), 16) if m else None


def _plain(piece: str) -> str:
    return piece.replace("\u2581", " ").replace("\u0120", " ").replace("\u010a", "\n")


def _utf8_length(first: int) -> int:
    """Bytes in the UTF-8 character that starts with byte `first`; 0 for a byte no character starts with."""
    if first < 0x80:
        return 1
    if 0xC2 <= first <= 0xDF:
        return 2
    if 0xE0 <= first <= 0xEF:
        return 3
    if 0xF0 <= first <= 0xF4:
        return 4
    return 0


def readable_pieces(pieces, continuation: str = "") -> list[str]:
    """One readable string per piece: byte runs decoded as UTF-8 (see the module docstring).

        >>> readable_pieces(["<0xE2>", "<0x80>"])                 # an incomplete character stays as bytes
        ['<0xE2>', '<0x80>']
    """
    pieces = [str(p) for p in pieces]
    out = [_plain(p) for p in pieces]
    i = 0
    while i < len(pieces):
        b = byte_value(pieces[i])
        if b is None:
            i += 1
            continue
        n = _utf8_length(b)
        run = [byte_value(p) for p in pieces[i:i + n]] if n else []
        if n and len(run) == n and None not in run:
            try:
                out[i] = bytes(run).decode("utf-8")
                for j in range(i + 1, i + n):
                    out[j] = continuation
                i += n
                continue
            except UnicodeDecodeError:
                pass
        out[i] = pieces[i]
        i += 1
    return out


def readable_text(pieces) -> str:
    """The pieces joined into text, byte runs decoded (a tokenizer-free `decode`)."""
    return "".join(readable_pieces(pieces))
