#!/bin/sh
# `npm start`: thinfs's main job. For now: a thin pool in ./.thinfs (or $THINFS_ROOT),
# created on the first run and reused afterwards, and its `thinfs info`.
set -eu
cd "$(dirname "$0")/.."

# `npm install` builds dist/ (prepare); rebuild only when a source is newer.
if [ ! -f dist/src/cli/main.js ] || [ -n "$(find src -name '*.ts' -newer dist/src/cli/main.js | head -n 1)" ]; then
  npx --no-install tsc -p .
fi

root="${THINFS_ROOT:-$PWD/.thinfs}"
thinfs() { node dist/src/cli/main.js --root "$root" "$@"; }

if [ ! -e "$root/pool/metadata.db" ]; then
  thinfs init
  echo
fi
thinfs info
