/**
 * Progress over the control protocol (daemon/protocol.ts), the real server side
 * (control.ts listenControl) against the real client (client.ts runOp) and a raw socket:
 * a request that asks for progress gets its reports as `{"id", "progress"}` lines before
 * its response, in order; one that does not ask gets none; lines of two requests on one
 * connection carry their own ids; reports after the response are dropped; a client whose
 * progress callback throws still gets the answer.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runOp } from '../../src/daemon/client.js';
import { listenControl, type ControlServer, type Dispatch } from '../../src/daemon/control.js';
import { socketAddress, type DaemonLine } from '../../src/daemon/protocol.js';
import { tmpDir } from '../helpers/tmp.js';

let t: { dir: string; cleanup: () => void };
let root: string;
let server: ControlServer | undefined;
beforeEach(() => {
  t = tmpDir('thinfs-progress-');
  root = path.join(t.dir, 'root');
  fs.mkdirSync(path.join(root, 'run'), { recursive: true });
});
afterEach(async () => {
  await server?.close(100);
  server = undefined;
  t.cleanup();
});

const tick = () => new Promise((r) => setTimeout(r, 5));

/** An operation `count` that reports 1..n (a turn of the event loop apart) and answers n; `late` reports once more after answering. */
const dispatch: Dispatch = async (op, args, progress) => {
  const n = (args as { n: number }).n;
  if (op === 'fail') throw Object.assign(new Error('it broke'), { code: 'ENOSPC' });
  for (let i = 1; i <= n; i++) {
    progress?.({ done: i, total: n });
    await tick();
  }
  if (op === 'late') setTimeout(() => progress?.({ done: n + 1, total: n }), 1);
  return { counted: n, asked: progress !== undefined };
};

/** Send `requests` on one raw connection; collect every line until each request has its response. */
async function raw(requests: object[]): Promise<DaemonLine[]> {
  const addr = socketAddress(root);
  const sock = net.createConnection({ path: addr.path });
  const lines: DaemonLine[] = [];
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    let answered = 0;
    sock.on('error', reject);
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, nl)) as DaemonLine;
        buf = buf.slice(nl + 1);
        lines.push(line);
        if ('ok' in line && ++answered === requests.length) resolve();
      }
    });
    sock.on('connect', () => sock.write(requests.map((r) => `${JSON.stringify(r)}\n`).join('')));
  });
  // Give reports sent after a response the chance to show up.
  await new Promise((r) => setTimeout(r, 30));
  sock.destroy();
  addr.release();
  return lines;
}

describe('progress lines of the control protocol', () => {
  it('runOp with onProgress gets every report, in order, then the result', async () => {
    server = await listenControl(root, dispatch);
    const seen: unknown[] = [];
    const r = await runOp(root, 'count', { n: 5 }, { onProgress: (p) => seen.push(p) });
    expect(r).toEqual({ counted: 5, asked: true });
    expect(seen).toEqual([1, 2, 3, 4, 5].map((i) => ({ done: i, total: 5 })));
  });

  it('without onProgress the request does not ask, and the operation gets no reporter', async () => {
    server = await listenControl(root, dispatch);
    expect(await runOp(root, 'count', { n: 3 })).toEqual({ counted: 3, asked: false });
    const lines = await raw([{ id: 7, op: 'count', args: { n: 3 } }]);
    expect(lines).toEqual([{ id: 7, ok: true, result: { counted: 3, asked: false } }]);
  });

  it('two requests on one connection: each line carries its request id, each response is its last line', async () => {
    server = await listenControl(root, dispatch);
    const lines = await raw([
      { id: 1, op: 'count', args: { n: 2 }, progress: true },
      { id: 2, op: 'count', args: { n: 3 }, progress: true },
    ]);
    expect(lines).toEqual([
      { id: 1, progress: { done: 1, total: 2 } },
      { id: 1, progress: { done: 2, total: 2 } },
      { id: 1, ok: true, result: { counted: 2, asked: true } },
      { id: 2, progress: { done: 1, total: 3 } },
      { id: 2, progress: { done: 2, total: 3 } },
      { id: 2, progress: { done: 3, total: 3 } },
      { id: 2, ok: true, result: { counted: 3, asked: true } },
    ]);
  });

  it('a report after the response is dropped; an error response ends the request too', async () => {
    server = await listenControl(root, dispatch);
    const lines = await raw([
      { id: 3, op: 'late', args: { n: 1 }, progress: true },
      { id: 4, op: 'fail', args: { n: 0 }, progress: true },
    ]);
    expect(lines).toEqual([
      { id: 3, progress: { done: 1, total: 1 } },
      { id: 3, ok: true, result: { counted: 1, asked: true } },
      { id: 4, ok: false, error: { code: 'ENOSPC', message: 'it broke' } },
    ]);
  });

  it('a progress callback that throws does not lose the answer', async () => {
    server = await listenControl(root, dispatch);
    let calls = 0;
    const r = await runOp(root, 'count', { n: 2 }, {
      onProgress: () => {
        calls += 1;
        throw new Error('the terminal went away');
      },
    });
    expect(r).toEqual({ counted: 2, asked: true });
    expect(calls).toBe(2);
  });

  it('a failing operation still rejects with its errno through runOp', async () => {
    server = await listenControl(root, dispatch);
    await expect(runOp(root, 'fail', { n: 0 }, { onProgress: () => {} })).rejects.toMatchObject({ code: 'ENOSPC', message: 'it broke' });
  });
});
