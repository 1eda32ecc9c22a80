/**
 * The thinfs daemon: one per pool (DESIGN.md §6). It holds the pool open as its only
 * writer (the pool's flock makes a second writer fail with EBUSY), serves every mount
 * of the pool from this one process, and answers the control socket for every
 * operation in OPS, so that commands changing the pool go through it while it runs.
 *
 * Lifecycle:
 *  - start: log to ROOT/logs/daemon.log (stderr, pretty on a terminal, with
 *    --foreground); open the pool read-write (waiting briefly for a command that holds
 *    it); detach the dead mounts a killed predecessor recorded in run/mounts.json and
 *    remove their default mountpoints; replace its stale socket; listen; write
 *    run/daemon.pid.
 *  - commits: the filesystem commits on fsync; everything else is committed in batches
 *    by a timer, at most COMMIT_INTERVAL_MS after it was written (DESIGN.md §5).
 *  - exit: after its last mount is unmounted (unless --stay); when no mount came within
 *    IDLE_EXIT_MS of starting or of the last failed mount; on SIGTERM/SIGINT/SIGHUP,
 *    which unmount everything, commit and exit 0. A view still busy then is detached
 *    lazily, with a warning in the log naming its holders (mounts.ts): a shutdown
 *    cannot wait for processes that may never let go, and everything the view received
 *    is committed before the daemon exits.
 */
import * as fs from 'node:fs';
import { fail, isThinfsError } from '../errors.js';
import { lazyUnmount, thinfsMountAt } from '../fuse/index.js';
import { configureLog, logger } from '../log.js';
import { Pool } from '../pool/index.js';
import { listenControl, type ControlServer, type Dispatch } from './control.js';
import { keepServingThroughEscapes } from './escapes.js';
import { MountTable } from './mounts.js';
import { LOCAL_OPS, OPS, type OpContext } from './ops/index.js';
import type { DaemonStatus, MountService } from './ops/mount-ops.js';
import { socketPath } from './protocol.js';
import { removeDefaultMountpoint } from './mountpoints.js';
import { logFile, pidFile, readMountRecords, removeRunFiles, runDir, writeMountRecords, writePid } from './runfiles.js';

const log = logger('daemon');

/** Upper bound on how long a write stays uncommitted without fsync. */
export const COMMIT_INTERVAL_MS = 1000;
/** A daemon without mounts for this long exits (unless --stay). */
export const IDLE_EXIT_MS = 15_000;
/** How often the mount table is checked against the kernel's (umount(8) from outside). */
const PRUNE_INTERVAL_MS = 2000;
/** How long to wait for a command that holds the pool open for writing. */
const OPEN_WAIT_MS = 10_000;

export interface DaemonOptions {
  root: string;
  /** Stay attached: log to stderr (pretty on a terminal). */
  foreground: boolean;
  /** Keep running without mounts. */
  stay: boolean;
  /** Log level (default info). */
  logLevel?: string;
}

/** Run the daemon until it is told to stop; resolves with the exit status. */
export async function runDaemon(opts: DaemonOptions): Promise<number> {
  const { root } = opts;
  fs.mkdirSync(runDir(root), { recursive: true });
  const level = opts.logLevel ?? 'info';
  if (opts.foreground) configureLog({ level, pretty: process.stderr.isTTY === true });
  else configureLog({ level, file: logFile(root) });

  const pool = await openPool(root);
  await detachDeadMounts(root);
  // We hold the pool's writer lock, so no other daemon of this pool is alive: any socket is stale.
  fs.rmSync(socketPath(root), { force: true });

  const daemon = new Daemon(root, pool, opts.stay);
  await daemon.start();
  return daemon.done;
}

class Daemon {
  private readonly table: MountTable;
  private server: ControlServer | undefined;
  private readonly startedAt = new Date();
  private emptySince = Date.now();
  private timedCommits = 0;
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private committing = false;
  private resolveDone!: (code: number) => void;
  readonly done = new Promise<number>((resolve) => (this.resolveDone = resolve));

  constructor(
    private readonly root: string,
    private readonly pool: Pool,
    private readonly stay: boolean,
  ) {
    this.table = new MountTable(root, pool, (why) => this.onEmpty(why));
  }

