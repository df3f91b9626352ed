#!/usr/bin/env bash
# build-image.sh OUT - builds the guest of run-in-vm.sh into the new directory
# OUT: Debian 12's own kernel (it has rdma_rxe; many hosts' kernels do not)
# and an initramfs holding a minimal bookworm userland with the RDMA packages
# and only the kernel modules the guest loads.  Needs root and apt access to
# the Debian archive.  run-in-vm.sh caches OUT under a hash of this file and
# of TE_VM_GUEST_PKGS, so any change here builds a new image.
set -euo pipefail
out=${1:?usage: build-image.sh OUT}
pkgs=${TE_VM_GUEST_PKGS:?the package list comes from run-in-vm.sh}
suite=bookworm
# Modules copied into the image, with what they depend on: the 9p share,
# soft-RoCE and its crc32, the netdevs of one or several rxe devices, and a
# token bucket qdisc that drops (test_rdma_rails_vm's lossy peer).
modules="virtio_pci 9pnet_virtio 9p rdma_rxe ib_uverbs rdma_ucm ib_umad
crc32_generic crc32-pclmul dummy veth bridge sch_tbf"
log() { echo "te-rdma-vm: $*" >&2; }

[[ ! -e $out ]] || { log "$out exists"; exit 1; }
work=$(mktemp -d "$out.build.XXXXXX")   # same file system: the final mv is atomic
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir image

# Kernel: the versioned package that linux-image-amd64 points at, unpacked.
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n $kpkg ]] || { log "apt knows no linux-image-amd64 (apt-get update?)"; exit 1; }
log "kernel $kpkg"
apt-get download -qq -o APT::Sandbox::User=root "$kpkg"
dpkg-deb -x "$kpkg"_*.deb kernel
kver=$(ls kernel/lib/modules)
kmod_dir=kernel/lib/modules/$kver
# TCG spends seconds per boot in the bzImage's own xz decompressor; qemu can
# boot the plain ELF through its PVH note instead, when the kernel has one.
# (tail's SIGPIPE once xz has read the one stream it wants is no failure.)
cp "kernel/boot/vmlinuz-$kver" vmlinuz
xz_at=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' vmlinuz | head -n1 | cut -d: -f1 || true)
if [[ -n $xz_at ]] && grep -q '^CONFIG_PVH=y' "kernel/boot/config-$kver" &&
   { tail -c +$((xz_at + 1)) vmlinuz || true; } | xz -dc --single-stream > vmlinux 2>/dev/null &&
   [[ $(head -c 4 vmlinux) == $'\x7fELF' ]]; then
  mv vmlinux image/
else
  rm -f vmlinux; mv vmlinuz image/
fi

# Userland from the host's own Debian sources, without docs, locales or apt
# lists: a smaller cpio unpacks faster at every boot.
# shellcheck disable=SC2016 # apt's own $(FIELD) syntax
apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 'Origin: Debian' |
  sort -u | awk -v s=$suite '$2 == s || $2 == s"-updates" || $2 == s"-security" {
    print "deb " $1 " " $2 " main" }' > sources.list
[[ -s sources.list ]] || { log "the host's apt has no Debian $suite source"; exit 1; }
log "userland: $pkgs"
if ! mmdebstrap --quiet --variant=essential --mode=root --include="$pkgs" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    $suite root sources.list > mmdebstrap.log 2>&1; then
  tail -n 30 mmdebstrap.log >&2; log "mmdebstrap failed"; exit 1
fi
rm -rf root/var/cache/* root/var/lib/apt/lists root/etc/apt/sources.list* \
  root/usr/lib/x86_64-linux-gnu/gconv
echo te-rdma-vm > root/etc/hostname
printf '127.0.0.1 localhost te-rdma-vm\n::1 localhost\n' > root/etc/hosts

# Only the modules listed above (modprobe resolves their dependencies).
depmod -b kernel "$kver"
for m in $modules; do modprobe -d kernel -S "$kver" --show-depends "$m"; done |
  awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
    install -D -m 644 "$ko" "root/usr/lib/modules/$kver/${ko#"$kmod_dir"/}"
  done
cp "$kmod_dir"/modules.{order,builtin,builtin.modinfo} "root/usr/lib/modules/$kver/"
depmod -b root "$kver"

# /init only hands over to guest.sh on the control share, which run-in-vm.sh
# copies there at each boot: changing the guest's steps needs no new image.
# If it returns, PID 1 exits, the kernel panics and qemu (-no-reboot) exits.
cat > root/init <<'EOF'
#!/bin/bash
export PATH=/usr/sbin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
modprobe -a virtio_pci 9pnet_virtio 9p
mkdir -p /ctl
mount -t 9p -o trans=virtio,version=9p2000.L te_ctl /ctl && exec /bin/bash /ctl/guest.sh
echo "te-rdma-vm: no control share" > /dev/ttyS0
echo o > /proc/sysrq-trigger
EOF
chmod 755 root/init
# Uncompressed: under TCG decompressing costs more than reading the bytes.
(cd root && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > image/initrd.cpio
echo "$kpkg $kver" > image/kernel.txt
echo "$pkgs" > image/packages.txt
mv image "$out"
