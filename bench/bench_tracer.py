"""Tracing overhead: traced / plain forward time, and corpus-tracing throughput on the embedded model.

    $ python bench/bench_tracer.py --out bench/results/tracer_cpu.json                 # CPU (~6-10 min)
    $ python bench/bench_tracer.py --device cuda --dtypes float16 --full-size-layers 4  # on a GPU

The same as `moelab bench tracer ...`: the experiment lives in `moelab.bench.tracer_overhead`
(method and targets in its docstring) and is timed by the one harness,
`moelab.bench.time_interleaved`.
"""

from moelab.bench.tracer_overhead import main

if __name__ == "__main__":
    main()
