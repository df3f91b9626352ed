#!/usr/bin/env bash
# run-in-vm.sh - runs one command in a throw-away QEMU VM that has soft-RoCE
# devices (rdma_rxe of Debian 12's own kernel), for the RDMA tests on hosts
# without RDMA.  See tests/rdma/vm/README.md.
#
#   run-in-vm.sh [-s DIR] [-t SEC] [-n NICS] [-e VAR=VAL]... [-v] [--] COMMAND [ARG...]
#   run-in-vm.sh --build-only | --ready
#
# Exit status: COMMAND's own; 124 timeout; 125 VM or RDMA setup failure (the
# tail of the guest kernel log is printed); 2 bad usage.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "te-rdma-vm: $*" >&2; }

usage() {
  cat <<'EOF'
usage: run-in-vm.sh [options] [--] COMMAND [ARG...]
  -s DIR        directory shared read-write with the guest, mounted at the same
                path, COMMAND's working directory (default: current directory)
  -t SEC        hard limit on the whole VM (default 900); COMMAND itself gets
                SEC minus the time allowed for boot and power-off
  -n NICS       number of rxe devices, 1 (default, or TE_VM_NICS) to 4
  -e VAR=VAL    environment variable for COMMAND (repeatable)
  -v            show the guest kernel's messages and trace its setup
  --build-only  install the host packages and build (or find) the cached image
  --ready       exit 0 if the VM can start without root (qemu installed, image
                cached), else 1
  --rebuild     build the image again
environment: TE_VM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/te-rdma-vm),
  TE_VM_EXTRA_PKGS (guest packages beyond the RDMA ones), TE_VM_MEM (MiB,
  default 1024), TE_VM_SMP (default 2), TE_VM_ACCEL (auto|kvm|tcg), TE_VM_NICS.
COMMAND sees RDMA_VM=1 RDMA_DEV=rxe0 RDMA_IB_PORT=1 RDMA_GID_INDEX RDMA_IP
  (rxe0's RoCE v2 IPv4 GID and address), and for all devices, comma separated:
  RDMA_DEVS RDMA_GID_INDEXES RDMA_IPS RDMA_NETDEVS.
EOF
}

share=$PWD timeout_s=900 nics=${TE_VM_NICS:-1} verbose=0 mode=run envs=()
while (($#)); do
  case $1 in
    -s) share=$2; shift 2 ;;
    -t) timeout_s=$2; shift 2 ;;
    -n) nics=$2; shift 2 ;;
    -e) envs+=("$2"); shift 2 ;;
    -v) verbose=1; shift ;;
    --build-only) mode=build; shift ;;
    --ready) mode=ready; shift ;;
    --rebuild) mode=rebuild; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) log "unknown option $1"; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $mode != run || $# -gt 0 ]] || { usage >&2; exit 2; }
[[ $timeout_s =~ ^[0-9]+$ && $timeout_s -ge 30 ]] || { log "-t needs at least 30 s"; exit 2; }
[[ $nics =~ ^[1-4]$ ]] || { log "NICS must be 1 to 4"; exit 2; }

# The image: its recipe (build-image.sh and the guest packages) names it.
guest_pkgs="mount kmod iproute2 procps libibverbs1 librdmacm1 ibverbs-providers
ibverbs-utils rdmacm-utils perftest ${TE_VM_EXTRA_PKGS:-}"
guest_pkgs=$(tr -s ', \n' '\n' <<<"$guest_pkgs" | sed '/^$/d' | sort -u | paste -sd, -)
cache=${TE_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:?set HOME or TE_VM_CACHE}/.cache}/te-rdma-vm}
key=$({ cat "$here/build-image.sh"; echo "$guest_pkgs"; } | sha256sum | cut -c1-16)
image=$cache/$key
host_pkgs="qemu-system-x86 mmdebstrap cpio kmod xz-utils"

missing_host_pkgs() {
  local p
  for p in $host_pkgs; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"
  done
}

if [[ $mode == ready ]]; then
  command -v qemu-system-x86_64 >/dev/null && [[ -f $image/initrd.cpio ]]
  exit
fi

# Host packages, then the image (once per recipe, one builder at a time).  A
# cached image and qemu are all that booting needs: no root, no network.
if [[ $mode == rebuild || ! -f $image/initrd.cpio ]] || ! command -v qemu-system-x86_64 >/dev/null; then
  [[ $EUID == 0 ]] || { log "installing packages and building the image need root"; exit 125; }
  mapfile -t missing < <(missing_host_pkgs)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  mkdir -p "$cache"
  exec 8>"$cache/.lock"
  flock 8
  [[ $mode != rebuild ]] || rm -rf "$image"
  if [[ ! -f $image/initrd.cpio ]]; then
    t0=$SECONDS
    # Three tries: a mirror that fails once (seen in CI) must not fail a test.
    for try in 1 2 3; do
      if apt-get update -qq && TE_VM_GUEST_PKGS=$guest_pkgs bash "$here/build-image.sh" "$image"; then
        break
      fi
      ((try < 3)) || { log "building the image failed 3 times"; exit 125; }
      log "building the image failed (try $try of 3); again in $((try * 15)) s"
      sleep $((try * 15))
    done
    log "image built in $((SECONDS - t0)) s: $image ($(du -sh "$image" | cut -f1))"
    # Images of other recipes unused for two days go.
    find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -mtime +2 \
      -exec rm -rf {} + 2>/dev/null || true
  fi
  exec 8>&-
