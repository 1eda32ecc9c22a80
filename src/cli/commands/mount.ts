/**
 * `thinfs mount NAME [MOUNTPOINT] [--read-only] [--nosuid] [--uid-map C:H:N]... [--gid-map C:H:N]...`:
 * mount an image (always read-only) or a container at MOUNTPOINT (an empty directory;
 * default ROOT/mnt/DEVICE, which exists only while mounted; NAME may be the reference of
 * a loaded image, DEVICE is its device name). Checks the name and the
 * mountpoint first, then starts the pool's daemon when none runs, asks it to mount, and
 * returns once the mountpoint is served.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { MountCheckResult, MountResult } from '../../daemon/ops/index.js';
import { logFile } from '../../daemon/runfiles.js';
import { ensureDaemon } from '../../daemon/spawn.js';
import { fail } from '../../errors.js';
import { notEmpty, parseIdRange, thinfsMountAt } from '../../fuse/index.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

interface MountOptions {
  readOnly?: boolean;
  nosuid?: boolean;
  uidMap: string[];
  gidMap: string[];
  json?: boolean;
}

/** How long the mountpoint may take to show the mount after the daemon answered. */
const SERVE_TIMEOUT_MS = 10_000;

/** Add `thinfs mount` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('mount')
      .description('mount an image (read-only) or a container through FUSE; starts the pool daemon when needed')
      .argument('<name>', 'image or container name, or the reference of a loaded image (example.org/img:tag)')
      .argument('[mountpoint]', 'an existing empty directory (default: ROOT/mnt/NAME, created for the mount and removed after it)')
      .option('--read-only', 'mount read-only (images always are)')
      .option('--nosuid', 'ignore setuid/setgid bits (a root mount honours them by default; a non-root mount never does)')
      .option('--uid-map <C:H:N>', 'show stored uids C.. as host uids H.. (N of them), like newuidmap; repeatable', idRangeArg, [])
      .option('--gid-map <C:H:N>', 'the same for gids; repeatable', idRangeArg, []),
  ).action(async (name: string, mountpoint: string | undefined, o: MountOptions, cmd: Command) => {
    const { root } = globals(cmd);
    const mp = mountpoint === undefined ? undefined : path.resolve(mountpoint);
    if (mp !== undefined) await requireDirectory(mp);
    // Unknown names, missing pools and stray files fail here, before a daemon is started for nothing.
    const dev = await runOp<MountCheckResult>(root, 'mountCheck', { name });
    if (mp === undefined) await requireNoStrayFiles(path.join(root, 'mnt', dev.name));
    const logLevel = cmd.optsWithGlobals<{ logLevel?: string }>().logLevel;
    await ensureDaemon(root, { logLevel });
    const r = await runOp<MountResult>(root, 'mount', {
      name,
      mountpoint: mp,
      readOnly: o.readOnly === true,
      nosuid: o.nosuid === true,
      uidMap: o.uidMap,
      gidMap: o.gidMap,
    });
    await waitServed(r.mountpoint, root);
    // --json carries the warnings in the result.
    if (!o.json) for (const w of r.warnings) process.stderr.write(`thinfs: warning: ${w}\n`);
    out(o.json ? formatJson(r) : `mounted ${r.name} at ${r.mountpoint}${r.readOnly ? ' (read-only)' : ''}\n`);
  });
}

/** Commander parser collecting repeated C:H:N values (exit status 2 when one is wrong). */
function idRangeArg(text: string, previous: string[]): string[] {
  try {
    parseIdRange(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message.replace(/^EINVAL: /, '').replace(/, mount$/, ''));
  }
  return [...previous, text];
}

async function requireDirectory(mp: string): Promise<void> {
  let st;
  try {
    st = await fsp.stat(mp);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw fail('ENOENT', 'mount', mp, 'the mountpoint does not exist');
    throw fail('EIO', 'mount', mp, `cannot use the mountpoint (${(err as Error).message})`);
  }
  if (!st.isDirectory()) throw fail('ENOTDIR', 'mount', mp, 'the mountpoint is not a directory');
  // A mount there already is the daemon's to judge (EBUSY, or a dead one it detaches).
  if (thinfsMountAt(mp) !== undefined) return;
  const names = await fsp.readdir(mp).catch(() => []);
  if (names.length > 0) throw notEmpty(mp, names);
}

/** ROOT/mnt/NAME exists only while mounted: anything in it was written while the view was not there. */
async function requireNoStrayFiles(mp: string): Promise<void> {
  if (thinfsMountAt(mp) !== undefined) return;
  const names = await fsp.readdir(mp).catch(() => []);
  if (names.length > 0) {
    throw notEmpty(mp, names, 'these were written there while the view was not mounted and are not in the container: move them away, then mount');
  }
}

/** Wait until `mp` is a different filesystem from its parent (the FUSE mount answers). */
async function waitServed(mp: string, root: string): Promise<void> {
  const deadline = Date.now() + SERVE_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const [st, parent] = await Promise.all([fsp.stat(mp), fsp.stat(path.dirname(mp))]);
      if (st.dev !== parent.dev) return;
      last = 'the mountpoint still shows the directory underneath';
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw fail('ETIMEDOUT', 'mount', mp, `the mount does not answer (${last}); see ${logFile(root)}`);
}
