"""moelab.trace: records every router's choices, changes nothing, cleans up always."""

import numpy as np
import pytest
import torch
from conftest import BUILDERS, CACHE_KW, VOCAB, cache_of, hook_state, tiny_dense, tiny_mixtral

import moelab
from moelab.tracer import TracingError


def run(model, *args, **kw):
    with torch.no_grad():
        return model(*args, **kw)


# ------------------------------------------------------------------ never changes the model
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", ["eager", "grouped_mm", "batched_mm"])
def test_logits_bitwise_equal_with_and_without_tracing(dtype, impl, ids):
    model = tiny_mixtral().to(dtype)
    model.set_experts_implementation(impl)
    plain = run(model, ids).logits
    with moelab.trace(model, logits=True):
        traced = run(model, ids).logits
    assert torch.equal(plain, traced)
    assert model.config._experts_implementation == impl and model.dtype == dtype


def test_tracing_leaves_no_hook_behind(mixtral, ids):
    before = hook_state(mixtral)
    with moelab.trace(mixtral):
        assert hook_state(mixtral) != before
        run(mixtral, ids)
    assert hook_state(mixtral) == before


def test_exception_inside_block_removes_hooks_and_keeps_records(mixtral, ids):
    before = hook_state(mixtral)
    with pytest.raises(KeyboardInterrupt):
        with moelab.trace(mixtral) as tr:
            run(mixtral, ids)
            raise KeyboardInterrupt
    assert hook_state(mixtral) == before
    assert tr.num_tokens == ids.numel()


def test_nested_tracing_of_one_model_is_an_error(mixtral):
    with moelab.trace(mixtral):
        with pytest.raises(TracingError, match="already being traced"):
            with moelab.trace(mixtral):
                pass
    with moelab.trace(mixtral):  # and the model is traceable again afterwards
        pass


def test_dense_model_error_names_supported_architectures():
    with pytest.raises(moelab.UnsupportedModelError, match="mixtral.*qwen2_moe.*olmoe.*phimoe"):
        moelab.trace(tiny_dense())


# ------------------------------------------------------------------ parity with transformers
def _router_triples(model, *args):
    """The routers' own returned (logits, weights, index), captured by an independent hook."""
    got = []
    hs = [m.register_forward_hook(lambda mod, i, o: got.append(tuple(x.clone() for x in o))) for m in model.modules()
          if type(m).__name__.endswith("TopKRouter")]
    try:
        run(model, *args)
    finally:
        for h in hs:
            h.remove()
    return got


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_recorded_choices_equal_the_routers_returned_triple(arch):
    model = BUILDERS[arch]()
    ids = torch.randint(3, VOCAB, (2, 6))
    triples = _router_triples(model, ids)
    with moelab.trace(model, logits=True) as tr:
        run(model, ids)
    assert tr.num_layers == len(triples) and tr.meta["architecture"] == arch
    for layer, (logits, weights, index) in enumerate(triples):
        np.testing.assert_array_equal(tr.experts[:, layer], index.numpy())
        np.testing.assert_array_equal(tr.weights[:, layer], weights.float().numpy())   # fp32: exact
        np.testing.assert_array_equal(tr.logits[:, layer], logits.float().numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weights_are_recorded_exactly_as_the_model_used_them(dtype, ids):
    model = tiny_mixtral().to(dtype)
    triples = _router_triples(model, ids)
    with moelab.trace(model) as tr:
        run(model, ids)
    assert tr.weights.dtype == np.float32 and tr.experts.dtype == np.uint8
    for layer, (_, weights, index) in enumerate(triples):
        np.testing.assert_array_equal(tr.weights[:, layer], weights.float().numpy())   # float32 holds every value
        np.testing.assert_array_equal(tr.experts[:, layer], index.numpy())


def test_choices_equal_topk_of_output_router_logits_with_renormalisation(mixtral, ids):
    out = run(mixtral, ids, output_router_logits=True)
    with moelab.trace(mixtral) as tr:
        run(mixtral, ids)
    for layer, logits in enumerate(out.router_logits):
        probs = torch.softmax(logits.float(), -1)
        w, idx = torch.topk(probs, 2, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        np.testing.assert_array_equal(tr.experts[:, layer], idx.numpy())
        np.testing.assert_allclose(tr.weights[:, layer].astype(np.float32), w.numpy(), atol=5e-4)


# ------------------------------------------------------------------ token bookkeeping
def test_padded_positions_are_not_recorded(mixtral):
    ids = torch.randint(3, VOCAB, (2, 6))
    left = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    right = left.flip(-1)
    for mask in (left, right):
        with moelab.trace(mixtral) as tr:
            run(mixtral, ids, attention_mask=mask)
        assert tr.num_tokens == int(mask.sum())
        np.testing.assert_array_equal(tr.token_id, ids[mask.bool()].numpy())
        assert tr.position.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
        assert tr.sequence.tolist() == [0] * 4 + [1] * 6


def test_generate_with_left_padding_records_each_read_token_once(mixtral):
    torch.manual_seed(3)
    prompts = [torch.randint(3, VOCAB, (n,)) for n in (3, 5)]
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, 5 - len(p):], mask[i, 5 - len(p):] = p, 1
    new = 4
    with torch.no_grad(), moelab.trace(mixtral) as tr:
        out = mixtral.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               pad_token_id=0, eos_token_id=None)
    df = tr.token_frame()
    for s, p in enumerate(prompts):
        rows = df[df.sequence == s].sort_values("position")
        generated = out[s, 5:].tolist()
        # the prompt at prefill, then every generated token but the last one, each exactly once
        assert rows.token_id.tolist() == p.tolist() + generated[:-1]
        assert rows.position.tolist() == list(range(len(p) + new - 1))
        assert rows.step.tolist() == [0] * len(p) + list(range(1, new))
    # and the records agree with a plain forward over the full unpadded sequence
    for s, p in enumerate(prompts):
        full = torch.cat([p, out[s, 5:-1]])[None]
        with moelab.trace(mixtral) as ref:
            run(mixtral, full)
        np.testing.assert_array_equal(tr.select(tr.sequence == s).experts, ref.experts)


