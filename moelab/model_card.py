"""Alias of `moelab.tools.model_card` (moved there: project tooling lives in `moelab.tools`).

Every name of `moelab.tools.model_card` reads through this module (`from moelab.model_card import X`
works), and `python -m moelab.model_card ...` runs its `main` with the same arguments.
"""

from .tools import model_card as _impl


def __getattr__(name):
    return getattr(_impl, name)


if __name__ == "__main__":
    _impl.main()
