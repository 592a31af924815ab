"""Reading the canonical record (experts, weights, optional logits) from what a layer's hooks saw.

    >>> import torch
    >>> from moelab.arch.record import router_logits
    >>> out = (torch.zeros(3, 4), torch.ones(3, 2), torch.zeros(3, 2, dtype=torch.long))
    >>> router_logits(out, 0, tokens=3, num_experts=4, path="model.layers.0.mlp.gate").shape
    torch.Size([3, 4])

Every reader checks shapes and dtypes and raises `RecordError` naming the module path
and what it returned (types, shapes, dtypes), so a changed transformers return is an
error, never a wrong record.
"""

from __future__ import annotations

import torch


class RecordError(RuntimeError):
    """A router or experts module returned / received something the adapter cannot read."""


def describe(x) -> str:
    if torch.is_tensor(x):
        return f"Tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of [{', '.join(describe(v) for v in x)}]"
    return type(x).__name__


def _fail(kind: str, path: str, got, wanted: str, tokens: int) -> RecordError:
    return RecordError(
        f"{kind} {path!r} {got}; moelab reads {wanted} for {tokens} tokens. This transformers version changed "
        "the interface; update the adapter in moelab/arch/registry.py. Nothing was recorded for this forward."
    )


def experts_inputs(args: tuple, kwargs: dict, names: tuple[str, str], *, tokens: int, path: str):
    """(index (tokens, k) integer, weights (tokens, k) float) from an experts module's call arguments."""
    index = kwargs.get(names[0], args[1] if len(args) > 1 else None)
    weights = kwargs.get(names[1], args[2] if len(args) > 2 else None)
    ok = (torch.is_tensor(index) and torch.is_tensor(weights) and not index.is_floating_point()
          and index.dim() == 2 and index.shape[0] == tokens and weights.shape == index.shape)
    if not ok:
        raise _fail("experts module", path, f"received {describe((index, weights))}",
                    "(index (tokens, k) integer, weights (tokens, k))", tokens)
    return index, weights


def router_logits(output, at: int, *, tokens: int, num_experts: int, path: str) -> torch.Tensor:
    """The raw (tokens, E) logits among a router's return (a tensor, or a tuple with them at `at`)."""
    x = output if torch.is_tensor(output) else (output[at] if isinstance(output, tuple) and len(output) > at else None)
    if not (torch.is_tensor(x) and x.is_floating_point() and tuple(x.shape) == (tokens, num_experts)):
        raise _fail("router", path, f"returned {describe(output)}", f"logits ({tokens}, {num_experts}) at {at}", tokens)
    return x


def router_record(output, *, top_k: int, tokens: int, num_experts: int, path: str):
    """Llama 4: (scores (tokens, E) with zeros off the top-k, logits) -> index, weights scaling the experts' input."""
    ok = (isinstance(output, tuple) and len(output) == 2 and all(torch.is_tensor(x) for x in output)
          and all(tuple(x.shape) == (tokens, num_experts) for x in output))
    if not ok:
        raise _fail("router", path, f"returned {describe(output)}", "(scores (tokens, E), logits (tokens, E))", tokens)
    scores, logits = output
    index = torch.topk(logits, top_k, dim=-1).indices  # the router's own choice, rank 0 = highest logit
    return index, scores.gather(1, index)
