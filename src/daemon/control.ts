/**
 * The daemon's control socket (ROOT/run/thinfs.sock, mode 0600): newline-delimited JSON
 * requests in, one response line per request out, preceded by its progress lines when
 * the request asked for them (protocol.ts). Requests of one connection are answered in
 * order; a bad line gets an EINVAL response, never a crash.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { fail } from '../errors.js';
import { logger } from '../log.js';
import { errorToWire, onLines, socketAddress, socketPath, type DaemonLine, type OpRequest, type OpResponse } from './protocol.js';

const log = logger('daemon');

/** Run operation `op`; `progress`, when the request asked for progress, sends its reports to the caller. */
export type Dispatch = (op: string, args: unknown, progress: ((p: unknown) => void) | undefined) => Promise<unknown>;

export interface ControlServer {
  /** Stop accepting; resolves when every open connection has closed (or after `graceMs`). */
  close(graceMs?: number): Promise<void>;
}

/** Listen on the pool's control socket (a stale socket file must already be gone). */
export async function listenControl(root: string, dispatch: Dispatch): Promise<ControlServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', (err) => log.debug({ err }, 'control connection error'));
    serveConnection(sock, dispatch);
  });
  const addr = socketAddress(root);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(addr.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    addr.release();
  }
  fs.chmodSync(socketPath(root), 0o600);
  server.on('error', (err) => log.error({ err }, 'control socket error'));
  return {
    close: (graceMs = 2000) =>
      new Promise<void>((resolve) => {
        server.close();
        const deadline = Date.now() + graceMs;
        const poll = () => {
          if (sockets.size === 0 || Date.now() >= deadline) {
            for (const s of sockets) s.destroy();
            resolve();
          } else setTimeout(poll, 20);
        };
        poll();
      }),
  };
}

function serveConnection(sock: net.Socket, dispatch: Dispatch): void {
  let queue: Promise<void> = Promise.resolve();
  onLines(sock, (line) => {
    queue = queue.then(() => answer(sock, line, dispatch));
  });
}

async function answer(sock: net.Socket, line: string, dispatch: Dispatch): Promise<void> {
  let id = 0;
  let answered = false;
  let res: OpResponse;
  try {
    const req = parse(line);
    id = req.id;
    const t0 = Date.now();
    // The response is the request's last line: reports that come after it are dropped.
    const progress =
      req.progress === true
        ? (p: unknown) => {
            if (!answered) send(sock, { id, progress: p });
          }
        : undefined;
    const result = await dispatch(req.op, req.args, progress);
    log.debug({ op: req.op, ms: Date.now() - t0 }, 'control request');
    res = { id, ok: true, result: result ?? null };
  } catch (err) {
    log.debug({ err }, 'control request failed');
    res = { id, ok: false, error: errorToWire(err) };
  }
  answered = true;
  send(sock, res);
}

/** Write one line to the client (dropped once it has gone away). */
function send(sock: net.Socket, line: DaemonLine): void {
  if (!sock.destroyed) sock.write(`${JSON.stringify(line, bigintReplacer)}\n`);
}

function parse(line: string): OpRequest {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    throw fail('EINVAL', 'request', undefined, 'a request line is not JSON');
  }
  const r = req as Partial<OpRequest> | null;
  if (r === null || typeof r !== 'object' || typeof r.id !== 'number' || typeof r.op !== 'string') {
    throw fail('EINVAL', 'request', undefined, 'a request needs a numeric id and an op name');
  }
  return r as OpRequest;
}

/** Results may hold bigints (nanosecond times): send them as decimal strings. */
function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}
