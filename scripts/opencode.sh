# Sourced by scripts/test and scripts/bench: make sure the pinned opencode is installed and
# export OCX_OPENCODE pointing at it (unless OCX_OPENCODE is already set).
OPENCODE_VERSION=1.18.33
# Must match tests/support/mod.rs.
deps="${OCX_TEST_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/ocx-test}"
prefix="$deps/opencode-ai-$OPENCODE_VERSION"
if [ -z "${OCX_OPENCODE:-}" ]; then
  export OCX_OPENCODE="$prefix/node_modules/.bin/opencode"
  if ! grep -qs "\"version\": \"$OPENCODE_VERSION\"" "$prefix/node_modules/opencode-ai/package.json" \
     || [ ! -x "$OCX_OPENCODE" ]; then
    echo "installing opencode-ai@$OPENCODE_VERSION into $prefix" >&2
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "opencode-ai@$OPENCODE_VERSION"
  fi
fi
