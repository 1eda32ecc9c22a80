/**
 * `npm run bench:fs` — the union filesystem in-process (no FUSE), side by side with a
 * plain directory through node:fs on the same disk where the comparison means something.
 *
 *   create / stat / unlink 10,000 files in one directory; readdir of it
 *   the same stats and listing through the inode-based API (FUSE low level): lookup +
 *   getattrIno per file, readdirplus in kernel-sized pages and in one call
 *   4 KiB small files: create + write + read
 *   path lookup (cold and warm) at depth 1 vs through a 128-layer chain, and a 20-deep path
 *   the 32 KiB copy-on-write into a 1 GiB lower file: µs per write and bytes allocated
 *
 * Every figure is the median of --runs runs (default 3). --json prints JSON instead of a
 * table. --dir DIR puts the scratch pools there (default: the OS temp directory).
 */
import * as nodefs from 'node:fs';
import { constants } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Table from 'cli-table3';
import { median, nowMs } from './util.js';
import { Filesystem, ROOT_INO, type Ino } from '../src/fs/index.js';
import { GiB, KiB, MiB, Pool, type DevId } from '../src/pool/index.js';

const ROOT = { uid: 0, gid: 0 };

interface Args {
  runs: number;
  json: boolean;
  dir: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { runs: 3, json: false, dir: os.tmpdir() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') args.json = true;
    else if (a === '--runs') args.runs = Math.max(1, Number(argv[++i]));
    else if (a === '--dir') args.dir = argv[++i]!;
    else if (a === '--help' || a === '-h') {
      console.log('usage: node dist/bench/fs.js [--runs N] [--json] [--dir DIR]');
      process.exit(0);
    } else {
      console.error(`unknown option ${a}; see --help`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(args.runs)) {
    console.error('--runs takes a whole number');
    process.exit(2);
  }
  return args;
}



/** ops/s of `n` operations done by `fn`. */
function rate(n: number, fn: () => void): number {
  const t0 = nowMs();
  fn();
  return (n / (nowMs() - t0)) * 1000;
}

function scratch(base: string, prefix: string): { dir: string; done: () => void } {
  const dir = nodefs.mkdtempSync(path.join(base, prefix));
  return { dir, done: () => nodefs.rmSync(dir, { recursive: true, force: true }) };
}

function newPool(dir: string, opts: Parameters<typeof Pool.create>[1] = {}): Pool {
  return Pool.create(path.join(dir, 'pool'), { dataSizeBytes: 8 * GiB, minFreePercent: 0, ...opts });
}

// ------------------------------------------------------------------ measurements

const N_FILES = 10_000;
const N_SMALL = 2_000;

interface ManyFiles {
  create: number;
  stat: number;
  statCold: number;
  /** lookup(dir, name) + getattrIno per file, warm and after dropCaches (ops/s), and getattr(path) measured the same way beside them. */
  inoStat: number;
  inoStatCold: number;
  pathStat: number;
  pathStatCold: number;
  readdirMs: number;
  /** The whole listing through readdirplusIno in pages a 4 KiB READDIRPLUS buffer holds, and in one call (ms). */
  readdirplusPagedMs: number;
  readdirplusMs: number;
  unlink: number;
}

/** Entries of a 4 KiB READDIRPLUS reply: fuse_direntplus is 152 bytes + the name, 8-byte aligned (~168 here). */
const READDIRPLUS_PAGE = Math.floor(4096 / 168);

function manyFilesThinfs(base: string): ManyFiles {
  const s = scratch(base, 'bench-fs-');
  try {
    const pool = newPool(s.dir);
    const fs = Filesystem.open(pool, pool.createThin('bench'));
    fs.mkdir('/dir', 0o755, ROOT);
    const names = Array.from({ length: N_FILES }, (_, i) => `/dir/file-${i}`);
    const create = rate(N_FILES, () => {
      for (const n of names) fs.release(fs.create(n, 0o644, ROOT, constants.O_WRONLY | constants.O_CREAT));
      fs.commit();
    });
    const stat = rate(N_FILES, () => {
      for (const n of names) fs.getattr(n);
    });
    fs.dropCaches();
    const statCold = rate(N_FILES, () => {
      for (const n of names) fs.getattr(n);
    });
    // The inode-based API, as the low-level FUSE adapter calls it: LOOKUP then GETATTR.
    const leaf = names.map((n) => n.slice('/dir/'.length));
    const inoStatPass = () => {
      const dir = fs.lookup(ROOT_INO, 'dir').ino;
      for (const n of leaf) fs.getattrIno(fs.lookup(dir, n).ino);
    };
    const pathStatPass = () => {
      for (const n of names) fs.getattr(n);
    };
    // Both in the same state: block counts cached by the pool (the passes above), fs caches dropped or warm.
    // Warm: five passes each (one 10k pass takes a few ms, too short to time alone).
    const warm = (pass: () => void) => rate(5 * N_FILES, () => {
      for (let k = 0; k < 5; k++) pass();
    });
    fs.dropCaches();
    const inoStatCold = rate(N_FILES, inoStatPass);
    const inoStat = warm(inoStatPass);
    fs.dropCaches();
    const pathStatCold = rate(N_FILES, pathStatPass);
    const pathStat = warm(pathStatPass);
    const t0 = nowMs();
    const entries = fs.readdir('/dir');
    const readdirMs = nowMs() - t0;
    if (entries.length !== N_FILES + 2) throw new Error(`readdir saw ${entries.length} entries`);
    const listPlus = (dir: Ino, page: number): number => {
      const fh = fs.opendirIno(dir);
      let n = 0;
      let offset = 0;
      for (;;) {
        const got = fs.readdirplusIno(dir, fh, offset, page);
        if (got.length === 0) break;
        n += got.length;
        offset = got[got.length - 1]!.offset;
      }
      fs.release(fh);
      return n;
    };
    const dirIno = fs.lookup(ROOT_INO, 'dir').ino;
    const t1 = nowMs();
    const pagedSeen = listPlus(dirIno, READDIRPLUS_PAGE);
    const readdirplusPagedMs = nowMs() - t1;
    const t2 = nowMs();
    const oneSeen = listPlus(dirIno, Infinity);
    const readdirplusMs = nowMs() - t2;
    if (pagedSeen !== N_FILES + 2 || oneSeen !== N_FILES + 2) throw new Error(`readdirplus saw ${pagedSeen} / ${oneSeen} entries`);
    const unlink = rate(N_FILES, () => {
      for (const n of names) fs.unlink(n);
      fs.commit();
    });
    fs.close();
    pool.close();
    return { create, stat, statCold, inoStat, inoStatCold, pathStat, pathStatCold, readdirMs, readdirplusPagedMs, readdirplusMs, unlink };
  } finally {
    s.done();
  }
}

function manyFilesNode(base: string): ManyFiles {
  const s = scratch(base, 'bench-node-');
  try {
    const dir = path.join(s.dir, 'dir');
    nodefs.mkdirSync(dir);
    const names = Array.from({ length: N_FILES }, (_, i) => path.join(dir, `file-${i}`));
    const create = rate(N_FILES, () => {
      for (const n of names) nodefs.closeSync(nodefs.openSync(n, constants.O_WRONLY | constants.O_CREAT, 0o644));
    });
    const stat = rate(N_FILES, () => {
      for (const n of names) nodefs.lstatSync(n);
    });
    const t0 = nowMs();
    nodefs.readdirSync(dir);
    const readdirMs = nowMs() - t0;
    const unlink = rate(N_FILES, () => {
      for (const n of names) nodefs.unlinkSync(n);
    });
    return { create, stat, statCold: NaN, inoStat: NaN, inoStatCold: NaN, pathStat: NaN, pathStatCold: NaN, readdirMs, readdirplusPagedMs: NaN, readdirplusMs: NaN, unlink };
  } finally {
    s.done();
  }
}

function smallFilesThinfs(base: string): number {
  const s = scratch(base, 'bench-fs-');
  try {
    const pool = newPool(s.dir);
    const fs = Filesystem.open(pool, pool.createThin('bench'));
    const data = Buffer.alloc(4 * KiB, 0x42);
    const r = rate(N_SMALL, () => {
      for (let i = 0; i < N_SMALL; i++) {
        const p = `/small-${i}`;
        const w = fs.create(p, 0o644, ROOT, constants.O_WRONLY | constants.O_CREAT);
        fs.write(w, 0, data);
        fs.release(w);
        const h = fs.open(p, constants.O_RDONLY);
        if (fs.read(h, 0, 4 * KiB).length !== 4 * KiB) throw new Error('short read');
        fs.release(h);
      }
      fs.commit();
    });
    fs.close();
    pool.close();
    return r;
  } finally {
    s.done();
  }
}

function smallFilesNode(base: string): number {
  const s = scratch(base, 'bench-node-');
  try {
    const data = Buffer.alloc(4 * KiB, 0x42);
    const buf = Buffer.alloc(4 * KiB);
    return rate(N_SMALL, () => {
      for (let i = 0; i < N_SMALL; i++) {
        const p = path.join(s.dir, `small-${i}`);
        const w = nodefs.openSync(p, constants.O_WRONLY | constants.O_CREAT, 0o644);
        nodefs.writeSync(w, data, 0, data.length, 0);
        nodefs.closeSync(w);
        const h = nodefs.openSync(p, constants.O_RDONLY);
        nodefs.readSync(h, buf, 0, buf.length, 0);
        nodefs.closeSync(h);
      }
    });
  } finally {
    s.done();
  }
}

interface Depth {
  coldDepth1: number;
  cold128: number;
  warmDepth1: number;
  warm128: number;
  read1: number;
  read128: number;
  deep20Warm: number;
}

const N_LOOKUP = 2_000;

/** Lookups of files that live in the bottom layer, seen from a 1-layer and a 128-layer device. */
function depth(base: string): Depth {
  const s = scratch(base, 'bench-fs-');
  try {
    const pool = newPool(s.dir, { blockSizeBytes: 64 * KiB });
    const names = Array.from({ length: N_LOOKUP }, (_, i) => `/d/f-${i}`);
    const fill = (fs: Filesystem) => {
      fs.mkdir('/d', 0o755, ROOT);
      for (const n of names) {
        const h = fs.create(n, 0o644, ROOT, constants.O_WRONLY | constants.O_CREAT);
        fs.write(h, 0, Buffer.alloc(4 * KiB, 1));
        fs.release(h);
      }
      let p = '';
      for (let i = 0; i < 20; i++) {
        p += `/deep${i}`;
        fs.mkdir(p, 0o755, ROOT);
      }
    };
    // One layer.
    const flat = pool.createThin('flat');
    const ffs = Filesystem.open(pool, flat);
    fill(ffs);
    ffs.close();
    // 128 layers: the same files at the bottom, each upper layer changes something else.
    let top: DevId = pool.createThin('layer0');
    let fs = Filesystem.open(pool, top);
    fill(fs);
    fs.close();
    for (let i = 1; i < 128; i++) {
      pool.setReadOnly(top);
      top = pool.createSnapshot(top, `layer${i}`);
      fs = Filesystem.open(pool, top);
      fs.release(fs.create(`/layer-${i}`, 0o644, ROOT));
      fs.chmod('/d', 0o755); // every layer copies the directory's inode row up
      fs.close();
    }
    pool.commit();
    const measure = (id: DevId) => {
      const v = Filesystem.open(pool, id, { readOnly: true });
      v.dropCaches();
      const cold = rate(N_LOOKUP, () => {
        for (const n of names) v.getattr(n);
      });
      const warm = rate(N_LOOKUP * 5, () => {
        for (let k = 0; k < 5; k++) for (const n of names) v.getattr(n);
      });
      const fhs = names.map((n) => v.open(n, constants.O_RDONLY));
      const read = rate(N_LOOKUP, () => {
        for (const fh of fhs) v.read(fh, 0, 4 * KiB);
      });
      for (const fh of fhs) v.release(fh);
      const deep = '/deep0/deep1/deep2/deep3/deep4/deep5/deep6/deep7/deep8/deep9/deep10/deep11/deep12/deep13/deep14/deep15/deep16/deep17/deep18/deep19';
      v.getattr(deep);
      const deep20 = rate(N_LOOKUP * 5, () => {
        for (let k = 0; k < N_LOOKUP * 5; k++) v.getattr(deep);
      });
      v.close();
      return { cold, warm, read, deep20 };
    };
    // A first round warms the JIT for both; the second is measured.
    measure(flat);
    measure(top);
    const one = measure(flat);
    const deepChain = measure(top);
    if (pool.getDevice(top)!.depth !== 128) throw new Error('chain is not 128 deep');
    pool.close();
    return {
      coldDepth1: one.cold,
      cold128: deepChain.cold,
      warmDepth1: one.warm,
      warm128: deepChain.warm,
      read1: one.read,
      read128: deepChain.read,
      deep20Warm: deepChain.deep20,
    };
  } finally {
    s.done();
  }
}

interface Cow {
  usPerWrite: number;
  bytesPerWrite: number;
  blockSize: number;
}

/** First 32 KiB writes into distinct blocks of a 1 GiB file that the lower layer maps. */
function cow(base: string): Cow {
  const s = scratch(base, 'bench-fs-');
  try {
    const pool = newPool(s.dir);
    const bs = pool.blockSizeBytes;
    const lower = pool.createThin('lower', { sizeLimitBytes: 4 * GiB });
    const lfs = Filesystem.open(pool, lower);
    const n = 64;
    const h = lfs.create('/big', 0o644, ROOT);
    const stride = Math.floor(GiB / n / bs) * bs;
    for (let i = 0; i < n; i++) lfs.write(h, i * stride, Buffer.alloc(bs, 0x11));
    lfs.ftruncate(h, GiB);
    lfs.release(h);
    lfs.close();
    pool.setReadOnly(lower);
    const c = pool.createSnapshot(lower, 'container');
    const cfs = Filesystem.open(pool, c);
    const fh = cfs.open('/big', constants.O_RDWR);
    cfs.write(fh, 0, Buffer.alloc(1)); // the inode row is copied up here, not in the timed writes
    pool.commit();
    const data = Buffer.alloc(32 * KiB, 0x22);
    const used0 = pool.status().dataUsedBytes;
    const times: number[] = [];
    for (let i = 1; i < n; i++) {
      const t0 = nowMs();
      cfs.write(fh, i * stride + 16 * KiB, data);
      times.push((nowMs() - t0) * 1000);
    }
    const bytes = (pool.status().dataUsedBytes - used0) / (n - 1);
    cfs.release(fh);
    cfs.close();
    pool.close();
    return { usPerWrite: median(times), bytesPerWrite: bytes, blockSize: bs };
  } finally {
    s.done();
  }
}

// ------------------------------------------------------------------ main

function runs<T>(n: number, fn: () => T): T[] {
  return Array.from({ length: n }, fn);
}

function med<T>(xs: T[], key: keyof T): number {
  return median(xs.map((x) => Number(x[key])));
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const many = runs(args.runs, () => manyFilesThinfs(args.dir));
  const manyNode = runs(args.runs, () => manyFilesNode(args.dir));
  const small = median(runs(args.runs, () => smallFilesThinfs(args.dir)));
  const smallNode = median(runs(args.runs, () => smallFilesNode(args.dir)));
  const dep = runs(args.runs, () => depth(args.dir));
  const cw = runs(args.runs, () => cow(args.dir));

  const rows: { metric: string; thinfs: number; node?: number; unit: string; ratio?: number; note?: string }[] = [];
  const add = (metric: string, thinfs: number, unit: string, node?: number, note?: string) =>
    rows.push({ metric, thinfs, unit, node, ratio: node === undefined ? undefined : thinfs / node, note });
  add('create 10k files in one dir', med(many, 'create'), 'ops/s', med(manyNode, 'create'));
  add('stat 10k files (warm)', med(many, 'stat'), 'ops/s', med(manyNode, 'stat'));
  add('stat 10k files (cold caches)', med(many, 'statCold'), 'ops/s');
  rows.push({
    metric: 'lookup + getattrIno 10k (warm) vs getattr(path)',
    thinfs: med(many, 'inoStat'),
    node: med(many, 'pathStat'),
    unit: 'ops/s',
    ratio: med(many, 'inoStat') / med(many, 'pathStat'),
    note: 'baseline: thinfs by path',
  });
  rows.push({
    metric: 'lookup + getattrIno 10k (cold) vs getattr(path)',
    thinfs: med(many, 'inoStatCold'),
    node: med(many, 'pathStatCold'),
    unit: 'ops/s',
    ratio: med(many, 'inoStatCold') / med(many, 'pathStatCold'),
    note: 'baseline: thinfs by path',
  });
  add('readdir of 10k entries', med(many, 'readdirMs'), 'ms', med(manyNode, 'readdirMs'), 'ratio: time, lower is better');
  add('readdirplus of 10k, 4 KiB pages', med(many, 'readdirplusPagedMs'), 'ms', med(manyNode, 'readdirMs'), `${READDIRPLUS_PAGE} entries a call; ratio: time`);
  add('readdirplus of 10k, one call', med(many, 'readdirplusMs'), 'ms', med(manyNode, 'readdirMs'), 'ratio: time, lower is better');
  add('unlink 10k files', med(many, 'unlink'), 'ops/s', med(manyNode, 'unlink'));
  add('4 KiB file create+write+read', small, 'files/s', smallNode);
  const c1 = med(dep, 'coldDepth1');
  const c128 = med(dep, 'cold128');
  const w1 = med(dep, 'warmDepth1');
  const w128 = med(dep, 'warm128');
  const r1 = med(dep, 'read1');
  const r128 = med(dep, 'read128');
  rows.push({ metric: 'lookup, cold: 128 layers vs 1', thinfs: c128, node: c1, unit: 'ops/s', ratio: c128 / c1, note: 'aim >= 0.9' });
  rows.push({ metric: 'lookup, warm: 128 layers vs 1', thinfs: w128, node: w1, unit: 'ops/s', ratio: w128 / w1, note: 'aim >= 0.9' });
  rows.push({ metric: '4 KiB read: 128 layers vs 1', thinfs: r128, node: r1, unit: 'ops/s', ratio: r128 / r1, note: 'aim >= 0.9' });
  rows.push({ metric: 'stat of a 20-deep path vs 1-deep (warm)', thinfs: med(dep, 'deep20Warm'), node: w128, unit: 'ops/s', ratio: med(dep, 'deep20Warm') / w128 });
  add('32 KiB CoW write into 1 GiB lower file', med(cw, 'usPerWrite'), 'µs');
  add('  bytes allocated per CoW write', med(cw, 'bytesPerWrite'), 'bytes', undefined, `one block = ${cw[0]!.blockSize}`);

  if (args.json) {
    console.log(JSON.stringify({ runs: args.runs, results: rows }, null, 2));
    return;
  }
  const fmt = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? '' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2));
  const table = new Table({ head: ['metric', 'thinfs', 'baseline', 'unit', 'ratio', 'note'] });
  for (const r of rows) table.push([r.metric, fmt(r.thinfs), fmt(r.node), r.unit, r.ratio === undefined ? '' : r.ratio.toFixed(2), r.note ?? '']);
  console.log(`thinfs filesystem benchmark (median of ${args.runs} runs; baseline: node:fs on a plain directory, or the 1-layer device)`);
  console.log(table.toString());
}

main();
