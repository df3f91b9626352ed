#!/usr/bin/env bash
# Installs the Debian 12 packages needed to build and test the engine.
# Skips apt entirely when everything is already present.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libjansson-dev libhwloc-dev libhwloc-plugins libcurl4-openssl-dev
      libibverbs-dev ibverbs-providers check python3-dev python3-pytest python3-numpy
      python3-setuptools python3-pip etcd-server iperf3 iproute2 procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
