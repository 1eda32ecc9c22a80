/**
 * One container run as every runtime gets it: the view to use as root, the process,
 * the hostname, the files bound in, and whether it runs rootless (in a user namespace
 * that maps the caller to root) — and the environment a container has, whatever runs
 * it: /proc of its own pid namespace; a /dev tmpfs holding null, zero, full, random,
 * urandom and tty (bound from the host's nodes where mknod is not allowed, as rootless
 * podman does), pts (devpts newinstance, ptmxmode=0666), shm (tmpfs), mqueue, and the fd,
 * stdin, stdout, stderr and ptmx symlinks; /sys read-only; its own hostname (UTS);
 * its own IPC; the host's network.
 */
import type { ProcessSpec } from './process.js';
import type { Mountpoint } from './rootfs.js';
import { RUN_FILES, type RunFiles } from './rundir.js';

export interface ContainerSpec {
  /** Runtime id (unique among running containers of this pool). */
  id: string;
  /** Host path of the mounted view. */
  rootfs: string;
  readOnly: boolean;
  hostname: string;
  process: ProcessSpec;
  /** Give the process a terminal of its own (a pty the runtime allocates and relays). */
  tty: boolean;
  files: RunFiles;
  /** Set when the caller is not root: the host ids mapped to 0 in the user namespace. */
  rootless?: { uid: number; gid: number };
  /** Runtime state directory (runc --root). */
  stateDir: string;
}

/** Host nodes the container's /dev gets (the OCI runtime spec's default devices). */
export const DEVICES = ['null', 'zero', 'full', 'random', 'urandom', 'tty'] as const;

/**
 * The capabilities of the container's root: podman's default set. Root in a container
 * is not the host's root: no CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE, ...
 */
export const CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_NET_BIND_SERVICE',
  'CAP_SETFCAP',
  'CAP_SETGID',
  'CAP_SETPCAP',
  'CAP_SETUID',
  'CAP_SYS_CHROOT',
] as const;

/** What must exist in the view before a runtime mounts onto it (and the working directory `cwd`). */
export function mountpointsOf(cwd: string): Mountpoint[] {
  return [
    { path: '/proc', kind: 'dir' },
    { path: '/dev', kind: 'dir' },
    { path: '/sys', kind: 'dir' },
    ...RUN_FILES.map((f) => ({ path: f, kind: 'file' as const })),
    { path: cwd, kind: 'dir' },
  ];
}
