#!/usr/bin/env bash
# Builds the two native modules against another FAISS into build/variants/<name>/, without
# touching build/Release: the bench loads such a variant (DFAISS_NATIVE_DIR) to compare
# FAISS builds through the same binding. Rebuilds only when the variant is missing or older
# than the sources or the library.
#   bash scripts/build-variant.sh <name> <faiss prefix>    e.g.  generic /usr
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: build-variant.sh <name> <faiss prefix>}
prefix=${2:?usage: build-variant.sh <name> <faiss prefix>}
out=build/variants/$name
lib=$(DFAISS_FAISS_PREFIX=$prefix node scripts/faiss-config.mjs libs | cut -d' ' -f1)
if [[ -f $out/dfaiss_native.node && ! $lib -nt $out/dfaiss_native.node \
      && -z $(find native binding.gyp scripts/faiss-config.mjs -newer "$out/dfaiss_native.node" -print -quit) ]]; then
  exit 0
fi
stage=$(mktemp -d "${TMPDIR:-/tmp}/dfaiss-variant.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp -r binding.gyp package.json native scripts "$stage/"
ln -s "$PWD/node_modules" "$stage/node_modules"
printf '[setup] building the %s native variant against %s ... ' "$name" "$lib" >&2
t0=$(date +%s)
(cd "$stage" && DFAISS_FAISS_PREFIX=$prefix npm run --silent build:native -- -j "$(nproc)") >"$stage.log" 2>&1 \
  || { printf 'failed\n' >&2; cat "$stage.log" >&2; exit 1; }
mkdir -p "$out"
cp "$stage/build/Release/dfaiss_native.node" "$stage/build/Release/dfaiss_cpu.node" "$out/"
DFAISS_FAISS_PREFIX=$prefix node scripts/faiss-config.mjs describe >"$out/faiss-linked.txt"
rm -f "$stage.log"
printf 'done in %d s\n' "$(($(date +%s) - t0))" >&2
