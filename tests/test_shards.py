"""Data-parallel shards: named by global rank, checked for collisions, mixed models and missing ranks."""

import numpy as np
import pytest

import moelab
from moelab.shards import ShardError, check_shards, global_rank, shard_path
from moelab.store import write_trace


def test_shards_are_named_by_global_rank_not_local_rank():
    node1 = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}   # torchrun, node 1 of 2
    node0 = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert shard_path("out", env=node1).name == "rank-3" and shard_path("out", env=node0).name == "rank-1"
    assert global_rank({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)       # one node: local == global
    assert shard_path("out", env={}).name == "out"                              # one process: no shard folder


def test_local_rank_alone_on_several_nodes_is_refused():
    with pytest.raises(ShardError, match="LOCAL_RANK=1 is a rank within one node.*set RANK"):
        global_rank({"LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    with pytest.raises(ShardError, match="RANK=4 is outside"):
        global_rank({"RANK": "4", "WORLD_SIZE": "4"})


def _trace(rng, n=12, E=4, first_seq=0):
    ex = np.stack([rng.permutation(E)[:2] for _ in range(n)])[:, None, :]       # (tokens, layers=1, k=2)
    return moelab.RoutingTrace.from_arrays(ex, num_experts=E, sequence=first_seq + np.arange(n) // 4,
                                           position=np.arange(n) % 4, meta={"model": "m"})


def _write_shards(root, world, rng, **kw):
    for r in range(world):
        write_trace(_trace(rng, **kw), root / f"rank-{r}" / "part-00000.parquet", shard=r, run=f"run{r}")


def test_complete_shards_pass_and_their_union_loads(tmp_path):
    rng = np.random.default_rng(0)
    _write_shards(tmp_path, 3, rng)
    rep = check_shards(tmp_path)
    assert rep.ranks == [0, 1, 2] and rep.world_size == 3 and rep.num_tokens == 36
    t = moelab.load_trace(tmp_path)
    assert t.num_tokens == 36 and len(np.unique(t.sequence)) == 9               # sequences never collide


def test_a_file_written_by_another_rank_is_a_collision_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    _write_shards(tmp_path, 2, rng)
    bad = tmp_path / "rank-1" / "part-00001.parquet"
    write_trace(_trace(rng), bad, shard=0, run="other")                          # rank 0 of another node wrote here
    with pytest.raises(ShardError, match=f"{bad}: in shard folder rank-1 but written by rank 0"):
        check_shards(tmp_path)


def test_shards_of_two_models_are_refused_naming_both_files(tmp_path):
    rng = np.random.default_rng(0)
    _write_shards(tmp_path, 2, rng)
    other = tmp_path / "rank-1" / "part-00001.parquet"
    write_trace(_trace(rng, E=6), other, shard=1, run="run1")
    with pytest.raises(ShardError, match=f"different models or settings: .*rank-0.*and {other} differ in num_experts"):
        check_shards(tmp_path)


def test_a_missing_rank_is_named(tmp_path):
    rng = np.random.default_rng(0)
    _write_shards(tmp_path, 3, rng)
    import shutil

    shutil.rmtree(tmp_path / "rank-1")
    with pytest.raises(ShardError, match="missing shard\\(s\\) rank-1 of world size 3"):
        check_shards(tmp_path)
    with pytest.raises(ShardError, match="missing shard\\(s\\) rank-1, rank-3 of world size 4"):
        check_shards(tmp_path, world_size=4)
