"""Project tooling, not analysis: what builds moelab's own artefacts.

    >>> from moelab.tools import train, model_card, notebooks    # doctest: +SKIP

* `moelab.tools.train`       trains the embedded model (`moelab train`, `python -m moelab.tools.train`)
* `moelab.tools.model_card`  measures an embedded model's targets and writes its card
                             (`python -m moelab.tools.model_card data/models/NAME`)
* `moelab.tools.notebooks`   executes the notebooks and refreshes `figures/` (`moelab figures`, `make figures`)

The analysis library (`moelab.routing_trace`, `store`, `metrics`, `plots`, `compute`, ...)
never imports from here; `tests/test_imports.py` checks it. The old paths
`moelab.train`, `moelab.model_card` and `moelab.notebooks` are aliases of these modules.
"""
