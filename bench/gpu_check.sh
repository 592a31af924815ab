#!/usr/bin/env bash
# The GPU measurements, in one call on a CUDA machine (one H100/H200 was lent to some sessions):
#   1. tracing overhead in fp16 and bf16 on the mid-size Mixtral config (bench/bench_tracer.py),
#   2. tracing overhead in fp16 on Mixtral 8x7B's real layer dims, 4 layers, random weights,
#   3. MoE vs dense at full layer size (depths 1 and 2, scaled to 32 layers; bench/bench_moe_vs_dense.py).
# Every result file records the device name (moelab.bench.environment).
#
#   OUT=bench/results/gpu bash bench/gpu_check.sh
#
#   STEPS=moe_vs_dense_cuda OUT=... bash bench/gpu_check.sh   # one step
#
# Where the machine lacks the pinned transformers, put wheels in .whl/ (transformers, tokenizers,
# regex); they are installed into /tmp/site first. Each step has its own time limit; a failing
# step does not stop the next.
set -u
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/gpu_env.txt"
want() { [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]; }   # STEPS="a b": run only those
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; echo "rc=$?" >> "$OUT/$name.txt"; tail -n 25 "$OUT/$name.txt"; }
want tracer_cuda_midsize && step tracer_cuda_midsize 130 python3 bench/bench_tracer.py --device cuda --dtypes float16 bfloat16 --budget-s 12 \
  --corpus-tokens 0 --out "$OUT/tracer_cuda_midsize.json"
want tracer_cuda_fullsize && step tracer_cuda_fullsize 130 python3 bench/bench_tracer.py --device cuda --dtypes float16 --full-size-layers 4 \
  --budget-s 15 --corpus-tokens 0 --out "$OUT/tracer_cuda_fullsize.json"
want moe_vs_dense_cuda && step moe_vs_dense_cuda 240 python3 bench/bench_moe_vs_dense.py --full-size-layers 2 --dtype fp16 --device cuda \
  --batch-sizes 1 8 32 --seq-lens 512 --repeats 5 --out "$OUT/moe_vs_dense_cuda.csv"
