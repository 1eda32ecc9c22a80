/**
 * Starting the pool's daemon from a command (`thinfs mount`): a detached child
 * `node .../cli/main.js --root ROOT daemon`, its stdout/stderr appended to
 * ROOT/logs/daemon.log (libfuse prints its mount errors there), unref'd so the command
 * can exit. Returns once the daemon answers on its control socket. Two commands racing
 * may both start one: the second daemon finds the pool locked and exits, and both
 * commands talk to the first.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fail } from '../errors.js';
import { logger } from '../log.js';
import { daemonRunning } from './client.js';
import { logFile } from './runfiles.js';

const log = logger('client');

/** How long a starting daemon may take to answer. */
const START_TIMEOUT_MS = 20_000;

export interface EnsureOptions {
  /** Passed to the daemon as --log-level. */
  logLevel?: string;
}

/** Make sure a daemon serves `root`; true when this call started it. */
export async function ensureDaemon(root: string, opts: EnsureOptions = {}): Promise<boolean> {
  if (await daemonRunning(root)) return false;
  const log_ = logFile(root);
  fs.mkdirSync(path.dirname(log_), { recursive: true });
  const out = fs.openSync(log_, 'a');
  const args = [cliMain(), '--root', root];
  if (opts.logLevel !== undefined) args.push('--log-level', opts.logLevel);
  args.push('daemon');
  let exited: number | null | undefined;
  try {
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out], env: daemonEnv(process.env) });
    child.on('exit', (code) => (exited = code));
    child.on('error', (err) => {
      log.error({ err }, 'cannot start the daemon');
      exited = -1;
    });
    child.unref();
    log.debug({ pid: child.pid, root }, 'started the thinfs daemon');
  } finally {
    fs.closeSync(out);
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await daemonRunning(root)) return true;
    if (exited !== undefined) {
      // It may have lost a race with another daemon that is starting: give that one a moment.
      await sleep(300);
      if (await daemonRunning(root)) return false;
      throw fail('EIO', 'daemon', root, `the thinfs daemon exited during start (status ${exited})${lastError(log_)}; see ${log_}`);
    }
    await sleep(50);
  }
  throw fail('ETIMEDOUT', 'daemon', root, `the thinfs daemon did not answer within ${START_TIMEOUT_MS / 1000} s; see ${log_}`);
}

/** The compiled CLI entry point next to this module (dist/src/cli/main.js). */
function cliMain(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const sibling = path.resolve(here, '..', 'cli', 'main.js');
  if (fs.existsSync(sibling)) return sibling;
  // Running from the TypeScript sources (tests): use the build.
  const built = path.resolve(here, '..', '..', 'dist', 'src', 'cli', 'main.js');
  if (fs.existsSync(built)) return built;
  throw fail('ENOENT', 'daemon', built, 'the compiled thinfs command is missing; run npm run build');
}

/** The message of the last error the daemon logged, as ": message" (or ''). */
function lastError(file: string): string {
  try {
    const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-50).reverse();
    for (const l of lines) {
      try {
        const rec = JSON.parse(l) as { level?: number; msg?: string; err?: { message?: string } };
        if ((rec.level ?? 0) >= 50) return `: ${rec.err?.message ?? rec.msg ?? ''}`;
      } catch {
        if (l.trim() !== '') return `: ${l.trim()}`;
      }
    }
  } catch {
    /* no log */
  }
  return '';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The daemon's environment: the CLI's (THINFS_FUSE, the log settings and the rest reach
 * it), with glibc's MALLOC_MMAP_THRESHOLD_ at 256 KiB unless set: libfuse3's 1 MiB
 * receive buffers are then mmapped and given back when freed (measured in lowlevel.ts:
 * 50 mounts after 4 MiB written into each, 135 MiB RSS without it, 113 MiB with it).
 */
export function daemonEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { MALLOC_MMAP_THRESHOLD_: '262144', ...env };
}
