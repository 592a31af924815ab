"""A small set of named torch hooks that is always removed: the hook layer of tracing and interventions.

    >>> from moelab.hooks import HookSet
    >>> with HookSet() as hooks:                                        # doctest: +SKIP
    ...     hooks.forward("layers.0.router", router, lambda m, i, o: print(o[2].shape))
    ...     model(ids)
    >>> # every hook is gone here, also when the block raised

Like ROME's `nethook.TraceDict`: hooks are registered inside a context manager,
named from module paths (`layers.{i}.router`), and removed in `finally`. This
module knows nothing of routing; `moelab.tracer` and `moelab.intervene` decide
what the hooks do.
"""

from __future__ import annotations

from typing import Callable

from torch import nn


class HookSet:
    """Registers forward / forward-pre hooks by name and removes all of them on close."""

    def __init__(self):
        self._handles: dict[str, object] = {}

    def forward(self, name: str, module: nn.Module, fn: Callable, *, prepend: bool = False) -> None:
        """`fn(module, inputs, output)` after `module` runs; may return a replacement output."""
        self._add(name, module.register_forward_hook(fn, prepend=prepend))

    def forward_pre(self, name: str, module: nn.Module, fn: Callable, *, with_kwargs: bool = False,
                    prepend: bool = False) -> None:
        """`fn(module, args[, kwargs])` before `module` runs."""
        self._add(name, module.register_forward_pre_hook(fn, with_kwargs=with_kwargs, prepend=prepend))

    def _add(self, name: str, handle) -> None:
        if name in self._handles:
            handle.remove()
            raise ValueError(f"a hook named {name!r} is already registered in this HookSet")
        self._handles[name] = handle

    @property
    def names(self) -> list[str]:
        return list(self._handles)

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        while self._handles:
            _, h = self._handles.popitem()
            h.remove()

    def __enter__(self) -> "HookSet":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
