"""The registry sweep: every MoE model type in the installed transformers, traced or listed with a reason.

    >>> from moelab.arch.capabilities import moe_model_types
    >>> "mixtral" in moe_model_types()            # doctest: +SKIP
    True

`check_architecture(model_type)` builds a tiny random model offline and proves parity:
the recorded experts / weights equal what a separate, check-only hook on each experts
module received (Llama 4: the experts' scaled input), and the model's logits are bitwise
the same with and without tracing for each experts implementation it offers.
`sweep()` runs it for every MoE type; `write_capabilities()` renders docs/capabilities.md
(`python -m moelab.arch.capabilities`), so the matrix is generated, never typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .base import _LAYER_RE
from .registry import ADAPTERS, UNSUPPORTED
from .tiny import is_moe_config, tiny_config

IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")

# causal-LM types whose config does not build from its defaults, proven not MoE (tests/test_arch_sweep.py checks
# each claim); any other such type is swept and reported UNKNOWN with its error, never skipped
NOT_MOE: dict[str, str] = {
    "gemma4_assistant": "its config validator requires text_config.enable_moe_block=False (a dense draft model)",
}

# traced model types without a shape reader in moelab.compute yet, and what their blocks add beyond the readers
NO_ACCOUNTING: dict[str, str] = {
}


@dataclass
class Capability:
    model_type: str
    traced: bool = False
    parity: bool = False
    shared_experts: int = 0
    logits: bool = False
    compute: bool = False         # moelab.compute is exact here: parameters and FLOPs (see `accounting_check`)
    compute_params: bool = False  # count_params(config).total == sum of model.parameters() numel
    compute_flops: bool = False   # forward_flops(config) == FlopCounterMode on an eager forward
    compute_flops_as_transformers: bool = False  # ... once forward_flops(as_transformers=True) counts what the
    #                                              transformers code runs beyond the usual accounting (llama4)
    implementations: tuple = ()
    layers: tuple = ()            # the model's own ids of its MoE layers
    reason: str = ""
    notes: list = field(default_factory=list)


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def moe_model_types() -> list[str]:
    """Causal-LM model types whose default config declares routed experts (plus the registry's own).

    A type whose config does not build from its defaults is included (and `sweep` reports it UNKNOWN with
    the error) unless `NOT_MOE` says why it is not MoE: nothing is passed over silently.
    """
    from transformers import AutoConfig

    out = set()
    for mt in causal_lm_types():
        try:
            cfg = AutoConfig.for_model(mt)
        except Exception:  # noqa: BLE001 - swept (and reported UNKNOWN) unless proven not MoE
            if mt not in NOT_MOE:
                out.add(mt)
            continue
        if _declares_experts(cfg):
            out.add(mt)
    covered = {mt for a in ADAPTERS for mt in a.model_types}
    return sorted(out | (covered & set(causal_lm_types())) | (set(UNSUPPORTED) & set(causal_lm_types())))


def _declares_experts(cfg) -> bool:
    """is_moe_config, also for a config with several text sub-configs (musicgen: text_encoder and decoder)."""
    try:
        return is_moe_config(cfg)
    except ValueError:  # get_text_config() is ambiguous: any of the sub-configs declaring experts counts
        subs = [getattr(cfg, name, None) for name in getattr(cfg, "sub_configs", {})]
        return any(is_moe_config(c) for c in subs if c is not None and not isinstance(c, dict))


def build_error(model_type: str) -> str | None:
    """Why `model_type`'s config does not build offline from its defaults, or None when it does."""
    from transformers import AutoConfig

    try:
        AutoConfig.for_model(model_type)
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


def adapter_model_types() -> dict[str, str]:
    return {mt: a.name for a in ADAPTERS for mt in a.model_types}


def build_tiny(model_type: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()


def _experts_inputs_hook(model):
    """Check-only: what every experts module received, by its layer id (independent of the tracer)."""
    from .base import experts_arguments, layer_of

    got, handles = {}, []
    for path, m in model.named_modules():
        if path.endswith(".experts") and _LAYER_RE.search("." + path):
            def pre(mod, args, kwargs, path=path):
                got[layer_of(path)] = (tuple(a.clone() if torch.is_tensor(a) else a for a in args),
                                       {k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}, mod)
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
    return got, handles


def _parity(model, adapter, ids) -> list[str]:
    """Differences between the trace and what the experts received (empty = parity)."""
    import moelab

    from .base import experts_arguments

    from .base import layer_of

    got, handles = _experts_inputs_hook(model)
    blocks = {}  # each sparse block's input, to read Llama 4's weights off the experts' scaled input
    for path, m in model.named_modules():
        if path.endswith(".experts") and _LAYER_RE.search("." + path):
            block = model.get_submodule(path.rpartition(".")[0])
            handles.append(block.register_forward_pre_hook(
                lambda mod, args, layer=layer_of(path): blocks.__setitem__(
                    layer, args[0].reshape(-1, args[0].shape[-1]).clone())))
    try:
        with moelab.trace(model) as tr, torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    errors = []
    if sorted(got) != tr.layer_ids.tolist():
        return [f"layers traced {tr.layer_ids.tolist()} but experts ran on {sorted(got)}"]
    for j, layer in enumerate(tr.layer_ids.tolist()):
        args, kwargs, mod = got[layer]
        if adapter.record == "experts":
            names = experts_arguments(mod)
            index = kwargs.get(names[0], args[1] if len(args) > 1 else None)
            weights = kwargs.get(names[1], args[2] if len(args) > 2 else None)
            if not np.array_equal(tr.experts[:, j], index.numpy()):
                errors.append(f"layer {layer}: experts differ")
            if not np.array_equal(tr.weights[:, j], weights.float().numpy()):
                errors.append(f"layer {layer}: weights differ")
        else:  # Llama 4: row e*T + t of the experts' input is hidden[t] * weight(t, e), zero off the choice
            routed = args[0]
            hidden = blocks[layer]
            T, E = hidden.shape[0], tr.num_experts
            scale = torch.zeros(E, T, dtype=hidden.dtype)
            for r in range(tr.top_k):
                scale[torch.from_numpy(tr.experts[:, j, r].astype(np.int64)), torch.arange(T)] = \
                    torch.from_numpy(tr.weights[:, j, r]).to(hidden.dtype)
            expect = hidden.repeat(E, 1) * scale.reshape(-1, 1)
            if not torch.equal(expect, routed):
                errors.append(f"layer {layer}: the experts' scaled input differs from hidden * recorded weights")
    return errors


def check_architecture(model_type: str, *, implementations=IMPLEMENTATIONS) -> Capability:
    """Build, trace and check one covered model type (see the module docstring)."""
    import moelab

    from .config_shape import SUPPORTED_MODEL_TYPES
    from .find import adapter_for, model_config

    cap = Capability(model_type)
    model = build_tiny(model_type)
    adapter = adapter_for(model)
    cfg = model_config(model)
    cap.shared_experts = adapter.num_shared(cfg)
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    errors = _parity(model, adapter, ids)
    cap.traced = True
    cap.parity = not errors
    cap.notes += errors
    with moelab.trace(model, logits=True) as tr, torch.no_grad():
        model(ids)
    cap.logits = tr.logits is not None and bool(np.isfinite(tr.logits).all())
    cap.layers = tuple(tr.layer_ids.tolist())
    ok_impls = []
    for impl in implementations:
        try:
            model.set_experts_implementation(impl)
        except Exception:  # noqa: BLE001 - this architecture does not offer it
            continue
        with torch.no_grad():
            plain = model(ids).logits
            with moelab.trace(model, logits=True):
                traced = model(ids).logits
        if torch.equal(plain, traced):
            ok_impls.append(impl)
        else:
            cap.parity = False
            cap.notes.append(f"{impl}: logits changed under tracing")
    cap.implementations = tuple(ok_impls)
    if model_type in SUPPORTED_MODEL_TYPES:
        cap.compute_params, cap.compute_flops, cap.compute_flops_as_transformers, notes = accounting_check(model_type)
        cap.compute = cap.compute_params and cap.compute_flops
        cap.notes += notes
    return cap


def accounting_check(model_type: str) -> tuple[bool, bool, bool, list[str]]:
    """(params exact, FLOPs exact, FLOPs exact with as_transformers=True, notes): moelab.compute against the tiny
    model itself, as tests/test_compute_*.py check it: `count_params(config).total` vs
    `sum(p.numel() for p in model.parameters())`, and `forward_flops(config, batch=2, seq_len=12)` vs
    `FlopCounterMode` on an eager (attention and experts) forward from an empty cache."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    from ..compute import count_params, forward_flops

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type), attn_implementation="eager",
                                             experts_implementation="eager").eval().requires_grad_(False)
    ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(ids)
    numel, counted = sum(p.numel() for p in model.parameters()), fc.get_total_flops()
    predicted_params = count_params(model.config).total
    flops = forward_flops(model.config, batch=2, seq_len=12).total
    flops_tf = forward_flops(model.config, batch=2, seq_len=12, as_transformers=True).total
    notes = [f"compute: count_params {predicted_params} != {numel} parameters"] if predicted_params != numel else []
    if flops != counted:
        notes.append(f"compute: forward_flops {flops:.0f} != FlopCounterMode {counted}"
                     + (" (equal with as_transformers=True)" if flops_tf == counted else ""))
    return predicted_params == numel, flops == counted, flops_tf == counted, notes


def sweep(model_types=None) -> list[Capability]:
    """One Capability per MoE model type: checked when covered, with the reason when not."""
    covered = adapter_model_types()
    out = []
    for mt in model_types or moe_model_types():
        if mt in covered:
            try:
                out.append(check_architecture(mt))
            except Exception as e:  # noqa: BLE001 - reported in the matrix and failed by the test
                out.append(Capability(mt, reason=f"FAILED: {type(e).__name__}: {str(e)[:200]}"))
        else:
            reason = UNSUPPORTED.get(mt)
            if reason is None:
                err = build_error(mt)
                reason = (f"UNKNOWN: does not build offline from its defaults ({err}), so whether it is MoE is "
                          "unknown; add an adapter, a reason in moelab.arch.registry.UNSUPPORTED, or NOT_MOE"
                          if err else "UNKNOWN: an MoE model type with no adapter and no reason in "
                          "moelab.arch.registry.UNSUPPORTED")
            out.append(Capability(mt, reason=reason))
    return out


def capability_markdown(caps: list[Capability]) -> str:
    import transformers

    yes = lambda b: "yes" if b else "no"  # noqa: E731
    def accounting(c):
        if c.compute:
            return "yes"
        if c.compute_params and c.compute_flops_as_transformers:
            return "yes (FLOPs with `as_transformers=True`)"
        if c.compute_params:
            return "params only"
        return f"no: {NO_ACCOUNTING[c.model_type]}" if c.model_type in NO_ACCOUNTING else "no"

    lines = ["# Capability matrix", "",
             f"Generated by `python -m moelab.arch.capabilities` against transformers {transformers.__version__} "
             "(tiny random configs, built offline). Do not edit by hand.", "",
             "| model type | traced | parity | shared experts | logits | compute accounting | experts implementations "
             "| MoE layer ids |", "|---|---|---|---|---|---|---|---|"]
    for c in caps:
        if c.traced:
            lines.append(f"| {c.model_type} | yes | {yes(c.parity)} | {c.shared_experts} | {yes(c.logits)} | "
                         f"{accounting(c)} | {', '.join(c.implementations)} | {', '.join(map(str, c.layers))} |")
    lines += ["", "## Not traced", "", "| model type | reason |", "|---|---|"]
    lines += [f"| {c.model_type} | {c.reason} |" for c in caps if not c.traced]
    return "\n".join(lines) + "\n"


def write_capabilities(path="docs/capabilities.md", model_types=None) -> list[Capability]:
    from pathlib import Path

    caps = sweep(model_types)
    Path(path).write_text(capability_markdown(caps))
    return caps


if __name__ == "__main__":  # pragma: no cover
    import sys

    for c in write_capabilities(*(sys.argv[1:2] or ["docs/capabilities.md"])):
        print(c.model_type, "traced" if c.traced else "-", "parity" if c.parity else "", c.reason, *c.notes)
