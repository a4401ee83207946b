#!/usr/bin/env bash
# Builds every plugin in this workspace into a WebAssembly component and assembles one
# bundle per plugin, plugin.toml + plugin.wasm, ready for the host's plugin directory:
# dist/reference/<id> for the scenarios `lifecircle serve` runs by default, and
# dist/hostile/<id> for the hostile plugins that prove the host's limits in the tests.
#
# Usage: plugins/build.sh [extra cargo build arguments, e.g. --locked]
# Runs from any directory.
set -euo pipefail

plugins_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="wasm32-wasip2"

rustup target list --installed | grep -qx "$target" || rustup target add "$target"

# From inside plugins/ so this workspace (not the repository root's) is built; the target
# is passed explicitly because a .cargo/config.toml target would be ignored from elsewhere.
(cd "$plugins_dir" && cargo build --release --target "$target" "$@")

release_dir="$plugins_dir/target/$target/release"
dist_dir="$plugins_dir/dist"

shopt -s nullglob
manifests=("$plugins_dir"/*/plugin.toml)
if ((${#manifests[@]} == 0)); then
    echo "build.sh: no plugins/*/plugin.toml found" >&2
    exit 1
fi

for manifest in "${manifests[@]}"; do
    id="$(basename "$(dirname "$manifest")")"
    component="$release_dir/${id//-/_}.wasm"
    if [[ ! -f "$component" ]]; then
        echo "build.sh: $id has a plugin.toml but no built component at $component" >&2
        exit 1
    fi
    case "$id" in
        hostile-*) kind="hostile" ;;
        *) kind="reference" ;;
    esac
    bundle="$dist_dir/$kind/$id"
    rm -rf "$bundle"
    mkdir -p "$bundle"
    cp "$manifest" "$bundle/plugin.toml"
    cp "$component" "$bundle/plugin.wasm"
    echo "bundled $id: dist/$kind/$id ($(wc -c <"$bundle/plugin.wasm") bytes)"
done
