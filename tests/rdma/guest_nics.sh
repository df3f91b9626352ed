#!/bin/bash
# guest_nics.sh - runs INSIDE the VM booted with several soft-RoCE devices
# (run_in_vm.sh --nics N): every device of RDMA_DEVS is listed by
# ibv_devices with an active port, rxe1 reaches rxe0 over the VM's bridge
# (ibv_rc_pingpong between two devices), and a cut link (its bridge port
# down) takes that device's port down and leaves the others up.  With four
# devices, test_rdma_rails_vm runs in between: an engine on two of them and
# its peer on the other two (striping, link cuts in the middle of a run).
set -euo pipefail
pass=0 fail=0
check() {   # NAME COMMAND...: run it, count it
  local name=$1
  shift
  if "$@"; then pass=$((pass + 1)); echo "== ok: $name"
  else fail=$((fail + 1)); echo "== FAIL: $name"; fi
}
port_state() { ibv_devinfo -d "$1" | awk '$1 == "state:" {print $2}'; }   # one port
IFS=, read -r -a devs <<<"$RDMA_DEVS"
IFS=, read -r -a ips <<<"$RDMA_IPS"
IFS=, read -r -a gids <<<"$RDMA_GID_INDEXES"
IFS=, read -r -a ndevs <<<"$RDMA_NETDEVS"
echo "devices ${RDMA_DEVS}, addresses ${RDMA_IPS}, GID indexes ${RDMA_GID_INDEXES}, netdevs ${RDMA_NETDEVS}"
ibv_devices

listed=$(ibv_devices | awk 'NR > 2 {print $1}' | sort | paste -sd, -)
check "ibv_devices lists ${#devs[@]} devices ($listed)" \
  test "$listed" = "$(printf '%s\n' "${devs[@]}" | sort | paste -sd, -)"
for d in "${devs[@]}"; do
  check "$d port active" test "$(port_state "$d")" = PORT_ACTIVE
done

between() {   # server device, client device, client's target address
  local c=(ibv_rc_pingpong -n 100 -s 4096) spid
  timeout 60 "${c[@]}" -d "$1" -g "${gids[0]}" > /tmp/server.log 2>&1 & spid=$!
  sleep 1
  timeout 50 "${c[@]}" -d "$2" -g "${gids[1]}" "$3" || { cat /tmp/server.log; return 1; }
  wait $spid || { cat /tmp/server.log; return 1; }
}
check "ibv_rc_pingpong ${devs[1]} -> ${devs[0]}" between "${devs[0]}" "${devs[1]}" "${ips[0]}"

if ((${#devs[@]} >= 4)); then
  build=$(cd "$(dirname "$0")/../.." && pwd)
  t0=$SECONDS
  check "engines with two NICs each: striping, link cuts mid-run" \
    env TE_TEST_BIN_DIR="$build/tests" CK_FORK=yes MC_LOG_LEVEL="${MC_LOG_LEVEL:-WARNING}" \
    timeout 600 "$build/tests/test_rdma_rails_vm"
  echo "== test_rdma_rails_vm: $((SECONDS - t0)) s"
  # rdma_rxe's own faults, e.g. a WR completed with success on its
  # completer's error path (it warns once per boot): context for a failure.
  if dmesg | grep -q 'WARNING:.*rxe'; then
    echo "guest kernel warnings from rdma_rxe:"
    dmesg | grep -A6 'WARNING:.*rxe' | head -40
  fi
fi

last=$((${#devs[@]} - 1))
ip link set "${ndevs[last]}-sw" down
sleep 1
check "link of ${devs[last]} cut: port down" test "$(port_state "${devs[last]}")" = PORT_DOWN
check "link of ${devs[last]} cut: ${devs[0]} still active" \
  test "$(port_state "${devs[0]}")" = PORT_ACTIVE
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