def test_separate_forward_calls_open_new_sequences(mixtral, ids):
    with moelab.trace(mixtral) as tr:
        run(mixtral, ids)
        run(mixtral, ids[:1])
    assert sorted(set(tr.sequence.tolist())) == [0, 1, 2]
    np.testing.assert_array_equal(tr.select(tr.sequence == 2).experts, tr.select(tr.sequence == 0).experts)


def test_inputs_embeds_are_traced_with_unknown_token_ids(mixtral, ids):
    emb = mixtral.get_input_embeddings()(ids)
    with moelab.trace(mixtral) as tr:
        run(mixtral, inputs_embeds=emb)
    assert tr.num_tokens == ids.numel() and (tr.token_id == -1).all()


def test_tags_become_per_token_columns(mixtral, ids):
    tracer = moelab.trace(mixtral)
    with tracer as tr:
        tracer.tag(domain=["code", "math"])
        run(mixtral, ids)
    assert tr.columns["domain"].tolist() == ["code"] * 9 + ["math"] * 9


def test_qwen2_moe_with_dense_layers_names_only_moe_layers():
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM
    from conftest import COMMON

    cfg = Qwen2MoeConfig(**{**COMMON, "num_hidden_layers": 4}, intermediate_size=48, moe_intermediate_size=24,
                         shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                         decoder_sparse_step=2)
    model = Qwen2MoeForCausalLM(cfg).eval()
    with moelab.trace(model) as tr:
        run(model, torch.randint(3, VOCAB, (1, 4)))
    assert tr.layer_names == ["layers.1.router", "layers.3.router"]


# ------------------------------------------------------------------ streaming and devices
def test_streaming_writes_parts_and_returns_the_union(mixtral, ids, tmp_path):
    with moelab.trace(mixtral) as ref:
        for _ in range(3):
            run(mixtral, ids)
    with moelab.trace(mixtral, path=tmp_path / "run", flush_tokens=20) as tr:
        for _ in range(3):
            run(mixtral, ids)
    parts = sorted((tmp_path / "run").glob("*.parquet"))
    assert len(parts) == 2  # 18 + 18 >= 20 -> flush, then the rest at exit
    np.testing.assert_array_equal(tr.experts, ref.experts)
    np.testing.assert_array_equal(moelab.load_trace(tmp_path / "run").sequence, ref.sequence)


def test_streaming_to_a_parquet_file_name_is_a_clear_error(mixtral, tmp_path):
    with pytest.raises(ValueError, match="folder"):
        moelab.trace(mixtral, path=tmp_path / "x.parquet")


def test_model_dispatched_by_accelerate_with_disk_offload_traces_correctly(tmp_path, ids):
    from accelerate import dispatch_model

    model = tiny_mixtral()
    with moelab.trace(model) as ref:
        run(model, ids)
    plain = run(model, ids).logits
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path / "offload"))
    before = hook_state(model)
    with moelab.trace(model) as tr:
        out = run(model, ids).logits
    assert torch.equal(out, plain)
    np.testing.assert_array_equal(tr.experts, ref.experts)
    assert hook_state(model) == before


