#!/usr/bin/env bash
# bench/run.sh - measures, in one go on this machine, iperf3 over 127.0.0.1, te-bench over tcp
# and over shm, a single-thread memcpy of the same sizes, the kernel's process_vm_writev of one
# 64 KiB block per call and a raw TCP ping-pong; repeats each N times (interleaved) and prints
# medians and ratios as markdown tables to paste into README.md.
#
# usage: bench/run.sh [--build DIR] [--repeat N] [--duration S] [--sizes "4096 65536 ..."]
#                     [--operation write|read] [--iperf-time S] [--raw FILE] [--plot FILE.png]
# needs: DIR/bin/te-bench, DIR/bin/te-memcpy-bw (cmake --build DIR), iperf3, python3;
# --plot: matplotlib for /usr/bin/python3 (apt-get install python3-matplotlib).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${TE_BUILD_DIR:-$here/../build}
repeat=3
duration=3
iperf_time=5
sizes="4096 65536 1048576 4194304"
operation=write
raw=""
plot=""

while [ $# -gt 0 ]; do
    arg=$1
    case $arg in --*=*) set -- "${arg%%=*}" "${arg#*=}" "${@:2}" ;; esac
    case $1 in
        --build) build=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        --operation) operation=$2; shift 2 ;;
        --iperf-time) iperf_time=$2; shift 2 ;;
        --raw) raw=$2; shift 2 ;;
        --plot) plot=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

bench=$build/bin/te-bench
baseline=$build/bin/te-memcpy-bw
for tool in "$bench" "$baseline"; do
    [ -x "$tool" ] || { echo "bench/run.sh: $tool not built (cmake --build $build)" >&2; exit 1; }
done
for tool in iperf3 python3; do
    command -v $tool >/dev/null || { echo "bench/run.sh: $tool is not installed" >&2; exit 1; }
done

# The plot needs matplotlib: Debian's python3-matplotlib is for /usr/bin/python3 (the
# python3 first on PATH may be another one).  Checked before minutes of measuring.
plot_python=${TE_PLOT_PYTHON:-/usr/bin/python3}
[ -x "$plot_python" ] || plot_python=python3
if [ -n "$plot" ] && ! "$plot_python" -c 'import matplotlib' 2>/dev/null; then
    echo "bench/run.sh: --plot needs matplotlib for $plot_python;" \
         "install it with: apt-get install python3-matplotlib" >&2
    exit 1
fi

