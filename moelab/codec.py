"""How routing weights are stored: fp16 precision over fp32's range, in 2 bytes.

    >>> import numpy as np
    >>> from moelab.codec import encode_weights, decode_weights
    >>> w = np.array([[[0.9999, 1e-4]], [[0.6, 0.4]]], np.float32)     # (tokens, layers, k)
    >>> layout, stored = encode_weights(w)
    >>> layout, stored.dtype, stored.shape                            # rank 0 is rebuilt from the others
    ('code16_drop0', dtype('uint16'), (2, 1, 1))
    >>> bool(np.all(np.abs(decode_weights(layout, stored, k=2) - w) <= w * 2**-11))
    True

Why not float16: a top-2 weight of 1e-6 is a float16 subnormal (a few
significant bits), 1e-8 is 0, and a second weight rebuilt as 1 - w0 from a
float16 w0 near 1 is off by thousands of fp16 steps. `code16` keeps 11
significant bits (fp16's precision) with 6 exponent bits covering
[2^-63, 2): the float32 bit pattern rounded to 10 mantissa bits and offset.

Layouts (the file's `weights_layout`):
* `code16_drop0`: ranks 1..k-1 as code16; rank 0 is rebuilt as 1 - sum(others)
  in float32. Chosen only when the weights sum to 1 per (token, layer) so
  exactly that every rebuilt rank-0 weight is within 2^-11 of its own size
  (checked on the data being written, not assumed).
* `code16`: every rank as code16, when weights are in [0, 2) but not renormalised.
* `float32`: bit-exact, when asked for (`logits=True` traces) or when a weight is
  negative, non-finite or >= 2 (e.g. a routed scaling factor).
Guarantee: every reloaded weight w' satisfies |w' - w| <= 2^-11 |w|, i.e. at
most half an fp16 step (rounding to 11 significant bits; the rebuilt rank 0 is
checked against the same bound), except weights below 2^-63 (~1e-19), stored as 0.
"""

from __future__ import annotations

import numpy as np

_E_MIN = 64                     # smallest stored biased float32 exponent (2^-63)
_BASE = (_E_MIN << 10) - 1      # code = rounded_bits - _BASE, 0 reserved for zero
_REL = 2.0 ** -11               # the guarantee, relative to each weight


def to_code16(w: np.ndarray) -> np.ndarray:
    """float32 weights in [0, 2) -> uint16 codes (0 = zero or below 2^-63)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    r = (w.view(np.uint32).astype(np.int64) + 0x1000) >> 13        # round to 10 mantissa bits
    code = r - _BASE
    code[(w <= 0) | (code < 1)] = 0
    if code.size and code.max() > 0xFFFF:
        raise ValueError(f"weight {float(w.max())!r} is outside code16's range [0, 2); store as float32")
    return code.astype(np.uint16)


def from_code16(code: np.ndarray) -> np.ndarray:
    c = np.asarray(code).astype(np.int64)
    bits = ((c + _BASE) << 13).astype(np.uint32)
    out = bits.view(np.float32)
    return np.where(c == 0, np.float32(0), out).astype(np.float32)


def _rebuild_rank0(rest: np.ndarray) -> np.ndarray:
    return (np.float32(1) - rest.sum(-1, dtype=np.float32, keepdims=True)).astype(np.float32)


def encode_weights(w: np.ndarray, *, exact: bool = False) -> tuple[str, np.ndarray]:
    """(tokens, layers, k) weights -> (layout, stored array). See the module docstring."""
    w = np.asarray(w)
    if exact:
        return "float32", w.astype(np.float32)
    w32 = w.astype(np.float32)
    if not np.all(np.isfinite(w32)) or (w32.size and (w32.min() < 0 or w32.max() >= 1.999)):
        return "float32", w32
    k = w32.shape[-1]
    if k >= 2 and w32.shape[0] > 0:
        rest = from_code16(to_code16(w32[..., 1:]))
        rebuilt = _rebuild_rank0(rest)
        if np.all(np.abs(rebuilt - w32[..., :1]) <= _REL * np.abs(w32[..., :1])):
            return "code16_drop0", to_code16(w32[..., 1:])
    return "code16", to_code16(w32)


def decode_weights(layout: str, stored: np.ndarray, *, k: int) -> np.ndarray:
    """Inverse of `encode_weights`: float32 (tokens, layers, k)."""
    if layout == "float32":
        return np.asarray(stored, np.float32)
    if layout == "code16":
        return from_code16(stored)
    if layout == "code16_drop0":
        rest = from_code16(stored)
        return np.concatenate([_rebuild_rank0(rest), rest], axis=-1)
    raise ValueError(f"unknown weights layout {layout!r}; this file needs a newer moelab")


def stored_width(layout: str, k: int) -> int:
    return k - 1 if layout == "code16_drop0" else k
