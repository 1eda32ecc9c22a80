/**
 * Running an operation for a command: through the pool's daemon when one answers on
 * ROOT/run/thinfs.sock (it owns the pool: one writer, one allocator), otherwise in this
 * process. A socket file nobody listens on (a daemon that was killed) means no daemon.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fail, type ErrnoCode } from '../errors.js';
import { logger } from '../log.js';
import { LOCAL_OPS, OPS } from './ops/index.js';
import { errorFromWire, isProgressLine, onLines, socketAddress, socketPath, type DaemonLine, type OpRequest } from './protocol.js';

const log = logger('client');

/** Run operation `name` for the pool under `root`: in its daemon when one runs, else here. */
export async function runOp<R = unknown>(root: string, name: string, args: object = {}, opts: RunOptions = {}): Promise<R> {
  if (!LOCAL_OPS.has(name)) {
    const daemon = await connectDaemon(root);
    if (daemon !== undefined) {
      try {
        log.debug({ op: name, root }, 'sending the operation to the daemon');
        return (await call(daemon, root, name, args, opts.onProgress)) as R;
      } finally {
        daemon.destroy();
      }
    }
  }
  return runLocal<R>(root, name, args, opts);
}

/** How a command wants an operation run. */
export interface RunOptions {
  /** Progress reports of a long operation (load, import, export), wherever it runs: the daemon sends them as progress lines. */
  onProgress?: (p: unknown) => void;
}

/** True when a daemon answers on the control socket of `root`. */
export async function daemonRunning(root: string): Promise<boolean> {
  const sock = await connectDaemon(root).catch(() => undefined);
  sock?.destroy();
  return sock !== undefined;
}

/** Run operation `name` in this process, opening the pool itself. */
export async function runLocal<R = unknown>(root: string, name: string, args: object = {}, opts: RunOptions = {}): Promise<R> {
  const op = OPS[name];
  if (op === undefined) throw fail('EINVAL', 'run', name, 'unknown operation');
  return (await op({ root, progress: opts.onProgress }, args)) as R;
}

/** A connection to the daemon of `root`, or undefined when none runs. */
function connectDaemon(root: string): Promise<net.Socket | undefined> {
  const file = socketPath(root);
  if (!fs.existsSync(file)) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    let addr: ReturnType<typeof socketAddress>;
    try {
      addr = socketAddress(root);
    } catch (err) {
      reject(fail('EIO', 'connect', file, `cannot reach the thinfs daemon (${(err as Error).message})`));
      return;
    }
    const sock = net.createConnection({ path: addr.path });
    sock.once('connect', () => {
      addr.release();
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      addr.release();
      sock.destroy();
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') {
        log.debug({ socket: file }, 'stale control socket: no daemon runs');
        resolve(undefined);
      } else {
        const code = (err.code ?? 'EIO') as ErrnoCode;
        reject(fail(code, 'connect', file, `cannot reach the thinfs daemon (${err.message})`));
      }
    });
  });
}

/** Send one request and wait for its response; its progress lines go to `onProgress` (asked for only when given). */
function call(sock: net.Socket, root: string, op: string, args: object, onProgress?: (p: unknown) => void): Promise<unknown> {
  const id = 1;
  const request: OpRequest = onProgress === undefined ? { id, op, args } : { id, op, args, progress: true };
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void) => {
      if (!settled) {
        settled = true;
        fn();
      }
    };
    onLines(sock, (line) => {
      let res: DaemonLine;
      try {
        res = JSON.parse(line) as DaemonLine;
      } catch {
        settle(() => reject(fail('EIO', op, socketPath(root), 'the thinfs daemon sent a response that is not JSON')));
        return;
      }
      if (res.id !== id || settled) return;
      if (isProgressLine(res)) {
        // A rendering error must not lose the operation's answer.
        try {
          onProgress?.(res.progress);
        } catch (err) {
          log.debug({ err }, 'progress report failed');
        }
        return;
      }
      if (res.ok) settle(() => resolve(res.result));
      else settle(() => reject(errorFromWire(res.error ?? { code: 'EIO', message: 'the thinfs daemon failed without saying why' })));
    });
    sock.on('error', (err) => settle(() => reject(fail('EIO', op, socketPath(root), `lost the thinfs daemon (${err.message})`))));
    sock.on('close', () =>
      settle(() => reject(fail('EIO', op, socketPath(root), `the thinfs daemon closed the connection without answering; see its log in ${path.join(root, 'logs')}`))),
    );
    sock.write(`${JSON.stringify(request)}\n`);
  });
}
