"""Scoring interventions: the unmodified row is the model itself, KL/agreement against torch's own,
compute follows the effective k, the batched ablation sweep equals full forwards."""

import math

import pytest
import torch

from moelab.compute import count_params, flops_per_token
from moelab.interventions import ablation_sweep, bias_sweep, frontier, implied_compute, intervene, score
from moelab.interventions.nexttoken import Reference
from moelab.interventions.sweep import changed_positions

from conftest import BUILDERS, tiny_mixtral


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


def test_reference_statistics_equal_torchs_cross_entropy_kl_and_argmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)                                   # a bias, like PhiMoE's head
    h, h2, tgt = torch.randn(40, 16), torch.randn(40, 16), torch.randint(0, 50, (40,))
    ref = Reference(head, h, tgt, chunk=7)                                      # chunks that do not divide 40
    nll, agree, kl = ref.compare(h2)
    p, q = head(h).log_softmax(-1), head(h2).log_softmax(-1)
    assert torch.allclose(ref.nll, torch.nn.functional.cross_entropy(head(h), tgt, reduction="none"), atol=1e-5)
    assert torch.allclose(nll, torch.nn.functional.cross_entropy(head(h2), tgt, reduction="none"), atol=1e-5)
    assert torch.allclose(kl, (p.exp() * (p - q)).sum(-1), atol=1e-5)
    assert torch.equal(agree, head(h).argmax(-1) == head(h2).argmax(-1))
    changed = torch.arange(40) % 3 == 0
    nll_s, agree_s, kl_s = ref.compare_sparse(torch.where(changed[:, None], h2, h), changed)
    assert torch.allclose(nll_s[changed], nll[changed]) and torch.equal(nll_s[~changed], ref.nll[~changed])
    assert (kl_s[~changed] == 0).all() and agree_s[~changed].all()


def test_only_positions_from_the_first_hit_on_can_change():
    hit = torch.tensor([[False, True, False, True], [False, False, False, False]])
    assert changed_positions(hit, last_layer=False).tolist() == [[False, True, True, True], [False] * 4]
    assert torch.equal(changed_positions(hit, last_layer=True), hit)           # no attention after the last layer


@pytest.mark.slow
@pytest.mark.parametrize("arch, mode", [("mixtral", "route"), ("mixtral", "zero"), ("qwen2_moe", "route")])
def test_the_batched_sweep_equals_whole_forwards(arch, mode):
    torch.manual_seed(0)
    model = BUILDERS[arch]()                                                     # qwen2_moe: not renormalised
    kw = dict(texts=TEXTS, layers=[0, 2], experts=[1, 5], seq_len=16, batch_size=2, mode=mode, progress=False)
    fast = ablation_sweep(model, CharTok(), reuse_prefix=True, **kw)
    slow = ablation_sweep(model, CharTok(), reuse_prefix=False, **kw)
    assert len(fast) == 2 * (1 + 4)
    for col in ("nll", "kl", "agreement", "delta_ppl"):
        assert torch.allclose(torch.tensor(fast[col].values), torch.tensor(slow[col].values), atol=2e-5), col
    base = fast[fast.layer < 0]
    assert (base.delta_ppl == 0).all()
    last = fast[fast.layer == 2]
    if arch == "mixtral":                                          # at the last layer only the hit tokens rescore
        assert (last.rescored < 1).all() and (last.rescored > 0).all()


@pytest.mark.slow
def test_the_sweep_shares_sum_to_one_per_domain_and_layer(mixtral):
    full = ablation_sweep(mixtral, CharTok(), texts=TEXTS, layers=[1], seq_len=16, progress=False)
    shares = full[full.layer == 1].groupby("domain").share.sum()
    assert shares.values == pytest.approx([1.0, 1.0])                             # shares of all 8 experts


@pytest.mark.slow
def test_the_batched_bias_sweep_equals_one_intervene_block_per_bias(mixtral):
    df = bias_sweep(mixtral, CharTok(), texts=TEXTS, layer=1, expert=6, biases=[0.0, 3.0], seq_len=16, max_windows=None,
                    progress=False).set_index(["domain", "bias"])
    vec = torch.zeros(8)
    vec[6] = 3.0
    sc = score(mixtral, CharTok(), TEXTS, interventions={"b": dict(bias={1: vec})}, seq_len=16, progress=False)
    b = sc[sc.intervention == "b"].set_index("domain")
    for d in TEXTS:
        assert df.loc[(d, 3.0), "nll"] == pytest.approx(b.loc[d, "nll"], abs=2e-5)
        assert df.loc[(d, 3.0), "kl"] == pytest.approx(b.loc[d, "kl"], abs=2e-5)
        assert df.loc[(d, 0.0), "kl"] == pytest.approx(0.0, abs=2e-5)
    assert (df.xs(3.0, level="bias").share > df.xs(0.0, level="bias").share).all()


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
