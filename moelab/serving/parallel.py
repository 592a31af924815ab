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
    T, L, k = ex.shape
    flat = (np.arange(L)[None, :, None] * E + ex.astype(np.int64)).reshape(-1)
    return np.bincount(flat, minlength=L * E).reshape(L, E)


def eplb_weight(x, num_experts=None) -> np.ndarray:
    """The per-layer load as DeepSeek EPLB's `rebalance_experts(weight, ...)` takes it: float (layers, experts)."""
    return expert_load(x, num_experts).astype(np.float64)


def contiguous_placement(num_experts: int, G: int, layers: int = 1) -> np.ndarray:
    """(layers, E) slots -> expert: GPU g holds experts [g E/G, (g+1) E/G)."""
    g = _check_g(G, num_experts)
    del g
    return np.tile(np.arange(num_experts), (layers, 1))


def balanced_placement(load, G: int, num_slots: int | None = None) -> np.ndarray:
    """EPLB-style placement with redundant experts: (layers, num_slots) slot -> expert.

    load: (layers, E) (e.g. `eplb_weight(trace)`); num_slots: total physical slots (>= E, a
    multiple of G; default E, i.e. no redundancy, only re-packing)."""
    w = np.asarray(load, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    L, E = w.shape
    R = E if num_slots is None else int(num_slots)
    if R < E:
        raise ValueError(f"num_slots={num_slots!r} must be >= the {E} experts (each needs one slot)")
    g = _check_g(G, R)
    per = R // g
    out = np.empty((L, R), np.int64)
    for l in range(L):
        reps = np.ones(E, np.int64)
        for _ in range(R - E):  # one replica at a time to the heaviest per-replica expert
            reps[np.argmax(w[l] / reps)] += 1
        items = np.repeat(np.arange(E), reps)  # replicas
        share = (w[l] / reps)[items]
        order = np.argsort(-share, kind="stable")
        gpu_load = np.zeros(g)
        gpu_fill = np.zeros(g, np.int64)
        slots = [[] for _ in range(g)]
        for i in order:  # heaviest first onto the least-loaded GPU with a free slot
            open_ = gpu_fill < per
            cand = np.where(open_, gpu_load, np.inf)
            d = int(np.argmin(cand))
            slots[d].append(items[i])
            gpu_load[d] += share[i]
            gpu_fill[d] += 1
        out[l] = np.concatenate([np.sort(s) for s in slots])
    return out


def gpu_loads(load, placement, G: int) -> np.ndarray:
    """(layers, G) work per GPU: each slot gets its expert's load / number of that expert's replicas."""
    w = np.asarray(load, dtype=np.float64)
    w = w[None] if w.ndim == 1 else w
    P = np.asarray(placement)
    P = np.broadcast_to(P, (w.shape[0], P.shape[-1])) if P.ndim == 1 or P.shape[0] == 1 else P
    L, R = P.shape
    g = _check_g(G, R)
    reps = np.stack([np.bincount(P[l], minlength=w.shape[1]) for l in range(L)])  # (L, E)
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
    T, L, _ = ex.shape
    w = int(window)
    if w <= 0:
        raise ValueError(f"window={window!r} must be a positive number of tokens")
    g = _check_g(G)
    cont = contiguous_placement(E, g, L)
    glob = balanced_placement(expert_load(ex, E), g, num_slots)
    rows, prev = [], None
    for i, s in enumerate(range(0, T, w)):
        ld = expert_load(ex[s:s + w], E)
        pl_prev = balanced_placement(prev, g, num_slots) if prev is not None else None
        a, b = imbalance(ld, cont, g), imbalance(ld, glob, g)
        c = imbalance(ld, pl_prev, g) if pl_prev is not None else a
        for l in range(L):
            rows.append(dict(window=i, layer=l, contiguous=a[l], balanced_global=b[l], balanced_previous=c[l]))
        prev = ld
    return pd.DataFrame(rows)


def dispatch_bytes_per_token(x, placement, G: int, hidden: int, bytes_per_element: float = 2.0, *,
                             num_experts=None) -> np.ndarray:
    """(layers,) mean all-to-all bytes per token (dispatch + combine), see the module docstring."""
    ex, E, _ = as_experts(x, num_experts)
    T, L, k = ex.shape
    P = np.asarray(placement)
    P = np.broadcast_to(P, (L, P.shape[-1])) if P.ndim == 1 or P.shape[0] == 1 else P
    R = P.shape[1]
    g = _check_g(G, R)
    per = R // g
    home = np.arange(T) % g  # (T,)
    out = np.zeros(L)
    for l in range(L):
        slot_gpu = np.arange(R) // per
        on = np.zeros((E, g), bool)  # expert e has a replica on gpu d
        on[P[l], slot_gpu] = True
        gpus_of = [slot_gpu[P[l] == e] for e in range(E)]
        nrep = np.array([len(v) for v in gpus_of])
        table = np.full((E, int(nrep.max())), -1)
        for e, v in enumerate(gpus_of):
            table[e, :len(v)] = v
        e_l = ex[:, l].astype(np.int64)  # (T, k)
        local = on[e_l, home[:, None]]  # (T, k)
        pick = table[e_l, (np.arange(T)[:, None] % nrep[e_l])]  # round-robin replica
        dest = np.where(local, home[:, None], pick)  # (T, k)
        remote = np.zeros((T, g), bool)
        remote[np.arange(T)[:, None], dest] = True
        remote[np.arange(T), home] = False
        out[l] = remote.sum(1).mean() * 2 * hidden * bytes_per_element
    return out
