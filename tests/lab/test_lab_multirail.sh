#!/bin/bash
# test_lab_multirail.sh - the TCP transport uses every NIC the device filter
# names: two hosts joined by two links, each capped at the same rate R; in
# one run te-bench moves data over one link (--device_name lab1) and then
# over both (lab1,lab2), writes and reads.  Both links must move at least
# 1.8x what one moves, with no failed request, and each link must carry a
# fair part of the two-link run.
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_bench.sh"
lab_init
bench_init

RATE_MBIT=${TE_LAB_RATE_MBIT:-200}
SECONDS_PER_RUN=${TE_LAB_SECONDS:-4}

bench_two_links "$RATE_MBIT"
seg=$BENCH_SEG

# One run: prints "gbps" and checks that it failed nothing.
run() {
    local op=$1 devs=$2 out=$BENCH_DIR/$1-$2.json
    bench_run h1 "$out" --segment_id "$seg" --local_server_name "$(lab_addr 1 1)" \
        --device_name "$devs" --operation "$op" --block_size 256K --batch_size 16 \
        --threads 2 --buffer_size 64M --duration "$SECONDS_PER_RUN" ||
        { cat "$out" "$out.err"; fail "$op over $devs: te-bench failed"; }
    [ "$(bench_field "$out" error)" = 0 ] || fail "$op over $devs: a request failed"
    bench_field "$out" throughput_gbps
}

for op in write read; do
    one=$(run $op lab1)
    tx1=$(bench_tx h1 lab1) tx2=$(bench_tx h1 lab2) rx1=$(bench_tx h2 lab1) rx2=$(bench_tx h2 lab2)
    two=$(run $op lab1,lab2)
    d1=$(($(bench_tx h1 lab1) - tx1 + $(bench_tx h2 lab1) - rx1))
    d2=$(($(bench_tx h1 lab2) - tx2 + $(bench_tx h2 lab2) - rx2))
    awk -v op=$op -v one="$one" -v two="$two" -v d1=$d1 -v d2=$d2 -v r=$RATE_MBIT 'BEGIN {
        printf "%s: one link %.1f Mbit/s, two links %.1f Mbit/s (%.2fx; R = %d Mbit/s); " \
               "two-link run: lab1 %.1f MB, lab2 %.1f MB\n",
               op, one * 8000, two * 8000, two / one, r, d1 / 1e6, d2 / 1e6 }'
    awk -v one="$one" -v two="$two" 'BEGIN { exit !(one > 0 && two >= 1.8 * one) }' ||
        fail "$op: two links moved less than 1.8x one link"
    awk -v d1=$d1 -v d2=$d2 'BEGIN { exit !(d1 > 0.3 * (d1 + d2) && d2 > 0.3 * (d1 + d2)) }' ||
        fail "$op: the two-link run did not use both links"
done
echo "PASS"
