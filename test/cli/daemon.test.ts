/**
 * Commands and the pool's daemon: with a daemon answering on ROOT/run/thinfs.sock, the
 * operations go there (newline-delimited JSON); without one — or with a socket file left
 * by a killed daemon — they run in the command itself. A fake daemon stands in here.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { socketAddress, socketPath, type OpRequest, type OpResponse } from '../../src/daemon/protocol.js';
import { tmpDir } from '../helpers/tmp.js';
import { json, thinfs } from './helpers.js';

type Answer = (req: OpRequest) => OpResponse | 'hang-up';

interface FakeDaemon {
  requests: OpRequest[];
  close(): Promise<void>;
}

async function fakeDaemon(root: string, answer: Answer): Promise<FakeDaemon> {
  fs.mkdirSync(path.join(root, 'run'), { recursive: true });
  const requests: OpRequest[] = [];
  const server = net.createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const req = JSON.parse(buf.slice(0, nl)) as OpRequest;
        buf = buf.slice(nl + 1);
        requests.push(req);
        const res = answer(req);
        if (res === 'hang-up') sock.destroy();
        else sock.write(`${JSON.stringify(res)}\n`);
      }
    });
    sock.on('error', () => {});
  });
  const addr = socketAddress(root);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.path, () => resolve());
  });
  addr.release();
  return { requests, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

let t: { dir: string; cleanup: () => void };
let root: string;
let daemon: FakeDaemon | undefined;
beforeEach(() => {
  t = tmpDir('thinfs-cli-');
  root = path.join(t.dir, 'root');
});
afterEach(async () => {
  await daemon?.close();
  daemon = undefined;
  t.cleanup();
});

const cli = (...args: string[]) => thinfs(['--root', root, ...args]);

const CANNED_INFO = {
  poolName: 'thinfs-0:0-1-pool',
  root: '/served/by/daemon',
  dataFile: '/served/by/daemon/pool/data',
  metadataFile: '/served/by/daemon/pool/metadata.db',
  blockSize: 65536,
  baseDeviceSize: 10737418240,
  dataTotal: 1073741824,
  dataUsed: 131072,
  dataAvailable: 966197248,
  dataOnDisk: 131072,
  metadataUsed: 40960,
  devices: 3,
  deferredDeletions: 1,
  transactionId: 42,
  minFreeSpacePercent: 10,
  minFreeSpace: 107413504,
  autoextend: null,
  mode: 'write',
  needsCheck: false,
  pendingDiscard: 0,
};

describe('with a daemon running', () => {
  it('info is answered by the daemon', async () => {
    daemon = await fakeDaemon(root, (req) => ({ id: req.id, ok: true, result: CANNED_INFO }));
    const r = await cli('info', '--json');
    expect(r.code).toBe(0);
    expect(json(r)).toEqual(CANNED_INFO);
    expect(daemon.requests).toEqual([{ id: 1, op: 'info', args: {} }]);
    const text = await cli('info');
    expect(text.stdout).toContain(' Thin Devices: 3');
    expect(text.stdout).toContain(' Deferred Deleted Device Count: 1');
    expect(text.stdout).toContain(' Transaction Id: 42');
  });

  it('resize, check --repair and trim send their arguments', async () => {
    daemon = await fakeDaemon(root, (req) => {
      if (req.op === 'resize') return { id: req.id, ok: true, result: { oldDataTotal: 2 ** 30, newDataTotal: 2 * 2 ** 30 } };
      if (req.op === 'trim') return { id: req.id, ok: true, result: { trimmed: 65536, dataOnDisk: 0 } };
      const report = { clean: true, fatal: 0, leaks: 0, issues: [], repaired: false, blocksChecked: 7 };
      return { id: req.id, ok: true, result: { clean: true, report, recheck: report } };
    });
    expect((await cli('resize', '--data-size', '2G')).stdout).toBe('data file grown from 1 GB to 2 GB\n');
    expect((await cli('check', '--repair')).code).toBe(0);
    expect((await cli('trim')).stdout).toMatch(/^trimmed 65536 bytes \(64 KB\)/);
    expect(daemon.requests.map((q) => [q.op, q.args])).toEqual([
      ['resize', { dataSizeBytes: 2 * 2 ** 30 }],
      ['check', { repair: true }],
      ['trim', {}],
    ]);
  });

  it("a daemon's error is one line with its message, exit 1", async () => {
    daemon = await fakeDaemon(root, (req) => ({
      id: req.id,
      ok: false,
      error: { code: 'ENOSPC', message: `ENOSPC: thin pool out of data space, alloc '${root}'` },
    }));
    const r = await cli('trim');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([`thinfs: ENOSPC: thin pool out of data space, alloc '${root}'`]);
  });

  it('a daemon that hangs up without answering: one line, exit 1', async () => {
    daemon = await fakeDaemon(root, () => 'hang-up');
    const r = await cli('info');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: EIO: the thinfs daemon closed the connection without answering/)]);
  });

  it('init never goes through the daemon', async () => {
    daemon = await fakeDaemon(root, (req) => ({ id: req.id, ok: false, error: { code: 'EIO', message: 'should not be asked' } }));
    const r = await cli('init', '--data-size', '64M');
    expect(r.code).toBe(0);
    expect(daemon.requests).toEqual([]);
    expect(fs.existsSync(path.join(root, 'pool', 'metadata.db'))).toBe(true);
  });

  it('works for a root deeper than a unix socket path allows', async () => {
    root = path.join(t.dir, 'd'.repeat(60), 'e'.repeat(60));
    expect(Buffer.byteLength(socketPath(root))).toBeGreaterThan(107);
    daemon = await fakeDaemon(root, (req) => ({ id: req.id, ok: true, result: CANNED_INFO }));
    const r = await cli('info', '--json');
    expect(r.code).toBe(0);
    expect(json(r)).toEqual(CANNED_INFO);
  });
});

describe('without a daemon', () => {
  it('a socket left by a killed daemon is ignored: the command opens the pool itself', async () => {
    expect((await cli('init', '--data-size', '64M')).code).toBe(0);
    fs.mkdirSync(path.join(root, 'run'));
    const sock = socketPath(root);
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => console.log('up'))`]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(fs.statSync(sock).isSocket()).toBe(true);

    const r = await cli('info', '--json');
    expect(r.code).toBe(0);
    expect(json(r)).toMatchObject({ root, dataTotal: 64 * 1024 * 1024 });
    expect((await cli('resize', '--data-size', '128M')).code).toBe(0);
  });
});
