"""Expert-offloading cache simulator: closed forms, the Bélády bound, and a brute-force reference."""

import numpy as np
import pytest

import moelab
from moelab.serving import predict_from_previous_layer, predict_previous_token, simulate_cache


def brute_force(ex, C, policy, pred=None):
    """Token by token with Python sets and dicts: the specification of every policy."""
    T, L, _ = ex.shape
    hits, pre_loads = np.zeros((T, L), int), np.zeros(L, int)
    for l in range(L):
        cache, last, cnt = set(), {}, {}
        for t in range(T):
            S = [int(e) for e in ex[t, l]]
            if policy == "prefetch":
                P = [int(e) for e in pred[t, l] if e >= 0]
                for e in P:
                    if e not in cache:
                        pre_loads[l] += 1
                        cache.add(e)
                while len(cache) > C:
                    cache.remove(min((e for e in cache if e not in P), key=lambda e: (last.get(e, -1), e)))
            hits[t, l] = sum(e in cache for e in S)
            cache |= set(S)
            for e in S:
                last[e], cnt[e] = t, cnt.get(e, 0) + 1
            while len(cache) > C:
                cand = [e for e in cache if e not in S]
                if policy in ("lru", "prefetch"):
                    v = min(cand, key=lambda e: (last.get(e, -1), e))
                elif policy == "lfu":
                    v = min(cand, key=lambda e: (cnt[e], last[e], e))
                else:  # belady: farthest next use, never used again = farthest
                    nxt = lambda e: next((u for u in range(t + 1, T) if e in ex[u, l]), T)  # noqa: E731
                    v = min(cand, key=lambda e: (-nxt(e), e))
                cache.remove(v)
    return hits, pre_loads  # per-token hits (T, L), prefetch loads (L,)


def random_trace(rng, T, L, E, k, sticky):
    p = rng.dirichlet(np.ones(E) * 0.7)
    ex = np.stack([np.stack([rng.choice(E, k, replace=False, p=p) for _ in range(T)]) for _ in range(L)], 1)
    for t in range(1, T):
        if rng.random() < sticky:
            ex[t] = ex[t - 1]
    return ex


def test_iid_uniform_single_expert_lru_hit_rate_is_c_over_e():
    ex = np.random.default_rng(0).integers(0, 8, (40_000, 3, 1))
    for C in (1, 3, 6):
        hr = simulate_cache(ex, C, "lru", num_experts=8).hit_rate
        assert np.allclose(hr, C / 8, atol=0.01), (C, hr)


def test_cycle_through_c_plus_one_experts_gives_lru_zero_hits():
    for C in (1, 2, 4, 7):
        ex = (np.arange((C + 1) * 50) % (C + 1)).reshape(-1, 1, 1)
        assert simulate_cache(ex, C, "lru", num_experts=8).hits.tolist() == [0]
        if C > 1:  # the offline bound faults once per C requests on a cycle of C + 1 (after the first C)
            assert simulate_cache(ex, C, "belady", num_experts=8).hit_rate[0] == pytest.approx((C - 1) / C, abs=0.03)


def adversarial_traces(E, k):
    """Traces that defeat warm-ups and chunking: long runs, late first uses, cycles, a hot expert."""
    t = np.arange(150)[:, None]
    runs = np.concatenate([np.tile(np.arange(k), (90, 1)), np.tile(np.arange(E - k, E), (70, 1))])
    late = np.concatenate([np.tile(np.arange(k), (120, 1)), (np.arange(k) + np.arange(40)[:, None]) % E])
    cyc = (np.arange(k) + t * k) % min(E, 2 * k + 1)
    hot = np.where(t % 17 == 0, (np.arange(k) + t) % E, (np.arange(k) + t % 2) % E)
    return [np.stack([x, x[::-1]], 1) for x in (runs, late, cyc, hot)]  # (T, 2 layers, k)


