"""Teaching pictures build, and draw the numbers the library computes."""

import numpy as np
import pytest

import moelab
from moelab.compute import count_params, forward_flops, get_hardware, mixtral_8x7b_config, model_shape
from moelab.compute.roofline import weight_bytes_read
from moelab.metrics import capacity_drops
from moelab.plots import diagrams as dg


def test_block_diagram_builds_with_one_box_per_expert():
    fig = dg.moe_block_diagram(num_experts=6, top_k=2, chosen=(0, 4), weights=(0.6, 0.4))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert [f"E{e}" for e in range(6)] == [t for t in texts if t.startswith("E") and t[1:].isdigit()]
    assert any("router" in t for t in texts) and any("Σ" in t for t in texts)
    with pytest.raises(ValueError, match="chosen"):
        dg.moe_block_diagram(num_experts=4, chosen=(0, 7))


def test_capacity_diagram_overflows_what_capacity_drops_counts():
    rng = np.random.default_rng(0)
    ex = np.stack([rng.choice(4, 2, replace=False, p=[0.55, 0.25, 0.15, 0.05]) for _ in range(16)])   # (tokens, k)
    for cf in (1.0, 1.5):
        fig = dg.capacity_diagram(ex, 4, cf)
        t = moelab.RoutingTrace.from_arrays(ex[:, None, :], num_experts=4)
        want = capacity_drops(t, [cf], [16])["dropped"].item() * 32
        assert fig.dropped == pytest.approx(want)
        assert sum(p.get_hatch() == "///" for p in fig.axes[0].patches) == fig.dropped


def test_dispatch_serves_first_choices_first():
    C, slot, kept = dg.dispatch(np.array([[1, 0], [1, 0], [0, 1]]), 2, 1.0)      # C = 3
    assert C == 3 and kept[:, 0].all() and kept.sum() == 6
    C, slot, kept = dg.dispatch(np.array([[0, 1], [1, 0], [0, 1]]), 2, 0.5)      # C = 2: rank-1 loses
    assert C == 2 and kept[:, 0].all() and not kept[:, 1].all()


def test_crossover_batch_equals_the_closed_form_when_every_expert_is_read():
    cfg = mixtral_8x7b_config()
    s, hw = model_shape(cfg), get_hardware("H100-SXM")
    E = s.num_experts
    bw, peak = hw.bandwidth_gbs * 1e9, hw.peak_tflops * 1e12
    b1, b2 = (weight_bytes_read(s, b, "fp16", E) for b in (1, 2))
    slope, intercept = b2 - b1, 2 * b1 - b2                                   # bytes = intercept + slope·B
    f1 = forward_flops(s, batch=1, seq_len=1, past=0, logits="last").total
    closed = (intercept / bw) / (f1 / peak - slope / bw)
    got = dg.decode_crossover_batch(cfg, "H100-SXM", context=0, dtype="fp16", experts_touched=E)
    assert got == pytest.approx(closed, rel=1e-6)
    assert closed == pytest.approx(count_params(s).total * 2 / bw / (f1 / peak), rel=0.01)   # ≈ all weights once


def test_roofline_diagram_marks_the_crossover_of_the_plotted_curves():
    fig = dg.decode_roofline_diagram(gpu="A100-80GB-SXM")
    df, B = fig.costs, fig.crossover_batch
    assert B == pytest.approx(dg.decode_crossover_batch(mixtral_8x7b_config(), "A100-80GB-SXM"))
    below, above = df[df.batch < B], df[df.batch > B]
    assert (below.bound == "memory").all() and (above.bound == "compute").all()
    ax = next(a for a in fig.axes if a.get_ylabel() == "ms per step")
    assert ax.lines[-1].get_xdata()[0] == pytest.approx(B)                    # the dashed vertical line
