#!/bin/sh
# `npm start`: thinfs's main job. A thin pool in ./.thinfs (or $THINFS_ROOT), created on
# the first run; a busybox image imported once (built from Debian's busybox-static);
# then a fresh container of it runs a command in the FUSE view (`thinfs run`: through runc
# when it is installed — the install step brings it — else user + mount + pid namespaces
# and a chroot; rootless for a non-root user) and is removed; last, the pool's `thinfs info`.
set -eu
cd "$(dirname "$0")/.."

# `npm install` builds dist/ (prepare); rebuild only when a source is newer.
if [ ! -f dist/src/cli/main.js ] || [ -n "$(find src -name '*.ts' -newer dist/src/cli/main.js | head -n 1)" ]; then
  node node_modules/typescript/bin/tsc -p .
fi

root="${THINFS_ROOT:-$PWD/.thinfs}"
thinfs() { node dist/src/cli/main.js --root "$root" "$@"; }

if [ ! -e "$root/pool/metadata.db" ]; then
  thinfs init
  echo
fi
if ! thinfs inspect busybox >/dev/null 2>&1; then
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  sh fixtures/build-busybox-rootfs.sh "$rootfs/rootfs" >/dev/null
  thinfs import busybox "$rootfs/rootfs"
  echo
fi
echo "\$ thinfs run busybox --rm -- /bin/sh -c 'id -u; echo hello from a thinfs container > /hello; cat /hello; ls /bin | wc -l'"
thinfs run busybox --rm -- /bin/sh -c 'id -u; echo hello from a thinfs container > /hello; cat /hello; ls /bin | wc -l'
echo
thinfs info
