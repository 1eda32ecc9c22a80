/**
 * Running a container on a mounted thinfs view: which runtime, what process (from the
 * image config and the command line), what the view needs before it can be a root, and
 * the run itself. `thinfs run` (cli/commands/run.ts) mounts and unmounts the view; this
 * folder never talks to the pool.
 *
 * Runtimes, in the order `auto` tries them:
 *  - runc: an OCI runtime bundle whose root is the view; rootless for a non-root caller.
 *  - crun: the same bundle; only when runc is missing (Debian's crun 1.8 fails on a
 *    cgroup v1/hybrid layout where runc works, so runc comes first).
 *  - chroot: util-linux unshare + setpriv (chroot.ts), when no OCI runtime is installed.
 */
import { fail } from '../errors.js';
import type { ContainerSpec } from './container.js';
import { runChroot } from './chroot.js';
import { runOci } from './oci-runtime.js';
import { findProgram } from './programs.js';

export type { ContainerSpec } from './container.js';
export { mountpointsOf } from './container.js';
export { processSpec, validEnvArg, type ImageExecConfig, type ProcessOverrides, type ProcessSpec } from './process.js';
export { validUserSpec, type ExecUser } from './user.js';
export { createMountpoints, missingMountpoints, type Mountpoint } from './rootfs.js';
export { createRunDir, type RunFiles } from './rundir.js';
export { findProgram, requireProgram, SYSTEM_DIRS, SYSTEM_PATH } from './programs.js';
export { runtimeConfig } from './oci.js';

/** What `--runtime` accepts. */
export const RUNTIME_NAMES = ['auto', 'runc', 'crun', 'chroot'] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];

/** A chosen runtime. */
export interface Runtime {
  name: Exclude<RuntimeName, 'auto'>;
  /** Absolute path of the OCI runtime (runc, crun). */
  path?: string;
  /** Why it was chosen, when the user should know (a fallback). */
  note?: string;
}

/** The runtime for `--runtime wanted`: ENOENT when the one asked for is not installed. */
export function chooseRuntime(wanted: RuntimeName = 'auto'): Runtime {
  if (wanted === 'chroot') return { name: 'chroot' };
  if (wanted !== 'auto') {
    const file = findProgram(wanted);
    if (file === undefined) throw fail('ENOENT', 'run', wanted, `${wanted} is not installed (Debian: apt-get install ${wanted}), or use --runtime chroot`);
    return { name: wanted, path: file };
  }
  const runc = findProgram('runc');
  if (runc !== undefined) return { name: 'runc', path: runc };
  const crun = findProgram('crun');
  if (crun !== undefined) return { name: 'crun', path: crun, note: 'runc is not installed; using crun (install runc if crun fails on this cgroup layout)' };
  return { name: 'chroot' };
}

/** Run container `c` with runtime `rt` in the foreground; resolves with the container process's exit status. */
export function runContainer(rt: Runtime, c: ContainerSpec): Promise<number> {
  return rt.name === 'chroot' ? runChroot(c) : runOci(rt.path!, c);
}
