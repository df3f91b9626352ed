#!/usr/bin/env bash
# Writes docs/configuration.md from `te-bench --help-env` (the engine's own
# declaration table, core/config_vars.c), so the page lists exactly what the
# engine reads.  Usage: bash scripts/configuration_md.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-build}/bin/te-bench
[[ -x $bench ]] || { echo "no $bench: build te-bench first" >&2; exit 1; }
{
  cat <<'HEAD'
# Configuration

Every setting of the engine, its bundled plugins (tcp, rdma, shm, nvlink, metadata-etcd), the
Python module and te-bench is an environment variable declared once, in `core/config_vars.c`.
This page is generated from that table (`bash scripts/configuration_md.sh`, which formats
`te-bench --help-env`); `te_config_describe()` in `include/te/te.h` walks the same table.

How values are read, identically for the core and every plugin (plugins call the host
services `config_int`/`config_bool`, see [plugin-abi.md](plugin-abi.md)):

- The environment is read on every call, so a value set between two engines applies to the second.
- **int**: decimal, optionally negative, within the range shown. **bool**: `1/0`, `true/false`,
  `yes/no`, `on/off`, `y/n`, any case. **string**: the text as is. For `MC_*` variables an empty
  value is the same as unset; other software's variables (`CUDA_VISIBLE_DEVICES`) keep their own
  meaning of empty.
- A value of the wrong type or out of range is logged once per variable and value
  (`ignoring NAME=VALUE: expected ..., using DEFAULT`) and read as the default.
- An alias is read only when the variable itself is unset (`MC_MIN_PRC_PORT`, the original
  engine's misspelling, for `MC_MIN_RPC_PORT`).
- Asking for an undeclared name (`te_config_int`, `config_int`, ...) returns
  `TE_ERR_INVALID_ARGUMENT` and logs it; a plugin's own variables can still be read as text
  with the host's `config()`.
- Owner: who reads it. `core` is libte.so; `python` is the `mooncake.engine` module.

| variable | type | default | range | owner | description |
|---|---|---|---|---|---|
HEAD
  "$bench" --help-env | awk 'NR > 1 {
      name = $1; type = $2; def = $3; range = $4; owner = $5
      help = $0
      for (i = 0; i < 5; i++) sub(/^[^ ]+ +/, "", help)
      gsub(/\|/, "\\|", help)
      printf "| `%s` | %s | %s | %s | %s | %s |\n", name, type,
             (def == "(unset)" ? "unset" : "`" def "`"), (range == "-" ? "" : range), owner, help
  }'
} > docs/configuration.md
echo "wrote docs/configuration.md ($(grep -c '^| `' docs/configuration.md) variables)"
