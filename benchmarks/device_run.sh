#!/usr/bin/env bash
# The one command for the GPU machine (issue 8), run from the repository root:
#
#     bash benchmarks/device_run.sh
#
# It downloads nothing. It prints diagnostics (nvidia-smi, python, torch, CUDA), makes pytorch-metric-learning and
# faiss-cpu importable from the wheels in benchmarks/wheels/ if the machine lacks them (or tries pip, which may have
# no network: then that part is skipped), and runs two chains at once, each part under its own time limit:
#
#   CPU chain, pinned to cores 0,1 (taskset) with 2 threads: pipelines + peaks, then retrieval (10k, 30k, 100k)
#   GPU chain, on the other cores:                              pipelines + peaks, then retrieval (10k, 100k, 1M),
#                                                               then the GPU unit test of the chunked retrieval
#
# Results go to $OUT (the machine's folder that comes back; build/device if unset): benchmark_cpu.json,
# retrieval_cpu.json, benchmark_gpu.json, retrieval_gpu.json, cpu.log, gpu.log, device_run.log. Each JSON is
# rewritten after every part, so a part cut off by its time limit keeps what the earlier parts measured.
# With the default limits the whole script ends within about 4 minutes (typically less). Knobs (environment):
#   PARALLEL=0            run the CPU chain first, then the GPU chain (cleaner CPU numbers, twice the time)
#   RUN_CPU=0 / RUN_GPU=0 / RUN_GPU_TEST=0    skip a chain or the GPU unit test
#   CPU_TRAIN_IMAGES (7680), GPU_TRAIN_IMAGES (60000), CPU_RETRIEVAL_SIZES ("10000 30000 100000"),
#   GPU_RETRIEVAL_SIZES ("10000 100000 1000000"), COMPILE (auto: on for the GPU)
#   CPU_TIMEOUT (110), CPU_RETRIEVAL_TIMEOUT (100), GPU_TIMEOUT (120), GPU_RETRIEVAL_TIMEOUT (70), GPU_TEST_TIMEOUT (30)
#   CPU_EXTRA_ARGS, GPU_EXTRA_ARGS: more benchmark.py options for each chain's runs (later options win)
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-build/device}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 COURSE_ROOT=$PWD PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$OUT/device_run.log") 2>&1

log() { echo "[device_run $(date +%H:%M:%S)] $*"; }
have() { "$PY" -c "import $1" >/dev/null 2>&1; }

diagnostics() {
    log "diagnostics"
    nvidia-smi || log "nvidia-smi: not available"
    "$PY" --version || { log "no $PY: nothing can run"; exit 1; }
    echo "cores: $(nproc)  taskset: $(command -v taskset || echo missing)"
    "$PY" -c "import torch; print('torch', torch.__version__, '| cuda available:', torch.cuda.is_available(),
'| device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')" \
        || { log "python has no torch: nothing can run"; exit 1; }
}

