# lab_bench.sh - te-bench inside lab hosts (source after lab.sh): a target
# whose segment name is read from its output, initiators whose --json result
# is kept, and the figures pulled out of it.  Needs TE_BUILD_DIR (set by ctest).
#
#   bench_init                     finds te-bench and the plugins (skip if absent)
#   bench_target H LOG ARGS...     starts a target in H, prints its segment name
#   bench_run H OUT ARGS...        runs an initiator in H (bounded), result in OUT
#   bench_field OUT NAME           a number of the result ("throughput_gbps", "error")
#   bench_tx H DEV                 bytes sent so far by DEV in H
#   bench_two_links MBIT           hosts h1 and h2 joined by links 1 and 2, each
#                                  capped at MBIT Mbit/s, and a target on h2
#                                  over both: its segment name in BENCH_SEG

bench_init() {
    TE_BUILD_DIR=${TE_BUILD_DIR:-$(dirname "$0")/../../build}
    BENCH=$TE_BUILD_DIR/bin/te-bench
    [ -x "$BENCH" ] || lab_skip "no te-bench in $TE_BUILD_DIR/bin (build it first)"
    export MC_PLUGIN_PATH=$TE_BUILD_DIR/plugins
    export MC_TE_SAME_HOST_TRANSPORT=0 # the lab's hosts share a kernel: keep shm out
    BENCH_DIR=$(mktemp -d)
    LAB_TMP+=("$BENCH_DIR")
}

bench_target() {
    local h=$1 log=$2 seg
    shift 2
    lab_spawn "$h" "$log" "$BENCH" --mode target "$@"
    for _ in $(seq 1 100); do
        seg=$(sed -n 's/^te-bench target: segment \([^,]*\),.*/\1/p' "$log")
        [ -n "$seg" ] && break
        kill -0 "$LAB_LAST_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$seg" ] || { cat "$log" >&2; return 1; }
    echo "$seg"
}

bench_run() {
    local h=$1 out=$2
    shift 2
    lab_exec "$h" timeout 120 "$BENCH" --json "$@" >"$out" 2>"$out.err"
}

bench_field() {
    sed -n "s/.*\"$2\":\(-\{0,1\}[0-9.]*\).*/\1/p" "$1" | head -n 1
}

bench_tx() {
    lab_exec "$1" cat "/sys/class/net/$2/statistics/tx_bytes"
}

bench_two_links() {
    lab_host h1
    lab_host h2
    lab_link h1 h2 1 "$1mbit"
    lab_link h1 h2 2 "$1mbit"
    BENCH_SEG=$(bench_target h2 "$BENCH_DIR/target.log" --local_server_name "$(lab_addr 1 2)" \
        --device_name lab1,lab2 --buffer_size 64M) || fail "the target did not start"
    echo "target $BENCH_SEG, links capped at $1 Mbit/s"
}