@pytest.mark.parametrize("policy", ["lru", "lfu", "belady", "prefetch"])
def test_every_policy_equals_the_brute_force_simulator_token_by_token(policy):
    rng = np.random.default_rng({"lru": 1, "lfu": 2, "belady": 3, "prefetch": 4}[policy])
    cases = []
    for _ in range(10):
        E = int(rng.integers(2, 9))
        k = int(rng.integers(1, min(3, E) + 1))
        cases.append((random_trace(rng, int(rng.integers(1, 150)), 2, E, k, sticky=rng.random()), E, k))
    cases += [(x, 8, 2) for x in adversarial_traces(8, 2)] + [(x, 5, 1) for x in adversarial_traces(5, 1)]
    for ex, E, k in cases:
        C = int(rng.integers(k, E + 1))
        pred = predict_from_previous_layer(ex, num_experts=E) if policy == "prefetch" else None
        r = simulate_cache(ex, C, policy, num_experts=E, predicted=pred, keep_per_token=True,
                           chunk=int(rng.integers(1, 30)), warmup=int(rng.integers(0, 8)))  # small chunks: repairs run
        h, pl = brute_force(ex, C, policy, pred)
        assert r.per_token_hits.tolist() == h.tolist() and r.prefetch_loads.tolist() == pl.tolist(), (E, k, C)


@pytest.mark.parametrize("E", [12, 40, 64])
def test_wide_expert_masks_equal_the_brute_force_simulator(E):
    rng = np.random.default_rng(E)
    ex = random_trace(rng, 120, 2, E, 3, sticky=0.3)
    for policy in ("lru", "lfu", "belady", "prefetch"):
        C = int(rng.integers(3, E + 1))
        pred = predict_from_previous_layer(ex, num_experts=E) if policy == "prefetch" else None
        r = simulate_cache(ex, C, policy, num_experts=E, predicted=pred, chunk=16, warmup=4)
        h, pl = brute_force(ex, C, policy, pred)
        assert r.hits.tolist() == h.sum(0).tolist() and r.prefetch_loads.tolist() == pl.tolist(), (policy, C)


def test_rows_advanced_in_several_blocks_equal_the_brute_force_simulator(monkeypatch):
    from moelab.serving import engine

    monkeypatch.setattr(engine, "_ROWS", 3)  # 3 chunks at a time: blocks split layers, repairs span blocks
    rng = np.random.default_rng(13)
    ex = random_trace(rng, 140, 3, 8, 2, sticky=0.5)
    for policy in ("lru", "lfu", "belady", "prefetch"):
        pred = predict_from_previous_layer(ex, num_experts=8) if policy == "prefetch" else None
        r = simulate_cache(ex, 3, policy, num_experts=8, predicted=pred, keep_per_token=True, chunk=9, warmup=2)
        h, pl = brute_force(ex, 3, policy, pred)
        assert r.per_token_hits.tolist() == h.tolist() and r.prefetch_loads.tolist() == pl.tolist(), policy


def test_lfu_keys_wider_than_32_bits_equal_the_brute_force_simulator():
    """LFU's key (count, last use, id) outgrows int32 from a few thousand tokens; the engine widens it."""
    ex = random_trace(np.random.default_rng(14), 6000, 1, 8, 2, sticky=0.2)
    r = simulate_cache(ex, 4, "lfu", num_experts=8, keep_per_token=True)
    assert r.per_token_hits.tolist() == brute_force(ex, 4, "lfu")[0].tolist()


def test_results_do_not_depend_on_the_chunking():
    ex = random_trace(np.random.default_rng(11), 1000, 3, 8, 2, sticky=0.4)
    for policy in ("lfu", "belady", "prefetch"):
        ref = simulate_cache(ex, 3, policy, num_experts=8, chunk=1000, keep_per_token=True).per_token_hits
        for chunk, warmup in ((7, 0), (64, 16), (300, 3)):
            got = simulate_cache(ex, 3, policy, num_experts=8, chunk=chunk, warmup=warmup, keep_per_token=True)
            assert (got.per_token_hits == ref).all(), (policy, chunk, warmup)


