#!/bin/bash
# test_lab_harness.sh - the lab itself: two hosts joined by two links and
# three hosts on a switch reach each other over every link; a cut link stops
# carrying traffic and a restored one carries it again; a rate cap is in
# place on both ends; cleanup leaves no namespace and no process behind,
# also when the test fails halfway.
. "$(dirname "$0")/lab.sh"
lab_init

reach() { lab_reach "$1" "$2"; }

# A lab in a child shell that exits with an error halfway: nothing may remain.
child=$(bash -c '. "$1"; lab_init; lab_host a; lab_host b;
    lab_link a b 9; lab_spawn a /dev/null sleep 60; echo "$LAB_PREFIX $LAB_LAST_PID"; false' \
    _ "$(dirname "$0")/lab.sh")
read -r child_prefix child_pid <<<"$child"
[ -n "$child_pid" ] || fail "the child lab printed no prefix"
ip netns list | grep -q "^$child_prefix-" && fail "namespaces of a failed lab remain"
kill -0 "$child_pid" 2>/dev/null && fail "a process of a failed lab remains"
echo "cleanup after failure: ok ($child_prefix gone)"

lab_host h1
lab_host h2
lab_link h1 h2 1 200mbit
lab_link h1 h2 2 200mbit
for net in 1 2; do
    reach h1 "$(lab_addr $net 2)" || fail "link $net does not carry traffic"
    for h in h1 h2; do
        lab_exec $h tc qdisc show dev lab$net | grep -q "tbf.*rate 200Mbit" ||
            fail "no rate cap on $h lab$net"
    done
done
echo "two links: ok"

lab_cut h2 lab1
reach h1 "$(lab_addr 1 2)" && fail "a cut link still carries traffic"
reach h1 "$(lab_addr 2 2)" || fail "cutting link 1 broke link 2"
lab_restore h2 lab1
for _ in 1 2 3 4 5; do
    reach h1 "$(lab_addr 1 2)" && break
    sleep 0.5
done
reach h1 "$(lab_addr 1 2)" || fail "a restored link carries no traffic"
echo "cut and restore: ok"

lab_host h3
lab_bridge 5
lab_attach h1 5 1
lab_attach h2 5 2
lab_attach h3 5 3 100mbit
reach h1 "$(lab_addr 5 3)" || fail "switch: h1 cannot reach h3"
reach h3 "$(lab_addr 5 2)" || fail "switch: h3 cannot reach h2"
lab_spawn h3 /dev/null sleep 30
lab_kill_host h3
sleep 0.2
kill -0 "$LAB_LAST_PID" 2>/dev/null && fail "lab_kill_host left a process"
echo "switch of three hosts, kill a host: ok"
echo "PASS"
