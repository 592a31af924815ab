"""The notebooks' parameters in one call: MOELAB_* environment variables -> a dataclass.

    >>> import os
    >>> p = notebook_params(docs_per_domain=24, environ={"MOELAB_SEQ_LEN": "64"})
    >>> p.model, p.docs_per_domain, p.seq_len, p.fast
    (None, 24, 64, False)
    >>> notebook_params(environ={"MOELAB_FAST": "1", "MOELAB_DOCS_PER_DOMAIN": "30"}).docs_per_domain
    2
    >>> env_int("WINDOWS", 1, environ={"MOELAB_WINDOWS": "3"})     # a notebook's own extra parameter
    3

Every notebook's first cell (tagged `parameters`) reads the same variables; each notebook
keeps its own defaults as keyword arguments, so it still stands alone:

    MOELAB_MODEL            None = the embedded model; a local folder or hub id (real Mixtral)
    MOELAB_DTYPE            float32 | bfloat16 | float16; None = CUDA fp16, CPU bf16 where native, else fp32
    MOELAB_DEVICE           cpu | cuda | auto
    MOELAB_DOCS_PER_DOMAIN  held-out documents traced per corpus domain
    MOELAB_SEQ_LEN          tokens per traced window
    MOELAB_FIGURES          folder for figures and CSV tables; None = the notebook decides (out/figures/)
    MOELAB_FAST             1 = small slices (the test suite): docs and seq_len are capped at
                            `fast_docs_per_domain` and `fast_seq_len`
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

__all__ = ["NotebookParams", "env_int", "notebook_params"]


@dataclass(frozen=True)
class NotebookParams:
    model: str | None = None            # None = the embedded moelab-mixtral-tiny
    dtype: str | None = None            # None = CUDA fp16; CPU bf16 where native, else fp32
    device: str = "auto"                # cpu | cuda | auto
    docs_per_domain: int = 12           # held-out documents per domain (after the fast cap)
    seq_len: int = 256                  # tokens per window (after the fast cap)
    figures: str | None = None          # output folder; None = out/figures/ (untracked)
    fast: bool = False                  # small slices for tests

    def __str__(self) -> str:
        return " | ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))


def _int(env, name: str, default: int) -> int:
    raw = env.get(f"MOELAB_{name}")
    if raw in (None, ""):
        return int(default)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"MOELAB_{name}={raw!r} is not a whole number; set e.g. MOELAB_{name}={default}") from None
    if value < 1:
        raise ValueError(f"MOELAB_{name}={raw!r} must be at least 1")
    return value


def notebook_params(*, model: str | None = None, dtype: str | None = None, device: str = "auto",
                    docs_per_domain: int = 12, seq_len: int = 256, figures: str | None = None,
                    fast_docs_per_domain: int = 2, fast_seq_len: int = 128, environ=None) -> NotebookParams:
    """Read the MOELAB_* variables (from `environ`, default os.environ) over the given defaults.

    An empty variable counts as unset. MOELAB_FAST is "1" (or "true"/"yes") for fast mode;
    then docs_per_domain and seq_len are capped at the fast values, as every notebook did by hand.
    """
    env = os.environ if environ is None else environ
    fast_raw = env.get("MOELAB_FAST", "0") or "0"
    if fast_raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"MOELAB_FAST={fast_raw!r}: use 1 (fast mode) or 0")
    fast = fast_raw.lower() in ("1", "true", "yes")
    device = env.get("MOELAB_DEVICE") or device
    if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
        raise ValueError(f"MOELAB_DEVICE={device!r}: use cpu, cuda (or cuda:N) or auto")
    docs, seq = _int(env, "DOCS_PER_DOMAIN", docs_per_domain), _int(env, "SEQ_LEN", seq_len)
    if fast:
        docs, seq = min(docs, fast_docs_per_domain), min(seq, fast_seq_len)
    return NotebookParams(model=env.get("MOELAB_MODEL") or model, dtype=env.get("MOELAB_DTYPE") or dtype,
                          device=device, docs_per_domain=docs, seq_len=seq,
                          figures=env.get("MOELAB_FIGURES") or figures, fast=fast)


def env_int(name: str, default: int, *, environ=None) -> int:
    """A notebook's own whole-number parameter MOELAB_<name> (>= 1), checked like the shared ones."""
    return _int(os.environ if environ is None else environ, name, default)
