# Sourced by scripts/test: the Windows build, run under Wine (Debian's wine64, Wine 8.0).
# - installs wine64 and the MinGW cross compiler from Debian's packages when missing;
# - builds the ProcessPrng shim (tests/wine/) that Rust programs need under Wine before 8.13;
# - prepares a fresh Wine prefix for this run, with the shim, under a temp dir;
# - builds ocx and the stand-in server for x86_64-pc-windows-gnu (debug, `testing` feature);
# - runs ocx's unit tests for that target under Wine;
# - exports what the lifecycle smoke (tests/it/windows.rs, in the main `cargo test`) needs:
#   OCX_WINE (wine64), OCX_WINE_PREFIX (the prepared prefix, which those tests reuse one at a
#   time, each killing its wineserver when it ends), OCX_WIN_OCX and OCX_WIN_STAND_IN (the .exe
#   files).
# `wine_done` (scripts/test calls it after `cargo test`; an EXIT trap until then) kills
# whatever still runs in the prefix and removes it. docs/reliability.md, "Windows", says what
# runs here and what does not.

wine_bin=/usr/lib/wine/wine64
wineserver_bin=/usr/lib/wine/wineserver
wine_target=x86_64-pc-windows-gnu
wine_began=$SECONDS

wine_missing=()
[ -x "$wine_bin" ] && [ -x "$wineserver_bin" ] || wine_missing+=(wine64)
command -v x86_64-w64-mingw32-gcc >/dev/null || wine_missing+=(gcc-mingw-w64-x86-64)
if [ ${#wine_missing[@]} -gt 0 ]; then
  echo "wine: installing ${wine_missing[*]} from Debian's packages" >&2
  wine_sudo=""; [ "$(id -u)" = 0 ] || wine_sudo=sudo
  $wine_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $wine_sudo apt-get install -y -qq --no-install-recommends "${wine_missing[@]}" >/dev/null
fi
rustup target list --installed | grep -x "$wine_target" >/dev/null || rustup target add "$wine_target" >/dev/null
wine_installed=$SECONDS

# Rust's std imports ProcessPrng from bcryptprimitives.dll, which Wine has only from 8.13:
# without this shim every Rust program exits 53 before main.
mkdir -p target/wine
wine_shim=target/wine/bcryptprimitives.dll
if [ ! -f "$wine_shim" ] || [ tests/wine/processprng.c -nt "$wine_shim" ] || [ tests/wine/processprng.def -nt "$wine_shim" ]; then
  x86_64-w64-mingw32-gcc -O2 -s -shared -o "$wine_shim" tests/wine/processprng.c tests/wine/processprng.def -ladvapi32
fi

# A fresh prefix for this run. Wine's own processes inherit the first Wine process's output,
# so wineboot's goes to a file, never to a pipe someone waits on.
wine_tmp=$(mktemp -d "${TMPDIR:-/tmp}/ocx-wine.XXXXXX")
export OCX_WINE="$wine_bin" OCX_WINE_PREFIX="$wine_tmp/prefix"
wine_done() {
  WINEPREFIX="$OCX_WINE_PREFIX" "$wineserver_bin" -k 2>/dev/null || true
  rm -rf "$wine_tmp"
}
trap wine_done EXIT
WINEPREFIX="$OCX_WINE_PREFIX" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" \
  "$wine_bin" wineboot -i </dev/null >"$wine_tmp/wineboot.log" 2>&1
WINEPREFIX="$OCX_WINE_PREFIX" "$wineserver_bin" -k || true
cp "$wine_shim" "$OCX_WINE_PREFIX/drive_c/windows/system32/"
wine_prefixed=$SECONDS

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
cargo build --locked --quiet --target "$wine_target" --features testing --bins
export OCX_WIN_OCX="$PWD/target/$wine_target/debug/ocx.exe"
export OCX_WIN_STAND_IN="$PWD/target/$wine_target/debug/ocx-stand-in.exe"
wine_built=$SECONDS

# The unit tests, each test binary run by wine64 in the prepared prefix. The wineserver is
# started first, its output nowhere, so that it holds no pipe of cargo's.
WINEPREFIX="$OCX_WINE_PREFIX" "$wineserver_bin" -p </dev/null >/dev/null 2>&1
WINEPREFIX="$OCX_WINE_PREFIX" WINEDEBUG=-all CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$wine_bin" \
  cargo test --locked --quiet --target "$wine_target" --features testing --bin ocx
WINEPREFIX="$OCX_WINE_PREFIX" "$wineserver_bin" -k || true
wine_tested=$SECONDS

echo "wine: install $((wine_installed - wine_began))s, prefix $((wine_prefixed - wine_installed))s," \
  "build $((wine_built - wine_prefixed))s, unit tests $((wine_tested - wine_built))s;" \
  "the lifecycle smoke under Wine runs in \`cargo test\` (tests/it/windows.rs)" >&2
