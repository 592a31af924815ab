"""Next-token statistics from final hidden states: NLL, argmax agreement and KL, without storing logits.

    >>> import torch
    >>> head = torch.nn.Linear(4, 10, bias=False).requires_grad_(False)
    >>> h, tgt = torch.randn(5, 4), torch.tensor([1, 2, 3, 4, 5])
    >>> ref = Reference(head, h, tgt)
    >>> nll, agree, kl = ref.compare(h)                      # the same hidden states: agreement 1, KL 0
    >>> bool(agree.all()), float(kl.abs().max()) < 1e-6
    (True, True)

Scoring a routing change needs, per scored position, the log-sum-exp and argmax of the logits
z = W h (+ b) over the whole vocabulary, and the KL from the unmodified distribution p:

    KL(p || q) = sum_v p_v (z_v - z'_v) + lse(z') - lse(z) = (h - h') . (p W) + lse(z') - lse(z)

(the bias cancels). `Reference` keeps, per position, h, lse, argmax, NLL and P = p W (hidden-size
wide), so the unmodified (tokens, V) distribution is never stored and comparing costs one pass of
the head per position, done in chunks of `chunk` rows that stay in cache. The model's own head
(`get_output_embeddings()`) is used; the decoder runs without it (`hidden_states`).
"""

from __future__ import annotations

import torch
from torch import nn

CHUNK = 256  # rows of (chunk, V) logits at a time: 32 MB at V = 32k in fp32


def head_stats(head: nn.Module, h: torch.Tensor, tgt: torch.Tensor, *, chunk: int = CHUNK, want_p: bool = False):
    """(lse, argmax, target logit, P or None) for hidden states h (N, H) and targets tgt (N,).

    P = softmax(z) @ W (N, H) when `want_p`.
    """
    N = h.shape[0]
    dev = h.device
    lse = torch.empty(N, device=dev)
    top = torch.empty(N, dtype=torch.long, device=dev)
    zt = torch.empty(N, device=dev)
    P = torch.empty(N, h.shape[-1], device=dev) if want_p else None
    W = head.weight.float() if want_p else None
    for a in range(0, N, chunk):
        b = min(a + chunk, N)
        z = head(h[a:b]).float()                                   # (c, V)
        zt[a:b] = z.gather(-1, tgt[a:b, None].to(dev))[:, 0]
        m, top[a:b] = z.max(-1)
        z -= m[:, None]
        z.exp_()
        s = z.sum(-1)
        lse[a:b] = m + s.log()
        if want_p:
            z /= s[:, None]                                        # p
            P[a:b] = z @ W                                         # (c, H)
    return lse, top, zt, P


class Reference:
    """The unmodified model at the scored positions: h (N, H), targets (N,), and their statistics."""

    def __init__(self, head: nn.Module, h: torch.Tensor, tgt: torch.Tensor, *, chunk: int = CHUNK):
        self.head, self.chunk = head, chunk
        self.h, self.tgt = h, tgt
        self.lse, self.top, zt, self.P = head_stats(head, h, tgt, chunk=chunk, want_p=True)
        self.nll = self.lse - zt                                   # (N,)

    def __len__(self) -> int:
        return self.h.shape[0]

    def compare(self, h: torch.Tensor, rows: torch.Tensor | None = None):
        """(nll, agreement, kl) per position for hidden states `h` of the same head at `rows` (all if None).

        h: (len(rows), H) or (N, H). Only those rows pass through the head.
        """
        if rows is None:
            ref_h, P, lse_r, top_r = self.h, self.P, self.lse, self.top
            tgt = self.tgt
        else:
            ref_h, P, lse_r, top_r, tgt = self.h[rows], self.P[rows], self.lse[rows], self.top[rows], self.tgt[rows]
        lse, top, zt, _ = head_stats(self.head, h, tgt, chunk=self.chunk)
        kl = ((ref_h.float() - h.float()) * P).sum(-1) + (lse - lse_r)
        return lse - zt, top == top_r, kl.clamp_min(0.0)

    def compare_sparse(self, h: torch.Tensor, changed: torch.Tensor):
        """(nll, agreement, kl) for all N positions, where only the `changed` (N,) bool rows of `h` (N, H)
        differ from the reference: the others are the reference's own (nll, agreement 1, KL 0)."""
        nll, agree, kl = self.nll.clone(), torch.ones_like(self.top, dtype=torch.bool), torch.zeros_like(self.nll)
        rows = changed.nonzero()[:, 0]
        if rows.numel():
            nll[rows], agree[rows], kl[rows] = self.compare(h[rows], rows)
        return nll, agree, kl


def nll_of(head: nn.Module, h: torch.Tensor, tgt: torch.Tensor, *, chunk: int = CHUNK) -> torch.Tensor:
    """(N,) -log p(target) of hidden states h (N, H) under `head` (another model's head, e.g. bf16)."""
    lse, _, zt, _ = head_stats(head, h, tgt, chunk=chunk)
    return lse - zt


def scored(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keep (B, S-1) bool: positions with a real next token; and their targets (N,)."""
    keep = (mask[:, 1:] * mask[:, :-1]).bool()
    return keep, ids[:, 1:][keep]


def final_hidden(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, S, H) the decoder's output (after the final norm), without the LM head."""
    from ..tracer import _decoder_stack

    out = _decoder_stack(model)(input_ids=ids, attention_mask=mask, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
