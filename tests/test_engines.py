"""Engine routes (vLLM, SGLang) -> RoutingTrace, built to the letter of each documented format; EPLB export."""

import base64
import json
from types import SimpleNamespace

import numpy as np
import pytest

import moelab
from moelab import metrics
from moelab.engines import EngineFormatError, EngineRequest, from_sglang, from_vllm, import_routing
from moelab.export import export_eplb_load, save_eplb_load

E, HIDDEN_LAYERS, K = 8, 4, 2                    # layer 0 is dense: the engine writes -1 there


def routes(rng, n):
    """(n, num_hidden_layers, top_k) int32 as the engines return: -1 for the dense layer 0."""
    ex = np.argsort(rng.random((n, HIDDEN_LAYERS, E)), -1)[..., :K].astype(np.int32)
    ex[:, 0] = -1
    return ex


def vllm_output(rng, prompt, outputs, cached=0, drop_cached=False):
    """A vLLM RequestOutput: CompletionOutput.routed_experts is [seq_len, layer_num, topk], seq_len = tokens - 1."""
    comps = []
    for out in outputs:
        ex = routes(rng, len(prompt) + len(out) - 1)
        comps.append(SimpleNamespace(token_ids=list(out), routed_experts=ex[cached:] if drop_cached else ex, full=ex))
    return SimpleNamespace(request_id="r", prompt_token_ids=list(prompt), num_cached_tokens=cached, outputs=comps)


def sglang_response(ex, output_ids, cached=0):
    """SGLang /generate: meta_info['routed_experts'] is base64 of int32, reshape(-1, layers, top_k) to read."""
    return {"output_ids": list(output_ids),
            "meta_info": {"routed_experts": base64.b64encode(np.ascontiguousarray(ex, "<i4").tobytes()).decode(),
                          "cached_tokens": cached, "id": "x"}}


def test_vllm_rows_are_every_token_but_the_last_generated_one():
    rng = np.random.default_rng(0)
    o = vllm_output(rng, [10, 11, 12], [[20, 21, 22]])
    t = from_vllm([o], num_experts=E)
    assert t.num_tokens == 3 + 3 - 1
    assert t.token_id.tolist() == [10, 11, 12, 20, 21]
    assert t.columns["next_token_id"].tolist() == [11, 12, 20, 21, 22]          # 22 has no route, but is a successor
    assert t.position.tolist() == [0, 1, 2, 3, 4] and t.step.tolist() == [0, 0, 0, 1, 2]
    assert t.layer_ids.tolist() == [1, 2, 3]                                    # the -1 dense layer is dropped
    np.testing.assert_array_equal(t.experts, o.outputs[0].full[:, 1:])
    assert (t.columns["prefix_cached"] == 0).all()


def test_each_completion_is_its_own_sequence():
    rng = np.random.default_rng(1)
    o = vllm_output(rng, [1, 2], [[3], [4, 5]])                                 # n = 2 samples
    t = from_vllm([o, vllm_output(rng, [7], [[8, 9]])], num_experts=E)
    assert t.sequence.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert t.token_id.tolist() == [1, 2, 1, 2, 4, 7, 8]


def test_prefix_cached_tokens_are_marked_never_invented():
    rng = np.random.default_rng(2)
    o = vllm_output(rng, [1, 2, 3, 4, 5], [[6, 7]], cached=3, drop_cached=True)
    t = from_vllm([o], num_experts=E)
    assert t.position.tolist() == [3, 4, 5]                                    # positions 0-2 have no route
    assert t.token_id.tolist() == [4, 5, 6]
    assert (t.columns["prefix_cached"] == 3).all()
    np.testing.assert_array_equal(t.experts, o.outputs[0].full[3:, 1:])
    assert metrics.repeat_rates(t)["pairs"].iloc[0] == 2                       # pairs only among routed tokens
    full = from_vllm([vllm_output(rng, [1, 2, 3], [[4]], cached=2)], num_experts=E)   # engine returned them all
    assert full.position.tolist() == [0, 1, 2] and (full.columns["prefix_cached"] == 0).all()


