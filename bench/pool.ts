/**
 * `npm run bench:pool` — the thin pool in-process, side by side with plain pread/pwrite
 * on a file on the same disk, in one run:
 *
 *   sequential 1 MiB writes then reads (pool vs plain file; aim >= 0.8)
 *   random 4 KiB reads and overwrites on a device with 1 GiB mapped (ops/s; plain too)
 *   read throughput through chains of 1, 16 and 128 snapshots (aim: 128 >= 0.9 x 1)
 *   snapshot creation of an origin with 1 MiB vs 1 GiB mapped (aim: same within noise)
 *   first-write copy-on-write of 32 KiB into a parent's block (µs each, blocks allocated)
 *
 * Every figure is the median of --runs runs (default 3). --json prints JSON. --dir DIR
 * puts the scratch files there (default: ./.bench-pool in the current directory, so the
 * plain file and the pool share a disk); --size-mib sets the sequential volume.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Table from 'cli-table3';
import { median, nowMs } from './util.js';
import { GiB, KiB, MiB, Pool, type DevId, type FileKey } from '../src/pool/index.js';

interface Args {
  runs: number;
  json: boolean;
  dir: string;
  sizeMiB: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 3, json: false, dir: path.resolve('.bench-pool'), sizeMiB: 512 };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    if (x === '--json') a.json = true;
    else if (x === '--runs') a.runs = Number(argv[++i]);
    else if (x === '--dir') a.dir = path.resolve(argv[++i]!);
    else if (x === '--size-mib') a.sizeMiB = Number(argv[++i]);
    else if (x === '--help' || x === '-h') {
      console.log('usage: npm run bench:pool -- [--runs N] [--json] [--dir DIR] [--size-mib N]');
      process.exit(0);
    } else {
      console.error(`bench:pool: unknown option ${x}; see --help`);
      process.exit(2);
    }
  }
  if (!(Number.isInteger(a.runs) && a.runs > 0) || !(Number.isInteger(a.sizeMiB) && a.sizeMiB > 0)) {
    console.error('bench:pool: --runs and --size-mib take positive whole numbers');
    process.exit(2);
  }
  return a;
}


const KEY = 11 as FileKey;
const args = parseArgs(process.argv.slice(2));
fs.mkdirSync(args.dir, { recursive: true });
let seq = 0;
function scratch(): string {
  const d = path.join(args.dir, `run-${process.pid}-${seq++}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}
function freshPool(dataBytes = 8 * GiB, blockSizeBytes = 64 * KiB): { pool: Pool; dir: string } {
  const dir = scratch();
  return { pool: Pool.create(dir, { dataSizeBytes: dataBytes, minFreePercent: 0, baseSizeBytes: dataBytes, blockSizeBytes }), dir };
}
function done(p: { pool: Pool; dir: string }): void {
  p.pool.close({ commit: false });
  fs.rmSync(p.dir, { recursive: true, force: true });
}

interface Row {
  metric: string;
  thinfs: number;
  baseline: number | null;
  unit: string;
  ratio: number | null;
  aim?: string;
}
const rows: Row[] = [];
function add(metric: string, thinfs: number, baseline: number | null, unit: string, aim?: string, lowerIsBetter = false): void {
  const ratio = baseline === null ? null : lowerIsBetter ? baseline / thinfs : thinfs / baseline;
  rows.push({ metric, thinfs, baseline, unit, ratio, aim });
}

const mib = args.sizeMiB;
const chunk = Buffer.alloc(MiB);
for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);

// ---- sequential 1 MiB writes then reads
{
  const pw: number[] = [];
  const pr: number[] = [];
  const fw: number[] = [];
  const fr: number[] = [];
  for (let r = 0; r < args.runs; r++) {
    const p = freshPool();
    const dev = p.pool.openDevice(p.pool.createThin('seq'));
    let t = nowMs();
    for (let i = 0; i < mib; i++) dev.write(KEY, i * MiB, chunk);
    p.pool.commit();
    pw.push(mib / ((nowMs() - t) / 1000));
    const rb = Buffer.alloc(MiB);
    t = nowMs();
    for (let i = 0; i < mib; i++) dev.read(KEY, i * MiB, rb);
    pr.push(mib / ((nowMs() - t) / 1000));
    dev.close();
    done(p);

    const d = scratch();
    const file = path.join(d, 'plain');
    const fd = fs.openSync(file, 'w+');
    t = nowMs();
    for (let i = 0; i < mib; i++) fs.writeSync(fd, chunk, 0, MiB, i * MiB);
    fs.fdatasyncSync(fd);
    fw.push(mib / ((nowMs() - t) / 1000));
    t = nowMs();
    for (let i = 0; i < mib; i++) fs.readSync(fd, rb, 0, MiB, i * MiB);
    fr.push(mib / ((nowMs() - t) / 1000));
    fs.closeSync(fd);
    fs.rmSync(d, { recursive: true, force: true });
  }
  add(`seq write 1 MiB (${mib} MiB, + commit/fdatasync)`, median(pw), median(fw), 'MiB/s', '>= 0.8');
  add(`seq read 1 MiB (${mib} MiB, page cache)`, median(pr), median(fr), 'MiB/s', '>= 0.8');
}

// ---- random 4 KiB on 1 GiB mapped
{
  const span = GiB;
  const nOps = 50_000;
  const rr: number[] = [];
  const rw: number[] = [];
  const prr: number[] = [];
  const prw: number[] = [];
  const offsets = Array.from({ length: nOps }, (_, i) => ((i * 2654435761) % (span / (4 * KiB))) * 4 * KiB);
  const b4 = Buffer.alloc(4 * KiB, 7);
  for (let r = 0; r < args.runs; r++) {
    const p = freshPool();
    const dev = p.pool.openDevice(p.pool.createThin('rand'));
    for (let i = 0; i < span / MiB; i++) dev.write(KEY, i * MiB, chunk);
    p.pool.commit();
    let t = nowMs();
    for (const off of offsets) dev.read(KEY, off, b4);
    rr.push(nOps / ((nowMs() - t) / 1000));
    t = nowMs();
    for (const off of offsets) dev.write(KEY, off, b4);
    p.pool.commit();
    rw.push(nOps / ((nowMs() - t) / 1000));
    dev.close();
    done(p);

    const d = scratch();
    const fd = fs.openSync(path.join(d, 'plain'), 'w+');
    for (let i = 0; i < span / MiB; i++) fs.writeSync(fd, chunk, 0, MiB, i * MiB);
    fs.fdatasyncSync(fd);
    t = nowMs();
    for (const off of offsets) fs.readSync(fd, b4, 0, b4.length, off);
    prr.push(nOps / ((nowMs() - t) / 1000));
    t = nowMs();
    for (const off of offsets) fs.writeSync(fd, b4, 0, b4.length, off);
    fs.fdatasyncSync(fd);
    prw.push(nOps / ((nowMs() - t) / 1000));
    fs.closeSync(fd);
    fs.rmSync(d, { recursive: true, force: true });
  }
  add('rand read 4 KiB, 1 GiB mapped', median(rr), median(prr), 'ops/s');
  add('rand overwrite 4 KiB, 1 GiB mapped (+ commit)', median(rw), median(prw), 'ops/s');
}

// ---- read throughput through chains of 1, 16, 128 snapshots
{
  const fileMiB = 64;
  const byDepth = new Map<number, number[]>();
  for (let r = 0; r < args.runs; r++) {
    const p = freshPool();
    let top = p.pool.createThin('l0');
    const d0 = p.pool.openDevice(top);
    for (let i = 0; i < fileMiB; i++) d0.write(KEY, i * MiB, chunk);
    d0.close();
    p.pool.setReadOnly(top);
    const tops = new Map<number, DevId>([[1, top]]);
    for (let depth = 2; depth <= 128; depth++) {
      top = p.pool.createSnapshot(top, `l${depth - 1}`);
      // Each layer writes its own small file, so every layer maps something.
      const d = p.pool.openDevice(top);
      d.write((1000 + depth) as FileKey, 0, chunk.subarray(0, 4 * KiB));
      d.close();
      p.pool.setReadOnly(top);
      if (depth === 16 || depth === 128) tops.set(depth, top);
    }
    p.pool.commit();
    const rb = Buffer.alloc(MiB);
    for (const [depth, id] of tops) {
      const dev = p.pool.openDevice(id);
      for (let i = 0; i < fileMiB; i++) dev.read(KEY, i * MiB, rb); // warm
      const t = nowMs();
      for (let rep = 0; rep < 4; rep++) for (let i = 0; i < fileMiB; i++) dev.read(KEY, i * MiB, rb);
      const v = (4 * fileMiB) / ((nowMs() - t) / 1000);
      byDepth.set(depth, [...(byDepth.get(depth) ?? []), v]);
      dev.close();
    }
    done(p);
  }
  const one = median(byDepth.get(1)!);
  add('read through chain of 1', one, one, 'MiB/s');
  add('read through chain of 16', median(byDepth.get(16)!), one, 'MiB/s', '>= 0.9');
  add('read through chain of 128', median(byDepth.get(128)!), one, 'MiB/s', '>= 0.9');
}

// ---- snapshot creation: origin with 1 MiB vs 1 GiB mapped
{
  const small: number[] = [];
  const big: number[] = [];
  for (let r = 0; r < args.runs; r++) {
    for (const [mapped, out] of [
      [MiB, small],
      [GiB, big],
    ] as const) {
      const p = freshPool();
      const origin = p.pool.createThin('origin');
      const d = p.pool.openDevice(origin);
      for (let i = 0; i < mapped / MiB; i++) d.write(KEY, i * MiB, chunk);
      d.close();
      p.pool.setReadOnly(origin);
      p.pool.commit();
      const samples: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t = nowMs();
        p.pool.createSnapshot(origin, `s${i}`);
        p.pool.commit();
        samples.push((nowMs() - t) * 1000);
      }
      out.push(median(samples));
      done(p);
    }
  }
  add('snapshot create + commit, origin 1 GiB vs 1 MiB mapped', median(big), median(small), 'µs', 'same within noise', true);
}

// ---- first-write copy-on-write of 32 KiB into a parent's block
{
  const us: number[] = [];
  let allocated = 0;
  const n = 2000;
  for (let r = 0; r < args.runs; r++) {
    const p = freshPool();
    const parent = p.pool.createThin('parent');
    const d = p.pool.openDevice(parent);
    for (let i = 0; i < (n * 64 * KiB) / MiB; i++) d.write(KEY, i * MiB, chunk);
    d.close();
    p.pool.setReadOnly(parent);
    const child = p.pool.openDevice(p.pool.createSnapshot(parent, 'child'));
    p.pool.commit();
    const before = p.pool.status().dataUsedBytes;
    const b32 = Buffer.alloc(32 * KiB, 3);
    const t = nowMs();
    for (let i = 0; i < n; i++) child.write(KEY, i * 64 * KiB + 16 * KiB, b32);
    us.push(((nowMs() - t) * 1000) / n);
    allocated = (p.pool.status().dataUsedBytes - before) / n;
    child.close();
    done(p);
  }
  add('first 32 KiB write into a parent block (CoW)', median(us), null, 'µs each');
  add('bytes allocated per CoW write', allocated, null, 'bytes', 'one block (65536)');
}

fs.rmSync(args.dir, { recursive: true, force: true });

if (args.json) {
  console.log(JSON.stringify({ runs: args.runs, rows }, null, 2));
} else {
  const table = new Table({ head: ['metric', 'thinfs', 'baseline', 'unit', 'ratio', 'aim'] });
  const fmt = (x: number | null) => (x === null ? '' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2));
  for (const r of rows) table.push([r.metric, fmt(r.thinfs), fmt(r.baseline), r.unit, r.ratio === null ? '' : r.ratio.toFixed(2), r.aim ?? '']);
  console.log(`thinfs pool benchmark — median of ${args.runs} run(s); baseline: plain pread/pwrite on a file on the same disk`);
  console.log(table.toString());
}