out=$(mktemp -d)
iperf_pid=""
cleanup() {
    [ -n "$iperf_pid" ] && kill "$iperf_pid" 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
results=$out/results.tsv
: > "$results"

log() { printf '%s\n' "$*" >&2; }

# record TAG COMMAND...: runs a command that prints JSON lines, keeps them tagged.
record() {
    local tag=$1; shift
    local line
    if ! line=$("$@" 2>>"$out/stderr.log" | tail -n 1) || [ -z "$line" ]; then
        log "  $tag: FAILED (see stderr below)"; tail -n 5 "$out/stderr.log" >&2
        return 0
    fi
    printf '%s\t%s\n' "$tag" "$line" >> "$results"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

listening() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

# iperf3 on one stream over loopback: a one-off server on a free port, then the client.
run_iperf() {
    local port tries=0 json=""
    port=$(free_port)
    timeout $((iperf_time + 30)) iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    iperf_pid=$!
    until listening "$port"; do
        tries=$((tries + 1))
        [ $tries -lt 100 ] || break
        sleep 0.05
    done
    json=$(iperf3 -c 127.0.0.1 -p "$port" -t "$iperf_time" -J 2>/dev/null) || json=""
    kill "$iperf_pid" 2>/dev/null || true
    wait "$iperf_pid" 2>/dev/null || true
    iperf_pid=""
    [ -n "$json" ] || { log "  iperf3: FAILED on port $port"; return 0; }
    printf 'iperf3\t%s\n' "$(printf '%s' "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({"throughput_gbps": d["end"]["sum_received"]["bits_per_second"] / 8e9}))')" \
        >> "$results"
}

te() { "$bench" --mode loopback --json --duration "$duration" "$@"; }

log "bench/run.sh: $repeat round(s), te-bench/memcpy $duration s each, iperf3 $iperf_time s," \
    "sizes: $sizes, operation: $operation"
for r in $(seq 1 "$repeat"); do
    log "round $r/$repeat"
    log "  iperf3"; run_iperf
    for b in $sizes; do
        log "  block $b: memcpy, tcp, shm"
        record "memcpy/$b" "$baseline" --json --block_size "$b" --batch_size 128 \
            --buffer_size 268435456 --duration "$duration"
        record "tcp/$b" env MC_TE_SAME_HOST_TRANSPORT=0 "$bench" --mode loopback --json \
            --duration "$duration" --protocol tcp --operation "$operation" --block_size "$b" \
            --batch_size 128
        record "shm/$b" te --protocol shm --operation "$operation" --block_size "$b" --batch_size 128
    done
    if [[ " $sizes " == *" 4096 "* ]]; then
        log "  shm 4 KiB, blocks scattered (no two adjacent: nothing to merge)"
        record "shm-scatter/4096" te --protocol shm --operation "$operation" --block_size 4096 \
            --batch_size 128 --scatter
    fi
    log "  process_vm_writev, one 64 KiB block per call"
    record "vm_writev/65536" "$baseline" --vm_writev --json --block_size 65536 --batch_size 128 \
        --buffer_size 268435456 --duration "$duration"
    log "  64 B round trips: raw TCP ping-pong, te-bench sync write (tcp, shm)"
    record "pingpong" "$baseline" --pingpong --size 64 --duration "$duration" --json
    record "tcp-sync64" env MC_TE_SAME_HOST_TRANSPORT=0 "$bench" --mode loopback --json \
        --duration "$duration" --protocol tcp --operation write --block_size 64 --batch_size 1
    record "shm-sync64" te --protocol shm --operation write --block_size 64 --batch_size 1
done

[ -n "$raw" ] && cp "$results" "$raw"

python3 - "$results" "$repeat" "$duration" "$iperf_time" "$operation" <<'EOF'
import json, os, platform, statistics, sys, time

path, repeat, duration, iperf_time, operation = sys.argv[1:6]
runs = {}
for line in open(path):
    tag, _, text = line.rstrip("\n").partition("\t")
    try:
        runs.setdefault(tag, []).append(json.loads(text))
    except ValueError:
        pass

def values(tag, key):
    return [r[key] for r in runs.get(tag, []) if isinstance(r.get(key), (int, float))]

def med(tag, key):
    v = values(tag, key)
    return statistics.median(v) if v else None

def spread(tag, key, fmt):
    v = values(tag, key)
    if not v:
        return "n/a"
    m = fmt.format(statistics.median(v))
    return m if len(v) < 2 else "{} ({}–{})".format(m, fmt.format(min(v)), fmt.format(max(v)))

def ratio(a, b):
    return "{:.2f}".format(a / b) if a is not None and b else "n/a"

def size(n):
    n = int(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or n % 1024:
            return "{} {}".format(n, unit)
        n //= 1024
    return "{} TiB".format(n)

def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "NOT met")

# te-bench says which transport served each run: a tcp figure measured over
# shm (or the reverse) would make every ratio below meaningless.
for tag, recs in sorted(runs.items()):
    want = "tcp" if tag.startswith("tcp") else "shm" if tag.startswith("shm") else None
    got = {r.get("transport") for r in recs} - {None}
    if want and got and got != {want}:
        print("WARNING: runs tagged {} were served by {}".format(tag, ", ".join(sorted(got))))

sizes = sorted({int(t.split("/")[1]) for t in runs if "/" in t and not t.startswith("vm_writev")})
iperf = med("iperf3", "throughput_gbps")
print("### te-bench vs baselines ({}; {} cores; kernel {}; {})".format(
    platform.node(), os.cpu_count(), platform.release(), time.strftime("%Y-%m-%d")))
print()
print("Medians of {} runs (min–max in brackets); te-bench `--mode loopback --batch_size 128 "
      "--threads 1 --operation {}`, {} s per run; iperf3 one stream over 127.0.0.1, {} s; "
      "memcpy single thread, same block pattern. GB/s = 1e9 bytes/s.".format(
          repeat, operation, duration, iperf_time))
print()
print("| block | tcp GB/s | iperf3 GB/s | tcp / iperf3 | tcp ops/s | shm GB/s | memcpy GB/s "
      "| shm / memcpy | shm ops/s |")
print("|---|---|---|---|---|---|---|---|---|")
for b in sizes:
    t, s, m = "tcp/%d" % b, "shm/%d" % b, "memcpy/%d" % b
    print("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        size(b), spread(t, "throughput_gbps", "{:.3f}"), spread("iperf3", "throughput_gbps", "{:.3f}"),
        ratio(med(t, "throughput_gbps"), iperf), spread(t, "ops_per_sec", "{:.0f}"),
        spread(s, "throughput_gbps", "{:.3f}"), spread(m, "throughput_gbps", "{:.3f}"),
        ratio(med(s, "throughput_gbps"), med(m, "throughput_gbps")),
        spread(s, "ops_per_sec", "{:.0f}")))
print()
pp, tcp64, shm64 = med("pingpong", "p50_us"), med("tcp-sync64", "p50_us"), med("shm-sync64", "p50_us")
print("| 64 B round trip, p50 | µs | / raw TCP ping-pong |")
print("|---|---|---|")
print("| raw TCP ping-pong (two processes, TCP_NODELAY) | {} | 1.00 |".format(
    spread("pingpong", "p50_us", "{:.1f}")))
