"""Alias of `moelab.tools.train` (moved there: project tooling lives in `moelab.tools`).

Every name of `moelab.tools.train` reads through this module (`from moelab.train import X`
works), and `python -m moelab.train ...` runs its `main` with the same arguments.
"""

from .tools import train as _impl


def __getattr__(name):
    return getattr(_impl, name)


if __name__ == "__main__":
    _impl.main()
