"""`moelab trace` from the command line: batching, tags, and data-parallel shards."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_mixtral

import moelab

pytestmark = pytest.mark.slow   # subprocesses / a real browser: `make test-fast` skips these


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_mixtral(vocab_size=32000).save_pretrained(d)  # Mixtral's tokenizer has 32,000 pieces
    return d


def _cli(*args, launcher=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = (launcher or [sys.executable, "-m", "moelab.cli"]) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_trace_corpus_writes_tagged_windows(model_dir, tmp_path):
    _cli("trace", "--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--corpus", "heldout",
         "--domains", "code", "legal", "--max-docs", "2", "--seq-len", "64", "--batch-size", "3",
         "--out", str(tmp_path / "out"))
    t = moelab.load_trace(tmp_path / "out")
    assert set(t.columns["domain"]) == {"code", "legal"}
    assert t.position.max() <= 63 and t.num_layers == 3
    # every window starts at offset multiple of 64 and its tokens are the document's tokens there
    tok = moelab.load_tokenizer()
    doc = moelab.data.load_documents("heldout", ["code"])["code"][0]
    ids = tok.encode(doc)
    first = t.select((t.columns["document"] == 0) & (t.columns["offset"] == 0)).sorted()
    assert first.token_id.tolist() == ids[:64]


def test_trace_scores_flag_records_the_scores_whose_top_k_are_the_experts(model_dir, tmp_path):
    _cli("trace", "--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--text", "one two three four",
         "--seq-len", "64", "--scores", "--out", str(tmp_path / "out"))
    t = moelab.load_trace(tmp_path / "out")
    assert t.scores is not None and t.scores.shape == (t.num_tokens, t.num_layers, t.num_experts)
    top = np.sort(np.argsort(-t.scores, axis=-1)[..., : t.top_k], axis=-1)
    assert np.array_equal(top, np.sort(t.experts.astype(np.int64), axis=-1))


def test_two_process_run_writes_one_shard_each_and_loads_as_the_union(model_dir, tmp_path):
    common = ["--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--corpus", "heldout",
              "--domains", "math", "--max-docs", "3", "--seq-len", "32", "--batch-size", "2"]
    _cli("trace", *common, "--out", str(tmp_path / "single"))
    import socket

    with socket.socket() as sock:  # a free port, so parallel CI jobs don't collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                "-m", "moelab.cli"]
    _cli("trace", *common, "--out", str(tmp_path / "dp"), launcher=torchrun)
    assert sorted(p.name for p in (tmp_path / "dp").iterdir()) == ["rank-0", "rank-1"]
    single, dp = moelab.load_trace(tmp_path / "single"), moelab.load_trace(tmp_path / "dp")
    assert dp.num_tokens == single.num_tokens
    key = lambda t: np.lexsort((t.position, t.columns["offset"], t.columns["document"]))  # noqa: E731
    np.testing.assert_array_equal(dp.experts[key(dp)], single.experts[key(single)])
    assert len(np.unique(dp.sequence)) == len(np.unique(single.sequence))


def test_trace_without_input_is_a_clear_error(model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "moelab.cli", "trace", "--model", str(model_dir), "--out",
                        str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "nothing to trace" in r.stderr


def test_a_run_cut_short_and_resumed_equals_an_uninterrupted_run_window_for_window(model_dir, tmp_path):
    common = ["trace", "--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--corpus", "heldout",
              "--domains", "fiction", "code", "--max-docs", "2", "--seq-len", "32", "--batch-size", "2",
              "--flush-tokens", "1"]
    _cli(*common, "--out", str(tmp_path / "whole"))
    _cli(*common, "--out", str(tmp_path / "cut"))
    parts = sorted((tmp_path / "cut").glob("part-*.parquet"))
    assert len(parts) >= 4
    for p in parts[len(parts) // 2:]:                 # what a kill leaves: the first parts, and a half-written one
        p.unlink()
    (tmp_path / "cut" / "part-99999.parquet.tmp").write_bytes(b"half")
    r = _cli(*common, "--out", str(tmp_path / "cut"), "--resume")
    assert f"{len(parts) // 2} of {len(parts)} batches already traced" in r.stdout
    whole, resumed = moelab.load_trace(tmp_path / "whole"), moelab.load_trace(tmp_path / "cut")
    assert resumed.num_tokens == whole.num_tokens

    def windows(t):
        key = np.lexsort((t.position, t.columns["offset"], t.columns["document"]))
        return t.select(key)

    a, b = windows(whole), windows(resumed)
    for name in ("token_id", "position"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.experts, b.experts)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_resuming_into_a_folder_written_with_other_settings_is_refused(model_dir, tmp_path):
    common = ["trace", "--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--corpus", "heldout",
              "--domains", "math", "--max-docs", "1", "--batch-size", "2", "--out", str(tmp_path / "o")]
    _cli(*common, "--seq-len", "32")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "moelab.cli", *common, "--seq-len", "64", "--resume"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "different settings" in r.stderr and "seq_len: 32 there, 64 now" in r.stderr


def test_trace_prints_the_dtype_it_chose_and_why(model_dir, tmp_path):
    r = _cli("trace", "--model", str(model_dir), "--device", "cpu", "--text", "hello world", "--out",
             str(tmp_path / "o"))
    assert "moelab: device=cpu dtype=" in r.stdout and ("native" in r.stdout or "bf16 matmul" in r.stdout)


# ------------------------------------------------------------------ front end over library and tool functions
@pytest.mark.parametrize("argv, own_help", [
    (["bench", "tracer", "--help"], "--corpus-tokens"),            # moelab.bench.tracer_overhead
    (["bench", "moe-vs-dense", "--help"], "--full-size-layers"),   # moelab.bench.cli
    (["train", "--help"], "--balance"),                            # moelab.tools.train
    (["figures", "--help"], "--only"),                             # moelab.tools.notebooks
])
def test_each_subcommand_reaches_its_library_or_tool_function(argv, own_help, capsys):
    from moelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and own_help in capsys.readouterr().out


def test_the_cli_runs_no_repository_file():
    import ast
    from pathlib import Path

    src = Path(moelab.__file__).with_name("cli.py").read_text()
    imported = {a.name.split(".")[0] for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names}
    assert "runpy" not in imported and "run_path" not in src and "parents[1]" not in src


@pytest.mark.parametrize("old, new", [("moelab.train", "moelab.tools.train"),
                                      ("moelab.notebooks", "moelab.tools.notebooks"),
                                      ("moelab.model_card", "moelab.tools.model_card")])
def test_the_old_tool_paths_still_import_and_run(old, new):
    import importlib

    assert importlib.import_module(old).main is importlib.import_module(new).main
    r = _cli("--help", launcher=[sys.executable, "-m", old])
    assert "usage" in r.stdout
