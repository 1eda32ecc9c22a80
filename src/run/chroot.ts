/**
 * The fallback runtime when no OCI runtime is installed: util-linux's unshare and
 * setpriv, the mounts done by a short host shell script inside the new namespaces.
 *
 *   unshare [--user --map-root-user] --mount --pid --uts --ipc --fork --kill-child
 *     /bin/sh -c SETUP                        # pid 1 of the new pid namespace
 *       mounts /proc, /dev (+ nodes, pts, shm, mqueue, links), /sys, the /etc files;
 *       sets the hostname; then execs
 *     env -i ENV...                           # the container's environment only
 *     setpriv --regid=G --groups=.. --bounding-set=..   # gid, groups, capabilities
 *     unshare --root=VIEW --wd=CWD --setuid=U CMD...    # chroot, chdir, setuid, exec
 *
 * Order matters: every host program runs before the chroot (after it only the image's
 * files exist), and the chroot needs CAP_SYS_CHROOT, so the uid goes last — unshare's
 * --setuid after --root and --wd, without --setgid (which would clear the groups setpriv
 * set). The bounding set is podman's default capabilities, so root in the container is
 * not the host's root. Every helper is called by absolute path.
 *
 * Rootless, the user namespace maps only the caller (to 0): no other uid or gid, and no
 * setgroups (unshare writes "deny"), so the process stays 0:0 and setpriv only limits
 * the capabilities. Device nodes can't be made there, so they are bound from the host's
 * /dev for root and rootless alike; sysfs can't be mounted without a network namespace
 * of its own, so /sys is the host's, bound read-only.
 *
 * Until the setup is done its stderr is a pipe to thinfs, so a failure there (a mount
 * refused) is one line of thinfs, not an exit status of the container (spawn.ts).
 *
 * Mount targets are resolved inside the view first (rootfs.ts), so an image's symlink
 * can't point a mount at a host path. The mount namespace is private: nothing of this
 * propagates to the host, and it all goes when the last process of the container ends.
 */
import { CAPABILITIES, DEVICES, type ContainerSpec } from './container.js';
import { requireProgram, SYSTEM_PATH } from './programs.js';
import { inRoot } from './rootfs.js';
import { childrenOf, runForeground } from './spawn.js';

/** The setup run as pid 1 of the new namespaces; its environment names the paths (below). */
const SETUP = String.raw`set -eu
"$MOUNT" -t proc -o nosuid,nodev,noexec proc "$T_PROC"
"$MOUNT" -t tmpfs -o nosuid,strictatime,mode=0755,size=65536k tmpfs "$T_DEV"
for n in $DEVICES; do
  : > "$T_DEV/$n"
  "$MOUNT" --bind "/dev/$n" "$T_DEV/$n"
done
"$MKDIR" -m 0755 "$T_DEV/pts" "$T_DEV/shm" "$T_DEV/mqueue"
"$MOUNT" -t devpts -o "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620$DEVPTS_GID" devpts "$T_DEV/pts"
"$MOUNT" -t tmpfs -o nosuid,nodev,noexec,mode=1777,size=65536k shm "$T_DEV/shm"
"$MOUNT" -t mqueue -o nosuid,nodev,noexec mqueue "$T_DEV/mqueue"
"$LN" -s pts/ptmx "$T_DEV/ptmx"
"$LN" -s /proc/self/fd "$T_DEV/fd"
"$LN" -s /proc/self/fd/0 "$T_DEV/stdin"
"$LN" -s /proc/self/fd/1 "$T_DEV/stdout"
"$LN" -s /proc/self/fd/2 "$T_DEV/stderr"
"$MOUNT" --rbind /sys "$T_SYS"
"$MOUNT" -o remount,bind,ro,nosuid,nodev,noexec "$T_SYS"
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
  "$MOUNT" --bind "$1" "$2"
  "$MOUNT" -o remount,bind,nosuid,nodev,noexec "$2"
  shift 2
done
shift
"$HOSTNAME_BIN" "$HOSTNAME_VALUE"
echo "$SETUP_DONE" >&2
exec "$@" 2>&3 3>&-
`;

/** The line the setup writes when the container is ready (spawn.ts: setupDone). */
const SETUP_DONE = 'thinfs-run: setup done';

/** Run `c` in new namespaces chrooted into the view; resolves with the container's exit status. */
export function runChroot(c: ContainerSpec): Promise<number> {
  const unshare = requireProgram('unshare', 'util-linux');
  const setpriv = requireProgram('setpriv', 'util-linux');
  const p = c.process;
  const rootless = c.rootless !== undefined;

  const outer = ['--mount', '--propagation', 'private', '--pid', '--uts', '--ipc', '--fork', '--kill-child'];
  if (rootless) outer.unshift('--user', '--map-root-user');

  const binds = c.files.binds.flatMap((b) => [b.source, inRoot(c.rootfs, b.destination)]);

  const ids = rootless ? [] : [`--regid=${p.user.gid}`, p.user.additionalGids.length > 0 ? `--groups=${p.user.additionalGids.join(',')}` : '--clear-groups'];
  const bounding = `--bounding-set=-all,${CAPABILITIES.map((cap) => `+${cap.slice(4).toLowerCase()}`).join(',')}`;
  const inner = [
    requireProgram('env', 'coreutils'), '-i', '--', ...p.env,
    setpriv, ...ids, bounding, '--',
    unshare, `--root=${c.rootfs}`, `--wd=${p.cwd}`, ...(p.user.uid === 0 ? [] : [`--setuid=${p.user.uid}`]), '--',
    ...p.args,
  ];

  const env: NodeJS.ProcessEnv = {
    PATH: SYSTEM_PATH,
    MOUNT: requireProgram('mount', 'mount'),
    MKDIR: requireProgram('mkdir', 'coreutils'),
    LN: requireProgram('ln', 'coreutils'),
    HOSTNAME_BIN: requireProgram('hostname', 'hostname'),
    HOSTNAME_VALUE: c.hostname,
    DEVICES: DEVICES.join(' '),
    DEVPTS_GID: rootless ? '' : ',gid=5',
    SETUP_DONE,
    T_PROC: inRoot(c.rootfs, '/proc'),
    T_DEV: inRoot(c.rootfs, '/dev'),
    T_SYS: inRoot(c.rootfs, '/sys'),
  };
  const sh = requireProgram('sh', 'dash');
  // The container's init is the child unshare forks (signals sent to unshare itself are blocked while it waits).
  return runForeground(unshare, [...outer, '--', sh, '-c', SETUP, 'thinfs-run', ...binds, '--', ...inner], { env, targets: childrenOf, setupDone: SETUP_DONE });
}