def test_padded_tokens_never_count_in_statistics(mixtral):
    torch.manual_seed(5)
    a, b = torch.randint(3, VOCAB, (4,)), torch.randint(3, VOCAB, (7,))
    ids = torch.zeros(2, 7, dtype=torch.long)
    mask = torch.zeros(2, 7, dtype=torch.long)
    ids[0, 3:], mask[0, 3:] = a, 1   # left-padded
    ids[1], mask[1] = b, 1
    with moelab.trace(mixtral) as padded:
        run(mixtral, ids, attention_mask=mask)
    with moelab.trace(mixtral) as alone:
        run(mixtral, a[None])
        run(mixtral, b[None])
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(moelab.metrics.repeat_rates(padded), moelab.metrics.repeat_rates(alone))
    pd_testing.assert_frame_equal(moelab.metrics.balance(padded), moelab.metrics.balance(alone))


def test_rows_finished_by_eos_stop_being_recorded_while_others_generate(mixtral):
    torch.manual_seed(0)
    ids = torch.randint(3, VOCAB, (2, 5))
    with torch.no_grad():
        free = mixtral.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    eos = int(free[0, 5])                       # row 0's first generated token: make it the EOS
    assert eos not in free[1, 5:].tolist(), "pick a seed where row 1 never emits that token"
    mixtral.generation_config.eos_token_id = eos   # the tracer reads EOS from the model's generation_config
    with torch.no_grad(), moelab.trace(mixtral) as tr:
        out = mixtral.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    row0 = tr.select(tr.sequence == 0).sorted()
    # prompt, then the EOS fed back once; the pads generate keeps feeding afterwards are not recorded
    assert row0.token_id.tolist() == ids[0].tolist() + [eos]
    assert (tr.sequence == 1).sum() == 5 + 5 and (out[0, 6:] == 0).all()


def test_tags_label_only_the_next_forward(mixtral, ids):
    tracer = moelab.trace(mixtral)
    with tracer as tr:
        tracer.tag(domain="code")
        run(mixtral, ids)
        run(mixtral, ids[:1])
    assert set(tr.columns["domain"][tr.sequence < 2]) == {"code"}
    assert set(tr.columns["domain"][tr.sequence == 2]) == {None}


def test_streaming_into_a_folder_that_holds_a_trace_is_refused(mixtral, ids, tmp_path):
    with moelab.trace(mixtral, path=tmp_path / "run"):
        run(mixtral, ids)
    with pytest.raises(FileExistsError, match="already holds 1 trace file"):
        moelab.trace(mixtral, path=tmp_path / "run")


def test_discarding_without_a_path_and_empty_batches_are_refused(mixtral):
    with pytest.raises(ValueError, match="retain=False"):
        moelab.trace(mixtral, retain=False)
    with moelab.trace(mixtral) as tr, pytest.raises(ValueError, match="empty batch"):
        run(mixtral, torch.zeros((0, 4), dtype=torch.long))
    assert tr.num_tokens == 0


def test_an_empty_trace_saves_and_loads(mixtral, tmp_path):
    with moelab.trace(mixtral) as tr:
        pass
    tr.save(tmp_path / "empty.parquet")
    assert moelab.load_trace(tmp_path / "empty.parquet").experts.shape == (0, 3, 2)


def test_continuing_a_cache_keeps_the_sequence_and_counts_steps(mixtral):
    ids = torch.randint(3, VOCAB, (1, 8))
    with torch.no_grad(), moelab.trace(mixtral) as tr:
        cache = cache_of(mixtral(ids[:, :5], use_cache=True))          # chunked prefill: 5 then 3 tokens
        mixtral(ids[:, 5:], **{CACHE_KW: cache}, use_cache=True)
        mixtral(ids[:, :2], use_cache=True)                              # a fresh cache: a new sequence
    assert tr.sequence.tolist() == [0] * 8 + [1] * 2
    assert tr.position.tolist() == list(range(8)) + [0, 1]
    assert tr.step.tolist() == [0] * 5 + [1] * 3 + [0, 0]


# ------------------------------------------------------------------ streaming that survives real use
def test_a_tag_that_starts_after_a_flush_loads_as_one_trace_with_nulls(mixtral, ids, tmp_path):
    with moelab.trace(mixtral, path=tmp_path / "run", flush_tokens=18) as tr:
        run(mixtral, ids)                      # flushed before any tag exists
        tr.tag(domain=["code", "math"])
        run(mixtral, ids)
        run(mixtral, ids)                      # untagged again
    assert len(list((tmp_path / "run").glob("*.parquet"))) == 3
    loaded = moelab.load_trace(tmp_path / "run")
    for t in (tr, loaded):
        assert t.columns["domain"].tolist() == [None] * 18 + ["code"] * 9 + ["math"] * 9 + [None] * 18


