"""Sequence tracking: which sequence, position and step each row of a forward belongs to.

A pure state machine, no torch and no model: the tracer's hooks describe each
forward as a `Feed` (batch, length, tokens already in the cache, which cache
object), and `SequenceTracker.assign` says whether the forward opens new
sequences or continues the ones that built that cache.

    >>> from moelab.tracking import Feed, SequenceTracker
    >>> st = SequenceTracker()
    >>> a = st.assign(Feed(batch=2, length=5, past=0, cache=None)); st.bind(a, cache=11)   # prefill
    >>> b = st.assign(Feed(batch=2, length=1, past=5, cache=11))                          # decode step
    >>> (b.seq0, b.step), (st.assign(Feed(batch=1, length=3, past=0, cache=None)).seq0)
    ((0, 1), 2)

Rules (each is a test in tests/test_tracking.py)
------------------------------------------------
* A forward continues a group of sequences only if it reads the cache object
  that group wrote (identity, not a keyword name: `cache=`, `past_key_values=`
  or positional all work), with the same batch size and a cache length no
  longer than the group has written. Any other forward opens new sequences.
  So two caches interleaved (A, B, A, B) keep their own sequences.
* A forward with no visible cache object but a `past` > 0 (a mask longer than
  the input) opens new sequences that start at position `past`.
* `generate` keeps feeding rows that have finished (read their EOS) with the
  pad token until every row is done. In a decode step (a one-token
  continuation) of a `generate` call, a finished row's read of a pad or EOS id
  is filler and is not recorded; the EOS itself is (the model read it). The
  EOS and pad ids are `generate`'s own (its `eos_token_id=` / `pad_token_id=`
  arguments or generation config). Forwards outside `generate` are never
  filtered, and neither are prefill chunks (length > 1), so an EOS inside a
  chunked prompt loses nothing. This is `GroupState.filter`, applied in
  forward order by the sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Feed:
    """What one forward carries, as read by the hooks."""

    batch: int            # B rows
    length: int           # S new tokens per row
    past: int             # tokens already in the cache before this forward (0 = fresh)
    cache: object | None  # a hashable key for the cache object read (None: none visible)


@dataclass
class GroupState:
    """Sequences that share one cache: a `generate` call, or a prompt fed in chunks."""

    seq0: int                          # sequence id of row 0; rows are seq0 .. seq0 + batch - 1
    batch: int
    end: int                           # cache length after the last forward of the group
    step: int = 0                      # forwards after the opening one (0 = prefill)
    cache: object | None = None
    finished: np.ndarray = field(default=None)  # (batch,) bool: rows that have read EOS in a decode step
    tags: dict = field(default_factory=dict)    # per-sequence labels: name -> (batch,) values, fixed at opening
    pads: np.ndarray = field(default=None)      # (batch,) padding slots in the cache so far (from 2D masks)

    def __post_init__(self):
        if self.finished is None:
            self.finished = np.zeros(self.batch, bool)
        if self.pads is None:
            self.pads = np.zeros(self.batch, np.int64)

    def filter(self, token_ids: np.ndarray, *, decode: bool, eos: frozenset, pad: frozenset) -> np.ndarray:
        """(batch, length) token ids of one forward -> (batch, length) bool: rows to record.

        Only decode steps (length 1 continuations) are filtered; the state is
        updated, so call it once per forward, in forward order.
        """
        keep = np.ones(token_ids.shape, bool)
        if not decode or token_ids.shape[1] != 1:
            return keep
        tok = token_ids[:, 0]
        is_eos = np.isin(tok, list(eos)) if eos else np.zeros(len(tok), bool)
        is_pad = np.isin(tok, list(pad)) if pad else np.zeros(len(tok), bool)
        keep[:, 0] = ~(self.finished & (is_pad | is_eos))
        self.finished = (self.finished & (is_pad | is_eos)) | is_eos
        return keep


@dataclass
class Assignment:
    """Where one forward's rows go."""

    seq0: int
    step: int
    group: GroupState
    decode: bool          # a one-token continuation of the group (a decode step)


@dataclass
class SequenceTracker:
    """Assigns sequence ids and steps to forwards (see the module docstring for the rules)."""

    next_seq: int = 0
    groups: dict = field(default_factory=dict)    # cache key -> GroupState (open groups)
    max_open: int = 64                            # oldest groups are forgotten beyond this

    def assign(self, feed: Feed, tags: dict | None = None) -> Assignment:
        """Place one forward. `tags` label the sequences it opens (ignored when it continues a group)."""
        if feed.batch <= 0 or feed.length <= 0:
            raise ValueError(f"a forward needs at least one token; got batch {feed.batch} x length {feed.length}")
        g = self.groups.get(feed.cache) if feed.cache is not None and feed.past > 0 else None
        if g is not None and g.batch == feed.batch and feed.past <= g.end:
            g.step += 1
            g.end = feed.past + feed.length
            return Assignment(g.seq0, g.step, g, decode=feed.length == 1)
        g = GroupState(seq0=self.next_seq, batch=feed.batch, end=feed.past + feed.length, cache=feed.cache,
                       tags=per_row_tags(tags or {}, feed.batch))
        self.next_seq += feed.batch
        if feed.cache is not None:
            self._remember(feed.cache, g)
        return Assignment(g.seq0, 0, g, decode=False)

    def bind(self, a: Assignment, cache: object | None) -> None:
        """After the forward: the cache object it wrote (created inside the forward when none was passed)."""
        if cache is None or a.group.cache is cache:
            return
        if a.group.cache is not None:
            self.groups.pop(a.group.cache, None)
        a.group.cache = cache
        self._remember(cache, a.group)

    def forget(self, cache: object) -> None:
        """Drop a group whose cache object was freed (its key may be reused)."""
        self.groups.pop(cache, None)

    def _remember(self, cache, g: GroupState) -> None:
        self.groups.pop(cache, None)
        self.groups[cache] = g
        while len(self.groups) > self.max_open:
            self.groups.pop(next(iter(self.groups)))


def per_row_tags(tags: dict, batch: int) -> dict:
    """{name: scalar | one value per row} -> {name: list of `batch` values}; a clear error on a length mismatch."""
    out = {}
    for name, value in tags.items():
        vals = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * batch
        if len(vals) != batch:
            raise ValueError(f"tag {name!r} has {len(vals)} values but the batch has {batch} rows: {value!r}")
        out[name] = vals
    return out