install_missing() {  # $1: module, $2: wheel glob, $3: pip name
    have "$1" && { log "$1: present"; return 0; }
    local wheels=(benchmarks/wheels/$2)
    if [ -e "${wheels[0]}" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/bench_site "${wheels[@]}" \
            && export PYTHONPATH="/tmp/bench_site:$PYTHONPATH"
    else
        timeout 60 "$PY" -m pip install -q --timeout 5 --retries 0 --target /tmp/bench_site "$3" \
            && export PYTHONPATH="/tmp/bench_site:$PYTHONPATH"
    fi
    have "$1" && log "$1: installed" || log "$1: missing ($4)"
}

bench() {  # $1: time limit (s), then taskset's cpu list ('' for none), then benchmark.py's arguments
    local limit=$1 cpus=$2
    shift 2
    local pin=()
    [ -n "$cpus" ] && command -v taskset >/dev/null && pin=(taskset -c "$cpus")
    log "run (limit ${limit}s): ${pin[*]} $PY benchmarks/benchmark.py $*"
    timeout --signal=TERM --kill-after=5 "$limit" "${pin[@]}" "$PY" benchmarks/benchmark.py "$@"
    local rc=$?
    [ $rc -eq 124 ] && log "stopped at its ${limit}s limit: the JSON holds the parts finished before" \
        || log "exit status $rc"
}

# shellcheck disable=SC2086  # the sizes and extra options are meant to split into words
cpu_chain() {
    bench "${CPU_TIMEOUT:-110}" 0,1 --device cpu --threads 2 --train-images "${CPU_TRAIN_IMAGES:-7680}" \
        --device-variants --skip-retrieval --out "$OUT/benchmark_cpu.json" ${CPU_EXTRA_ARGS:-}
    bench "${CPU_RETRIEVAL_TIMEOUT:-100}" 0,1 --device cpu --threads 2 --skip-peaks --skip-training \
        --skip-embedding --retrieval-sizes ${CPU_RETRIEVAL_SIZES:-10000 30000 100000} --out "$OUT/retrieval_cpu.json" \
        ${CPU_EXTRA_ARGS:-}
}

gpu_chain() {
    local others="2-$(($(nproc) - 1))"
    bench "${GPU_TIMEOUT:-120}" "$others" --device cuda --train-images "${GPU_TRAIN_IMAGES:-60000}" \
        --compile "${COMPILE:-auto}" --skip-retrieval --out "$OUT/benchmark_gpu.json" ${GPU_EXTRA_ARGS:-}
    bench "${GPU_RETRIEVAL_TIMEOUT:-70}" "$others" --device cuda --skip-peaks --skip-training --skip-embedding \
        --retrieval-sizes ${GPU_RETRIEVAL_SIZES:-10000 100000 1000000} --out "$OUT/retrieval_gpu.json" \
        ${GPU_EXTRA_ARGS:-}
    if [ "${RUN_GPU_TEST:-1}" = 1 ] && have pytest; then
        log "GPU unit test of the chunked retrieval"
        timeout "${GPU_TEST_TIMEOUT:-30}" "$PY" -m pytest -q -p no:cacheprovider tests/test_evaluation.py -k gpu
    fi
}

summary() {
    log "summary"
    for f in "$OUT"/benchmark_cpu.json "$OUT"/retrieval_cpu.json "$OUT"/benchmark_gpu.json "$OUT"/retrieval_gpu.json; do
        [ -s "$f" ] || { echo "== $f: none"; continue; }
        echo "== $f"
        "$PY" -c "import json, sys; sys.path.insert(0, 'benchmarks'); import benchmark
print(benchmark.table(json.load(open(sys.argv[1]))))" "$f" || echo "(could not read $f)"
    done
}

START=$SECONDS
diagnostics
install_missing pytorch_metric_learning "pytorch_metric_learning-*.whl" pytorch-metric-learning \
    "needed by course_utils: nothing can run"
install_missing faiss "faiss_cpu-*.whl" faiss-cpu "the CPU retrieval uses torch's chunked matrix products instead"
have pytorch_metric_learning || exit 1
GPU=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && GPU=1
[ "$GPU" = 1 ] || log "no CUDA device: the GPU chain is skipped"

if [ "${PARALLEL:-1}" = 1 ]; then
    CPU_PID=
    [ "${RUN_CPU:-1}" = 1 ] && { cpu_chain > "$OUT/cpu.log" 2>&1 & CPU_PID=$!; }
    [ "${RUN_GPU:-1}" = 1 ] && [ "$GPU" = 1 ] && gpu_chain > "$OUT/gpu.log" 2>&1
    [ -n "$CPU_PID" ] && wait "$CPU_PID"  # (a bare `wait` would also wait for the log's tee, forever)
else
    [ "${RUN_CPU:-1}" = 1 ] && cpu_chain > "$OUT/cpu.log" 2>&1
    [ "${RUN_GPU:-1}" = 1 ] && [ "$GPU" = 1 ] && gpu_chain > "$OUT/gpu.log" 2>&1
fi
for f in "$OUT"/cpu.log "$OUT"/gpu.log; do
    [ -s "$f" ] && { echo "== $f (last lines)"; tail -n 15 "$f"; }
done
summary
log "done in $((SECONDS - START)) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