def test_loading_a_folder_another_process_is_writing_returns_every_finished_part(mixtral, ids, tmp_path):
    folder = tmp_path / "live"
    with moelab.trace(mixtral, path=folder, flush_tokens=18, retain=False) as tr:
        run(mixtral, ids)
        run(mixtral, ids)
        tr.tag(domain="x")
        (folder / "part-99999.parquet.tmp").write_bytes(b"half a part")   # a part being written right now
        import time

        deadline = time.time() + 30
        while len(list(folder.glob("*.parquet"))) < 2 and time.time() < deadline:
            time.sleep(0.01)                                            # the writer thread runs behind
        mid = moelab.load_trace(folder)
        assert mid.num_tokens == 36 and sorted(set(mid.sequence.tolist())) == [0, 1, 2, 3]


def test_a_streaming_folder_exists_as_soon_as_the_block_opens(mixtral, tmp_path):
    # another process may poll it (or write beside it) before the writer thread's first part lands
    folder = tmp_path / "a" / "live"
    with moelab.trace(mixtral, path=folder, flush_tokens=1_000_000):
        assert folder.is_dir()


def test_a_writer_failure_is_raised_and_the_hooks_are_still_removed(mixtral, ids, tmp_path, monkeypatch):
    import moelab.store

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(moelab.store, "write_trace", broken)
    before = hook_state(mixtral)
    with pytest.raises(RuntimeError, match="could not write a part.*disk full"):
        with moelab.trace(mixtral, path=tmp_path / "run", flush_tokens=1):
            run(mixtral, ids)
    assert hook_state(mixtral) == before


def test_a_cache_reordered_between_forwards_is_refused(mixtral, ids):
    with torch.no_grad(), moelab.trace(mixtral):
        out = mixtral(ids, use_cache=True)
        cache = cache_of(out)
        cache.reorder_cache(torch.tensor([1, 0]))                      # what beam search does between steps
        with pytest.raises(TracingError, match="reordered"):
            mixtral(ids[:, :1], **{CACHE_KW: cache}, use_cache=True)


# ------------------------------------------------------------------ contracts the README states
def test_meta_records_versions_dtype_and_user_fields(mixtral, ids):
    import transformers

    with moelab.trace(mixtral, meta={"corpus": "heldout"}) as tr:
        run(mixtral, ids)
    m = tr.meta
    assert m["corpus"] == "heldout" and m["transformers_version"] == transformers.__version__
    assert m["torch_version"] == torch.__version__ and m["dtype"] == "float32" and m["architecture"] == "mixtral"
    assert (m["num_experts"], m["top_k"]) == (8, 2)


def test_to_pandas_and_to_arrow_column_contract(mixtral, ids):
    with moelab.trace(mixtral) as tr:
        tr.tag(domain="code")
        run(mixtral, ids)
    df = tr.to_pandas()
    assert list(df.columns) == ["sequence", "position", "token_id", "step", "layer", "rank", "expert", "weight",
                                "domain"]
    assert len(df) == tr.num_tokens * tr.num_layers * tr.top_k
    row = df.iloc[tr.num_layers * tr.top_k + 3]                     # token 1, layer 1, rank 1
    assert (row.expert, row.layer, row["rank"]) == (tr.experts[1, 1, 1], tr.layer_ids[1], 1)
    assert row.weight == pytest.approx(float(tr.weights[1, 1, 1]))
    table = tr.to_arrow()
    assert table.column_names == ["sequence", "position", "token_id", "step", "experts", "weights", "domain"]
    assert table.num_rows == tr.num_tokens


def test_load_trace_columns_reads_only_what_is_asked(mixtral, ids, tmp_path):
    with moelab.trace(mixtral, logits=True) as tr:
        tr.tag(domain="code")
        run(mixtral, ids)
    tr.save(tmp_path / "t.parquet")
    slim = moelab.load_trace(tmp_path / "t.parquet", columns=["experts"])
    assert slim.weights is None and slim.logits is None and slim.columns == {}
    np.testing.assert_array_equal(slim.experts, tr.experts)
    full = moelab.load_trace(tmp_path / "t.parquet", columns=["weights", "domain"])
    np.testing.assert_array_equal(full.weights, tr.weights)         # logits=True traces keep fp32 weights exactly
    assert full.logits is None and full.columns["domain"].tolist() == ["code"] * tr.num_tokens


def test_layers_routing_different_k_in_one_forward_is_a_clear_error(mixtral, ids):
    with moelab.intervene(mixtral, top_k={0: 1}), pytest.raises(TracingError, match="different numbers of experts"):
        with moelab.trace(mixtral):
            run(mixtral, ids)
