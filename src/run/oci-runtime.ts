/**
 * Running a container with an OCI runtime (runc; crun speaks the same command line):
 * write the bundle's config.json into the run directory and `RUNTIME --root STATE run
 * --bundle DIR ID` in the foreground. The runtime creates the namespaces, mounts /proc,
 * /dev and the rest, pivots into the view and execs the process; `run` (not `create` +
 * `start`) deletes the container when its process ends and exits with its status.
 *
 * The runtime's own errors go to its stderr (one line, `runc run failed: ...`) and to a
 * JSON log in the run directory, which tells an exec failure apart from a process
 * that exited 1.
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
  const logFile = path.join(c.files.dir, 'runtime.log');
  const status = await runForeground(runtime, ['--root', c.stateDir, '--log', logFile, '--log-format', 'json', 'run', '--bundle', c.files.dir, c.id]);
  return status === 1 ? (execFailure(logFile) ?? status) : status;
}

/**
 * The shell's status for a process that could not be exec'd — 127 not found, 126 not
 * executable, as podman reports them — when the runtime's log says that is why it
 * failed (it has already printed its one line on stderr); else undefined.
 */
function execFailure(logFile: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(logFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    let entry: { level?: string; msg?: string };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue;
    }
    if (entry.level !== 'error' || !/\bexec\b/.test(entry.msg ?? '')) continue;
    if (/no such file or directory|not found/.test(entry.msg!)) return 127;
    if (/permission denied/.test(entry.msg!)) return 126;
  }
  return undefined;
}
