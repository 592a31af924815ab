"""Weight encoding: fp16 precision over fp32's range, 2 bytes, verified on the data it writes."""

import numpy as np
import pytest

from moelab.codec import decode_weights, encode_weights, from_code16, to_code16


def test_code16_keeps_11_significant_bits_from_1e_minus_19_to_2():
    w = np.float32(2.0) ** np.random.default_rng(0).uniform(-62.9, 0.99, 200_000).astype(np.float32)
    back = from_code16(to_code16(w))
    assert np.all(np.abs(back - w) <= w * 2.0 ** -11)          # half an fp16 step is <= 2^-11 of the value


def test_zero_and_values_below_the_range_are_zero():
    assert from_code16(to_code16(np.array([0.0, 1e-20, 2.0 ** -64], np.float32))).tolist() == [0, 0, 0]


def test_float16_values_round_trip_exactly():
    w = np.random.default_rng(1).random(50_000).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(from_code16(to_code16(w)), w)


def test_rank_0_is_dropped_only_when_the_rebuild_is_within_bound():
    w = np.array([[[0.7, 0.3]]], np.float32)
    assert encode_weights(w)[0] == "code16_drop0"
    off = np.array([[[0.7, 0.29]]], np.float32)                 # does not sum to 1: every rank stored
    assert encode_weights(off)[0] == "code16"
    np.testing.assert_allclose(decode_weights(*encode_weights(off), k=2), off, rtol=2 ** -11)


@pytest.mark.parametrize("bad", [np.nan, -0.1, 2.5])
def test_weights_outside_code16_are_stored_bit_exact(bad):
    w = np.array([[[0.5, bad]]], np.float32)
    layout, stored = encode_weights(w)
    assert layout == "float32"
    np.testing.assert_array_equal(decode_weights(layout, stored, k=2), w)


def test_an_unknown_layout_names_itself():
    with pytest.raises(ValueError, match="'zip9'"):
        decode_weights("zip9", np.zeros((1, 1, 1)), k=2)
