"""Trace a corpus: documents -> windows -> batches -> one RoutingTrace (or a folder of parts).

    >>> import moelab, torch
    >>> from moelab.corpus import trace_corpus
    >>> model, tok = moelab.load_model(dtype=torch.float32)
    >>> docs = {"code": ["def f(x):\\n    return x"], "fiction": ["Once upon a time"]}
    >>> tr = trace_corpus(model, tok, docs, seq_len=64, progress=False)
    >>> sorted(set(tr.columns["domain"].tolist()))
    ['code', 'fiction']

The one corpus loop of moelab: `moelab trace`, the notebooks and the model card
all call it, so the same arguments give the same tokens in the same order.
Each document is cut into windows of `seq_len` tokens (BOS opens the
document), windows are batched longest first with right padding, and every
window becomes one sequence tagged `domain`, `document` (global index) and
`offset` (token offset of the window in its document).

Routing needs only the decoder stack, so by default the LM head never runs
(no 32,000-way logits nobody reads). `predictions=True` runs the full model and
attaches `predicted_id` (argmax next token, for OLMoE's predicted-token
specialization): that costs the LM head on every token, several times the
stack's own time on the embedded model (`bench/bench_tracer.py` prints both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class Window:
    domain: str
    document: int
    offset: int
    ids: tuple[int, ...]


def windows(texts: Iterable[tuple[str, int, str]], tok, seq_len: int) -> list[Window]:
    """(domain, document id, text) -> every window of >= 2 tokens, longest first (stable)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2; got {seq_len}")
    out = []
    for domain, doc_id, text in texts:
        ids = tok.encode(text)  # BOS + pieces
        for off in range(0, len(ids), seq_len):
            chunk = ids[off: off + seq_len]
            if len(chunk) >= 2:
                out.append(Window(domain, int(doc_id), off, tuple(chunk)))
    return sorted(out, key=lambda w: -len(w.ids))


def pad_right(batch: list[Window], pad: int):
    """A batch of windows -> right-padded (ids, attention_mask) tensors and the per-row tags."""
    import torch

    width = max(len(w.ids) for w in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, w in enumerate(batch):  # right padding: positions start at 0 for every window
        ids[i, : len(w.ids)] = torch.tensor(w.ids)
        mask[i, : len(w.ids)] = 1
    tags = dict(domain=[w.domain for w in batch], document=[w.document for w in batch],
                offset=[w.offset for w in batch])
    return ids, mask, tags


def documents_to_texts(docs: dict[str, list[str]]) -> list[tuple[str, int, str]]:
    """{domain: [document, ...]} -> (domain, global document index, text), in dict order."""
    texts, n = [], 0
    for domain, ds in docs.items():
        for doc in ds:
            texts.append((domain, n, doc))
            n += 1
    return texts


def batches_of(wins: list[Window], batch_size: int) -> list[list[Window]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return [wins[i: i + batch_size] for i in range(0, len(wins), batch_size)]


def trace_corpus(model, tok, docs: dict[str, list[str]] | list[tuple[str, int, str]], *, seq_len: int = 256,
                 batch_size: int = 8, predictions: bool = False, logits: bool = False, scores: bool = False,
                 path=None,
                 meta: dict | None = None, progress: bool = True, desc: str = "trace", batches=None,
                 append: bool = False, retain: bool | None = None, flush_tokens: int = 65536):
    """Trace documents window by window; returns the RoutingTrace (read back from `path` when streaming).

    docs         {domain: [text, ...]} or (domain, document id, text) triples
    predictions  also run the LM head and attach `predicted_id` (costs the head on every token)
    logits       record full router logits (as `moelab.trace(model, logits=True)`)
    scores       record the selection scores (as `moelab.trace(model, scores=True)`)
    path         stream Parquet parts into this folder (bounded memory); `append` adds to an existing one;
                 `retain=False` skips reading the folder back
    batches      the list of window batches to run (default: all, from `docs`); `moelab trace` passes
                 its rank's share or what a resumed run still lacks
    """
    import torch
    from tqdm.auto import tqdm

    from .tracer import _decoder_stack, trace

    texts = documents_to_texts(docs) if isinstance(docs, dict) else list(docs)
    if batches is None:
        batches = batches_of(windows(texts, tok, seq_len), batch_size)
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    device = getattr(model, "device", None) or next(model.parameters()).device
    stack = _decoder_stack(model)
    preds = []
    meta = {"seq_len": seq_len, "batch_size": batch_size, **(meta or {})}
    with trace(model, logits=logits, scores=scores, path=path, meta=meta, append=append, retain=retain,
               flush_tokens=flush_tokens) as tr, torch.no_grad():
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
            ids, mask, tags = pad_right(batch, pad)
            tr.tag(**tags)
            ids, mask = ids.to(device), mask.to(device)
            if predictions:   # the tracer keeps the unpadded tokens in row-major order: do the same
                out = model(input_ids=ids, attention_mask=mask, use_cache=False)
                preds.append(out.logits.argmax(-1).cpu()[mask.bool().cpu()].numpy())
            else:             # the decoder stack alone: the routers run, the LM head does not
                stack(input_ids=ids, attention_mask=mask, use_cache=False)
    if predictions:
        tr = tr.with_columns(predicted_id=np.concatenate(preds) if preds else np.zeros(0, np.int64))
    return tr


def traced_windows(path) -> set[tuple[int, int]]:
    """(document, offset) of every window already in a trace folder (for resuming a killed run)."""
    import pyarrow.parquet as pq

    done: set[tuple[int, int]] = set()
    for f in sorted(Path(path).rglob("*.parquet")):
        t = pq.read_table(f, columns=["document", "offset"])
        done.update(zip(t["document"].to_pylist(), t["offset"].to_pylist()))
    return done
