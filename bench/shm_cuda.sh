#!/usr/bin/env bash
# bench/shm_cuda.sh - same-host CPU memory over shm from a process that has CUDA loaded (as
# every SGLang/vLLM worker has) against one that has not: te-bench loopback, protocol tcp,
# with and without --load_cuda, interleaved N times; prints the medians, their ratio and the
# bytes each transport carried.  Without a GPU, --fake uses the test suite's fake CUDA
# (build/tests/fake-cuda).  A benchmark: it prints figures and asserts nothing.
#
# usage: bench/shm_cuda.sh [--build DIR] [--repeat N] [--duration S] [--block BYTES] [--fake]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${TE_BUILD_DIR:-$here/../build}
repeat=3
duration=3
block=1048576
fake=0
while [ $# -gt 0 ]; do
    case $1 in
        --build) build=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --block) block=$2; shift 2 ;;
        --fake) fake=1; shift ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/shm_cuda.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
bench=$build/bin/te-bench
[ -x "$bench" ] || { echo "bench/shm_cuda.sh: $bench not built" >&2; exit 1; }
if [ "$fake" = 1 ]; then
    export LD_LIBRARY_PATH=$build/tests/fake-cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq "$repeat"); do
    for mode in plain cuda; do
        extra=()
        [ "$mode" = cuda ] && extra=(--load_cuda)
        MC_TE_SAME_HOST_TRANSPORT=1 "$bench" --mode loopback --protocol tcp --operation write \
            --block_size "$block" --batch_size 16 --duration "$duration" --json --metrics \
            "${extra[@]}" 2>/dev/null | sed "s/^/$mode\t/" >> "$out"
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
gbps, carried = {}, {}
for line in open(sys.argv[1]):
    mode, _, text = line.rstrip("\n").partition("\t")
    try:
        o = json.loads(text)
    except ValueError:
        continue
    if "metrics" in o:
        for name, c in o["metrics"]["transports"].items():
            carried.setdefault(mode, {}).setdefault(name, 0)
            carried[mode][name] += c["read_bytes"] + c["write_bytes"]
    elif "throughput_gbps" in o:
        gbps.setdefault(mode, []).append(o["throughput_gbps"])
for mode in ("plain", "cuda"):
    v = gbps.get(mode, [])
    med = statistics.median(v) if v else float("nan")
    bytes_ = ", ".join(f"{k} {b / 1e9:.2f} GB" for k, b in sorted(carried.get(mode, {}).items()))
    label = "CUDA loaded    " if mode == "cuda" else "no CUDA        "
    print(f"{label} {med:7.2f} GB/s (runs: {', '.join(f'{x:.2f}' for x in v)}); carried: {bytes_}")
p, c = gbps.get("plain"), gbps.get("cuda")
if p and c:
    print(f"ratio CUDA / no CUDA: {statistics.median(c) / statistics.median(p):.2f}")
PY
