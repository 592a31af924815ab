"""The explorer's payload (moelab.explorer): what the browser receives is exactly the trace.

Pure Python, no browser: the typed arrays decode back to the trace's arrays bit for bit, token
text comes from the tokenizer, and bad input is refused with a message that says what to do.
The browser side is tested in tests/test_explorer_browser.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import moelab
from moelab.explorer import MAX_TOKENS, ExplorerInputError, export_html, show
from moelab.codec import decode_weights, encode_weights
from moelab.explorer.payload import pack, pack_array, reading_order, token_texts, unpack_array, unpack_weights


def routed(T=50, L=3, E=8, k=2, seed=0, logits=False, **columns):
    rng = np.random.default_rng(seed)
    lg = rng.normal(size=(T, L, E)).astype(np.float32)
    ex = np.argsort(-lg, -1)[..., :k]
    p = np.exp(lg) / np.exp(lg).sum(-1, keepdims=True)
    w = np.take_along_axis(p, ex, -1)
    w = (w / w.sum(-1, keepdims=True)).astype(np.float16)
    seq = np.sort(rng.integers(0, 4, T))
    return moelab.RoutingTrace.from_arrays(ex, w, num_experts=E, sequence=seq, token_id=rng.integers(3, 120, T),
                                           logits=lg if logits else None, **columns)


class VocabTokenizer:
    """A minimal tokenizer: id i is the piece '▁w{i}' (SentencePiece's word marker), 0x0A for id 3."""

    def __init__(self, size=128):
        self.vocab_size = size

    def __len__(self):
        return self.vocab_size

    def convert_ids_to_tokens(self, ids):
        return ["<0x0A>" if i == 3 else f"\u2581w{i}" for i in ids]


def test_arrays_round_trip_bit_exact():
    rng = np.random.default_rng(1)
    for a in [rng.integers(0, 256, 1000).astype(np.uint8), rng.integers(0, 60000, 77).astype(np.uint16),
              rng.normal(size=(5, 3)).astype(np.float16), rng.normal(size=9).astype(np.float32),
              rng.integers(-5, 5, 10).astype(np.int32)]:
        for z, shuffle, delta in [(True, False, False), (False, False, False), (True, True, False),
                                  (True, False, True), (False, True, True)]:
            back = unpack_array(pack_array(a, compress=z, shuffle=shuffle, delta=delta))
            assert back.dtype == a.dtype and back.shape == a.shape
            assert back.tobytes() == a.tobytes()


def test_delta_coding_wraps_around_in_the_integer_type():
    a = np.array([65535, 0, 1, 65535, 3], np.uint16)          # steps that leave and re-enter the range
    spec = pack_array(a, delta=True, compress=False)
    assert np.frombuffer(__import__("base64").b64decode(spec["b64"]), "<u2").tolist() == [65535, 1, 1, 65534, 4]
    np.testing.assert_array_equal(unpack_array(spec), a)


def test_payload_holds_the_trace_exactly():
    tr = routed(logits=True, domain=np.array(["code", "prose"] * 25))
    P = pack(tr, VocabTokenizer())
    T, L, k, E = tr.num_tokens, tr.num_layers, tr.top_k, tr.num_experts
    run = P["runs"][0]
    assert (P["tokens"], P["layers"], P["k"], P["num_experts"]) == (T, L, k, E)
    np.testing.assert_array_equal(unpack_array(run["experts"]).reshape(T, L, k), tr.experts)
    shown = unpack_weights(run["weights"]).reshape(T, L, k)
    assert shown.tobytes() == decode_weights(*encode_weights(tr.weights), k=k).tobytes()     # what load_trace reloads
    np.testing.assert_allclose(shown, tr.weights, rtol=2.0 ** -11, atol=0)                    # half an fp16 step
    softmax = np.exp(tr.logits) / np.exp(tr.logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(unpack_array(run["probs"]).reshape(T, L, E), softmax, atol=1e-3)
    index = unpack_array(P["token_index"])
    strings = np.array(P["strings"], dtype=object)[index]
    assert list(strings) == [f" w{i}" if i != 3 else "\n" for i in tr.token_id]
    assert len(P["strings"]) == len(set(tr.token_id.tolist()))                  # a vocabulary table, no repeats
    np.testing.assert_array_equal(unpack_array(P["ids"]).astype(np.int64)[index] - 1, tr.token_id)
    np.testing.assert_array_equal(np.array(P["sequences"])[unpack_array(P["sequence_index"])], tr.sequence)
    np.testing.assert_array_equal(unpack_array(P["position"]), tr.position)
    order = reading_order(P)
    assert sorted(order.tolist()) == list(range(T))
    keys = list(zip(tr.sequence[order], tr.position[order]))
    assert keys == sorted(keys)                                     # text reads sequence by sequence
    (f,) = P["filters"]
    assert f["name"] == "domain" and list(np.array(f["categories"])[unpack_array(f["codes"])]) == list(tr.columns["domain"])
    assert P["colors"] == moelab.plots.expert_colors(E)


def test_smallest_integer_types_keep_the_page_small():
    P = pack(routed(T=300))
    assert P["runs"][0]["experts"]["dtype"] == "uint8" and P["token_index"]["dtype"] == "uint8"
    assert P["runs"][0]["weights"]["layout"] == "code16_drop0"          # top-2 summing to 1: one 16-bit code each
    assert P["order"] is None                                            # already in reading order: nothing shipped


def test_fp32_weights_travel_at_the_stores_16_bit_precision():
    tr = routed(T=40)
    w32 = moelab.RoutingTrace.from_arrays(tr.experts, tr.weights.astype(np.float32) * np.float32(1 + 1e-5),
                                          num_experts=8)
    spec = pack(w32)["runs"][0]["weights"]
    assert spec["data"]["dtype"] == "uint16" and spec["data"]["shape"] == [40, 3, 1]
    np.testing.assert_allclose(unpack_weights(spec), w32.weights, rtol=2.0 ** -11, atol=0)


@pytest.mark.slow
def test_300k_tokens_at_4_layers_export_to_at_most_5_mb(tmp_path):
    """Random routing and weights (nothing for deflate to find) on a held-out-sized trace."""
    T = 300_000
    rng = np.random.default_rng(0)
    lg = rng.normal(size=(T, 4, 8)).astype(np.float32)
    ex = np.argsort(-lg, -1)[..., :2]
    w = np.exp(np.take_along_axis(lg, ex, -1))
    w = (w / w.sum(-1, keepdims=True)).astype(np.float32)
    seq = np.arange(T) // 256
    tr = moelab.RoutingTrace.from_arrays(ex, w, num_experts=8, sequence=seq, token_id=np.minimum(rng.zipf(1.2, T), 31999),
                                         domain=np.array(["code", "fiction", "math", "legal"])[seq % 4])
    assert T <= MAX_TOKENS
    path = export_html(tr, tmp_path / "heldout.html", VocabTokenizer(32000))
    assert path.stat().st_size <= 5_000_000


def test_without_tokenizer_ids_are_shown():
    tr = routed(T=4)
    strings, index = token_texts(tr.token_id, None)
    assert [strings[i] for i in index] == [f"\u27e8{i}\u27e9" for i in tr.token_id]


def test_mixtral_tokenizer_pieces_read_as_text():
    tok = moelab.load_tokenizer()
    ids = np.array(tok("the cat\nsat", add_special_tokens=False)["input_ids"])
    strings, index = token_texts(ids, tok)
    assert "".join(strings[i] for i in index).strip() == "the cat\nsat"


def test_empty_trace_is_refused():
    empty = moelab.RoutingTrace.from_arrays(np.zeros((0, 2, 2), int), num_experts=8)
    with pytest.raises(ExplorerInputError, match="empty.*0 tokens"):
        show(empty)


def test_tokenizer_not_covering_the_ids_is_refused():
    tr = routed(T=20)                                   # ids up to 119
    with pytest.raises(ExplorerInputError, match=r"vocabulary has 50 ids.*up to 11\d.*tokenizer=None") as e:
        show(tr, VocabTokenizer(50))
    assert "pass the tokenizer the trace was recorded with" in str(e.value)


def test_comparison_of_different_tokens_is_refused():
    a, b = routed(T=30, seed=0), routed(T=30, seed=1)
    with pytest.raises(ExplorerInputError, match="same tokens.*token_id differs first at token 0"):
        show(a, compare=b)
    with pytest.raises(ExplorerInputError, match="30 vs 29 tokens"):
        show(a, compare=a.select(slice(0, 29)))


def test_comparison_of_the_same_tokens_ships_both_routings():
    a = routed(T=30)
    ex = a.experts.copy()
    ex[4, 1] = ex[4, 1, ::-1]
    b = moelab.RoutingTrace.from_arrays(ex, a.weights, num_experts=8, sequence=a.sequence, token_id=a.token_id)
    P = show(a, compare=b, labels=("fp32", "bf16")).payload
    assert P["labels"] == ["fp32", "bf16"] and len(P["runs"]) == 2
    np.testing.assert_array_equal(unpack_array(P["runs"][1]["experts"]).reshape(ex.shape), ex)


def test_above_the_limit_is_refused_with_how_to_slice():
    tr = routed(T=120, domain=np.array(["code"] * 120))
    with pytest.raises(ExplorerInputError, match=r"120 tokens, above the explorer's limit of 100.*trace\.select") as e:
        show(tr, max_tokens=100)
    assert "slice(0, 100)" in str(e.value) and MAX_TOKENS >= 400_000


def test_the_slices_the_refusal_suggests_are_accepted():
    seq = np.repeat(np.arange(6), [30, 10, 40, 25, 5, 10])            # sequences of unequal length
    tr = routed(T=120, domain=np.where(np.arange(120) < 70, "code", "prose"))
    tr = moelab.RoutingTrace.from_arrays(tr.experts, tr.weights, num_experts=8, sequence=seq, token_id=tr.token_id,
                                         domain=tr.columns["domain"])
    with pytest.raises(ExplorerInputError) as e:
        show(tr, max_tokens=60)
    msg = str(e.value)
    assert "first 2 of 6 sequences" in msg and "== 'prose'" in msg    # 30 + 10 fit, + 40 would not; code is 70
    suggested = [seg[seg.index("trace.select("):].split(". max_tokens")[0] for seg in msg.split("; or ")]
    assert len(suggested) == 3
    for code in suggested:
        part = eval(code, {"trace": tr, "np": np})
        assert 0 < part.num_tokens <= 60 and show(part, max_tokens=60).tokens == part.num_tokens


def test_unknown_start_layer_is_refused():
    with pytest.raises(ExplorerInputError, match=r"layer=7 is not one of the trace's MoE layers \[0, 1, 2\]"):
        show(routed(), layer=7)


def test_html_is_one_file_with_no_external_reference(tmp_path):
    tok = VocabTokenizer()
    path = export_html(routed(), tmp_path / "x.html", tok, title="t")
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "moelabExplorer" in html
    assert not re.search(r"https?://|<script[^>]+src=|<link[^>]+href=|@import", html)
    assert "default-src 'none'" in html                # the page forbids itself any fetch


def test_token_text_cannot_break_out_of_the_script():
    class Evil(VocabTokenizer):
        def convert_ids_to_tokens(self, ids):
            return ["</script><b>x</b>" for _ in ids]

    frag = show(routed(T=5), Evil()).fragment()
    data = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', frag, re.S).group(1)
    assert "</" not in data and "<b>" not in data
    assert frag.count("</script>") == 2                # the data script and the code script, nothing else


def test_notebook_fragment_has_a_static_preview_for_untrusted_views():
    frag = show(routed(T=10), VocabTokenizer()).fragment()
    assert "needs JavaScript" in frag and "static preview" in frag and " w" in frag
