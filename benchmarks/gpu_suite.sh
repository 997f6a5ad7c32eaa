#!/usr/bin/env bash
# The prepared GPU check of issue 20 item 8, as one script with a time limit per step (a failing or slow step
# costs only its own row): ms/update at 16x64 for tiny/small/large, fp32 and bf16, eager / one CUDA graph /
# torch.compile of the whole update; env frames/s (DMC and Meta-World, rendering on the GPU through EGL); and
# the quick default run (`transfer.run preset=quick`, 12k frames) on the GPU.
#
#   bash benchmarks/gpu_suite.sh                 # results: JSON, the quick run's metrics and a log under $OUT
#   DEVICE=cpu SIZES=tiny QUICK_FRAMES=400 bash benchmarks/gpu_suite.sh   # a dry run of the script on a CPU
#
# Every step re-packs $OUT/results.tgz, so a run stopped at any point keeps what finished.
set -u
OUT=${OUT:-$PWD/gpu_results}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-tiny small large}
REPEATS=${REPEATS:-10}
QUICK_FRAMES=${QUICK_FRAMES:-12000}
R=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}

step() {  # step LIMIT_S command...: runs it under a time limit, logs rc and seconds, re-packs the results
    local limit=$1 t0
    shift
    echo "=== $* (limit ${limit}s)"
    t0=$(date +%s)
    timeout "$limit" "$@"
    echo "=== rc=$? after $(($(date +%s) - t0)) s"
    tar czf "$OUT/results.tgz" -C "$R" .
}

bench() {  # bench LIMIT_S throughput-args...
    local limit=$1
    shift
    step "$limit" "$PY" -m benchmarks.throughput --device "$DEVICE" --sizes $SIZES --repeats "$REPEATS" \
        --no-envs --run-frames 0 --out "$R" "$@"
}

"$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>/dev/null

bench 60 --update eager
bench 60 --update eager --bf16
if [ "$DEVICE" = cuda ]; then
    bench 90 --update graphs
    bench 90 --update graphs --bf16
fi
step 60 "$PY" -m benchmarks.envs --suites dmc metaworld --steps 300 --out "$R"
step 200 "$PY" -m transfer.run preset=quick "device=$DEVICE" "trainer.steps=$QUICK_FRAMES" logger.wandb=disabled \
    logger.progress=false "run_dir=$R/quick"
rm -rf "$R"/quick/checkpoint* "$R"/quick/replay* 2>/dev/null
tar czf "$OUT/results.tgz" -C "$R" .
SIZES=small bench 100 --update compile-step --bf16
echo "=== done"
