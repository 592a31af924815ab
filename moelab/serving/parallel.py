"""
Expert parallelism (EP): E experts per layer spread over G devices; how evenly does the work fall?

    >>> import numpy as np
    >>> from moelab.serving import expert_load, contiguous_placement, imbalance
    >>> ex = np.zeros((100, 1, 1), int)                          # every token -> expert 0
    >>> float(imbalance(expert_load(ex, 8), contiguous_placement(8, 2), 2)[0])   # one GPU does all: max/mean = G
    2.0

Definitions (per MoE layer):
    load[e]         expert-token assignments of expert e over the trace (or a window of it)
    placement       (layers, slots) logical expert id held by each physical slot; slots = G x slots/GPU,
                    GPU g holds slots [g*s, (g+1)*s). A replicated expert's load is split evenly over
                    its replicas (what DeepSeek's EPLB assumes).
    imbalance       max over GPUs of GPU load / mean GPU load  (1 = perfect, G = one GPU does all);
                    the "max/mean" TensorRT-LLM reports; SGLang's "balancedness" is its inverse.

Placements:
    contiguous_placement(E, G)         expert e on GPU e // (E/G), the default of every EP framework
    balanced_placement(load, G, R)     EPLB-style (DeepSeek, github.com/deepseek-ai/EPLB,
                                       "rebalance_experts(weight, num_replicas, ...)"): R - E redundant
                                       replicas go one at a time to the expert with the highest load
                                       per replica, then replicas are packed heaviest first onto the
                                       least-loaded GPU that still has a free slot (R/G slots each).
    eplb_weight(trace)                 the (layers, experts) float load array that rebalance_experts takes.

All-to-all dispatch (`dispatch_bytes_per_token`): token t is held by GPU t mod G (data-parallel
attention); for each layer it sends its hidden state once to every *other* GPU that holds one of
its k experts (a replica on its own GPU is used when there is one, else replica t mod r), and gets
the result back (combine): bytes = 2 x hidden x bytes/element x remote GPUs. Uniform routing over
contiguous experts with k = 1 gives 2 H b (G-1)/G per layer (tested).
"""

from __future__ import annotations

import numpy as np

from .offload import as_experts


def _check_g(G, E=None) -> int:
    g = int(G) if np.ndim(G) == 0 else None
    if g is None or g != G or g <= 0:
        raise ValueError(f"number of devices G={G!r} must be a positive integer, e.g. G=8")
    if E is not None and E % g:
        raise ValueError(f"G={G!r} devices must divide the {E} experts (or slots) evenly; pick a divisor of {E}")
    return g


def expert_load(x, num_experts=None, *, where=None) -> np.ndarray:
    """(layers, experts) int64 assignment counts (all k choices count), optionally for tokens `where`."""
    ex, E, _ = as_experts(x, num_experts)
    if where is not None:
        ex = ex[where]
    return np.stack([np.bincount(ex[:, l].reshape(-1), minlength=E) for l in range(ex.shape[1])]).astype(np.int64)


