/**
 * How an operation reaches the pool.
 *
 * In the daemon, `ctx.pool` is the daemon's open pool: an operation uses it and commits
 * what it changed, but never closes or aborts it (an abort would also drop the
 * uncommitted writes of every mounted view). Without a daemon, `ctx.pool` is unset and
 * `withPool` opens the pool for this one operation:
 *  - queries open it read-only: a query never writes (no migration, no punching, no
 *    completion of deferred deletions), so it is safe beside a daemon that is just
 *    starting, and can't change a pool that is damaged or not ours;
 *  - changes first open it read-only to make sure the metadata is a thinfs pool (a
 *    read-write open switches any SQLite file to WAL before it can be refused), then
 *    read-write; committed and closed on success, closed without commit on failure.
 * SQLite errors (a corrupt or truncated metadata file) become ThinfsErrors, and a failed
 * open removes the empty -wal/-shm companions it created, so bad metadata is left exactly
 * as it was found.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, isThinfsError } from '../../errors.js';
import { isSqliteCorruption, Pool, translateSqliteError } from '../../pool/index.js';
import type { MountService } from './mount-ops.js';

export interface OpContext {
  /** The pool root (absolute). */
  root: string;
  /** The daemon's open pool, when the operation runs inside the daemon. */
  pool?: Pool;
  /** The daemon's mount table, when the operation runs inside the daemon (mount ops). */
  mounts?: MountService;
  /** Progress of a long operation (import, load, export), when the caller shows it: in this process, or sent over the control socket (protocol.ts). */
  progress?: (p: unknown) => void;
}

/** One operation: JSON-serialisable args in (validated by the operation), JSON-serialisable result out. */
export type OpFn = (ctx: OpContext, args: unknown) => unknown;

/** What an operation does with the pool. */
export type Access = 'read' | 'write';

/** Run `fn` on the context's pool, or on the pool opened for it (see the top of this file). */
export async function withPool<R>(ctx: OpContext, access: Access, fn: (pool: Pool) => R | Promise<R>): Promise<R> {
  if (ctx.pool !== undefined) {
    const result = await guardSqlite(ctx.root, () => fn(ctx.pool!));
    if (access === 'write') ctx.pool.commit();
    return result;
  }
  if (access === 'write') openDirect(ctx.root, true).close();
  const pool = openDirect(ctx.root, access === 'read');
  let result: R;
  try {
    result = await guardSqlite(ctx.root, () => fn(pool));
  } catch (err) {
    try {
      pool.close({ commit: false });
    } catch {
      /* the first error is the one to report */
    }
    throw err;
  }
  await guardSqlite(ctx.root, () => pool.close({ commit: access === 'write' }));
  return result;
}

function metadataFile(root: string): string {
  return path.join(root, 'pool', 'metadata.db');
}

/** How long a command waits for the pool while another command (or a starting daemon) has it. */
const POOL_WAIT_MS = 60_000;

/** Tell a person at a terminal why the command pauses (scripts get no extra line). */
function tellWaiting(): void {
  if (process.stderr.isTTY) process.stderr.write('thinfs: waiting for the pool (another thinfs command has it open)\n');
}

/** Pool.open, leaving no SQLite companions behind when it fails. */
function openDirect(root: string, readOnly: boolean): Pool {
  const meta = metadataFile(root);
  const companions = [`${meta}-wal`, `${meta}-shm`].filter((f) => !fs.existsSync(f));
  try {
    // Commands wait for one another (bounded) instead of failing EBUSY: one writer at a time.
    return guardSqliteSync(root, () => Pool.open(root, { readOnly, waitMs: readOnly ? 0 : POOL_WAIT_MS, onWait: tellWaiting }));
  } catch (err) {
    const wal = companions.find((f) => f.endsWith('-wal'));
    // Only files this open created, and only an empty log: nothing of anybody's is lost.
    if (wal === undefined || !fs.existsSync(wal) || fs.statSync(wal).size === 0) {
      for (const f of companions) fs.rmSync(f, { force: true });
    }
    // A pool that `check` marked (pool/needs_check) stays read-only even when SQLite can no
    // longer open its metadata: a change is refused with the advice, not with a parse error.
    if (isThinfsError(err, 'EINVAL') && fs.existsSync(path.join(root, 'pool', 'needs_check'))) {
      throw fail('EROFS', 'open', root, 'pool needs a check; run `thinfs check --repair`');
    }
    throw err;
  }
}

async function guardSqlite<R>(root: string, fn: () => R | Promise<R>): Promise<R> {
  try {
    return await fn();
  } catch (err) {
    throw translateSqlite(root, err);
  }
}

function guardSqliteSync<R>(root: string, fn: () => R): R {
  try {
    return fn();
  } catch (err) {
    throw translateSqlite(root, err);
  }
}

/**
 * SQLite's own errors as ThinfsErrors (the pool's one translation); anything else
 * unchanged. A file SQLite cannot read at all is reported as not a pool or corrupt.
 */
function translateSqlite(root: string, err: unknown): unknown {
  if (isThinfsError(err)) return err;
  const file = metadataFile(root);
  if (isSqliteCorruption(err)) {
    return fail('EINVAL', 'open', file, `metadata is not a thinfs pool or is corrupt (${(err as Error).message}); run \`thinfs check\``);
  }
  return translateSqliteError(err, 'metadata', file);
}

/** The arguments object of a request; EINVAL when it is not an object. */
export function argsObject(op: string, raw: unknown): Record<string, unknown> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw fail('EINVAL', op, undefined, 'arguments must be an object');
  return raw as Record<string, unknown>;
}

/** An optional finite number argument. */
export function optNumber(op: string, args: Record<string, unknown>, key: string): number | undefined {
  const v = args[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw fail('EINVAL', op, undefined, `argument '${key}' must be a number`);
  return v;
}

/** A required finite number argument. */
export function reqNumber(op: string, args: Record<string, unknown>, key: string): number {
  const v = optNumber(op, args, key);
  if (v === undefined) throw fail('EINVAL', op, undefined, `argument '${key}' is required`);
  return v;
}

/** An optional boolean argument (default false). */
export function optBool(op: string, args: Record<string, unknown>, key: string): boolean {
  const v = args[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw fail('EINVAL', op, undefined, `argument '${key}' must be true or false`);
  return v;
}

/** A required, non-empty string argument. */
export function reqString(op: string, a: Record<string, unknown>, key: string): string {
  const v = optString(op, a, key);
  if (v === undefined || v === '') throw fail('EINVAL', op, undefined, `argument '${key}' is required`);
  return v;
}

/** An optional string argument. */
export function optString(op: string, a: Record<string, unknown>, key: string): string | undefined {
  const v = a[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw fail('EINVAL', op, undefined, `argument '${key}' must be a string`);
  return v;
}
