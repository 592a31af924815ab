"""Alias of `moelab.tools.notebooks` (moved there: project tooling lives in `moelab.tools`).

`import moelab.notebooks` returns the very module `moelab.tools.notebooks`, and
`python -m moelab.notebooks ...` runs its `main` with the same arguments.
"""

import sys

from .tools import notebooks as _impl

if __name__ == "__main__":
    _impl.main()
else:
    sys.modules[__name__] = _impl
