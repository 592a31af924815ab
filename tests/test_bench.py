"""moelab.bench: the timing harness (checked with a fake clock, no timed assertions), the
MoE-vs-dense runner and the tracer-overhead variants on tiny configs (well-formed results,
positive times)."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import transformers as T

import moelab.bench as bench

TINY = T.MixtralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=100, num_local_experts=4, num_experts_per_tok=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU: one thread avoids OpenMP waits (speed only, not correctness)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_interleaved_rotates_variants_each_round_and_excludes_setup(monkeypatch):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(time, "perf_counter", clock)

    def make(name, cost):
        def fn():
            calls.append(name)
            clock.now += cost
        return fn

    def setup():
        clock.now += 100.0  # untimed work must not show up

    times = bench.time_interleaved({"a": (setup, make("a", 1.0)), "b": make("b", 2.0), "c": make("c", 3.0)},
                                   repeats=3, warmup=2)
    assert times == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # interleaved, rotated


def test_context_and_setup_of_a_variant_run_around_every_call_untimed(monkeypatch):
    clock, events = FakeClock(), []
    monkeypatch.setattr(time, "perf_counter", clock)

    class Ctx:
        def __enter__(self):
            events.append("enter")
            clock.now += 50.0

        def __exit__(self, *exc):
            events.append("exit")
            clock.now += 50.0

    def fn():
        events.append("call")
        clock.now += 1.0

    v = bench.Variant(fn, setup=lambda: events.append("setup"), context=Ctx)
    times = bench.time_interleaved({"v": v}, repeats=2, warmup=1)
    assert times == {"v": [1.0, 1.0]}
    assert events == ["setup", "enter", "call", "exit"] * 3


def test_a_variant_must_be_callable_a_pair_or_a_variant():
    with pytest.raises(TypeError, match="42"):
        bench.time_interleaved({"a": 42})
    with pytest.raises(TypeError, match="setup, fn"):
        bench.time_interleaved({"a": (None, print, print)})


def test_time_interleaved_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeats=0"):
        bench.time_interleaved({"a": lambda: None}, repeats=0)


def test_summarize_reports_medians():
    s = bench.summarize({"a": [3.0, 1.0, 2.0], "b": [5.0, 5.0, 9.0]})
    assert s.loc["a", "median_s"] == 2.0 and s.loc["b", "median_s"] == 5.0 and s.loc["b", "max_s"] == 9.0


@pytest.fixture(scope="module")
def tiny_results():
    return bench.run_moe_vs_dense(TINY, batch_sizes=[1, 2], seq_lens=[8], dtype="fp32", repeats=2, warmup=0,
                                  experts_implementations=("eager", "batched_mm", "no_such_impl"))


def test_run_moe_vs_dense_returns_well_formed_rows(tiny_results):
    df = tiny_results
    ok = df[df.status == "ok"]
    # 2 working MoE implementations + 2 dense baselines, x 2 phases x 2 batch sizes
    assert len(ok) == 4 * 2 * 2
    assert set(ok.model) == {"moe", "dense_active", "dense_total"}
    assert (ok.median_s > 0).all() and (ok.tokens_per_s > 0).all()
    assert all(len(json.loads(t)) == 2 for t in ok.times_s)
    prefill = ok[ok.phase == "prefill"]
    assert (prefill.tokens == prefill.batch * 8).all()


def test_unavailable_experts_implementation_is_skipped_with_its_reason(tiny_results):
    skipped = tiny_results[tiny_results.status == "skipped"]
    assert list(skipped.experts_implementation) == ["no_such_impl"]
    assert "no_such_impl" in skipped.reason.iloc[0]


def test_variants_over_the_per_call_budget_are_skipped_with_the_time_it_took():
    df = bench.run_moe_vs_dense(TINY, batch_sizes=[1, 2], seq_lens=[4], dtype="fp32", repeats=1, warmup=0,
                                experts_implementations=("eager",), max_call_s=1e-9)
    assert (df.status == "skipped").all()
    assert df.reason.str.contains("max_call_s").all()
    # too slow at batch 1 -> predicted too slow at batch 2, not even called; the reason says why
    b2 = df[(df.batch == 2) & (df.phase == "prefill")]
    assert b2.reason.str.contains("at 4 tokens, so").all() and b2.reason.str.endswith("not run").all()


def test_ratios_sit_next_to_predicted_flop_and_byte_ratios(tiny_results):
    moe = tiny_results[(tiny_results.model == "moe") & (tiny_results.status == "ok")]
    assert np.isfinite(moe.speedup_vs_active).all() and (moe.speedup_vs_active > 0).all()
    # active-matched dense does the same FLOPs up to the rounding of its MLP width; total-matched does more
    assert np.allclose(moe.flop_ratio_vs_active, 1.0, atol=0.02)
    assert (moe.flop_ratio_vs_total > 1.5).all()
    # a decode step of 1 token reads 2 of 4 experts, the total-matched dense model reads everything
    d1 = moe[(moe.phase == "decode") & (moe.batch == 1)]
    assert (d1.byte_ratio_vs_total > 1.2).all()
    table = bench.ratio_table(tiny_results)
    assert set(table.baseline) == {"dense_active", "dense_total"}
    assert {"measured", "flop_ratio", "byte_ratio"} <= set(table.columns)


def test_save_results_writes_csv_and_json_with_environment(tiny_results, tmp_path):
    csv = pd.read_csv(bench.save_results(tiny_results, tmp_path / "r.csv"))
    assert len(csv) == len(tiny_results) and (csv.meta_dtype == "fp32").all()
    assert {"meta_torch", "meta_transformers", "meta_device_name", "meta_date"} <= set(csv.columns)
    js = json.loads(bench.save_results(tiny_results, tmp_path / "r.json").read_text())
    assert js["meta"]["transformers"] == T.__version__ and len(js["rows"]) == len(tiny_results)
    with pytest.raises(ValueError, match="r.txt"):
        bench.save_results(tiny_results, tmp_path / "r.txt")


def test_scale_to_layers_extrapolates_the_per_layer_line():
    fit = bench.scale_to_layers([1, 2, 4], [1.5, 2.5, 4.5], target_layers=32)  # 0.5 s fixed + 1 s/layer
    assert fit["seconds"] == pytest.approx(32.5)
    assert fit["per_layer_s"] == pytest.approx(1.0) and fit["fixed_s"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="depths"):
        bench.scale_to_layers([2, 2], [1.0, 1.0])


def test_full_size_mode_measures_two_depths_and_scales_with_full_depth_accounting():
    base = T.MixtralConfig(**{**TINY.to_dict(), "num_hidden_layers": 6})
    df = bench.run_full_size(2, batch_sizes=[1], seq_lens=[4], dtype="fp32", device="cpu", target_layers=6,
                             base_config=base, experts_implementations=("eager",), repeats=1, warmup=0)
    ok = df[df.status == "ok"]
    assert set(ok.measured_depths) == {"[1, 2]"}
    assert np.allclose(ok.median_s, ok.fixed_s + 6 * ok.per_layer_s)
    assert np.allclose(ok.tokens_per_s, ok.tokens / ok.median_s)
    # accounting is for the 6-layer models, not the measured 1- and 2-layer ones
    from moelab.compute import forward_flops

    moe_decode = ok[(ok.model == "moe") & (ok.phase == "decode")].iloc[0]
    assert moe_decode.flops == forward_flops(base, 1, 1, 4, logits="last").total
    assert df.attrs["meta"]["scaled_to_layers"] == 6


def test_full_size_mode_needs_two_depths():
    with pytest.raises(ValueError, match="N >= 2"):
        bench.run_full_size(1, base_config=TINY)


def test_main_runs_the_cli_and_saves(tmp_path, capsys):
    out = tmp_path / "res.csv"
    df = bench.main(["--hidden", "32", "--intermediate", "48", "--layers", "1", "--heads", "4", "--kv-heads", "2",
                     "--experts", "4", "--vocab", "100", "--batch-sizes", "1", "--seq-lens", "4", "--repeats", "1",
                     "--warmup", "0", "--dtype", "fp32", "--impls", "eager", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "flop_ratio" in printed and "byte_ratio" in printed
    assert out.exists() and (df[df.status == "ok"].tokens_per_s > 0).all()


def test_tracer_overhead_times_its_five_variants_with_the_harness_and_leaves_no_hook():
    import torch

    from moelab.bench import tracer_overhead as to

    model = to.build(32, 48, 2, 4, 2, torch.float32, "cpu", "eager")

    def hooks():   # moelab's and the naive variant's (transformers keeps output-capturing hooks of its own)
        return [h for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
                if getattr(h, "__module__", "").startswith("moelab")]

    for name, (inputs, cache) in to.workloads(model, "cpu").items():
        times = to.measure(model, inputs, cache, repeats=2, warmup=0, device="cpu")
        assert tuple(times) == to.VARIANTS and all(len(v) == 2 and min(v) > 0 for v in times.values())
        if cache is not None:
            assert cache.get_seq_length() == 257      # cropped back to 256 before each call, +1 by the call
    assert hooks() == []


def test_my_bench_scripts_have_no_timing_loop_of_their_own():
    """bench_tracer.py and bench_moe_vs_dense.py time through moelab.bench's harness only."""
    root = Path(__file__).resolve().parents[1]
    for f in ("bench/bench_tracer.py", "bench/bench_moe_vs_dense.py", "moelab/bench/tracer_overhead.py",
              "moelab/bench/moe_vs_dense.py"):
        assert "perf_counter" not in (root / f).read_text(), f


def test_save_results_writes_list_metadata_as_one_json_string_per_row(tmp_path):
    # run_full_size's meta holds measured_depths=[1, 2]; pandas would try to broadcast the list
    import pandas as pd

    from moelab.bench.harness import save_results

    df = pd.DataFrame({"tokens": [1, 2, 3]})
    df.attrs["meta"] = {"measured_depths": [1, 2], "device_name": "cpu"}
    back = pd.read_csv(save_results(df, tmp_path / "r.csv"))
    assert list(back.meta_measured_depths) == ["[1, 2]"] * 3 and list(back.meta_device_name) == ["cpu"] * 3
