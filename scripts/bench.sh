#!/usr/bin/env bash
# The main job: sets up (Debian packages), builds, and runs a two-process
# transfer benchmark over TCP on loopback with P2P metadata (no servers).
# Extra arguments go to te-bench, e.g.: bash scripts/bench.sh --operation read
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build build -j"$(nproc)" --target te-bench te_tcp te_metadata_p2p
# The TCP path is what this measures; MC_TE_SAME_HOST_TRANSPORT=1 lets the
# same-host shm transport take it instead.
export MC_TE_SAME_HOST_TRANSPORT=${MC_TE_SAME_HOST_TRANSPORT:-0}
exec build/bin/te-bench --mode loopback --protocol tcp --metadata_server P2PHANDSHAKE \
  --operation write --block_size 1048576 --batch_size 128 --duration 5 --verify "$@"
