"""Streamed metrics equal the in-memory ones on the same trace, whatever the chunking."""

import numpy as np
import pandas as pd
import pytest

import moelab
from moelab import metrics
from moelab.metrics import stream
from moelab.routing_trace import TraceMismatchError
from moelab.scan import scan_trace
from moelab.store import write_trace

E, L, K = 6, 3, 2
DOMAINS = np.array(["arxiv", "github", "pubmed"])


def random_trace(rng, seqs, seq_len, *, first_seq=0, logits=True, shuffle=False):
    """Sequences of seq_len tokens; with shuffle, tokens stored in random order (decode-like interleaving)."""
    T = seqs * seq_len
    lg = rng.standard_normal((T, L, E)).astype(np.float32) * 2
    lg[:, :, 0] += 1.5                                                         # unbalanced
    ex = np.argsort(-lg, -1, kind="stable")[..., :K]                           # (tokens, layers, k)
    rep = rng.random(T) < 0.4
    rep[:: seq_len] = False
    idx = np.flatnonzero(rep)
    ex[idx] = ex[idx - 1]                                                      # locality
    seq = first_seq + np.arange(T) // seq_len
    pos = np.arange(T) % seq_len
    t = moelab.RoutingTrace.from_arrays(
        ex, num_experts=E, sequence=seq, position=pos, token_id=rng.integers(0, 40, T),
        logits=lg if logits else None, domain=DOMAINS[rng.integers(0, 3, seqs)][seq - first_seq])
    return t.select(rng.permutation(T)) if shuffle else t


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A run in 3 parts (a sequence split across parts), a run whose parts interleave tokens, and a plain file."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("trace")
    a = random_trace(rng, 5, 23)                                               # 115 tokens
    for i, (s, e) in enumerate([(0, 30), (30, 31), (31, 115)]):                # parts split sequences 1 and 1
        write_trace(a.select(slice(s, e)), root / "run_a" / f"part-{i:05d}.parquet", shard=0, run="A")
    b = random_trace(rng, 4, 17, shuffle=True)                                 # tokens in random order
    for i, (s, e) in enumerate([(0, 40), (40, 68)]):
        write_trace(b.select(slice(s, e)), root / "run_b" / f"part-{i:05d}.parquet", shard="1", run="B")
    write_trace(random_trace(rng, 2, 9), root / "z_plain.parquet")            # no run: sequences renumbered
    return root


SUITE = {
    "expert_load": {}, "expert_load#first": {"first_only": True},
    "expert_load#domain": {"by": "domain"}, "expert_load#batch": {"per_batch": 13},
    "balance": {}, "balance#domain": {"by": "domain"}, "balance#batch": {"per_batch": 50, "first_only": True},
    "hf_aux_loss": {},
    "capacity_drops": {"capacity_factors": [0.5, 1.0, 2.0], "batch_sizes": [1, 7, 64, "sequence"]},
    "repeat_rates": {}, "repeat_rates#domain": {"by": "domain"}, "repeat_rates#seq": {"by": "sequence"},
    "next_token_ids": {}, "consecutive_pairs": {},
    "domain_distribution": {}, "domain_distribution#first": {"first_only": True, "layers": [1]},
    "domain_specialization": {}, "vocab_specialization": {},
    "vocab_specialization#detail": {"detail": True, "min_count": 3, "first_only": True},
    "vocab_specialization#domain": {"by": "domain"},
    "coactivation": {}, "coactivation#counts": {"normalize": False},
    "layer_transitions": {}, "layer_transitions#counts": {"normalize": False},
}
FLOAT_SUMS = ["switch_aux", "switch_aux_topk", "hf_aux", "z_loss"]            # sums of router probabilities


def in_memory(trace, key, kw):
    return getattr(metrics, key.split("#")[0])(trace, **kw)


def assert_same(got, want, key):
    if isinstance(want, pd.DataFrame):
        exact = [c for c in want.columns if c not in FLOAT_SUMS]
        pd.testing.assert_frame_equal(got[exact], want[exact], check_exact=True, obj=key)
        for c in set(FLOAT_SUMS) & set(want.columns):
            np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-12, err_msg=key)
    elif isinstance(want, tuple):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=key)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12), key
    else:
        np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_every_statistic_streamed_equals_load_trace_then_in_memory(folder, chunk):
    full = moelab.load_trace(folder)
    out = stream.run(scan_trace(folder, chunk_tokens=chunk), SUITE)
    for key, kw in SUITE.items():
        assert_same(out[key], in_memory(full, key, kw), key)


def test_streamed_counts_are_sums_over_the_whole_folder(folder):
    full = moelab.load_trace(folder)
    df = metrics.expert_load(folder)                                           # a path dispatches to the stream
    assert df["count"].groupby("layer").sum().tolist() == [full.num_tokens * K] * L
    assert metrics.repeat_rates(folder)["pairs"].iloc[0] == len(metrics.consecutive_pairs(full)[0])


