"""Alias of `moelab.tools.train` (moved there: project tooling lives in `moelab.tools`).

`import moelab.train` returns the very module `moelab.tools.train`, and
`python -m moelab.train ...` runs its `main` with the same arguments.
"""

import sys

from .tools import train as _impl

if __name__ == "__main__":
    _impl.main()
else:
    sys.modules[__name__] = _impl
