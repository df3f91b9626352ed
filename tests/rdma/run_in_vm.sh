#!/usr/bin/env bash
# run_in_vm.sh - ctest driver of the `rdma` label: boots the soft-RoCE VM once
# (../shared/rdma-vm/run-in-rdma-vm.sh) and runs every RDMA check inside it
# (guest_checks.sh).  Exits 77 (skipped) with the reason when it cannot run.
set -u
build=${TE_BUILD_DIR:?TE_BUILD_DIR is not set}
script=${TE_RDMA_VM_SCRIPT:-${TE_RDMA_VM_SCRIPT_DEFAULT:-}}
skip() { echo "SKIP: $*"; exit 77; }

[[ -n $script && -f $script ]] ||
  skip "the rdma-vm script was not found (${script:-unset}); set TE_RDMA_VM_SCRIPT"
[[ $(id -u) == 0 ]] || skip "needs root (the VM script installs its packages and builds its image)"
if [[ ! -e /dev/kvm ]] && ! command -v qemu-system-x86_64 >/dev/null; then
  command -v apt-get >/dev/null || skip "no /dev/kvm, no qemu, and no apt-get to install qemu"
fi
[[ -x $build/tests/test_rdma_vm && -f $build/tests/rdma/guest_checks.sh ]] ||
  { echo "test_rdma_vm is not built in $build"; exit 1; }

# Runtime libraries of the host-built binaries that the guest image lacks
# (libte: jansson, hwloc; etcd plugin: curl; Check: subunit).
export RDMA_VM_EXTRA_PKGS=${RDMA_VM_EXTRA_PKGS:-"libjansson4 libhwloc15 libcurl4 libsubunit0"}
export RDMA_VM_MEM=${RDMA_VM_MEM:-1536}
bash "$script" --build-only || { echo "building the RDMA VM image failed"; exit 1; }
t0=$SECONDS
envs=()
for v in MC_LOG_LEVEL TE_RDMA_BENCH_ONLY TE_RDMA_BENCH_ROUNDS; do
  [[ -n ${!v:-} ]] && envs+=(-e "$v=${!v}")
done
bash "$script" -s "$build" -t 900 ${envs[@]+"${envs[@]}"} -- bash "$build/tests/rdma/guest_checks.sh"
rc=$?
echo "rdma-vm: exit $rc after $((SECONDS - t0)) s"
exit $rc
