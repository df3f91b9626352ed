#!/bin/bash
# test_lab_scale.sh - the scale scenario: 8 hosts on one switch, 2 engines
# each (lab-node), their metadata in a 3-member etcd cluster on h1..h3.
# Every engine writes and reads back a fresh pattern to every other one for
# a while; then every process of h8 is killed.  After that, transfers to
# h8's engines must fail within the deadline (MC_TRANSFER_TIMEOUT), every
# transfer between the others must go on verified, and h8's segments must
# vanish from etcd within the lease time (MC_METADATA_LEASE_TTL).
. "$(dirname "$0")/lab.sh"
lab_init
command -v etcd >/dev/null || lab_skip "etcd is not installed (Debian/Ubuntu package etcd-server)"
TE_BUILD_DIR=${TE_BUILD_DIR:-$(dirname "$0")/../../build}
NODE=$TE_BUILD_DIR/tests/lab-node
[ -x "$NODE" ] || lab_skip "no lab-node in $TE_BUILD_DIR/tests (build it first)"
export MC_PLUGIN_PATH=$TE_BUILD_DIR/plugins MC_TE_SAME_HOST_TRANSPORT=0
export MC_TRANSFER_TIMEOUT=2 MC_METADATA_LEASE_TTL=3 MC_LOG_LEVEL=ERROR
DEADLINE_MS=2000 LEASE_MS=3000 HOSTS=8 BEFORE_S=8 AFTER_S=10
DIR=${TE_LAB_KEEP:-$(mktemp -d)}
[ -n "$TE_LAB_KEEP" ] || LAB_TMP+=("$DIR")

lab_bridge 1
for k in $(seq 1 $HOSTS); do
    lab_host h$k
    lab_attach h$k 1 $k
done

# etcd's v3 gateway over bash's /dev/tcp (no curl needed): POST PATH BODY from h1.
etcd_call() {
    lab_exec h1 timeout 3 bash -c 'exec 3<>/dev/tcp/10.77.1.1/2379 &&
        printf "POST %s HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" \
            "$1" ${#2} "$2" >&3 && cat <&3' _ "$1" "$2" 2>/dev/null
}
etcd_has() {
    etcd_call /v3/kv/range "{\"key\":\"$(printf %s "$1" | base64 -w0)\"}" | grep -q '"kvs"'
}

cluster=e1=http://10.77.1.1:2380,e2=http://10.77.1.2:2380,e3=http://10.77.1.3:2380
for k in 1 2 3; do
    url=http://10.77.1.$k
    lab_spawn h$k "$DIR/etcd$k.log" etcd --name e$k --data-dir "$DIR/etcd$k" \
        --listen-client-urls $url:2379 --advertise-client-urls $url:2379 \
        --listen-peer-urls $url:2380 --initial-advertise-peer-urls $url:2380 \
        --initial-cluster $cluster --initial-cluster-state new --initial-cluster-token "te-$$"
done
for _ in $(seq 1 100); do
    etcd_call /v3/kv/range '{"key":"AA=="}' | grep -q '"header"' && break
    sleep 0.2
done
etcd_call /v3/kv/range '{"key":"AA=="}' | grep -q '"header"' || { tail "$DIR"/etcd1.log; fail "etcd did not start"; }
echo "etcd cluster of 3 up on h1..h3"

meta=etcd://10.77.1.1:2379,10.77.1.2:2379,10.77.1.3:2379
nodes=()
for k in $(seq 1 $HOSTS); do
    for m in 1 2; do
        lab_spawn h$k "$DIR/node-$k-$m.log" timeout 120 "$NODE" "10.77.1.$k:1700$m" "$meta" \
            "$DIR/peers" 65536
        nodes+=("$k-$m")
    done
done
for n in "${nodes[@]}"; do
    for _ in $(seq 1 150); do
        grep -q '^READY\|^FAIL' "$DIR/node-$n.log" && break
        sleep 0.2
    done
    grep -q '^READY' "$DIR/node-$n.log" || { cat "$DIR/node-$n.log"; fail "node $n did not start"; }
done
{
    echo "END $(($(date +%s%3N) + (BEFORE_S + AFTER_S) * 1000))"
    sed -n 's/^READY //p' "$DIR"/node-*.log
} >"$DIR/peers.tmp" && mv "$DIR/peers.tmp" "$DIR/peers"
echo "$(($(wc -l <"$DIR/peers") - 1)) engines on $HOSTS hosts; all-to-all verified round trips for $BEFORE_S s"

sleep $BEFORE_S
kill_ms=$(date +%s%3N)
lab_kill_host h$HOSTS
killed_ms=$(date +%s%3N) # attempts that start after this must fail
echo "KILL $kill_ms $killed_ms" >"$DIR/kill"
echo "killed every process of h$HOSTS"
gone_ms=
while [ $(($(date +%s%3N) - kill_ms)) -lt $((LEASE_MS + 5000)) ]; do
    if ! etcd_has "mooncake/ram/10.77.1.$HOSTS:17001" && ! etcd_has "mooncake/ram/10.77.1.$HOSTS:17002"; then
        gone_ms=$(($(date +%s%3N) - kill_ms))
        break
    fi
    sleep 0.2
done
etcd_has "mooncake/ram/10.77.1.1:17001" || fail "a live engine's segment is not in etcd (wrong key?)"
sleep $AFTER_S
sleep 4 # the nodes finish their last round

awk -v kill=$kill_ms -v killed=$killed_ms -v dead="10.77.1.$HOSTS:" -v dl=$DEADLINE_MS '
    $2 == "ok" || $2 == "fail" || $2 == "bad" {
        to_dead = index($1, dead) == 1
        after = $3 >= kill
        if ($2 == "bad") bad++
        else if (to_dead && $3 >= killed) { dead_n++; if ($2 == "ok") dead_ok++; if ($4 > dead_max) dead_max = $4 }
        else if (to_dead) next
        else if (!to_dead && $2 == "fail") live_fail++
        else if (!to_dead && after) live_after++
        else if (!to_dead) live_before++
    }
    END {
        printf "live pairs: %d verified round trips before the kill, %d after, %d failed, %d data mismatches\n",
            live_before, live_after, live_fail, bad
        printf "to the killed host: %d attempts after the kill, %d succeeded, slowest failure %d ms (deadline %d ms)\n",
            dead_n, dead_ok, dead_max, dl
        exit !(bad == 0 && live_fail == 0 && live_before > 0 && live_after > 0 && dead_n > 0 &&
               dead_ok == 0 && dead_max <= dl + 1000)
    }' $(for k in $(seq 1 $((HOSTS - 1))); do echo "$DIR/node-$k-1.log $DIR/node-$k-2.log"; done) ||
    fail "the survivors' transfers did not behave"
echo "h$HOSTS's segments left etcd ${gone_ms:-never} ms after the kill (lease ${LEASE_MS} ms)"
[ -n "$gone_ms" ] && [ "$gone_ms" -le $((LEASE_MS + 3000)) ] || fail "the killed host's metadata stayed"
for k in $(seq 1 $((HOSTS - 1))); do
    for m in 1 2; do
        grep -q '^DONE' "$DIR/node-$k-$m.log" || { tail "$DIR/node-$k-$m.log"; fail "node $k-$m did not finish"; }
    done
done
echo "PASS"
