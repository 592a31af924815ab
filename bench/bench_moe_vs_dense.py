"""
Measured MoE vs dense throughput (prefill and decode) next to the accounting's FLOP and
weight-byte ratios. See moelab/bench/moe_vs_dense.py for the method and docs/compute.md for results.

    python bench/bench_moe_vs_dense.py                               # mid-size Mixtral, CPU, bf16
    python bench/bench_moe_vs_dense.py --batch-sizes 1 --seq-lens 32 --layers 2 --repeats 3
    python bench/bench_moe_vs_dense.py --full-size-layers 2 --dtype fp16 --device cuda --out gpu.csv
"""

from moelab.bench.cli import main

if __name__ == "__main__":
    main()
