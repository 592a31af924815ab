"""Where a tracer's records go: memory, or Parquet parts written off the forward's path.

    >>> from moelab.sink import MemorySink, PartsSink      # used by moelab.tracer; rarely by hand

Each forward hands the sink one `Raw` record: the routers' outputs as host
arrays in layer-major order plus the bookkeeping the tracker assigned.
`materialise` turns it into token-major rows without padding and without the
filler `generate` feeds to finished rows (`moelab.tracking.GroupState.filter`),
in forward order. `PartsSink` does that and the Parquet writing (zstd) on one
background thread behind a bounded queue, so the forward only pays for a copy;
a part is written each `flush_tokens` tokens, atomically (tmp file + rename),
so a killed process leaves every finished part readable.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .routing_trace import RoutingTrace
from .tracking import GroupState


@dataclass
class Raw:
    """One forward, on the host. Arrays are (layers, B*S, x) for routing, (B, S) for tokens."""

    B: int
    S: int
    past: int
    seq0: int
    step: int
    decode: bool
    group: GroupState
    experts: np.ndarray                 # (layers, B*S, k)
    weights: np.ndarray                 # (layers, B*S, k) float32
    logits: np.ndarray | None = None    # (layers, B*S, E)
    scores: np.ndarray | None = None    # (layers, B*S, E) float32 selection scores
    position: np.ndarray | None = None  # (B, S) real-token positions, when a 2D mask was given
    valid: np.ndarray | None = None     # (B, S) 1 = real token, 0 = padding
    pads: np.ndarray | None = None      # (B, 1) padding slots in the whole mask (cache + this forward)
    token_id: np.ndarray | None = None  # (B, S); None for inputs_embeds
    stops: "Stops | None" = None        # generate's EOS / pad ids when `generate` made this forward, else None

    @property
    def tokens(self) -> int:
        return self.B * self.S


@dataclass(frozen=True)
class Stops:
    eos: frozenset = frozenset()
    pad: frozenset = frozenset()


def materialise(raw: Raw) -> dict[str, np.ndarray]:
    """One forward -> token-major records (tokens', layers, x) without padding or filler."""
    B, S, T = raw.B, raw.S, raw.tokens
    L = raw.experts.shape[0]
    if raw.position is not None:          # a 2D mask over cache + input: positions computed on the device
        position = raw.position.reshape(T).astype(np.int64)
        keep = raw.valid.reshape(B, S).astype(bool)
        raw.group.pads = raw.pads.reshape(B).astype(np.int64)
    elif raw.valid is not None:           # validity read off a 4D mask: count on from the group's padding
        keep = raw.valid.reshape(B, S).astype(bool)
        position = (raw.past - raw.group.pads[:, None] + np.cumsum(keep, 1) - 1).reshape(T)
        raw.group.pads = raw.group.pads + (~keep).sum(1)
    else:  # no 2D mask (e.g. a static cache's 4D mask): positions continue after the padding seen so far
        position = (np.arange(raw.past, raw.past + S, dtype=np.int64)[None, :] - raw.group.pads[:, None]).reshape(T)
        keep = np.ones((B, S), bool)
    if raw.token_id is not None and raw.stops is not None:
        keep &= raw.group.filter(raw.token_id.reshape(B, S), decode=raw.decode, eos=raw.stops.eos,
                                 pad=raw.stops.pad)
    keep = keep.reshape(T)
    everything = bool(keep.all())

    def tok(a):  # (L, T, x) -> (T', L, x)
        a = a.reshape(L, T, -1).transpose(1, 0, 2)
        return np.ascontiguousarray(a) if everything else a[keep]

    def rows(a):
        return a if everything else a[keep]

    n = T if everything else int(keep.sum())
    rec = {
        "experts": tok(raw.experts),
        "weights": tok(raw.weights),
        "sequence": rows(np.repeat(np.arange(raw.seq0, raw.seq0 + B, dtype=np.int64), S)),
        "position": rows(position),
        "token_id": rows(raw.token_id.reshape(T).astype(np.int64)) if raw.token_id is not None
        else np.full(n, -1, np.int64),
        "step": np.full(n, raw.step, np.int32),
    }
    if raw.logits is not None:
        rec["logits"] = tok(raw.logits)
    if raw.scores is not None:
        rec["scores"] = tok(raw.scores)
    rec["columns"] = {name: rows(np.repeat(np.asarray(vals), S)) for name, vals in raw.group.tags.items()}
    return rec


@dataclass
class SinkSpec:
    """What a sink needs to turn records into traces."""

    to_trace: Callable[[list[dict]], RoutingTrace]   # records -> RoutingTrace (columns, meta, layer ids)


class MemorySink:
    """Keeps every forward's host arrays; materialises once, at the end (off the forward's path)."""

    def __init__(self, spec: SinkSpec):
        self.spec = spec
        self._raws: list[Raw] = []

    def put(self, raw: Raw) -> None:
        self._raws.append(raw)

    def close(self) -> RoutingTrace:
        raws, self._raws = self._raws, []
        return self.spec.to_trace([materialise(r) for r in raws])


class PartsSink:
    """Streams records to `folder/part-NNNNN.parquet` from a background thread (bounded queue)."""

    def __init__(self, spec: SinkSpec, folder: Path, *, flush_tokens: int, write: Callable, max_queued: int = 2,
                 first_part: int = 0):
        self.spec, self.folder, self.flush_tokens, self._write = spec, Path(folder), int(flush_tokens), write
        self.folder.mkdir(parents=True, exist_ok=True)  # exists once the block opens, not when the writer thread first writes
        self.parts, self._first = 0, int(first_part)
        self._pending: list[Raw] = []
        self._pending_tokens = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="moelab-trace-writer", daemon=True)
        self._thread.start()

    def put(self, raw: Raw) -> None:
        self._raise_if_failed()
        self._pending.append(raw)
        self._pending_tokens += raw.tokens
        if self._pending_tokens >= self.flush_tokens:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._pending:
            batch, self._pending, self._pending_tokens = self._pending, [], 0
            self._queue.put(batch)          # blocks when the writer is `max_queued` parts behind

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._error is None:
                    trace = self.spec.to_trace([materialise(r) for r in batch])
                    if trace.num_tokens:
                        self._write(trace, self.folder / f"part-{self._first + self.parts:05d}.parquet")
                        self.parts += 1
            except BaseException as e:  # surfaced to the tracing thread on the next put / at close
                self._error = e
            finally:
                self._queue.task_done()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"moelab.trace could not write a part into {self.folder}: {err}") from err

    def close(self) -> None:
        """Write what is pending, wait for the writer, re-raise its error if it had one."""
        try:
            self._hand_over()
        finally:
            self._queue.put(None)
            self._thread.join()
        self._raise_if_failed()
