"""load_model: the embedded default Mixtral, or any supported model by id or path.

    >>> import moelab, torch
    >>> model, tok = moelab.load_model()          # embedded, offline; bf16 where the CPU has it natively, else fp32
    >>> model.config.num_local_experts, model.config.num_experts_per_tok
    (8, 2)
    >>> model, tok = moelab.load_model("mistralai/Mixtral-8x7B-v0.1",       # doctest: +SKIP
    ...                                dtype=torch.float16, device_map="auto", allow_download=True)

The embedded models live in `data/models/<name>/` (each has a README.md, its
model card) and load by name: `moelab-mixtral-tiny` is the default (its
training checkpoints are listed by `checkpoints()`). The name
`moelab-mixtral-tiny-pooled` is reserved for the pooled-loss contrast model of
issue 16, once the default is retrained with the per-layer loss. Nothing here
reaches the network unless `allow_download=True`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .data import data_dir, data_dirs_searched, load_tokenizer

DEFAULT_MODEL = "moelab-mixtral-tiny"
POOLED_MODEL = "moelab-mixtral-tiny-pooled"   # same recipe, transformers' pooled balance loss


def default_model_dir() -> Path:
    return data_dir() / "models" / DEFAULT_MODEL


def embedded_models() -> list[str]:
    """Names of the embedded models in `data/models/` (folders with a config.json)."""
    root = data_dir() / "models"
    return sorted(p.parent.name for p in root.glob("*/config.json")) if root.is_dir() else []


def embedded_model_dir(name: str) -> Path | None:
    """`data/models/<name>` when `name` is an embedded model's name (not a path), else None."""
    if not name or os.sep in str(name) or "/" in str(name):
        return None
    path = data_dir() / "models" / str(name)
    return path if (path / "config.json").is_file() else None


def checkpoints(name: str | os.PathLike | None = None) -> list[dict]:
    """Training checkpoints of an embedded model (default: the default one), or of a folder.

    [{step, tokens_seen, ce_loss, path}], final last. `name` is an embedded model's name or a
    folder holding `checkpoints.json`.
    """
    root = (embedded_model_dir(name) or Path(name)) if name else default_model_dir()
    if not (root / "checkpoints.json").is_file():
        raise FileNotFoundError(
            f"{root} has no checkpoints.json; only models trained by `moelab train` with their "
            f"checkpoints have one (the default {DEFAULT_MODEL!r} does; {POOLED_MODEL!r} ships its final weights only)"
        )
    info = json.loads((root / "checkpoints.json").read_text())
    for c in info:
        c["path"] = str((root / c["path"]).resolve())
    missing = [c["path"] for c in info if not (Path(c["path"]) / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"the checkpoints of {root.name} are not here: looked for {missing[0]} (and {len(missing) - 1} more). "
            "Checkpoints ship with a source checkout only, not in the wheel; set MOELAB_DATA to a checkout's "
            f"data/ folder (data_dir() is now {data_dir()})"
        )
    return info


def _default_dtype() -> torch.dtype:
    """bf16 where this CPU runs it natively, else fp32 (measured once: `moelab.device`)."""
    from .device import cpu_default_dtype

    return getattr(torch, cpu_default_dtype()[0])


def load_model(name: str | os.PathLike | None = None, *, dtype: torch.dtype | str | None = None,
               device_map=None, allow_download: bool = False, tokenizer: bool = True, **kwargs):
    """(model, tokenizer). No name: the embedded small Mixtral, offline.

    name            an embedded model's name (`embedded_models()`), a local folder
                    (config.json + safetensors) or a hub id
    dtype           torch dtype; default for the embedded models: bf16 where the CPU runs it natively,
                    else fp32 (`moelab.device`); for other checkpoints their own
    device_map      passed to transformers/accelerate ("auto", a dict, ...)
    allow_download  hub ids are looked up in the local HF cache only unless True
    kwargs          passed to `from_pretrained` (e.g. experts_implementation="grouped_mm")
    """
    from transformers import AutoModelForCausalLM

    if name is None:
        path = default_model_dir()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"embedded model not found at {path}; looked in {data_dirs_searched()}. Point MOELAB_DATA at "
                "a moelab checkout's data/ folder, or retrain it with `moelab train --out data/models/moelab-mixtral-tiny`."
            )
        name = str(path)
        dtype = dtype or _default_dtype()
    elif embedded_model_dir(str(name)) is not None and not Path(name).expanduser().exists():
        name = str(embedded_model_dir(str(name)))
        dtype = dtype or _default_dtype()
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype; use 'float32', 'bfloat16' or 'float16'")
        dtype = getattr(torch, dtype)
    local = Path(name).expanduser()
    opts = dict(kwargs)
    if dtype is not None:
        opts["dtype"] = dtype
    if device_map is not None:
        opts["device_map"] = device_map
    if not local.exists():
        opts.setdefault("local_files_only", not allow_download)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(local) if local.exists() else str(name), **opts)
    except OSError as e:
        if local.exists() or allow_download:
            raise
        raise OSError(
            f"{str(name)!r} is not a local folder and is not in the local Hugging Face cache; moelab does not "
            "download weights unless asked. Point `name` at a local folder holding config.json and "
            "*.safetensors (e.g. a `huggingface-cli download` output), or pass allow_download=True on a "
            f"machine with hub access. ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    model.eval()
    if not tokenizer:
        return model, None
    return model, _tokenizer_for(local if local.exists() else None, name, allow_download)


def _tokenizer_for(local: Path | None, name, allow_download: bool):
    """Mixtral's SentencePiece tokenizer for the embedded model and Mixtral/Mistral folders without their own."""
    if local is not None and local.resolve().parent == (data_dir() / "models").resolve():
        return load_tokenizer()  # every embedded model uses Mixtral's tokenizer
    if local is not None and not any((local / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        model_type = json.loads((local / "config.json").read_text()).get("model_type")
        if model_type in ("mixtral", "mistral"):
            return load_tokenizer()  # Mixtral/Mistral folders without tokenizer files: Mixtral's own
        raise FileNotFoundError(
            f"{local} has no tokenizer files (tokenizer.json / tokenizer.model) and is a {model_type!r} model, "
            "whose tokenizer moelab does not ship; copy the model's tokenizer files into the folder, or pass "
            "tokenizer=False and tokenize yourself."
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(local or name), local_files_only=not allow_download)