def window_loads(x, window: int, num_experts=None) -> np.ndarray:
    """(windows, layers, experts) int64 loads of consecutive windows of `window` tokens (the last may be short)."""
    ex, E, _ = as_experts(x, num_experts)
    T, L, k = ex.shape
    w = int(window) if np.ndim(window) == 0 and window == int(window) else 0
    if w <= 0:
        raise ValueError(f"window={window!r} must be a positive number of tokens")
    nW = -(-T // w)
    win = (np.arange(T, dtype=np.int64) // w * E)[:, None]
    out = np.stack([np.bincount((win + ex[:, l]).reshape(-1), minlength=nW * E) for l in range(L)])
    return out.reshape(L, nW, E).transpose(1, 0, 2).astype(np.int64)


def eplb_weight(x, num_experts=None) -> np.ndarray:
    """The per-layer load as DeepSeek EPLB's `rebalance_experts(weight, ...)` takes it: float (layers, experts).

    EPLB's `weight` is a `[layers, num_logical_experts]` tensor of load statistics; pass
    `torch.from_numpy(eplb_weight(trace))`."""
    return expert_load(x, num_experts).astype(np.float64)


def contiguous_placement(num_experts: int, G: int, layers: int = 1) -> np.ndarray:
    """(layers, E) slots -> expert: GPU g holds experts [g E/G, (g+1) E/G)."""
    _check_g(G, num_experts)
    return np.tile(np.arange(num_experts), (layers, 1))


def balanced_placement(load, G: int, num_slots: int | None = None) -> np.ndarray:
    """EPLB-style placement with redundant experts: (layers, num_slots) slot -> expert.

    load: (layers, E) (e.g. `eplb_weight(trace)`), or any (rows, E); num_slots: total physical
    slots (>= E, a multiple of G; default E, i.e. no redundancy, only re-packing). Vectorised over
    rows: one numpy step per redundant replica and per slot."""
    w = np.asarray(load, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    n, E = w.shape
    R = E if num_slots is None else int(num_slots)
    if R < E:
        raise ValueError(f"num_slots={num_slots!r} must be >= the {E} experts (each needs one slot)")
    g = _check_g(G, R)
    per = R // g
    ar = np.arange(n)
    reps = np.ones((n, E), np.int64)
    for _ in range(R - E):  # one replica at a time to the heaviest per-replica expert
        reps[ar, np.argmax(w / reps, axis=1)] += 1
    items = (np.cumsum(reps, 1)[:, :, None] <= np.arange(R)[None, None, :]).sum(1)  # (n, R) replica -> expert
    share = np.take_along_axis(w / reps, items, axis=1)
    order = np.argsort(-share, axis=1, kind="stable")
    gpu_load = np.zeros((n, g))
    fill = np.zeros((n, g), np.int64)
    gpu_of = np.empty((n, R), np.int64)
    for i in range(R):  # heaviest first onto the least-loaded GPU with a free slot
        it = order[:, i]
        d = np.argmin(np.where(fill < per, gpu_load, np.inf), axis=1)
        gpu_of[ar, it] = d
        gpu_load[ar, d] += share[ar, it]
        fill[ar, d] += 1
    return np.sort(gpu_of * E + items, axis=1) % E  # slots in GPU order, experts sorted within a GPU


def gpu_loads(load, placement, G: int) -> np.ndarray:
    """(layers, G) work per GPU: each slot gets its expert's load / number of that expert's replicas."""
    w = np.asarray(load, dtype=np.float64)
    w = w[None] if w.ndim == 1 else w
    P = np.asarray(placement)
    P = np.broadcast_to(P, (w.shape[0], P.shape[-1])) if P.ndim == 1 or P.shape[0] == 1 else P
    L, R = P.shape
    g = _check_g(G, R)
    reps = (P[:, :, None] == np.arange(w.shape[1])).sum(1)  # (L, E)
    if (reps == 0).any():
        l, e = np.argwhere(reps == 0)[0]
        raise ValueError(f"placement leaves expert {e} of layer {l} on no GPU; every expert needs a slot")
    share = np.take_along_axis(w / reps, P, axis=1)  # (L, R)
    return share.reshape(L, g, R // g).sum(2)


def imbalance(load, placement, G: int) -> np.ndarray:
    """(layers,) max GPU load / mean GPU load."""
    gl = gpu_loads(load, placement, G)
    mean = gl.mean(1)
    return np.where(mean > 0, gl.max(1) / np.where(mean > 0, mean, 1), 1.0)


def imbalance_over_windows(x, G: int, window: int, *, num_experts=None, num_slots=None):
    """Imbalance per window of `window` consecutive tokens, per layer; a long DataFrame.

    Columns: window, layer, contiguous, balanced_global (EPLB fitted on the whole trace: an oracle),
    balanced_previous (EPLB fitted on the previous window, as a periodic rebalancer would; the
    first window uses contiguous)."""
    import pandas as pd

    ex, E, _ = as_experts(x, num_experts)
    g = _check_g(G)
    wl = window_loads(ex, window, E)  # (nW, L, E)
    nW, L, _ = wl.shape
    flat = wl.reshape(nW * L, E)
    a = imbalance(flat, contiguous_placement(E, g, 1), g)
    glob = balanced_placement(wl.sum(0), g, num_slots)  # (L, R)
    b = imbalance(flat, np.tile(glob, (nW, 1)), g)
    c = a.copy()
    if nW > 1:
        c[L:] = imbalance(flat[L:], balanced_placement(flat[:-L], g, num_slots), g)
    return pd.DataFrame({"window": np.repeat(np.arange(nW), L), "layer": np.tile(np.arange(L), nW),
                         "contiguous": a, "balanced_global": b, "balanced_previous": c})


def _remote_gpus(P_l, g, E, masks, residue):
    """Remote GPUs per (token mask, t mod Q) for one layer's placement P_l: (n,) int."""
    R = len(P_l)
    slot_gpu = np.arange(R) // (R // g)
    on = np.zeros((E, g), bool)
    on[P_l, slot_gpu] = True
    nrep = np.bincount(P_l, minlength=E)
    table = np.zeros((E, int(nrep.max())), np.int64)
    for e in range(E):
        table[e, :nrep[e]] = slot_gpu[P_l == e]
    home = residue % g
    acc = np.zeros(len(masks), np.int64)
    for e in range(E):
        has = (masks >> np.uint64(e)) & np.uint64(1)
        dest = np.where(on[e, home], home, table[e, residue % nrep[e]])  # own GPU's replica, else round robin
        acc |= np.where(has.astype(bool), np.int64(1) << dest, 0)
    return np.bitwise_count(acc & ~(np.int64(1) << home)).astype(np.int64)


def dispatch_bytes_per_token(x, placement, G: int, hidden: int, bytes_per_element: float = 2.0, *,
                             num_experts=None) -> np.ndarray:
    """(layers,) mean all-to-all bytes per token (dispatch + combine), see the module docstring.

    Which GPUs a token reaches depends only on its expert set and t mod Q (Q = lcm of G and the
    replica counts), so each layer is a histogram over (t mod Q, set) pairs (E <= 16)."""
    from .engine import to_masks

    ex, E, _ = as_experts(x, num_experts)
    T, L, k = ex.shape
    P = np.asarray(placement)
    P = np.broadcast_to(P, (L, P.shape[-1])) if P.ndim == 1 or P.shape[0] == 1 else P
    g = _check_g(G, P.shape[1])
    if E > 16:
        raise ValueError(f"dispatch_bytes_per_token supports num_experts <= 16 (a histogram over the 2**E expert "
                         f"sets of a layer); got num_experts={E}. gpu_loads / imbalance take any E; the bytes of a "
                         "larger model have no exact path here yet")
    masks = to_masks(ex, E)  # (T, L)
    out = np.zeros(L)
    for l in range(L):
        if np.bincount(P[l], minlength=E).min() == 0:
            e = int(np.argmin(np.bincount(P[l], minlength=E)))
            raise ValueError(f"placement leaves expert {e} of layer {l} on no GPU; every expert needs a slot")
        Q = int(np.lcm.reduce(np.r_[g, np.bincount(P[l], minlength=E)]))
        cnt = np.bincount((np.arange(T) % Q) * (1 << E) + masks[:, l], minlength=Q << E)
        nz = np.nonzero(cnt)[0]
        remote = _remote_gpus(P[l], g, E, (nz % (1 << E)).astype(np.uint64), nz >> E)
        out[l] = (cnt[nz] * remote).sum() / max(T, 1) * 2 * hidden * bytes_per_element
    return out
