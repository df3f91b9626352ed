#!/usr/bin/env bash
# run_in_vm.sh - ctest driver of the `rdma` label: boots the soft-RoCE VM of
# vm/run-in-vm.sh (or TE_RDMA_VM_SCRIPT) once and runs every RDMA check inside
# it (guest_checks.sh).  `run_in_vm.sh --nics N` instead boots N rxe devices
# and checks them, with N >= 4 engines on two NICs each too (guest_nics.sh,
# test_rdma_rails_vm; always the project's own VM script).
# Exits 77 (skipped) with the reason when no VM can run here.
set -euo pipefail
build=${TE_BUILD_DIR:?TE_BUILD_DIR is not set}
own=$(cd "$(dirname "$0")" && pwd)/vm/run-in-vm.sh
nics=1
[[ ${1:-} != --nics ]] || nics=${2:?--nics N}
script=$own
((nics > 1)) || script=${TE_RDMA_VM_SCRIPT:-${TE_RDMA_VM_SCRIPT_DEFAULT:-$own}}
skip() { echo "SKIP: $*"; exit 77; }

[[ -f $script ]] || skip "the VM script $script does not exist (TE_RDMA_VM_SCRIPT)"
# Root and apt install qemu and build the image once; then it is cached and
# any user can boot it.
if ! { [[ $script == "$own" ]] && bash "$own" --ready; }; then
  [[ $(id -u) == 0 ]] ||
    skip "needs root once (installs qemu-system-x86 and mmdebstrap, builds the VM image)"
  command -v apt-get >/dev/null || { [[ $script != "$own" ]] && command -v qemu-system-x86_64 >/dev/null; } ||
    skip "no apt-get to install qemu and build the Debian 12 guest image"
fi
guest=$build/tests/rdma/guest_checks.sh
((nics == 1)) || guest=$build/tests/rdma/guest_nics.sh
bin=$build/tests/test_rdma_vm
((nics < 4)) || bin=$build/tests/test_rdma_rails_vm
[[ -x $bin && -f $guest ]] || { echo "$bin or $guest is not built in $build"; exit 1; }

# Runtime libraries of the host-built binaries that the guest image lacks
# (libte: jansson, hwloc; etcd plugin: curl; Check: subunit).  RDMA_VM_* are
# the names of the script that TE_RDMA_VM_SCRIPT used to point at.
extra=${TE_VM_EXTRA_PKGS:-${RDMA_VM_EXTRA_PKGS:-"libjansson4 libhwloc15 libcurl4 libsubunit0"}}
mem=${TE_VM_MEM:-${RDMA_VM_MEM:-1536}}
export TE_VM_EXTRA_PKGS=$extra RDMA_VM_EXTRA_PKGS=$extra TE_VM_MEM=$mem RDMA_VM_MEM=$mem
t0=$SECONDS
bash "$script" --build-only || { echo "building the RDMA VM image failed"; exit 1; }
echo "rdma-vm: image ready after $((SECONDS - t0)) s"
t0=$SECONDS
envs=()
for v in MC_LOG_LEVEL TE_RDMA_BENCH_ONLY TE_RDMA_BENCH_ROUNDS; do
  [[ -z ${!v:-} ]] || envs+=(-e "$v=${!v}")
done
((nics == 1)) || envs+=(-n "$nics")
# 125 is the VM's own failure (boot, soft-RoCE setup), not the tests': one
# more boot tells a passing hiccup of a loaded host from a broken setup.
for boot in 1 2; do
  rc=0
  bash "$script" -s "$build" -t 900 ${envs[@]+"${envs[@]}"} -- bash "$guest" || rc=$?
  echo "rdma-vm: exit $rc after $((SECONDS - t0)) s (boot $boot)"
  ((rc == 125 && boot == 1)) || break
  echo "rdma-vm: the VM failed before the tests ran; booting it once more"
done
exit $rc
