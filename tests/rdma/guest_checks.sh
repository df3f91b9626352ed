#!/bin/bash
# guest_checks.sh - runs INSIDE the soft-RoCE VM (from run_in_vm.sh): the
# two-process RDMA transfer tests, then throughput figures of the engine and
# of ib_write_bw on the same device (printed, never asserted).
cd "$(dirname "$0")/../.." || exit 1   # the build tree
export TE_TEST_BIN_DIR=$PWD/tests TE_BUILD_DIR=$PWD CK_FORK=yes CK_DEFAULT_TIMEOUT=300
export MC_LOG_LEVEL=${MC_LOG_LEVEL:-WARNING}
echo "rdma device $RDMA_DEV, GID index $RDMA_GID_INDEX, IP $RDMA_IP, $(nproc) vCPUs"
ibv_devinfo -d "$RDMA_DEV" | grep -E 'hca_id|state|active_mtu|link_layer'

rc=0
if [ "${TE_RDMA_BENCH_ONLY:-0}" != 1 ]; then
  t0=$(date +%s)
  timeout 600 ./tests/test_rdma_vm
  rc=$?
  echo "== test_rdma_vm: exit $rc ($(( $(date +%s) - t0 )) s)"
  # rdma and tcp in one engine: a tcp-only peer, failover when RDMA breaks.
  t0=$(date +%s)
  timeout 300 ./tests/test_rdma_mixed_vm || rc=1
  echo "== test_rdma_mixed_vm: exit $rc ($(( $(date +%s) - t0 )) s)"
fi

# Figures, TE_RDMA_BENCH_ROUNDS times (default 1), alternating: 64 MiB through
# the engine (64 KiB slices, 2 QPs), then ib_write_bw with the same message size.
bw=(ib_write_bw -d "$RDMA_DEV" -x "$RDMA_GID_INDEX" -s 65536 -n 1000 -F --report_gbits)
for _ in $(seq "${TE_RDMA_BENCH_ROUNDS:-1}"); do
  timeout 120 ./tests/test_rdma_vm bench 64 || echo "== bench failed"
  timeout 100 "${bw[@]}" > /tmp/bw_server.log 2>&1 & spid=$!
  sleep 1
  timeout 90 "${bw[@]}" "$RDMA_IP" > /tmp/bw_client.log 2>&1
  wait $spid
  echo "IB_WRITE_BW $(awk '$1 == 65536 {print $4; exit}' /tmp/bw_client.log) Gb/s average"
done
exit $rc
