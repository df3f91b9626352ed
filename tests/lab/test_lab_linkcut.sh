#!/bin/bash
# test_lab_linkcut.sh - a failed rail's slices move to the others: two hosts
# joined by two links capped at R; te-bench writes over both, one link is
# cut in the middle of the run (on the target's side, so the initiator only
# sees its bytes stop moving) and restored later.  No request may fail, the
# run must average at least 0.9 R, and the restored link must carry traffic
# again before the run ends (the rail's cool-down ran out).
. "$(dirname "$0")/lab.sh"
. "$(dirname "$0")/lab_bench.sh"
lab_init
bench_init

RATE_MBIT=${TE_LAB_RATE_MBIT:-200}

bench_two_links "$RATE_MBIT"
seg=$BENCH_SEG

out=$BENCH_DIR/cut.json
lab_spawn h1 "$out" timeout 120 "$BENCH" --json --metrics --segment_id "$seg" \
    --local_server_name "$(lab_addr 1 1)" --device_name lab1,lab2 --operation write \
    --block_size 256K --batch_size 16 --threads 2 --buffer_size 64M --duration 16
bench=$LAB_LAST_PID
sleep 5
lab_cut h2 lab1
echo "lab1 cut at 5 s"
sleep 5
lab_restore h2 lab1
echo "lab1 restored at 10 s"
sleep 3
before=$(bench_tx h1 lab1)
sleep 3
after=$(bench_tx h1 lab1)
wait "$bench" || { cat "$out"; fail "te-bench failed"; }
grep -q '"throughput_gbps"' "$out" || { cat "$out"; fail "no result"; }

gbps=$(bench_field "$out" throughput_gbps)
errors=$(bench_field "$out" error)
retries=$(bench_field "$out" retries)
pauses=$(bench_field "$out" rail_pauses)
awk -v g="$gbps" -v r=$RATE_MBIT -v e="$errors" -v t="$retries" -v p="$pauses" \
    -v late=$((after - before)) 'BEGIN {
    printf "link cut for 5 s of 16: %.1f Mbit/s average (%.2f R), %s failed batches, " \
           "%s slices moved to the other rail, %s rail pauses; lab1 sent %.1f MB in the " \
           "last seconds\n", g * 8000, g * 8000 / r, e, t, p, late / 1e6 }'
[ "$errors" = 0 ] || fail "a request failed"
awk -v g="$gbps" -v r=$RATE_MBIT 'BEGIN { exit !(g * 8000 >= 0.9 * r) }' ||
    fail "the run averaged less than 0.9 R"
[ "${retries:-0}" -gt 0 ] || fail "no slice was moved off the cut link"
[ $((after - before)) -gt 1000000 ] || fail "the restored link carries no traffic"
echo "PASS"
