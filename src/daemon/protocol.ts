/**
 * The control protocol between thinfs commands and the pool's daemon.
 *
 * One unix stream socket per pool, ROOT/run/thinfs.sock. Newline-delimited JSON:
 *   request   {"id": n, "op": "name", "args": {...}, "progress": true}
 *   progress  {"id": n, "progress": {...}}                 (zero or more, before the response)
 *   response  {"id": n, "ok": true, "result": ...}
 *          or {"id": n, "ok": false, "error": {"code": "ENOENT", "message": "..."}}
 * `op` names a function of daemon/ops (the OPS table); `args` and `result` are plain
 * JSON. An error carries the errno code and the full message of the ThinfsError, so the
 * command prints exactly what it would have printed running the operation itself.
 *
 * Progress: a request with `"progress": true` gets the reports of a long operation (load,
 * import, export: what `OpContext.progress` receives, at most about one per 100 ms) as
 * progress lines carrying its id, interleaved with the lines of other requests of the
 * connection; the response is always the request's last line. Without the flag, or for
 * operations that report nothing, there are none. A client that does not know the flag
 * never sets it and never sees such a line.
 */
import type { Socket } from 'node:net';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants } from 'node:os';
import { ThinfsError, type ErrnoCode } from '../errors.js';

export interface OpRequest {
  id: number;
  op: string;
  args: unknown;
  /** Send the operation's progress reports as progress lines. */
  progress?: boolean;
}

/** A progress report of request `id` (see the top of this file). */
export interface OpProgress {
  id: number;
  progress: unknown;
}

export interface WireError {
  code: string;
  message: string;
}

export type OpResponse = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: WireError };

/** Any line the daemon sends: a progress report or the response. */
export type DaemonLine = OpProgress | OpResponse;

/** True for a progress line (it has no `ok`). */
export function isProgressLine(line: DaemonLine): line is OpProgress {
  return !('ok' in line) && 'progress' in line;
}

/** The control socket of the pool under `root`. */
export function socketPath(root: string): string {
  return path.join(root, 'run', 'thinfs.sock');
}

/** Longest path a sockaddr_un takes on Linux (108 bytes with the NUL). */
const SUN_PATH_MAX = 107;

/**
 * An address to bind or connect the control socket by, even when ROOT is deep enough
 * that the socket path exceeds sockaddr_un's 107 bytes: then the run directory is opened
 * and addressed as /proc/self/fd/N/thinfs.sock. Call `release` once bound or connected.
 */
export function socketAddress(root: string): { path: string; release: () => void } {
  const full = socketPath(root);
  if (Buffer.byteLength(full) <= SUN_PATH_MAX) return { path: full, release: () => {} };
  const fd = fs.openSync(path.dirname(full), 'r');
  return { path: `/proc/self/fd/${fd}/${path.basename(full)}`, release: () => fs.closeSync(fd) };
}

/** The error as it travels in a response: errno code and message (EIO for errors without one). */
export function errorToWire(err: unknown): WireError {
  if (err instanceof ThinfsError) return { code: err.code, message: err.message };
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && code in constants.errno) return { code, message };
  return { code: 'EIO', message };
}

/** A ThinfsError from a response's error, with the daemon's message unchanged. */
export function errorFromWire(e: WireError): ThinfsError {
  const code = (e.code in constants.errno ? e.code : 'EIO') as ErrnoCode;
  const err = new ThinfsError(code, 'daemon');
  Object.defineProperty(err, 'message', { value: e.message, writable: true, configurable: true });
  return err;
}

/** Call `onLine` with each non-empty newline-terminated line `sock` receives (the NDJSON framing). */
export function onLines(sock: Socket, onLine: (line: string) => void): void {
  let buffered = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() !== '') onLine(line);
    }
  });
}