fi
touch "$image" 2>/dev/null || true   # in use: keeps it from the clean-up above
if [[ $mode != run ]]; then
  log "image ready: $image ($(cat "$image/kernel.txt"))"
  exit 0
fi

share=$(cd "$share" && pwd -P)
case $share in   # mounted over the same path in the guest
  /|/usr|/usr/*|/etc|/etc/*|/bin|/bin/*|/sbin|/sbin/*|/lib*|/proc*|/sys*|/dev*|/run*|/tmp)
    log "cannot share $share"; exit 2 ;;
esac

# KVM only where the CPU has VMX/SVM: some hosts offer a /dev/kvm that cannot
# run a stock kernel.  Otherwise TCG, one host thread per vCPU.
accel=${TE_VM_ACCEL:-auto}
if [[ $accel == auto ]]; then
  accel=tcg
  [[ -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm
fi
case $accel in
  kvm) accel_args=(-accel kvm -cpu host) ;;
  tcg) accel_args=(-accel 'tcg,thread=multi' -cpu max) ;;
  *) log "TE_VM_ACCEL: auto, kvm or tcg"; exit 2 ;;
esac
kernel=$image/vmlinux
[[ -f $kernel ]] || kernel=$image/vmlinuz
bios=()
[[ -f /usr/share/qemu/qboot.rom ]] && bios=(-bios /usr/share/qemu/qboot.rom)   # boots faster

# The control share: guest.sh, its settings, the command; the guest writes rc.
ctl=$(mktemp -d "${TMPDIR:-/tmp}/te-rdma-vm.XXXXXX")
vm_pid=
# shellcheck disable=SC2317 # run by the trap
cleanup() {
  [[ -z $vm_pid ]] || kill -TERM "$vm_pid" 2>/dev/null || true   # timeout passes it on to qemu
  rm -rf "$ctl"
}
trap cleanup EXIT
# COMMAND stops first, leaving the VM time to boot (TCG: ~15-30 s) and report.
margin=$((timeout_s >= 180 ? 60 : timeout_s / 3))
cp "$here/guest.sh" "$ctl/guest.sh"
printf 'SHARE=%q\nCMD_TIMEOUT=%q\nNICS=%q\nVERBOSE=%q\n' \
  "$share" $((timeout_s - margin)) "$nics" "$verbose" > "$ctl/config"
{
  echo 'exec 2>&1'
  for e in ${envs[@]+"${envs[@]}"}; do printf 'export %q\n' "$e"; done
  printf 'exec'; printf ' %q' "$@"; echo
} > "$ctl/cmd.sh"

append="panic=-1 rdinit=/init edd=off"
if ((verbose)); then append+=" console=ttyS0"; else append+=" console=ttyS1"; fi
((verbose)) && log "accel $accel, image $image, share $share, $nics NIC(s)"

# In the background so that a signal to us (ctest's timeout) still stops qemu.
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
  -nodefaults -no-user-config -display none -no-reboot \
  -machine q35 "${accel_args[@]}" -smp "${TE_VM_SMP:-2}" -m "${TE_VM_MEM:-1024}" \
  ${bios[@]+"${bios[@]}"} \
  -kernel "$kernel" -initrd "$image/initrd.cpio" -append "$append" \
  -serial stdio -serial "file:$ctl/kernel.log" -nic none \
  -virtfs "local,path=$ctl,mount_tag=te_ctl,security_model=none,id=ctl" \
  -virtfs "local,path=$share,mount_tag=te_share,security_model=none,id=share" \
  </dev/null &
vm_pid=$!
stopped=0
trap 'stopped=1; kill -TERM "$vm_pid" 2>/dev/null || true' INT TERM HUP
qrc=0
wait "$vm_pid" || qrc=$?
while kill -0 "$vm_pid" 2>/dev/null; do qrc=0; wait "$vm_pid" || qrc=$?; done
vm_pid=

guest_log() {
  [[ -s $ctl/kernel.log ]] || { log "the guest kernel wrote nothing (too little memory?)"; return 0; }
  log "guest kernel log, last lines:"
  tail -n 40 "$ctl/kernel.log" >&2
}
if ((stopped)); then
  log "stopped by a signal"; exit 125
elif [[ -s $ctl/rc ]]; then
  rc=$(cat "$ctl/rc")
  ((rc != 125)) || guest_log
  exit "$rc"
elif ((qrc == 124 || qrc == 137)); then
  log "timeout: VM stopped after $timeout_s s"; guest_log; exit 124
else
  log "the VM ended without a result (qemu exit $qrc)"; guest_log; exit 125
fi
