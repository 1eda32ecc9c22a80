/**
 * The snapshotter's way to the pool: every snapshot operation is run by daemon/client.ts
 * runOp — in the pool's daemon over its control socket when one answers, else in this
 * process like any thinfs command. So this process never opens the pool while a daemon
 * runs: one writer per pool (DESIGN.md §6).
 *
 * Why a process of its own, and not inside the daemon: the daemon's lifetime is its
 * mounts' (it exits after the last one unless --stay; a restart drops every FUSE mount of
 * running containers), while the snapshotter is a service containerd talks to, restarted
 * with containerd's configuration and upgrades. As its own process it can be restarted
 * without touching a single mount; a fault in gRPC handling can't take the mounts down; and
 * the daemon stays what it is — one event loop answering FUSE and the control socket. The
 * price is one local round trip per call (newline-delimited JSON over a unix socket),
 * small beside what the calls do (a mount, a commit).
 *
 * The daemon serves the views (FUSE mounts of active snapshots), so before a call that
 * mounts one (Prepare, View, Mounts) the snapshotter makes sure a daemon runs: when none
 * answers, it starts one with --stay (a snapshotter's views come and go all the time:
 * unpacking commits each layer, and a daemon that exits after its last unmount would
 * restart for every layer). A daemon already running without --stay (a `thinfs mount`
 * started it) is used as it is; if it exits, the next mounting call starts one that stays.
 * Other calls need no daemon: without one, no view is mounted. The mounts the daemon
 * answers are checked to be served (the mountpoint is a different file system from its
 * parent) before containerd gets them.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { daemonRunning, runOp } from '../daemon/client.js';
import { logFile } from '../daemon/runfiles.js';
import { fail, isThinfsError } from '../errors.js';
import { logger } from '../log.js';
import type { SnapshotBackend } from './server.js';
import type { SnapshotMount } from './snapshots/index.js';

const log = logger('snapshotter');

/** Operations that mount a view and answer mounts. */
const MOUNTING = new Set(['snapshotPrepare', 'snapshotView', 'snapshotMounts']);
/** How long a starting daemon may take to answer. */
const START_TIMEOUT_MS = 20_000;
/** How long a mount the daemon made may take to show at its mountpoint. */
const SERVE_TIMEOUT_MS = 10_000;

/** How the daemon backend starts a daemon. */
export interface DaemonBackendOptions {
  /** Passed to a daemon this process starts, as --log-level. */
  logLevel?: string;
}

/** The backend of `thinfs snapshotter`: the daemon of the pool under `root`. */
export function daemonBackend(root: string, opts: DaemonBackendOptions = {}): SnapshotBackend {
  const daemon = new StayingDaemon(root, opts.logLevel);
  return {
    async call<R>(op: string, args: object): Promise<R> {
      // Only a view needs the daemon; the rest runs in it when it runs, else here (runOp), where nothing is mounted.
      if (MOUNTING.has(op)) await daemon.ensure();
      let result: unknown;
      try {
        result = await runOp(root, op, args);
      } catch (err) {
        // The daemon went away between the check and the call, and the operation ran here, where nothing mounts.
        if (!MOUNTING.has(op) || !isThinfsError(err, 'ENOTCONN')) throw err;
        await daemon.ensure();
        result = await runOp(root, op, args);
      }
      if (MOUNTING.has(op)) await Promise.all((result as SnapshotMount[]).map((m) => waitServed(m.source, root)));
      return result as R;
    },
  };
}

/** Starts the pool's daemon with --stay when none answers; one start at a time. */
class StayingDaemon {
  private starting: Promise<void> | undefined;

  constructor(
    private readonly root: string,
    private readonly logLevel: string | undefined,
  ) {}

  async ensure(): Promise<void> {
    if (await daemonRunning(this.root)) return;
    this.starting ??= this.start().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async start(): Promise<void> {
    if (await daemonRunning(this.root)) return;
    const file = logFile(this.root);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const out = fs.openSync(file, 'a');
    const args = [cliMain(), '--root', this.root];
    if (this.logLevel !== undefined) args.push('--log-level', this.logLevel);
    args.push('daemon', '--stay');
    let exited: number | null | undefined;
    try {
      const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', out, out], env: process.env });
      child.on('exit', (code) => (exited = code));
      child.on('error', (err) => {
        log.error({ err }, 'cannot start the thinfs daemon');
        exited = -1;
      });
      child.unref();
      log.info({ pid: child.pid, root: this.root }, 'started the pool daemon (--stay)');
    } finally {
      fs.closeSync(out);
    }
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (await daemonRunning(this.root)) return;
      if (exited !== undefined) {
        // It may have lost a race with a daemon another command started: give that one a moment.
        await sleep(300);
        if (await daemonRunning(this.root)) return;
        throw fail('EIO', 'daemon', this.root, `the thinfs daemon exited during start (status ${exited}); see ${file}`);
      }
      await sleep(50);
    }
    throw fail('ETIMEDOUT', 'daemon', this.root, `the thinfs daemon did not answer within ${START_TIMEOUT_MS / 1000} s; see ${file}`);
  }
}

/** The compiled CLI entry point (dist/src/cli/main.js), from the build or from the sources (tests). */
function cliMain(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const sibling = path.resolve(here, '..', 'cli', 'main.js');
  if (fs.existsSync(sibling)) return sibling;
  const built = path.resolve(here, '..', '..', 'dist', 'src', 'cli', 'main.js');
  if (fs.existsSync(built)) return built;
  throw fail('ENOENT', 'daemon', built, 'the compiled thinfs command is missing; run npm run build');
}

/** Wait until `mp` is a different file system from its parent (the FUSE mount answers). */
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
    await sleep(50);
  }
  throw fail('ETIMEDOUT', 'mount', mp, `the view does not answer (${last}); see ${logFile(root)}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
