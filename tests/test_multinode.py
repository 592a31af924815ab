"""Tracing beyond one process: two torchrun "nodes" on this host, and a device_map-sharded model per rank."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_mixtral

import moelab
from moelab.shards import check_shards

pytestmark = pytest.mark.slow   # subprocesses and a loopback process group
WORKER = Path(__file__).with_name("dp_offload_worker.py")
TIMEOUT = 300


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_mixtral(vocab_size=32000).save_pretrained(d)
    return d


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def _run_all(cmds):
    """Start every command at once (the nodes must meet), wait for all within TIMEOUT, kill stragglers."""
    procs = [subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            outs.append(out)
            assert p.returncode == 0, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def _torchrun(nnodes, node_rank, nproc, port):
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--node-rank", str(node_rank),
            "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1", "--master-port", port]


def _by_window(t):
    return t.select(np.lexsort((t.position, t.columns["offset"], t.columns["document"])))


def test_two_torchrun_nodes_write_shards_by_global_rank_whose_union_is_the_single_process_trace(model_dir, tmp_path):
    common = ["trace", "--model", str(model_dir), "--dtype", "float32", "--device", "cpu", "--corpus", "heldout",
              "--domains", "math", "--max-docs", "3", "--seq-len", "32", "--batch-size", "2"]
    _run_all([[sys.executable, "-m", "moelab.cli", *common, "--out", str(tmp_path / "single")]])
    port = _port()
    out = str(tmp_path / "nodes")
    _run_all([_torchrun(2, r, 1, port) + ["-m", "moelab.cli", *common, "--out", out] for r in (0, 1)])
    # both nodes have LOCAL_RANK 0: shards named by it would collide; by global rank they do not
    assert sorted(p.name for p in Path(out).iterdir()) == ["rank-0", "rank-1"]
    rep = check_shards(out)
    assert rep.world_size == 2 and all(rep.tokens[r] > 0 for r in (0, 1))
    single, union = _by_window(moelab.load_trace(tmp_path / "single")), _by_window(moelab.load_trace(out))
    assert union.num_tokens == single.num_tokens == rep.num_tokens
    for name in ("token_id", "position", "experts", "weights"):
        np.testing.assert_array_equal(getattr(union, name), getattr(single, name), err_msg=name)
    assert len(np.unique(union.sequence)) == len(np.unique(single.sequence))


def test_a_device_map_offloaded_model_traced_by_two_ranks_equals_the_whole_model_in_one_process(tmp_path):
    d = tmp_path / "tiny"
    tiny_mixtral(vocab_size=64).save_pretrained(d)
    off = str(tmp_path / "offload")
    _run_all([[sys.executable, str(WORKER), str(d), str(tmp_path / "whole"), off]])
    _run_all([_torchrun(1, 0, 2, _port()) + [str(WORKER), str(d), str(tmp_path / "dp"), off, "--split"]])
    for r in (0, 1):                                   # layer 1 really went to disk, in each rank's folder
        assert any(Path(f"{off}-{r}").rglob("model.layers.1.*")), f"rank {r} did not offload layer 1 to disk"
    assert check_shards(tmp_path / "dp").world_size == 2
    whole, union = moelab.load_trace(tmp_path / "whole"), moelab.load_trace(tmp_path / "dp")
    assert union.num_tokens == whole.num_tokens and union.num_layers == whole.num_layers == 3
    for r in (0, 1):                                   # rank r traced batches r, r + 2, ... (2 sequences each)
        t = moelab.load_trace(tmp_path / "dp" / f"rank-{r}")
        j = t.sequence
        seq = 2 * (r + 2 * (j // 2)) + j % 2            # its sequences' ids in the single process's run
        t = t.select(np.lexsort((t.position, seq)))
        w = whole.select(np.isin(whole.sequence, seq))
        w = w.select(np.lexsort((w.position, w.sequence)))
        for name in ("token_id", "position", "experts", "weights"):
            np.testing.assert_array_equal(getattr(t, name), getattr(w, name), err_msg=f"rank {r}: {name}")
