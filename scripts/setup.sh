#!/usr/bin/env bash
# Installs whatever dfaiss is missing on this machine, then builds it. Idempotent and
# quick when nothing changed, so `npm test` and `npm run demo` can both call it first.
#   1. Debian packages: the tools to build FAISS (cmake, g++, make, dpkg-dev), OpenBLAS,
#      libfaiss-dev (Debian's generic FAISS 1.7.3: the fallback), dataset-fashion-mnist
#      (real data for the demo, tests and benchmark), chromium (the headless browser the
#      dashboard test drives through puppeteer-core).
#   2. npm dependencies (npm ci when node_modules is missing or older than the lockfile).
#   3. FAISS 1.7.3 built for this CPU (avx2 or generic) from Debian's source package, once,
#      cached under ${XDG_CACHE_HOME:-~/.cache}/dfaiss (scripts/faiss-build.sh).
#   4. The native addon (node-gyp) when missing, older than its sources or FAISS, or built
#      against another FAISS than scripts/faiss-config.mjs now picks.
#   5. The TypeScript build: the client package (packages/client/dist), then dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for pkg in cmake g++ make dpkg-dev libopenblas-dev libfaiss-dev dataset-fashion-mnist chromium; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing Debian packages: ${missing[*]}"
    log "install them as root, then run this again:"
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "installing npm dependencies"
  # --ignore-scripts: the native addon is built below, once, with a visible log.
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi

bash scripts/faiss-build.sh

addon=build/Release/dfaiss_native.node
stamp=build/Release/faiss-linked.txt  # which FAISS the addon links, to notice when that changes
faiss=$(node scripts/faiss-config.mjs describe)
faisslib=$(node scripts/faiss-config.mjs libs | cut -d' ' -f1)
if [[ ! -f $addon || ! -f $stamp || $(cat "$stamp") != "$faiss" || $faisslib -nt $addon \
      || -n $(find native binding.gyp scripts/faiss-config.mjs -newer "$addon" -print -quit) ]]; then
  log "building the native addon (node-gyp) against $faiss"
  # npm puts its bundled node-gyp on PATH for scripts; the log lives outside build/,
  # which `node-gyp rebuild` deletes first.
  buildlog=${TMPDIR:-/tmp}/dfaiss-native-build.log
  npm run --silent build:native -- -j "$(nproc)" >"$buildlog" 2>&1 \
    || { cat "$buildlog" >&2; log "native build failed (log: $buildlog)"; exit 1; }
  echo "$faiss" >"$stamp"
fi

# The client package (packages/client/dist) first, then dist/, whose client modules then
# become re-exports of the client package (scripts/link-client.mjs). A plain
# `tsc -p tsconfig.json` leaves dist/ self-contained (no re-exports); that is rebuilt too.
client=packages/client/dist/client.js
if [[ ! -f dist/index.js || ! -f $client || -n $(find src tsconfig.json packages/client/tsconfig.json -newer dist/index.js -print -quit) \
      || -n $(find src -newer "$client" -print -quit) ]] || ! grep -q link-client dist/errors.js; then
  log "compiling TypeScript (packages/client, then dist/)"
  npm run --silent build:ts
  touch dist/index.js
fi
