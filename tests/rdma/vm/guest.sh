#!/bin/bash
# guest.sh - PID 1 of the VM of run-in-vm.sh (the image's /init execs it from
# the control share /ctl): mounts the shared directory at its host path, makes
# the soft-RoCE device(s), runs /ctl/cmd.sh there under a timeout and writes
# its exit status to /ctl/rc.  Every way out powers the VM off (EXIT trap);
# should bash itself die, the kernel panics and qemu exits (-no-reboot).
set -euo pipefail
export PATH=/usr/sbin:/usr/bin HOME=/root LANG=C.UTF-8
exec </dev/null >/dev/ttyS0 2>&1   # ttyS0 = run-in-vm.sh's stdout
stty -F /dev/ttyS0 -onlcr 2>/dev/null || true

finish() {
  # No status written yet: the setup failed (125 = VM/RDMA setup failure).
  [[ -s /ctl/rc ]] || echo 125 > /ctl/rc
  cd /; sync
  umount -l "${SHARE:-/nonexistent}" 2>/dev/null || true
  echo o > /proc/sysrq-trigger
  sleep 30
}
trap finish EXIT
die() { echo "te-rdma-vm: guest: $*"; exit 125; }

# shellcheck source=/dev/null
. /ctl/config                     # SHARE CMD_TIMEOUT NICS VERBOSE
[[ $VERBOSE == 1 ]] && set -x
mkdir -p /dev/pts /dev/shm /tmp /run
mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
mkdir -p "$SHARE"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap te_share "$SHARE" ||
  die "cannot mount $SHARE"
ip link set lo up
modprobe -a rdma_rxe ib_uverbs rdma_ucm ib_umad || die "cannot load rdma_rxe"

# The netdevs under the rxe devices.  Their addresses exist only in here: the
# VM has no NIC at all.  rdma_cm cannot use lo or 127.x, hence 198.18.0.0/15
# (RFC 2544).  MTU 9000 gives RoCE MTU 4096: fewer packets, faster under TCG.
declare -a ndevs ips
if [[ $NICS == 1 ]]; then
  # One device: a dummy netdev; rxe loops packets to its own address back.
  ip link add te0 mtu 9000 type dummy || die "cannot create a dummy netdev"
  { ip addr add 198.18.0.1/32 dev te0 && ip link set te0 up; } || die "te0"
  ndevs=(te0) ips=(198.18.0.1)
else
  # Several: veth te<i>, its peer te<i>-sw a port of the bridge te-sw (a
  # switch), so that a link can be cut (ip link set te<i>-sw down: rxe<i>'s
  # port goes down, the others stay up).  Traffic between two of our own
  # addresses would be delivered through lo, where no rxe listens: the rules
  # below send it out of the source's veth instead (the local table moves
  # after them), to the destination's MAC (static neighbours, no ARP), and
  # the receiving veth accepts a local source address.
  ip link add te-sw mtu 9000 type bridge stp_state 0 forward_delay 0 || die "bridge"
  ip link set te-sw up
  sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  for ((i = 0; i < NICS; i++)); do
    ndevs+=("te$i") ips+=("198.18.0.$((i + 1))")
    ip link add "te$i" mtu 9000 type veth peer name "te$i-sw" mtu 9000 || die "veth te$i"
    ip link set "te$i-sw" master te-sw up
    ip addr add "${ips[i]}/32" dev "te$i"
    sysctl -qw "net.ipv4.conf.te$i.accept_local=1" "net.ipv4.conf.te$i.rp_filter=0"
    ip link set "te$i" up
  done
  for ((i = 0; i < NICS; i++)); do
    for ((j = 0; j < NICS; j++)); do
      ((i != j)) || continue
      ip route add "${ips[j]}/32" dev "te$i" src "${ips[i]}" table $((100 + i))
      ip neigh replace "${ips[j]}" lladdr "$(cat "/sys/class/net/te$j/address")" \
        dev "te$i" nud permanent
      ip rule add pref $((100 + i)) iif lo from "${ips[i]}" to "${ips[j]}" lookup $((100 + i))
    done
  done
  { ip rule add pref 1000 lookup local && ip rule del pref 0; } || die "ip rule"
fi

devs=() gids=()
for ((i = 0; i < NICS; i++)); do
  rdma link add "rxe$i" type rxe netdev "${ndevs[i]}" || die "rdma link add rxe$i failed"
done
# Each device's RoCE v2 GID of its IPv4 address (::ffff:a.b.c.d) appears shortly.
for ((i = 0; i < NICS; i++)); do
  # shellcheck disable=SC2086 # split the address into its four bytes
  want=$(printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x' ${ips[i]//./ })
  port=/sys/class/infiniband/rxe$i/ports/1 gid=
  for _ in $(seq 150); do
    for g in "$port"/gids/*; do
      [[ $(cat "$g" 2>/dev/null) == "$want" &&
         $(cat "$port/gid_attrs/types/${g##*/}" 2>/dev/null) == "RoCE v2" ]] &&
        { gid=${g##*/}; break 2; }
    done
    sleep 0.1
  done
  [[ -n $gid ]] || die "no RoCE v2 GID for ${ips[i]} on rxe$i"
  devs+=("rxe$i") gids+=("$gid")
done

join() { local IFS=,; echo "$*"; }
export RDMA_VM=1 RDMA_IB_PORT=1 RDMA_DEV=rxe0 RDMA_GID_INDEX=${gids[0]} RDMA_IP=${ips[0]}
RDMA_DEVS=$(join "${devs[@]}") RDMA_GID_INDEXES=$(join "${gids[@]}")
RDMA_IPS=$(join "${ips[@]}") RDMA_NETDEVS=$(join "${ndevs[@]}")
export RDMA_DEVS RDMA_GID_INDEXES RDMA_IPS RDMA_NETDEVS
ulimit -l unlimited

set +x
cd "$SHARE"
rc=0
timeout -k 5 "$CMD_TIMEOUT" bash /ctl/cmd.sh || rc=$?
echo "$rc" > /ctl/rc
