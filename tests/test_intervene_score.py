"""Scoring interventions: the unmodified row is the model itself, KL/agreement against torch's own,
compute follows the effective k, the batched ablation sweep equals full forwards."""

import math

import pytest
import torch

from moelab.compute import count_params, flops_per_token
from moelab.interventions import ablation_sweep, frontier, implied_compute, intervene, score

from conftest import tiny_mixtral


class CharTok:
    """A tokenizer for the tiny models: BOS, then one id per character."""
    bos_token_id, pad_token_id = 1, 0

    def __call__(self, text):
        return {"input_ids": [1] + [3 + ord(c) % 120 for c in text]}


TEXTS = {"a": ["the cat sat on the mat " * 3, "a b c d e f g"], "b": ["def f(x): return x + 1\n" * 2]}


def test_score_rows_match_a_direct_computation(mixtral):
    df = score(mixtral, CharTok(), TEXTS, interventions={"top-1": dict(top_k=1), "same": dict(top_k=2)},
               seq_len=16, batch_size=2, progress=False)
    none, same, top1 = (df[df.intervention == n].set_index("domain") for n in ("none", "same", "top-1"))
    assert (none.agreement == 1).all() and (none.kl == 0).all()
    assert (same.agreement == 1).all() and same.kl.max() < 1e-6 and (same.nll == none.nll).all()
    # direct: every window of domain "b" alone, torch's cross-entropy and kl_div
    ids = torch.tensor([CharTok()(TEXTS["b"][0])["input_ids"]])
    nll, kl, agree, n = 0.0, 0.0, 0.0, 0
    for s in range(0, ids.shape[1] - 1, 16):
        w = ids[:, s: s + 16]
        with torch.no_grad():
            base = mixtral(w).logits[0, :-1].float()
            with intervene(mixtral, top_k=1):
                alt = mixtral(w).logits[0, :-1].float()
        nll += float(torch.nn.functional.cross_entropy(alt, w[0, 1:], reduction="sum"))
        kl += float(torch.nn.functional.kl_div(alt.log_softmax(-1), base.log_softmax(-1), log_target=True, reduction="sum"))
        agree += float((alt.argmax(-1) == base.argmax(-1)).sum())
        n += w.shape[1] - 1
    assert top1.loc["b", "tokens"] == n
    assert top1.loc["b", "nll"] == pytest.approx(nll / n, rel=1e-5)
    assert top1.loc["b", "ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert top1.loc["b", "kl"] == pytest.approx(kl / n, rel=1e-3, abs=1e-6)
    assert top1.loc["b", "agreement"] == pytest.approx(agree / n)


def test_implied_compute_scales_only_the_expert_term(mixtral):
    cfg = mixtral.config
    base, top1 = implied_compute(cfg, None, 64), implied_compute(cfg, {0: 1.0, 1: 1.0, 2: 1.0}, 64)
    f = flops_per_token(cfg, context=64, phase="prefill")
    assert base["flops_per_token"] == f.total and base["active_params"] == count_params(cfg).active
    assert base["flops_per_token"] - top1["flops_per_token"] == pytest.approx(f.experts / 2)
    k1 = tiny_mixtral(num_experts_per_tok=1).config
    assert top1["active_params"] == count_params(k1).active                     # same as a top-1 config
    assert implied_compute(cfg, {0: 1.0}, 64)["k_eff"] == pytest.approx(5 / 3)  # other layers keep k=2


def test_frontier_aggregates_domains_and_places_dense_baselines(mixtral):
    df = score(mixtral, CharTok(), TEXTS, interventions={"top-1": dict(top_k=1)}, seq_len=16, progress=False)
    fr = frontier(df, mixtral.config).set_index("intervention")
    sub = df[df.intervention == "top-1"]
    assert fr.loc["top-1", "nll"] == pytest.approx((sub.nll * sub.tokens).sum() / sub.tokens.sum())
    dense = fr[fr.kind == "dense"]
    assert len(dense) == 2 and dense.nll.isna().all()
    assert dense.active_params.iloc[0] == pytest.approx(fr.loc["top-1", "active_params"], rel=0.01)


@pytest.mark.slow
def test_the_prefix_reusing_sweep_equals_full_forwards(mixtral):
    kw = dict(texts=TEXTS, layers=[0, 2], experts=[1, 5], seq_len=16, batch_size=2, progress=False)
    fast = ablation_sweep(mixtral, CharTok(), reuse_prefix=True, **kw)
    slow = ablation_sweep(mixtral, CharTok(), reuse_prefix=False, **kw)
    assert len(fast) == 2 * (1 + 4)
    for col in ("nll", "kl", "agreement", "delta_ppl"):
        assert torch.allclose(torch.tensor(fast[col].values), torch.tensor(slow[col].values), atol=1e-6), col
    base = fast[fast.layer < 0]
    assert (base.delta_ppl == 0).all()
    full = ablation_sweep(mixtral, CharTok(), texts=TEXTS, layers=[1], seq_len=16, progress=False)
    shares = full[full.layer == 1].groupby("domain").share.sum()
    assert shares.values == pytest.approx([1.0, 1.0])                             # shares of all 8 experts


def test_the_plot_helpers_draw_one_panel_per_domain(mixtral):
    from matplotlib.figure import Figure

    from moelab.plots.interventions import ablation_heatmaps, frontier_plot, importance_vs_usage

    sweep = ablation_sweep(mixtral, CharTok(), texts=TEXTS, layers=[0, 1], experts=[0, 1, 2], seq_len=16, progress=False)
    fig = ablation_heatmaps(sweep)
    assert isinstance(fig, Figure) and [a.get_title() for a in fig.axes if a.get_visible()][:2] == ["a", "b"]
    assert fig.axes[0].images[0].get_array().shape == (2, 3)                    # layers x experts
    assert isinstance(importance_vs_usage(sweep), Figure)
    df = score(mixtral, CharTok(), TEXTS, interventions={"top-1": dict(top_k=1)}, seq_len=16, progress=False)
    assert len(frontier_plot(frontier(df, mixtral.config)).axes[0].lines) >= 3  # front + 2 dense lines
