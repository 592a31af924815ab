"""The CPU default dtype follows what the CPU does: measured speeds decide, injected here."""

import json

import pytest
import torch

from moelab import device


def test_avx2_only_speeds_choose_fp32_and_say_why():
    dtype, why = device.choose_cpu_dtype(fp32_gflops=51.0, bf16_gflops=1.3)   # measured on an AMD EPYC (AVX2)
    assert dtype == "float32" and "no native bf16" in why and "0.03x" in why


def test_native_bf16_speeds_choose_bf16():
    dtype, why = device.choose_cpu_dtype(fp32_gflops=60.0, bf16_gflops=150.0)  # AVX512-BF16 / AMX: ~2.5x
    assert dtype == "bfloat16" and "2.5x" in why


def test_a_tie_stays_fp32():
    assert device.choose_cpu_dtype(50.0, 55.0)[0] == "float32"


def test_nonpositive_speeds_are_refused():
    with pytest.raises(ValueError, match="positive"):
        device.choose_cpu_dtype(0.0, 1.0)


def test_the_verdict_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path))
    calls = []

    def fake():
        calls.append(1)
        return {"float32": 60.0, "bfloat16": 150.0}

    assert device.cpu_default_dtype(measure=fake)[0] == "bfloat16"
    dtype, why = device.cpu_default_dtype(measure=fake)
    assert (dtype, len(calls)) == ("bfloat16", 1) and why.endswith("(cached)")
    assert json.loads((tmp_path / "cpu_dtype.json").read_text())["speeds"]["bfloat16"] == 150.0


def test_explicit_dtype_and_cuda_default(monkeypatch, capsys):
    monkeypatch.delenv("MOELAB_DTYPE", raising=False)
    assert device.resolve_device_dtype("cpu", "float16") == ("cpu", torch.float16)
    assert "asked for" in capsys.readouterr().out
    assert device.resolve_device_dtype("cuda")[1] == torch.float16
    with pytest.raises(ValueError, match="'float17'"):
        device.resolve_device_dtype("cpu", "float17")


def test_the_real_measurement_runs_and_is_positive():
    speeds = device.cpu_matmul_speeds(n=64, budget_s=0.02)
    assert speeds["float32"] > 0 and speeds["bfloat16"] > 0