def test_lru_keeps_exactly_the_c_most_recently_used_experts():
    """Closed form: with set requests and C >= k, the LRU cache after token t is the C experts with the
    latest last use (ties: higher id), so a request hits iff its expert is among them at t - 1."""
    rng = np.random.default_rng(9)
    for _ in range(10):
        E = int(rng.integers(2, 9))
        k = int(rng.integers(1, min(3, E) + 1))
        ex = random_trace(rng, 400, 1, E, k, sticky=rng.random())
        C = int(rng.integers(k, E + 1))
        last, hits = {}, 0
        for t in range(len(ex)):
            recent = sorted(last, key=lambda e: (last[e], e))[-C:]
            hits += sum(int(e) in recent for e in ex[t, 0])
            last.update({int(e): t for e in ex[t, 0]})
        assert simulate_cache(ex, C, "lru", num_experts=E).hits.tolist() == [hits]


def test_belady_is_at_least_every_other_policy_on_every_input():
    rng = np.random.default_rng(5)
    for _ in range(8):
        E, k = int(rng.integers(2, 9)), 1 + int(rng.random() < 0.6)
        k = min(k, E)
        ex = random_trace(rng, 120, 2, E, k, sticky=rng.random())
        for C in range(k, E + 1):
            best = simulate_cache(ex, C, "belady", num_experts=E)
            for pol in ("lru", "lfu"):
                assert (best.hits >= simulate_cache(ex, C, pol, num_experts=E).hits).all()
            pf = simulate_cache(ex, C, "prefetch", num_experts=E, predicted=predict_from_previous_layer(ex, num_experts=E))
            assert (best.misses <= pf.loads).all()  # prefetching can raise hits, never beat MIN's copies
    for ex in adversarial_traces(8, 2):
        for C in (2, 3, 5):
            best = simulate_cache(ex, C, "belady", num_experts=8).hits
            assert all((best >= simulate_cache(ex, C, p, num_experts=8).hits).all() for p in ("lru", "lfu"))


def test_prefetching_the_previous_tokens_experts_is_exactly_lru():
    ex = random_trace(np.random.default_rng(6), 2000, 3, 8, 2, sticky=0.3)
    for C in (2, 4, 6):
        a, b = simulate_cache(ex, C, "lru", num_experts=8), simulate_cache(ex, C, "prefetch", num_experts=8)
        assert a.hits.tolist() == b.hits.tolist() and b.prefetch_loads.sum() == 0


def test_full_cache_misses_only_the_first_use_of_each_expert():
    ex = random_trace(np.random.default_rng(7), 500, 2, 8, 2, sticky=0.0)
    r = simulate_cache(ex, 8, "lfu", num_experts=8)
    first_uses = [len(np.unique(ex[:, l])) for l in range(2)]
    assert r.misses.tolist() == first_uses


def test_bytes_per_token_counts_every_copy():
    ex = np.random.default_rng(8).integers(0, 8, (1000, 4, 1))
    r = simulate_cache(ex, 1, "lru", num_experts=8)
    assert r.bytes_per_token(10.0) == pytest.approx(r.misses.sum() / 1000 * 10.0)


def test_cache_size_outside_k_to_e_is_refused_with_the_value():
    ex = np.zeros((4, 1, 2), int)
    ex[:, :, 1] = 1
    with pytest.raises(ValueError, match="capacity=1"):
        simulate_cache(ex, 1, "lru", num_experts=8)
    with pytest.raises(ValueError, match="capacity=9"):
        simulate_cache(ex, 9, "lru", num_experts=8)
    with pytest.raises(ValueError, match="policy='fifo'"):
        simulate_cache(ex, 2, "fifo", num_experts=8)
    with pytest.raises(ValueError, match="num_experts=65"):
        simulate_cache(np.zeros((4, 1, 1), int), 2, "lru", num_experts=65)
    with pytest.raises(ValueError, match=r"shape \(4, 1\)"):
        simulate_cache(ex, 2, "prefetch", num_experts=8, predicted=np.zeros((4, 1)))


def test_a_simulation_needing_sequences_refuses_a_bare_array():
    ex = np.zeros((4, 1, 1), int)
    with pytest.raises(ValueError, match="sequence"):
        predict_previous_token(ex, within_sequence=True)
    tr = moelab.RoutingTrace.from_arrays(ex, num_experts=2, sequence=[0, 0, 1, 1])
    assert predict_previous_token(tr, within_sequence=True)[:, 0, 0].tolist() == [-1, 0, -1, 0]