def test_sglang_base64_int32_decodes_to_the_same_trace_as_the_arrays():
    rng = np.random.default_rng(3)
    ex = routes(rng, 4 + 3 - 1)
    t = from_sglang([sglang_response(ex, [7, 8, 9])], prompt_ids=[[1, 2, 3, 4]], num_layers=HIDDEN_LAYERS, top_k=K,
                    num_experts=E)
    ref = import_routing([EngineRequest([1, 2, 3, 4], [7, 8, 9], ex)], num_experts=E)
    np.testing.assert_array_equal(t.experts, ex[:, 1:])
    for f in ("sequence", "position", "token_id", "step"):
        np.testing.assert_array_equal(getattr(t, f), getattr(ref, f))
    assert t.meta["engine"] == "sglang"
    cached = from_sglang([sglang_response(ex[2:], [7, 8, 9], cached=2)], prompt_ids=[[1, 2, 3, 4]],
                         num_layers=HIDDEN_LAYERS, top_k=K, num_experts=E)
    assert cached.position.tolist() == [2, 3, 4, 5]


def test_engine_array_not_matching_its_token_ids_is_named():
    rng = np.random.default_rng(4)
    bad = EngineRequest([1, 2, 3], [4, 5], routes(rng, 5), request_id="abc")   # needs 4 routes
    with pytest.raises(EngineFormatError, match=r"request 0 \('abc'\): the engine returned routes for 5 tokens.*need 4"):
        import_routing([bad], num_experts=E)
    resp = sglang_response(routes(rng, 3), [9])
    with pytest.raises(EngineFormatError, match="response 0: routed_experts holds 24 int32 values, not a multiple"):
        from_sglang([resp], prompt_ids=[[1, 2, 3]], num_layers=5, top_k=K, num_experts=E)


def test_mixed_top_k_or_layer_counts_across_requests_are_named():
    rng = np.random.default_rng(5)
    a = EngineRequest([1, 2], [3], routes(rng, 2))
    b = EngineRequest([1, 2], [3], routes(rng, 2)[..., :1], request_id="q")
    with pytest.raises(EngineFormatError, match=r"request 1 \('q'\) has routes for 4 layers x top_k=1 but request 0 has 4 layers x top_k=2"):
        import_routing([a, b], num_experts=E)
    c = EngineRequest([1, 2], [3], routes(rng, 2)[:, :3])
    with pytest.raises(EngineFormatError, match="request 1 has routes for 3 layers"):
        import_routing([a, c], num_experts=E)


def test_minus_one_inside_a_moe_layer_is_an_error():
    rng = np.random.default_rng(6)
    ex = routes(rng, 3)
    ex[1, 2, 1] = -1
    with pytest.raises(EngineFormatError, match="token 1, layer 2, slot 1 has expert id -1"):
        import_routing([EngineRequest([1, 2], [3, 4], ex)], num_experts=E)


def test_eplb_load_is_the_per_layer_expert_count(tmp_path):
    rng = np.random.default_rng(7)
    t = from_vllm([vllm_output(rng, list(range(30)), [list(range(12))]) for _ in range(3)], num_experts=E)
    w = export_eplb_load(t)
    brute = np.zeros((t.num_layers, E), np.int64)
    for tok in range(t.num_tokens):
        for l in range(t.num_layers):
            for e in t.experts[tok, l]:
                brute[l, e] += 1
    np.testing.assert_array_equal(w, brute)
    win = export_eplb_load(t, format="vllm", window_tokens=40)
    assert win.shape == (-(-t.num_tokens // 40), t.num_layers, E)
    np.testing.assert_array_equal(win.sum(0), w)
    t.save(tmp_path / "t.parquet")
    np.testing.assert_array_equal(export_eplb_load(tmp_path / "t.parquet"), w)      # streamed from a file
    save_eplb_load(tmp_path / "w.json", w, layer_ids=t.layer_ids)
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["shape"] == [3, E] and doc["layer_ids"] == [1, 2, 3] and np.array_equal(doc["load"], w)
    save_eplb_load(tmp_path / "w.npy", win, format="vllm")
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), win)
    with pytest.raises(ValueError, match="window_tokens"):
        export_eplb_load(t, format="vllm")