print("| te-bench tcp, sync write (batch 1) | {} | {} |".format(
    spread("tcp-sync64", "p50_us", "{:.1f}"), ratio(tcp64, pp)))
print("| te-bench shm, sync write (batch 1) | {} | {} |".format(
    spread("shm-sync64", "p50_us", "{:.1f}"), ratio(shm64, pp)))
print()

def large_tcp_ok():
    big = [b for b in sizes if b >= 1 << 20]
    if not big or not iperf:
        return None
    return all((med("tcp/%d" % b, "throughput_gbps") or 0) >= 0.9 * iperf for b in big)

vmw = med("vm_writev/65536", "throughput_gbps")
print("| shm 4 KiB, batch 128 | process_vm_writev, one 64 KiB block per call | shm / process_vm_writev |")
print("|---|---|---|")
print("| {} GB/s, {} ops/s | {} GB/s, {} calls/s | {} |".format(
    spread("shm/4096", "throughput_gbps", "{:.3f}"), spread("shm/4096", "ops_per_sec", "{:.0f}"),
    spread("vm_writev/65536", "throughput_gbps", "{:.3f}"),
    spread("vm_writev/65536", "calls_per_sec", "{:.0f}"), ratio(med("shm/4096", "throughput_gbps"), vmw)))
print("| scattered (`--scatter`): {} GB/s, {} ops/s | | {} |".format(
    spread("shm-scatter/4096", "throughput_gbps", "{:.3f}"),
    spread("shm-scatter/4096", "ops_per_sec", "{:.0f}"),
    ratio(med("shm-scatter/4096", "throughput_gbps"), vmw)))
print()

ops4k = med("tcp/4096", "ops_per_sec")
tcp4k, shm4k = med("tcp/4096", "throughput_gbps"), med("shm/4096", "throughput_gbps")
shmops4k = med("shm/4096", "ops_per_sec")
shm1m, mem1m = med("shm/1048576", "throughput_gbps"), med("memcpy/1048576", "throughput_gbps")
print("| target | measured | verdict |")
print("|---|---|---|")
print("| tcp ≥ 0.9 × iperf3 at blocks ≥ 1 MiB | {} | {} |".format(
    ", ".join("{}: {}".format(size(b), ratio(med("tcp/%d" % b, "throughput_gbps"), iperf))
              for b in sizes if b >= 1 << 20) or "n/a", verdict(large_tcp_ok())))
print("| tcp ≥ 150k ops/s at 4 KiB, batch 128 | {} | {} |".format(
    "{:.0f}".format(ops4k) if ops4k else "n/a", verdict(None if ops4k is None else ops4k >= 150000)))
print("| tcp 64 B sync write ≤ 1.5 × raw ping-pong | {} | {} |".format(
    ratio(tcp64, pp), verdict(None if not (tcp64 and pp) else tcp64 <= 1.5 * pp)))
print("| shm ≥ 0.7 × memcpy at 1 MiB | {} | {} |".format(
    ratio(shm1m, mem1m), verdict(None if not (shm1m and mem1m) else shm1m >= 0.7 * mem1m)))
print("| tcp ≥ 1.0 × iperf3 at 4 KiB, batch 128 | {} | {} |".format(
    ratio(tcp4k, iperf), verdict(None if not (tcp4k and iperf) else tcp4k >= iperf)))
print("| shm ≥ 1.5 M ops/s at 4 KiB, batch 128 | {} | {} |".format(
    "{:.0f}".format(shmops4k) if shmops4k else "n/a",
    verdict(None if shmops4k is None else shmops4k >= 1.5e6)))
print("| shm ≥ 0.8 × process_vm_writev of 64 KiB at 4 KiB, batch 128 | {} | {} |".format(
    ratio(shm4k, vmw), verdict(None if not (shm4k and vmw) else shm4k >= 0.8 * vmw)))
shmsc, shmscops = med("shm-scatter/4096", "throughput_gbps"), med("shm-scatter/4096", "ops_per_sec")
print("| the same two with the blocks scattered (`--scatter`) | {:} ops/s, {} | {}, {} |".format(
    "{:.0f}".format(shmscops) if shmscops else "n/a", ratio(shmsc, vmw),
    verdict(None if shmscops is None else shmscops >= 1.5e6),
    verdict(None if not (shmsc and vmw) else shmsc >= 0.8 * vmw)))
print("| tcp 64 B sync write ≤ 1.1 × raw ping-pong (same run) | {} | {} |".format(
    ratio(tcp64, pp), verdict(None if not (tcp64 and pp) else tcp64 <= 1.1 * pp)))
print("| shm 64 B sync write ≤ 3 µs | {} | {} |".format(
    "{:.2f} µs".format(shm64) if shm64 else "n/a", verdict(None if not shm64 else shm64 <= 3.0)))
EOF

[ -z "$plot" ] || "$plot_python" "$here/plot.py" "$results" "$plot" "$operation" "$repeat"