  async start(): Promise<void> {
    const service: MountService = {
      mount: (req) => this.table.mount(req),
      umount: (name, mountpoint, force) => this.table.umount(name, mountpoint, force),
      list: () => this.table.list(),
      status: () => this.status(),
      stats: (name) => this.table.stats(name),
      flush: (name) => this.table.flush(name),
    };
    this.server = await listenControl(this.root, control({ root: this.root, pool: this.pool, mounts: service }));
    writePid(this.root);
    this.timers.push(setInterval(() => void this.commitTick(), COMMIT_INTERVAL_MS));
    this.timers.push(setInterval(() => this.pruneTick(), PRUNE_INTERVAL_MS));
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => void this.stop(`${sig}`));
    // The adapter never throws into fuse-native; should anything else escape (or a log or
    // stdio write fail), it is logged and the daemon keeps serving: escapes.ts.
    keepServingThroughEscapes();
    log.info({ root: this.root, pid: process.pid, stay: this.stay }, 'thinfs daemon started');
  }

  status(): DaemonStatus {
    const mem = process.memoryUsage();
    return {
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      uptimeMs: Date.now() - this.startedAt.getTime(),
      stay: this.stay,
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      externalBytes: mem.external,
      timedCommits: this.timedCommits,
      poolMode: this.pool.mode(),
      ...(this.pool.status().failReason !== undefined ? { failReason: this.pool.status().failReason } : {}),
    };
  }

  private async commitTick(): Promise<void> {
    // In fail mode nothing more is written (pool.ts): a failed commit is never retried.
    if (this.committing || !this.pool.dirty() || this.pool.mode() === 'fail') return;
    this.committing = true;
    try {
      // Data pages go back in the thread pool first, so the commit holds the event loop
      // (and every mount's requests) only briefly.
      await this.pool.flushDataAsync();
      if (this.stopping || !this.pool.dirty() || this.pool.mode() === 'fail') return;
      this.pool.commit();
      this.timedCommits += 1;
    } catch (err) {
      log.error({ err }, 'timed commit failed');
    } finally {
      this.committing = false;
    }
  }

  private pruneTick(): void {
    this.table.prune();
    if (!this.stay && this.table.size === 0 && Date.now() - this.emptySince > IDLE_EXIT_MS) void this.stop('no mounts');
  }

  /** The table became empty: by an unmount (exit unless --stay) or a failed mount (idle timer). */
  private onEmpty(why: 'unmounted' | 'failed'): void {
    this.emptySince = Date.now();
    if (why === 'unmounted' && !this.stay) void this.stop('last mount unmounted');
  }

  /** Unmount everything, commit, close the pool, remove the run files, exit 0. */
  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    log.info({ reason }, 'thinfs daemon stopping');
    for (const t of this.timers) clearInterval(t);
    let code = 0;
    try {
      await this.server?.close();
      await this.table.unmountAll();
      this.pool.close();
    } catch (err) {
      log.error({ err }, 'clean shutdown failed');
      code = 1;
    }
    removeRunFiles(this.root);
    log.info({ code }, 'thinfs daemon stopped');
    this.resolveDone(code);
  }
}

/** Open the pool read-write, waiting a little for a command that has it open. */
async function openPool(root: string): Promise<Pool> {
  const deadline = Date.now() + OPEN_WAIT_MS;
  for (;;) {
    try {
      return Pool.open(root);
    } catch (err) {
      if (!isThinfsError(err, 'EBUSY') || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Detach the mounts a killed daemon left dead (it recorded them in run/mounts.json). */
async function detachDeadMounts(root: string): Promise<void> {
  for (const rec of readMountRecords(root)) {
    if (thinfsMountAt(rec.mountpoint) === undefined) continue;
    log.warn({ mount: rec.name, mountpoint: rec.mountpoint }, 'detaching a mount left dead by a killed daemon');
    try {
      await lazyUnmount(rec.mountpoint);
    } catch (err) {
      log.error({ err, mountpoint: rec.mountpoint }, 'cannot detach a dead mount');
    }
  }
  for (const rec of readMountRecords(root)) await removeDefaultMountpoint(root, rec.name, rec.mountpoint);
  writeMountRecords(root, []);
  fs.rmSync(pidFile(root), { force: true });
}

/** Answer a control request: any operation of OPS, run on the daemon's pool and mount table; its progress to the caller. */
function control(ctx: OpContext): Dispatch {
  return async (op, args, progress) => {
    const fn = OPS[op];
    if (fn === undefined) throw fail('EINVAL', 'request', op, 'unknown operation');
    if (LOCAL_OPS.has(op)) throw fail('EINVAL', 'request', op, 'this operation never runs in the daemon');
    return fn({ ...ctx, progress }, args);
  };
}
