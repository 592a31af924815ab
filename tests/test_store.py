"""Trace files: lossless round trips, compact on disk, readable without moelab, clear errors."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

import moelab
from moelab import RoutingTrace, TraceFileError, TraceMismatchError


def synthetic(T=4000, L=4, E=8, k=2, seed=0, renormalise=True, logits=False):
    rng = np.random.default_rng(seed)
    lg = rng.normal(size=(T, L, E)).astype(np.float32)
    ex = np.argsort(-lg, -1)[..., :k]
    p = np.exp(lg) / np.exp(lg).sum(-1, keepdims=True)
    w = np.take_along_axis(p, ex, -1)
    if renormalise:
        w = w / w.sum(-1, keepdims=True)
    return RoutingTrace.from_arrays(ex, w.astype(np.float16), num_experts=E, sequence=np.arange(T) // 100,
                                    token_id=rng.integers(0, 32000, T), logits=lg if logits else None,
                                    meta={"model": "synthetic"})


def test_round_trip_keeps_every_array(tmp_path):
    t = synthetic(logits=True).with_columns(domain=np.array(["code", "math"] * 2000))
    t.save(tmp_path / "t.parquet")
    u = moelab.load_trace(tmp_path / "t.parquet")
    for name in ("experts", "sequence", "position", "token_id", "step", "logits", "layer_ids"):
        np.testing.assert_array_equal(getattr(u, name), getattr(t, name))
    assert u.columns["domain"].tolist() == t.columns["domain"].tolist()
    assert u.meta["model"] == "synthetic" and u.num_experts == 8


def test_renormalised_top2_stores_one_weight_per_token_layer_and_rebuilds_rank_0(tmp_path):
    t = synthetic()
    t.save(tmp_path / "t.parquet")
    assert b'"code16_drop0"' in pq.read_schema(tmp_path / "t.parquet").metadata[b"moelab"]
    assert pq.read_schema(tmp_path / "t.parquet").field("weights").type.list_size == t.num_layers * 1
    u = moelab.load_trace(tmp_path / "t.parquet")
    w = t.weights.astype(np.float32)
    np.testing.assert_array_equal(u.weights[..., 1], w[..., 1])          # float16 values are kept exactly
    assert np.all(np.abs(u.weights - w) <= w * 2.0 ** -11)               # rank 0 rebuilt within 2^-11 of itself


def test_a_million_top2_weights_reload_within_one_fp16_step_of_their_own_size(tmp_path):
    rng = np.random.default_rng(0)
    n = 1_000_000
    gap = np.concatenate([rng.exponential(2.0, n // 2), rng.uniform(0, 40, n // 2)])   # tiny second weights too
    w1 = (1 / (1 + np.exp(gap))).astype(np.float32)
    w = np.stack([1 - w1, w1], -1).reshape(n // 4, 4, 2)                                # (tokens, layers, k)
    assert w.min() < 1e-15
    ex = np.broadcast_to(np.array([3, 5], np.uint8), w.shape)
    t = RoutingTrace.from_arrays(ex, w, num_experts=8)
    t.save(tmp_path / "w.parquet")
    back = moelab.load_trace(tmp_path / "w.parquet").weights
    fp16_step = 2.0 ** (np.floor(np.log2(w)) - 10)                                      # one fp16 ulp at w's size
    assert np.all(np.abs(back - w) <= fp16_step), np.max(np.abs(back - w) / fp16_step)
    assert np.all(back[..., 1] > 0)                                                     # nothing underflows to 0


def test_weights_that_do_not_sum_to_one_are_stored_per_rank(tmp_path):
    t = synthetic(renormalise=False)
    t.save(tmp_path / "t.parquet")
    assert b'"code16"' in pq.read_schema(tmp_path / "t.parquet").metadata[b"moelab"]
    u = moelab.load_trace(tmp_path / "t.parquet")
    np.testing.assert_array_equal(u.weights, t.weights.astype(np.float32))  # float16 values fit code16 exactly


def test_top2_of_8_costs_at_most_4_bytes_per_token_layer(tmp_path):
    t = synthetic(T=50_000, L=8)
    t.save(tmp_path / "t.parquet")
    per = os.path.getsize(tmp_path / "t.parquet") / (t.num_tokens * t.num_layers)
    assert per <= 4.0, per


def test_pandas_duckdb_and_polars_read_the_file_without_moelab(tmp_path):
    t = synthetic(T=300)
    t.save(tmp_path / "t.parquet")
    import duckdb
    import pandas as pd
    import polars as pl

    df = pd.read_parquet(tmp_path / "t.parquet")
    assert len(df) == 300 and list(df.columns[:5]) == ["sequence", "position", "token_id", "step", "experts"]
    first = duckdb.sql(f"SELECT experts[1] AS e FROM '{tmp_path / 't.parquet'}'").fetchnumpy()["e"]
    np.testing.assert_array_equal(first, t.experts[:, 0, 0])
    assert pl.read_parquet(tmp_path / "t.parquet").height == 300


def test_truncated_file_error_names_the_file_and_the_problem(tmp_path):
    synthetic().save(tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFileError, match=r"cut\.parquet.*(truncated|corrupt)"):
        moelab.load_trace(tmp_path / "cut.parquet")


def test_corrupt_bytes_and_foreign_parquet_are_clear_errors(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all" * 10)
    with pytest.raises(TraceFileError, match="junk.parquet"):
        moelab.load_trace(tmp_path / "junk.parquet")
    import pandas as pd

    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "foreign.parquet")
    with pytest.raises(TraceFileError, match="not a moelab trace"):
        moelab.load_trace(tmp_path / "foreign.parquet")
    with pytest.raises(TraceFileError, match="no such"):
        moelab.load_trace(tmp_path / "missing.parquet")
    with pytest.raises(TraceFileError, match="no \\*.parquet"):
        (tmp_path / "empty").mkdir()
        moelab.load_trace(tmp_path / "empty")


def test_folder_of_shards_is_the_union_with_disjoint_sequences(tmp_path):
    from moelab.store import write_trace

    a, b = synthetic(T=500, seed=1), synthetic(T=300, seed=2)
    write_trace(a, tmp_path / "rank0" / "part-00000.parquet", shard=0)
    write_trace(b, tmp_path / "rank1" / "part-00000.parquet", shard=1)
    u = moelab.load_trace(tmp_path)
    assert u.num_tokens == 800
    assert len(np.unique(u.sequence)) == len(np.unique(a.sequence)) + len(np.unique(b.sequence))


def test_folder_mixing_different_models_is_a_mismatch_error(tmp_path):
    synthetic(L=4).save(tmp_path / "a.parquet")
    synthetic(L=3).save(tmp_path / "b.parquet")
    with pytest.raises(TraceMismatchError, match=r"a\.parquet and b\.parquet differ in num_layers, layer_ids"):
        moelab.load_trace(tmp_path)


@pytest.mark.slow
def test_a_killed_streaming_run_leaves_every_flushed_part_readable(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from conftest import tiny_mixtral
        import moelab
        model = tiny_mixtral()
        with moelab.trace(model, path={str(tmp_path / 'run')!r}, flush_tokens=10):
            for i in range(5):
                model(torch.randint(3, 100, (1, 10)))
            os._exit(9)   # killed: no __exit__, no flush of what is still buffered
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    parts = sorted((tmp_path / "run").glob("*.parquet"))
    assert parts, "the writer thread finished no part before the kill"
    t = moelab.load_trace(tmp_path / "run")                 # every finished part loads; a half-written .tmp never
    assert t.num_tokens == 10 * len(parts) and sorted(set(t.sequence.tolist())) == list(range(len(parts)))


def test_top8_weights_round_trip_and_logits_traces_keep_fp32_weights_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    ex = np.stack([rng.permutation(64)[:8] for _ in range(300 * 2)]).reshape(300, 2, 8)
    w = rng.dirichlet(np.ones(8), size=(300, 2)).astype(np.float32)
    t = RoutingTrace.from_arrays(ex, w, num_experts=64)
    t.save(tmp_path / "t.parquet")
    back = moelab.load_trace(tmp_path / "t.parquet").weights
    assert np.all(np.abs(back - w) <= w * 2.0 ** -11)
    t2 = synthetic(T=200, logits=True).select(slice(None))
    t2.weights = t2.weights.astype(np.float32) + np.float32(1e-7)  # fp32 weights of a logits=True trace
    t2.save(tmp_path / "t2.parquet")
    np.testing.assert_array_equal(moelab.load_trace(tmp_path / "t2.parquet").weights, t2.weights)


def test_format_1_files_written_by_moelab_0_1_still_load(tmp_path):
    import json

    import pyarrow as pa

    t = synthetic(T=50)
    table = t.to_arrow()
    meta = json.loads(table.schema.metadata[b"moelab"])
    w16 = t.weights[..., :1].astype(np.float16)                     # format 1: float16 rank 0, drop_last
    table = table.set_column(table.column_names.index("weights"), "weights",
                             pa.FixedSizeListArray.from_arrays(pa.array(w16.reshape(-1)), t.num_layers))
    meta.update(format_version=1, weights_layout="drop_last")
    pq.write_table(table.replace_schema_metadata({b"moelab": json.dumps(meta).encode()}), tmp_path / "v1.parquet")
    u = moelab.load_trace(tmp_path / "v1.parquet")
    np.testing.assert_array_equal(u.weights[..., 0], w16[..., 0])
    np.testing.assert_allclose(u.weights.sum(-1).astype(np.float32), 1, atol=1e-3)


def test_separately_saved_files_in_one_folder_keep_distinct_sequences(tmp_path):
    a = RoutingTrace.from_arrays(np.array([[[0, 1]]] * 3), num_experts=8)
    b = RoutingTrace.from_arrays(np.array([[[2, 3]]] * 3), num_experts=8)
    a.save(tmp_path / "two" / "a.parquet")
    b.save(tmp_path / "two" / "b.parquet")
    u = moelab.load_trace(tmp_path / "two")
    assert sorted(set(u.sequence.tolist())) == [0, 1]
    assert moelab.metrics.repeat_rates(u)["pairs"].tolist() == [4]


def test_from_arrays_rejects_float_out_of_range_and_repeated_ids():
    with pytest.raises(TypeError, match="integer"):
        RoutingTrace.from_arrays(np.array([[[0.5, 1.7]]]), num_experts=8)
    with pytest.raises(TraceMismatchError, match=r"\[0, 8\).*-1"):
        RoutingTrace.from_arrays(np.array([[[-1, 2]]]), num_experts=8)
    with pytest.raises(TraceMismatchError, match="distinct.*\\[3, 3\\]"):
        RoutingTrace.from_arrays(np.array([[[3, 3]]]), num_experts=8)


def test_concatenating_traces_of_different_models_is_refused():
    a = RoutingTrace.from_arrays(np.array([[[0, 1]]]), num_experts=8, meta={"model": "a"})
    b = RoutingTrace.from_arrays(np.array([[[0, 1]]]), num_experts=8, meta={"model": "b"})
    with pytest.raises(TraceMismatchError, match="different models"):
        RoutingTrace.concat([a, b])
