/** What the layer importers share: options, statistics, progress and entry errors. */
import { fail, isThinfsError, ThinfsError, type ErrnoCode } from '../errors.js';
import { toText } from '../fs/index.js';
import type { LayerCounts } from './writer.js';

/** Progress of an import: `done` of `total` bytes of a tar (compressed bytes for a tar.gz) or entries of a directory. */
export interface ImportProgress {
  done: number;
  total: number;
  unit: 'bytes' | 'entries';
  entries: number;
}

export interface ImportOptions {
  /** Called now and then (at most every `progressIntervalMs`, and once at the end). */
  onProgress?: (p: ImportProgress) => void;
  progressIntervalMs?: number;
}

/** What an import did: entries by kind and the time it took. */
export interface ImportStats extends LayerCounts {
  entries: number;
  elapsedMs: number;
}

/** An error of one entry, as one line naming the source and the entry (`name` already decoded for display). */
export function entryError(err: unknown, source: string, name: string): ThinfsError {
  if (isThinfsError(err) && err.syscall === 'import') return err;
  if (isThinfsError(err)) return fail(err.code, 'import', source, `entry '${name}': ${shownMessage(err).replace(/^E[A-Z0-9]+: /, '')}`);
  const e = err as NodeJS.ErrnoException;
  const code = (typeof e?.code === 'string' && /^E[A-Z0-9]+$/.test(e.code) ? e.code : 'EIO') as ErrnoCode;
  return fail(code, 'import', source, `entry '${name}': ${e?.message ?? String(err)}`);
}

/** A progress reporter that calls `opts.onProgress` at most every `progressIntervalMs` (and always when `final`). */
export function progressThrottle(
  opts: ImportOptions,
  total: number,
  unit: ImportProgress['unit'],
): (done: number, entries: number, final: boolean) => void {
  const every = opts.progressIntervalMs ?? 100;
  let last = 0;
  return (done, entries, final) => {
    if (opts.onProgress === undefined) return;
    const now = Date.now();
    if (!final && now - last < every) return;
    last = now;
    opts.onProgress({ done, total, unit, entries });
  };
}

/** The message of a filesystem error with its path (a byte string, fs/bytes.ts) decoded for a person. */
function shownMessage(err: ThinfsError): string {
  const p = err.path;
  if (p === undefined || toText(p) === p) return err.message;
  return err.message.split(`'${p}'`).join(`'${toText(p)}'`);
}
