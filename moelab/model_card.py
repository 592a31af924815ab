"""Alias of `moelab.tools.model_card` (moved there: project tooling lives in `moelab.tools`).

`import moelab.model_card` returns the very module `moelab.tools.model_card`, and
`python -m moelab.model_card ...` runs its `main` with the same arguments.
"""

import sys

from .tools import model_card as _impl

if __name__ == "__main__":
    _impl.main()
else:
    sys.modules[__name__] = _impl
