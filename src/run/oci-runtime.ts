/**
 * Running a container with an OCI runtime (runc; crun speaks the same command line):
 * write the bundle's config.json into the run directory and `RUNTIME --root STATE run
 * --bundle DIR ID` in the foreground. The runtime creates the namespaces, mounts /proc,
 * /dev and the rest, pivots into the view and execs the process; `run` (not `create` +
 * `start`) deletes the container when its process ends and exits with its status.
 *
 * The state directory is under the pool root (ROOT/run/runc), so a rootless caller
 * needs no XDG_RUNTIME_DIR and runs of different pools never meet.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail } from '../errors.js';
import type { ContainerSpec } from './container.js';
import { runtimeConfig } from './oci.js';
import { runForeground } from './spawn.js';

/** Run `c` with the OCI runtime at `runtime` (absolute path); resolves with the container's exit status. */
export async function runOci(runtime: string, c: ContainerSpec): Promise<number> {
  try {
    fs.mkdirSync(c.stateDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(c.files.dir, 'config.json'), `${JSON.stringify(runtimeConfig(c), null, 2)}\n`, { mode: 0o600 });
  } catch (err) {
    throw fail('EIO', 'run', c.files.dir, `cannot write the runtime bundle (${(err as Error).message})`);
  }
  return runForeground(runtime, ['--root', c.stateDir, 'run', '--bundle', c.files.dir, c.id]);
}
