"""Readable rendering of SentencePiece byte-fallback pieces."""

import pytest

from moelab.text import byte_value, readable_pieces, readable_text


def pieces_of(text: str) -> list[str]:
    """Every character as its UTF-8 byte-fallback pieces, the way SentencePiece spells unknown characters."""
    return [f"<0x{b:02X}>" for ch in text for b in ch.encode("utf-8")]


@pytest.mark.parametrize("text", ["\n", "\t", "é", "—", "€", "中文", "𝔘", "naïve — ok\n"])
def test_byte_runs_decode_to_the_original_text(text):
    assert readable_text(pieces_of(text)) == text


def test_one_string_per_piece_with_the_character_on_the_first_byte():
    got = readable_pieces(["▁A", "<0xE2>", "<0x80>", "<0x94>", "▁b"], continuation="·")
    assert got == [" A", "—", "·", "·", " b"]


def test_invalid_or_incomplete_bytes_stay_visible():
    assert readable_pieces(["<0xE2>", "▁x"]) == ["<0xE2>", " x"]
    assert readable_pieces(["<0x80>"]) == ["<0x80>"]                       # a lone continuation byte
    assert readable_pieces(["<0xC0>", "<0x80>"]) == ["<0xC0>", "<0x80>"]    # overlong: invalid UTF-8


def test_plain_pieces_and_markers():
    assert readable_pieces(["▁hello", "Ġworld", "Ċ", "<0xZZ>"]) == [" hello", " world", "\n", "<0xZZ>"]
    assert byte_value("<0xff>") == 255 and byte_value("<0x0A") is None


def test_matches_the_embedded_tokenizers_decode():
    from moelab.data import load_tokenizer

    tok = load_tokenizer()
    text = "Naïve café — 中文 ✓\n\tend"
    ids = tok(text)["input_ids"]
    ids = ids[1:] if ids and ids[0] == tok.bos_token_id else ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert any(byte_value(p) is not None for p in pieces)                    # the text needs byte fallback
    assert readable_text(pieces).lstrip() == tok.decode(ids).lstrip()