def test_a_path_or_a_scan_gives_the_same_call_as_a_trace(folder):
    full = moelab.load_trace(folder)
    src = scan_trace(folder, chunk_tokens=11)
    for fn, kw in [(metrics.balance, {"by": "domain"}), (metrics.repeat_rates, {"by": "domain"}),
                   (metrics.capacity_drops, {"batch_sizes": [5, "sequence"]}), (metrics.coactivation, {}),
                   (metrics.vocab_specialization, {"detail": True})]:
        assert_same(fn(src, **kw), fn(full, **kw), fn.__name__)
        assert_same(fn(str(folder), **kw), fn(full, **kw), fn.__name__)


def test_where_mask_and_by_array_stream_like_in_memory(folder):
    full = moelab.load_trace(folder)
    rng = np.random.default_rng(3)
    mask = rng.random(full.num_tokens) < 0.6
    src = scan_trace(folder, chunk_tokens=5)
    for fn in (metrics.repeat_rates, metrics.balance, metrics.domain_specialization):
        assert_same(fn(src, where=mask), fn(full, where=mask), fn.__name__)
    groups = rng.integers(0, 3, int(mask.sum()))                              # by= an array over the kept tokens
    assert_same(metrics.expert_load(src, by=groups, where=mask), metrics.expert_load(full, by=groups, where=mask), "by")


def test_sequences_continue_across_parts_of_one_run_only(folder):
    full = moelab.load_trace(folder)
    seqs = np.concatenate([c.trace.sequence for c in scan_trace(folder, chunk_tokens=4).chunks()])
    np.testing.assert_array_equal(seqs, full.sequence)
    assert len(np.unique(full.sequence)) == 5 + 4 + 2                          # no collisions between groups


def test_agreement_and_saturation_streamed_in_lockstep(tmp_path):
    rng = np.random.default_rng(1)
    a = random_trace(rng, 4, 20, logits=False)
    ex = a.experts.copy()
    flip = rng.random(len(a)) < 0.3
    ex[flip] = ex[flip][:, :, ::-1]                                            # same set, other first choice
    new = rng.random(len(a)) < 0.2
    ex[new] = np.argsort(rng.random((new.sum(), L, E)), -1)[..., :K]           # a fresh random top-k
    b = moelab.RoutingTrace.from_arrays(ex, num_experts=E, sequence=a.sequence, position=a.position,
                                        token_id=a.token_id, domain=a.columns["domain"])
    for i, (s, e) in enumerate([(0, 33), (33, 80)]):
        write_trace(a.select(slice(s, e)), tmp_path / "a" / f"part-{i}.parquet", run="ra")
    b.save(tmp_path / "b.parquet")                                             # other part layout
    mask = rng.random(len(a)) < 0.7
    for w in (None, mask):
        assert_same(metrics.agreement(scan_trace(tmp_path / "a", chunk_tokens=7), tmp_path / "b.parquet", where=w),
                    metrics.agreement(a, b, where=w), "agreement")
    assert_same(metrics.router_saturation({10: tmp_path / "b.parquet"}, tmp_path / "a", k=1),
                metrics.router_saturation({10: b}, a, k=1), "saturation")


def test_agreement_streamed_names_the_first_differing_token(tmp_path):
    rng = np.random.default_rng(2)
    a = random_trace(rng, 2, 10, logits=False)
    a.save(tmp_path / "a.parquet")
    a.select(np.r_[1, 0, 2:20]).save(tmp_path / "b.parquet")
    with pytest.raises(TraceMismatchError, match="differ in position at token 0"):
        metrics.agreement(tmp_path / "a.parquet", tmp_path / "b.parquet")
    a.select(slice(0, 19)).save(tmp_path / "c.parquet")
    with pytest.raises(TraceMismatchError, match="20 tokens but b has 19"):
        metrics.agreement(tmp_path / "a.parquet", tmp_path / "c.parquet")


def test_folder_with_two_models_names_both_files(tmp_path):
    rng = np.random.default_rng(4)
    random_trace(rng, 2, 5).save(tmp_path / "m1.parquet")
    t = random_trace(rng, 2, 5)
    other = moelab.RoutingTrace.from_arrays(t.experts, num_experts=E + 2, token_id=t.token_id, logits=None,
                                            domain=t.columns["domain"])
    other.save(tmp_path / "m2.parquet")
    with pytest.raises(TraceMismatchError, match=r"m1\.parquet and .*m2\.parquet differ in num_experts 6 vs 8"):
        scan_trace(tmp_path)


def test_empty_chunks_and_bad_chunk_sizes(folder):
    with pytest.raises(ValueError, match="chunk_tokens=0"):
        scan_trace(folder, chunk_tokens=0)
    none = np.zeros(moelab.load_trace(folder).num_tokens, bool)
    assert metrics.expert_load(folder, where=none)["count"].sum() == 0
