/**
 * `thinfs stats` on real mounts: the daemon's per-mount counters move with what is done
 * through each mount — reads count the bytes read from the image, writes and fsync the
 * bytes written, the device's own blocks and the pool's commits, a failed lookup an error
 * — and only on that mount; the text shows the same numbers; NAME picks one mount (an
 * unmounted one is refused, an unknown one is ENOENT); --watch --json prints one sample per
 * interval until SIGTERM, exit 0; without a daemon: "no mounts".
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MountStats, StatsResult } from '../../src/daemon/ops/index.js';
import { fuseSkipReason, TestPool } from '../fuse/helpers.js';
import { CLI, json } from './helpers.js';

const noFuse = fuseSkipReason();
if (noFuse !== undefined) console.warn(`skipping the stats tests: ${noFuse}`);

const MiB = 1024 * 1024;

describe.skipIf(noFuse !== undefined)('thinfs stats', () => {
  let p: TestPool;
  let a: string;
  let b: string;
  const stats = async (...args: string[]) => {
    const r = await p.cli('stats', '--json', ...args);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    return json<StatsResult>(r);
  };
  const of = (r: StatsResult, name: string): MountStats => r.mounts.find((m) => m.name === name)!;

  beforeAll(async () => {
    p = await TestPool.create({}, 'thinfs-stats-');
    const src = path.join(p.dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'data'), Buffer.alloc(2 * MiB, 7));
    expect((await p.cli('import', 'img', src)).code).toBe(0);
    expect((await p.cli('create', 'ca', 'img')).code).toBe(0);
    expect((await p.cli('create', 'cb', 'img')).code).toBe(0);
    expect((await p.cli('create', 'cc', 'img')).code).toBe(0);
    expect((await p.cli('stats')).stdout).toBe('no mounts (no thinfs daemon runs for this pool)\n');
    a = await p.mount('ca');
    b = await p.mount('cb');
  });
  afterAll(async () => {
    await p?.cleanup();
  });

  it('counts what is done through each mount, and only there', async () => {
    const before = await stats();
    expect(before.daemon).toBe(true);
    expect(before.mounts.map((m) => m.name).sort()).toEqual(['ca', 'cb']);
    const b0 = of(before, 'cb').counters.total.count;

    expect(fs.readFileSync(path.join(a, 'data')).length).toBe(2 * MiB);
    const fd = fs.openSync(path.join(a, 'written'), 'w');
    fs.writeSync(fd, Buffer.alloc(MiB, 1));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    expect(fs.existsSync(path.join(a, 'missing'))).toBe(false);

    const after = await stats();
    const s = of(after, 'ca');
    expect(s.mountpoint).toBe(a);
    expect(s.counters.bytesRead).toBeGreaterThanOrEqual(2 * MiB);
    expect(s.counters.bytesWritten).toBe(MiB);
    expect(s.counters.writes).toBeGreaterThan(0);
    expect(s.counters.total.errors).toBeGreaterThanOrEqual(1); // the lookup of 'missing'
    // Reads and writes are those JS answered (ops) plus those the C hot path answered (native).
    expect((s.counters.ops.write?.count ?? 0) + s.counters.native.writes).toBe(s.counters.writes);
    expect((s.counters.ops.read?.count ?? 0) + s.counters.native.reads).toBe(s.counters.reads);
    expect(s.counters.native.readErrors + s.counters.native.writeErrors).toBe(0);
    expect(s.counters.ops.fsync?.count).toBeGreaterThanOrEqual(1);
    expect(s.device.ownBlocksSinceMount).toBeGreaterThanOrEqual(MiB / s.device.blockSize);
    expect(s.commits).toBeGreaterThanOrEqual(1);
    const t = s.counters.total;
    expect(t.count).toBe(Object.values(s.counters.ops).reduce((n, o) => n + o.count, 0));
    expect(t.buckets.reduce((n, x) => n + x, 0)).toBe(t.count);
    expect(t.meanMs).toBeGreaterThan(0);
    expect(t.p50Ms).toBeLessThanOrEqual(t.p99Ms);
    expect(t.p99Ms).toBeLessThanOrEqual(t.maxMs);
    expect(s.cowCopies).toBeNull();
    // cb saw at most the daemon's own traffic, none of the above.
    const sb = of(after, 'cb');
    expect(sb.counters.bytesRead).toBe(0);
    expect(sb.counters.bytesWritten).toBe(0);
    expect(sb.counters.total.count - b0).toBeLessThan(10);
  });

  it('the text shows the same counters; NAME picks one mount', async () => {
    const r = await p.cli('stats', 'ca');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const s = of(await stats('ca'), 'ca');
    expect(r.stdout).toMatch(new RegExp(`^ca \\(rw\\) at ${a.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, mounted `));
    expect(r.stdout).toContain(` data: read 2 MB in ${s.counters.reads} reads, written 1 MB in ${s.counters.writes} writes\n`);
    expect(r.stdout).toMatch(/\nOP\s+COUNT\s+ERRORS\s+MEAN\s+P50\s+P99\s+MAX\n/);
    expect(r.stdout).toMatch(/^write\s+\d+\s+0\s+[\d.]+ [µm]s\s+≤ [\d.]+ [µm]s/m);
    expect(r.stdout).not.toContain('cb (rw)');
    expect((await stats('cb')).mounts.map((m) => m.name)).toEqual(['cb']);
  });

  it('NAME not mounted: EINVAL; unknown: ENOENT — one line, exit 1', async () => {
    const n = await p.cli('stats', 'cc');
    expect(n).toMatchObject({ code: 1, errLines: ["thinfs: EINVAL: not mounted, stats 'cc'"] });
    const u = await p.cli('stats', 'nope');
    expect(u).toMatchObject({ code: 1, errLines: ["thinfs: ENOENT: no image or container named 'nope' (see `thinfs ls`), stats 'nope'"] });
  });

  it('--watch --json: one sample a line until SIGTERM, counters never going back; exit 0', async () => {
    const child = spawn(process.execPath, [CLI, '--root', p.root, 'stats', 'ca', '--watch', '--json', '--interval', '0.2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    try {
      const lines = async (n: number) => {
        for (let i = 0; i < 100 && out.split('\n').filter((l) => l !== '').length < n; i++) await new Promise((r) => setTimeout(r, 50));
        return out.split('\n').filter((l) => l !== '');
      };
      await lines(1);
      fs.readFileSync(path.join(a, 'data'));
      fs.writeFileSync(path.join(a, 'more'), Buffer.alloc(4096, 2));
      const got = await lines(3);
      expect(got.length).toBeGreaterThanOrEqual(3);
      const samples = got.map((l) => JSON.parse(l) as StatsResult & { at: string });
      for (let i = 1; i < samples.length; i++) {
        const [x, y] = [samples[i - 1]!.mounts[0]!, samples[i]!.mounts[0]!];
        expect(y.counters.total.count).toBeGreaterThanOrEqual(x.counters.total.count);
        expect(y.counters.bytesWritten).toBeGreaterThanOrEqual(x.counters.bytesWritten);
        expect(Date.parse(samples[i]!.at)).toBeGreaterThan(Date.parse(samples[i - 1]!.at));
      }
      expect(samples.at(-1)!.mounts[0]!.counters.bytesWritten - samples[0]!.mounts[0]!.counters.bytesWritten).toBe(4096);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await closed).toBe(0);
    expect(err).toBe('');
  });
});
