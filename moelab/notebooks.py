"""Alias of `moelab.tools.notebooks` (moved there: project tooling lives in `moelab.tools`).

Every name of `moelab.tools.notebooks` reads through this module (`from moelab.notebooks import X`
works), and `python -m moelab.notebooks ...` runs its `main` with the same arguments.
"""

from .tools import notebooks as _impl


def __getattr__(name):
    return getattr(_impl, name)


if __name__ == "__main__":
    _impl.main()
