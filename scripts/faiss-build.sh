#!/usr/bin/env bash
# Builds FAISS for this CPU from Debian's own source package and caches it, so the addon
# links a FAISS that uses the CPU's vector instructions (Debian's libfaiss.a is generic).
#
#   cache:  ${XDG_CACHE_HOME:-$HOME/.cache}/dfaiss/faiss-<version>-<level>/{include,lib}
#   level:  avx2 when the CPU has avx2 + fma + f16c, else generic (DFAISS_FAISS_LEVEL forces one)
#   source: `apt-get source faiss=<deb version>` through a private APT configuration under
#           the cache (APT_CONFIG), so /etc/apt is never touched and no root is needed.
#
# Does nothing when the cached build exists, or when DFAISS_FAISS_PREFIX names a FAISS the
# user built. When the source cannot be fetched (no network, no deb-src mirror), it warns
# once, writes a marker and the addon links Debian's generic libfaiss-dev instead; delete
# the marker (named in the warning) to try again. Called by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { printf '[setup] %s\n' "$*" >&2; }

[[ -n ${DFAISS_FAISS_PREFIX:-} ]] && exit 0

FAISS_VERSION=1.7.3
DEB_VERSION=1.7.3-2
# Bumped whenever the build changes (flags, scripts/patches/): an older cached build is rebuilt.
RECIPE=3
SUITE=bookworm  # the suite that ships faiss 1.7.3-2 (trixie's 1.11 is not served here)

level=$(node scripts/faiss-config.mjs best-level)
cache=$(node scripts/faiss-config.mjs cache-dir)
dest=$cache/faiss-$FAISS_VERSION-$level
failed=$cache/faiss-$FAISS_VERSION-$level.fetch-failed
current() { grep -q "\"recipe\": $RECIPE," "$dest/build-info.json" 2>/dev/null; }
current && exit 0
if [[ -f $failed ]]; then
  log "warning: using Debian's generic libfaiss (no $level build: $(cat "$failed"); rm $failed to retry)"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/faiss.lock"
flock 9  # a second setup (another checkout) waits for this build instead of duplicating it
current && exit 0

t0=$(date +%s)
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
buildlog=$cache/faiss-$FAISS_VERSION-$level.build.log
printf '[setup] building FAISS %s for %s from Debian source faiss %s (about 2 min on 2 cores; log: %s) ... ' \
  "$FAISS_VERSION" "$level" "$DEB_VERSION" "$buildlog" >&2

# The mirror this machine already uses for Debian (first deb822 URIs or one-line entry
# naming a .../debian archive, security archives excluded); DFAISS_DEBIAN_MIRROR overrides.
mirror_of_machine() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    grep -hoE '(^URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z+]+://[^[:space:]]+' "$f" \
      | grep -oE '[a-z+]+://[^[:space:]]+' | grep -vE 'security|ports|backports' | grep -E '/debian/?$' || true
  done | head -n1
}
mirror=${DFAISS_DEBIAN_MIRROR:-$(mirror_of_machine)}
mirror=${mirror:-http://deb.debian.org/debian}

# Private APT: own sources list, lists and archive cache; /etc/apt/apt.conf.d (proxies) still applies.
apt=$cache/apt
mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
opts=""; [[ -f $keyring ]] && opts="[signed-by=$keyring] "
echo "deb-src ${opts}$mirror $SUITE main" >"$apt/sources.list"
{
  echo "Dir::Etc::SourceList \"$apt/sources.list\";"
  echo "Dir::Etc::SourceParts \"$apt/sources.list.d\";"
  echo "Dir::State::Lists \"$apt/lists\";"
  echo "Dir::Cache::Archives \"$apt/archives\";"
  echo 'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";'
  # As root, apt downloads as user _apt, who cannot write under a private home folder.
  [[ $(id -u) -eq 0 ]] && echo 'APT::Sandbox::User "root";'
} >"$apt/apt.conf"
export APT_CONFIG=$apt/apt.conf

fail_fetch() {
  echo "$1" >"$failed"
  printf 'failed\n' >&2
  log "warning: could not fetch Debian's faiss $DEB_VERSION source ($1; log: $buildlog)"
  log "warning: linking Debian's generic libfaiss instead (no AVX2: several times slower); rm $failed to retry"
  exit 0
}
{ apt-get update -o APT::Update::Error-Mode=any && (cd "$work" && apt-get source --download-only "faiss=$DEB_VERSION" \
    && dpkg-source -x "faiss_$DEB_VERSION.dsc" src); } >"$buildlog" 2>&1 \
  || fail_fetch "apt-get source faiss=$DEB_VERSION from $mirror failed"

# Our changes to FAISS's source, each explained in its own header (scripts/patches/).
patches=()
for p in "$repo"/scripts/patches/faiss-$FAISS_VERSION-*.patch; do
  patch -d "$work/src" -p1 --quiet <"$p" >>"$buildlog" 2>&1 || { printf 'failed\n' >&2; log "patch $p does not apply (log: $buildlog)"; exit 1; }
  patches+=("$(basename "$p")")
done

# FAISS's own CMake options for a CPU-only static library; OpenBLAS as the BLAS.
target=faiss; [[ $level == avx2 ]] && target=faiss_avx2
cmake_flags=(-DFAISS_OPT_LEVEL="$level" -DFAISS_ENABLE_GPU=OFF -DFAISS_ENABLE_PYTHON=OFF -DFAISS_ENABLE_C_API=OFF
  -DBUILD_TESTING=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_POSITION_INDEPENDENT_CODE=ON
  -DBLA_VENDOR=OpenBLAS)
{
  cmake -S "$work/src" -B "$work/build" "${cmake_flags[@]}" \
    && cmake --build "$work/build" --target "$target" -j "$(nproc)"
} >>"$buildlog" 2>&1 || { printf 'failed\n' >&2; log "FAISS build failed (log: $buildlog)"; exit 1; }

stage=$work/out
mkdir -p "$stage/lib" "$stage/include"
cp "$work/build/faiss/lib$target.a" "$stage/lib/"
(cd "$work/src" && find faiss -name '*.h' ! -path '*/gpu/*' ! -path '*/python/*' -exec cp --parents {} "$stage/include/" \;)
seconds=$(($(date +%s) - t0))
printf '{ "recipe": %d, "faissVersion": "%s", "debianSource": "faiss %s", "mirror": "%s", "level": "%s", "library": "lib/lib%s.a", "blas": "OpenBLAS", "patches": "%s", "cmake": "%s", "buildSeconds": %d }\n' \
  "$RECIPE" "$FAISS_VERSION" "$DEB_VERSION" "$mirror" "$level" "$target" "${patches[*]}" "${cmake_flags[*]}" "$seconds" >"$stage/build-info.json"
rm -rf "$dest"
mv "$stage" "$dest"  # atomic: a half-built cache is never visible
printf 'done in %d s (%s)\n' "$seconds" "$dest" >&2
