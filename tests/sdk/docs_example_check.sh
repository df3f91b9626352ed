#!/usr/bin/env bash
# docs_example_check.sh - docs/plugin-abi.md shows examples/plugin/loopcopy.c
# in full (the plugin written with TE_PLUGIN_DEFINE): fails when the two
# differ, so the page cannot drift from the example the SDK test builds.
set -euo pipefail
root=${1:?usage: docs_example_check.sh SOURCE_DIR}
shown=$(awk '/<summary>examples\/plugin\/loopcopy.c<\/summary>/ {grab = 1; next}
             grab && /^```c$/ {inside = 1; next}
             inside && /^```$/ {exit}
             inside {print}' "$root/docs/plugin-abi.md")
[ -n "$shown" ] || { echo "docs/plugin-abi.md: no loopcopy.c block found"; exit 1; }
if ! diff <(printf '%s\n' "$shown") "$root/examples/plugin/loopcopy.c"; then
    echo "docs/plugin-abi.md shows a loopcopy.c that differs from examples/plugin/loopcopy.c"
    exit 1
fi
echo "docs/plugin-abi.md shows examples/plugin/loopcopy.c as it is ($(wc -l <"$root/examples/plugin/loopcopy.c") lines)"
