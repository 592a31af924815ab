"""Data-parallel trace shards: one folder per GLOBAL rank, and a check that their union is one trace.

    >>> from moelab.shards import shard_path, global_rank
    >>> global_rank({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})        # torchrun, node 1 of 2
    (5, 8)
    >>> shard_path("runs/pile", env={"RANK": "5", "WORLD_SIZE": "8"}).as_posix()
    'runs/pile/rank-5'
    >>> shard_path("runs/pile", env={}).as_posix()                              # one process: the folder itself
    'runs/pile'

Every process of a data-parallel run traces its share of the inputs into
`shard_path(out)`; `moelab.load_trace(out)` (or any streamed metric on `out`)
is then the union. A shard is named by the process's *global* rank, never its
`LOCAL_RANK`: with `torchrun --nnodes 2 --nproc-per-node 4` both nodes have
local ranks 0..3, so local names would collide. The rank comes from, in order:

1. an initialised `torch.distributed` process group (`get_rank()`);
2. an initialised accelerate `PartialState` (`process_index`, global);
3. the `RANK` / `WORLD_SIZE` variables torchrun and `accelerate launch` set;
4. `LOCAL_RANK` alone only when `LOCAL_WORLD_SIZE` equals `WORLD_SIZE` (one node);
   otherwise an error (a multi-node launcher that sets no global rank);
5. else rank 0 of 1.

`check_shards(folder)` reads the files' metadata only and refuses, naming the
file and the problem: a shard folder holding files stamped by another rank (two
processes wrote under one name), files of different models or settings, and
missing ranks (a world size of N, from the run's `trace_settings` or from the
highest rank found, but fewer shard folders).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["global_rank", "shard_path", "check_shards", "ShardReport", "ShardError"]

_RANK_DIR = re.compile(r"^rank-(\d+)$")


class ShardError(ValueError):
    """A data-parallel trace folder whose shards do not form one trace (collision, mixed, missing)."""


def global_rank(env=None) -> tuple[int, int]:
    """(global rank, world size) of this process (see the module docstring for the order of sources)."""
    if env is None:
        env = os.environ
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return int(dist.get_rank()), int(dist.get_world_size())
        except ImportError:                                      # pragma: no cover - torch is a dependency
            pass
        try:
            from accelerate.state import PartialState

            if PartialState._shared_state != {}:
                st = PartialState()
                return int(st.process_index), int(st.num_processes)
        except ImportError:                                      # pragma: no cover
            pass
    world = int(env.get("WORLD_SIZE", 1))
    if "RANK" in env:
        rank = int(env["RANK"])
    elif "LOCAL_RANK" in env:
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        if local_world != world:
            raise ShardError(
                f"LOCAL_RANK={env['LOCAL_RANK']} is a rank within one node, but WORLD_SIZE={world} spans "
                f"{world // max(local_world, 1)} nodes of LOCAL_WORLD_SIZE={local_world}: shards named by it would "
                "collide. Launch with torchrun or accelerate launch (they set RANK), or set RANK to the global rank.")
        rank = int(env["LOCAL_RANK"])
    else:
        return 0, 1
    if not 0 <= rank < world:
        raise ShardError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world}); check the launcher's variables")
    return rank, world


def shard_path(path, *, rank: int | None = None, world_size: int | None = None, env=None) -> Path:
    """Where this process writes its shard: `path/rank-<global rank>` when more than one process runs, else `path`.

    Pass `rank`/`world_size` to override what `global_rank` finds.
    """
    r, w = global_rank(env) if rank is None or world_size is None else (rank, world_size)
    r = r if rank is None else int(rank)
    w = w if world_size is None else int(world_size)
    return Path(path) / f"rank-{r}" if w > 1 else Path(path)


@dataclass
class ShardReport:
    """What `check_shards` found: ranks present, the expected world size, files and tokens per rank."""

    folder: Path
    world_size: int
    ranks: list[int]
    files: dict[int, list[Path]] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return sum(self.tokens.values())


def _meta(f: Path) -> tuple[dict, int]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f)
    except Exception as e:                                       # noqa: BLE001 - any unreadable file
        raise ShardError(f"{f}: not a readable Parquet trace ({e}); delete it (a half-written part) and check again") \
            from None
    raw = (pf.schema_arrow.metadata or {}).get(b"moelab")
    if raw is None:
        raise ShardError(f"{f}: has no moelab metadata; it is not a moelab trace part. Move it out of the folder.")
    return json.loads(raw), pf.metadata.num_rows


def check_shards(folder, *, world_size: int | None = None) -> ShardReport:
    """Check that the `rank-<r>` folders under `folder` are the complete, non-colliding shards of one trace.

    `world_size` defaults to the run's recorded `trace_settings["world_size"]`, else
    the highest rank found + 1. Raises ShardError naming the file and the problem.
    """
    from .scan import _signature

    folder = Path(folder)
    if not folder.is_dir():
        raise ShardError(f"{folder}: no such folder; pass the --out folder of a data-parallel trace")
    dirs = {int(m.group(1)): d for d in sorted(folder.iterdir()) if d.is_dir() and (m := _RANK_DIR.match(d.name))}
    loose = sorted(f for f in folder.glob("*.parquet"))
    if loose and dirs:
        raise ShardError(f"{folder}: holds both shard folders (rank-*) and a trace file outside them ({loose[0]}); "
                         "a single-process run and a data-parallel run wrote here. Keep one of them.")
    if not dirs:
        dirs = {0: folder}
    report = ShardReport(folder, 0, sorted(dirs))
    first = None                                                 # (signature, settings, file)
    recorded = set()
    for r, d in sorted(dirs.items()):
        files = sorted(d.rglob("*.parquet"))
        report.files[r], report.tokens[r] = files, 0
        for f in files:
            meta, rows = _meta(f)
            report.tokens[r] += rows
            user = meta.get("meta") or {}
            stamp = meta.get("shard", user.get("shard"))
            if len(dirs) > 1 and stamp is not None and str(stamp) != str(r):
                raise ShardError(
                    f"{f}: in shard folder rank-{r} but written by rank {stamp}: two processes wrote under one shard "
                    "name (e.g. shards named by LOCAL_RANK on several nodes). Name shards with "
                    "moelab.shards.shard_path (global rank) and trace again.")
            import pyarrow.parquet as pq

            sig = _signature(meta, pq.read_schema(f).names)
            settings = {k: v for k, v in (user.get("trace_settings") or {}).items()}
            if "world_size" in settings:
                recorded.add(int(settings["world_size"]))
            if first is None:
                first = (sig, settings, f)
                continue
            diff = [k for k in sig if sig[k] != first[0][k]]
            diff += [f"trace_settings.{k}" for k in sorted(set(settings) | set(first[1]))
                     if settings.get(k) != first[1].get(k)]
            if diff:
                what = "; ".join(f"{k} {_get(first, k)!r} vs {_get((sig, settings, f), k)!r}" for k in diff)
                raise ShardError(f"{folder}: shards of different models or settings: {first[2]} and {f} differ in "
                                 f"{what}. Keep one run's shards per folder.")
    if len(recorded) > 1:
        raise ShardError(f"{folder}: shards recorded different world sizes {sorted(recorded)}: runs of different "
                         "launches share this folder")
    expected = world_size or (recorded.pop() if recorded else max(dirs) + 1)
    report.world_size = int(expected)
    missing = [r for r in range(expected) if r not in dirs]
    extra = [r for r in dirs if r >= expected]
    if extra:
        raise ShardError(f"{dirs[extra[0]]}: rank {extra[0]} but the run has world size {expected}; "
                         "a shard of another launch is in this folder")
    if missing:
        raise ShardError(f"{folder}: missing shard(s) {', '.join(f'rank-{r}' for r in missing)} of world size "
                         f"{expected}: those processes wrote nothing (killed, or not launched). Rerun them "
                         "(moelab trace --resume) before loading the union.")
    return report


def _get(entry, key: str):
    sig, settings, _ = entry
    return settings.get(key.split(".", 1)[1]) if key.startswith("trace_settings.") else sig.get(key)
