#!/usr/bin/env bash
# Proves the README's commands on a brand-new Debian 12 root: makes one with
# mmdebstrap (--variant=apt: apt and nothing else), copies this checkout into
# it, mounts proc/sys/dev, and runs the given commands there as a new user's
# first try would.  A missing install step fails here, not on a user's machine.
#   bash scripts/fresh-root.sh                       # both README commands
#   bash scripts/fresh-root.sh "bash scripts/test.sh"
#   TE_FRESH_KEEP=1 ...                              # keep the root for a look
# Needs root (chroot, mounts).  The root lives under ${TE_FRESH_DIR:-/tmp}.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-root: needs root (mmdebstrap, chroot, mounts)" >&2
  exit 1
fi
CMDS=("$@")
[ ${#CMDS[@]} -gt 0 ] || CMDS=("bash scripts/bench.sh" "bash scripts/test.sh")

if ! command -v mmdebstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

ROOT=$(mktemp -d "${TE_FRESH_DIR:-/tmp}/te-fresh-root.XXXXXX")
MOUNTS=()
cleanup() {
  # Processes a test left behind would keep the mounts busy.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$ROOT" ] && kill -9 "$pid" 2>/dev/null
  done
  # Everything under the root, also what its tests mounted (/run/netns).
  [ ${#MOUNTS[@]} -eq 0 ] || umount -R -l "$ROOT" 2>/dev/null || true
  if [ -z "${TE_FRESH_KEEP:-}" ]; then
    rm -rf --one-file-system "$ROOT"
  else
    echo "fresh-root: kept $ROOT"
  fi
}
trap cleanup EXIT

t0=$SECONDS
echo "fresh-root: mmdebstrap --variant=apt bookworm $ROOT"
mmdebstrap --quiet --variant=apt bookworm "$ROOT" >/dev/null
echo "fresh-root: root made in $((SECONDS - t0)) s"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# The checkout as it is (tracked and untracked files, not what git ignores):
# a user's clone, without this machine's build trees.
mkdir -p "$ROOT/src"
git -C "$SRC" ls-files -z --cached --others --exclude-standard |
  (cd "$SRC" && tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$ROOT/src"

# The root is a mount point of its own, as / is on a machine: `ip netns`
# (the lab tests) remounts / as a slave and fails where it is not one.
mount --bind "$ROOT" "$ROOT" && mount --make-private "$ROOT" && MOUNTS+=("$ROOT")
for m in proc sys dev dev/pts; do
  mkdir -p "$ROOT/$m"
done
mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
# rslave: nothing unmounted under the root propagates back to the host.
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys" && MOUNTS+=("$ROOT/sys")
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev" && MOUNTS+=("$ROOT/dev")
mkdir -p "$ROOT/dev/shm"

status=0
for cmd in "${CMDS[@]}"; do
  echo "fresh-root: running '$cmd'"
  t1=$SECONDS
  # A clean environment, as on a new machine: no PATH or Python of this host.
  if chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      bash -c "cd /src && $cmd"; then
    echo "fresh-root: '$cmd' passed in $((SECONDS - t1)) s"
  else
    rc=$?
    echo "fresh-root: '$cmd' FAILED (exit $rc) after $((SECONDS - t1)) s"
    status=1
  fi
done
exit $status
