/**
 * `npm run bench` — thinfs mounted through FUSE, measured with fio and ordinary tools,
 * side by side in one run with a plain directory on the same disk and, when installed,
 * fuse-overlayfs over the same image content:
 *
 *   seq read and write 1M; rand read 4k (cold and warm page cache) and rand write 4k
 *   the first 32 KiB write into a 1 GiB file that lives in the image (time, space used)
 *   create / stat / unlink 10,000 files
 *   the daemon's memory with 1 and 50 mounted containers of one image
 *
 * Medians of --runs runs (default 3); ratios are thinfs / baseline (for times:
 * baseline / thinfs, so > 1 is always "thinfs faster"). --json prints JSON. --dir DIR
 * holds everything (default ./.bench, so the plain directory shares the disk). Needs
 * root (drop_caches, mounts) and fio. This script never serves a mount itself: the
 * thinfs daemon is another process, so synchronous child processes are safe here.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { median, nowMs } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '..', 'src', 'cli', 'main.js');

interface Args {
  runs: number;
  json: boolean;
  dir: string;
  sizeMiB: number;
  mounts: number;
}
function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 3, json: false, dir: path.resolve('.bench'), sizeMiB: 512, mounts: 50 };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    if (x === '--json') a.json = true;
    else if (x === '--runs') a.runs = Number(argv[++i]);
    else if (x === '--dir') a.dir = path.resolve(argv[++i]!);
    else if (x === '--size-mib') a.sizeMiB = Number(argv[++i]);
    else if (x === '--mounts') a.mounts = Number(argv[++i]);
    else if (x === '--help' || x === '-h') {
      console.log('usage: npm run bench -- [--runs N] [--json] [--dir DIR] [--size-mib N] [--mounts N]');
      process.exit(0);
    } else {
      console.error(`bench: unknown option ${x}; see --help`);
      process.exit(2);
    }
  }
  for (const [k, v] of Object.entries({ runs: a.runs, sizeMiB: a.sizeMiB, mounts: a.mounts })) {
    if (!(Number.isInteger(v) && v > 0)) {
      console.error(`bench: --${k} takes a positive whole number`);
      process.exit(2);
    }
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));
if (process.getuid?.() !== 0) {
  console.error('bench: run as root (it drops the page cache and mounts file systems)');
  process.exit(1);
}
if (spawnSync('fio', ['--version']).status !== 0) {
  console.error('bench: fio is not installed: apt-get install -y fio');
  process.exit(1);
}
const haveOverlay = spawnSync('fuse-overlayfs', ['--version']).status === 0;

const root = path.join(args.dir, 'pool');
const plain = path.join(args.dir, 'plain');
const imageSrc = path.join(args.dir, 'image-src');
const ovl = { lower: imageSrc, upper: path.join(args.dir, 'ovl-upper'), work: path.join(args.dir, 'ovl-work'), mnt: path.join(args.dir, 'ovl-mnt') };

function thinfs(...argv: string[]): string {
  const r = spawnSync(process.execPath, [CLI, '--root', root, ...argv], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`thinfs ${argv.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}
function sh(cmd: string, argv: string[]): string {
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function dropCaches(): void {
  sh('sync', []);
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

const cleanups: (() => void)[] = [];
function cleanup(): void {
  for (const c of cleanups.reverse()) {
    try {
      c();
    } catch {
      /* best effort */
    }
  }
  cleanups.length = 0;
}
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

// ------------------------------------------------------------------ setup
fs.rmSync(args.dir, { recursive: true, force: true });
fs.mkdirSync(imageSrc, { recursive: true });
fs.mkdirSync(plain, { recursive: true });
// The image: a small tree plus a 1 GiB file whose blocks all hold data.
fs.mkdirSync(path.join(imageSrc, 'etc'));
fs.writeFileSync(path.join(imageSrc, 'etc', 'hostname'), 'bench\n');
{
  const fd = fs.openSync(path.join(imageSrc, 'big'), 'w');
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  for (let i = 0; i < 1024; i++) fs.writeSync(fd, chunk, 0, chunk.length, i << 20);
  fs.closeSync(fd);
}
thinfs('init', '--data-size', '200G');
thinfs('import', 'img', imageSrc);
thinfs('create', 'c0', 'img');
thinfs('mount', 'c0');
const mnt = path.join(root, 'mnt', 'c0');
cleanups.push(() => thinfs('umount', 'c0'));
if (haveOverlay) {
  for (const d of [ovl.upper, ovl.work, ovl.mnt]) fs.mkdirSync(d, { recursive: true });
  sh('fuse-overlayfs', ['-o', `lowerdir=${ovl.lower},upperdir=${ovl.upper},workdir=${ovl.work}`, ovl.mnt]);
  cleanups.push(() => sh('fusermount', ['-u', ovl.mnt]));
}
const targets: { name: string; dir: string }[] = [
  { name: 'plain', dir: plain },
  { name: 'thinfs', dir: mnt },
  ...(haveOverlay ? [{ name: 'fuse-overlayfs', dir: ovl.mnt }] : []),
];

interface Row {
  metric: string;
  unit: string;
  values: Record<string, number>;
  higherIsBetter: boolean;
}
const rows: Row[] = [];

// ------------------------------------------------------------------ fio
function fio(dir: string, name: string, rw: string, bs: string, extra: string[] = []): { bwMiBs: number; iops: number } {
  const out = sh('fio', [
    `--name=${name}`,
    `--directory=${dir}`,
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--size=${args.sizeMiB}M`,
    '--ioengine=psync',
    '--numjobs=1',
    '--output-format=json',
    ...extra,
  ]);
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { read: { bw: number; iops: number }; write: { bw: number; iops: number } }[] }).jobs[0]!;
  const side = rw.includes('write') ? job.write : job.read;
  return { bwMiBs: side.bw / 1024, iops: side.iops };
}
try {
  const cases: { metric: string; unit: 'MiB/s' | 'IOPS'; run: (dir: string) => number }[] = [
    { metric: 'seq write 1M', unit: 'MiB/s', run: (d) => fio(d, 'seqw', 'write', '1M', ['--end_fsync=1']).bwMiBs },
    { metric: 'seq read 1M (cold)', unit: 'MiB/s', run: (d) => (dropCaches(), fio(d, 'seqw', 'read', '1M').bwMiBs) },
    { metric: 'rand read 4k (cold)', unit: 'IOPS', run: (d) => (dropCaches(), fio(d, 'seqw', 'randread', '4k', ['--runtime=10']).iops) },
    { metric: 'rand read 4k (warm)', unit: 'IOPS', run: (d) => (fio(d, 'seqw', 'randread', '4k'), fio(d, 'seqw', 'randread', '4k').iops) },
    { metric: 'rand write 4k', unit: 'IOPS', run: (d) => fio(d, 'seqw', 'randwrite', '4k', ['--end_fsync=1']).iops },
  ];
  for (const c of cases) {
    const values: Record<string, number> = {};
    for (const t of targets) {
      const xs: number[] = [];
      for (let r = 0; r < args.runs; r++) xs.push(c.run(t.dir));
      values[t.name] = median(xs);
    }
    rows.push({ metric: c.metric, unit: c.unit, values, higherIsBetter: true });
  }
  for (const t of targets) fs.rmSync(path.join(t.dir, 'seqw.0.0'), { force: true });

  // ---------------------------------------------------------------- first write into the image's 1 GiB file
  {
    const time: Record<string, number> = {};
    const space: Record<string, number> = {};
    const used = (name: string): number => {
      sh('sync', []);
      if (name === 'thinfs') return (JSON.parse(thinfs('info', '--json')) as { dataUsed: number }).dataUsed;
      if (name === 'fuse-overlayfs') return Number(sh('du', ['-sb', ovl.upper]).split('\t')[0]);
      return Number(sh('du', ['-sb', plain]).split('\t')[0]);
    };
    // The plain directory gets its own copy of the file first (there is no image there).
    fs.copyFileSync(path.join(imageSrc, 'big'), path.join(plain, 'big'));
    const buf = Buffer.alloc(32 * 1024, 1);
    for (const t of targets) {
      const before = used(t.name);
      const xs: number[] = [];
      // Each run writes a different, never-written 64 KiB block (offsets 100 MiB apart).
      for (let r = 0; r < args.runs; r++) {
        const file = path.join(t.dir, 'big');
        const t0 = nowMs();
        const fd = fs.openSync(file, 'r+');
        fs.writeSync(fd, buf, 0, buf.length, (r + 1) * 100 * (1 << 20) + 16 * 1024);
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        xs.push(nowMs() - t0);
      }
      time[t.name] = median(xs);
      space[t.name] = (used(t.name) - before) / args.runs;
    }
    rows.push({ metric: 'first 32 KiB write into a 1 GiB image file (open+write+fsync)', unit: 'ms', values: time, higherIsBetter: false });
    rows.push({ metric: '  space used by that write', unit: 'bytes', values: space, higherIsBetter: false });
  }

  // ---------------------------------------------------------------- 10,000 files
  {
    const script = `
      const fs = require('fs'), p = require('path'); const d = process.argv[1]; const n = 10000;
      fs.mkdirSync(d, { recursive: true });
      const t = () => Number(process.hrtime.bigint()) / 1e6;
      let a = t(); for (let i = 0; i < n; i++) fs.closeSync(fs.openSync(p.join(d, 'f' + i), 'w'));
      const c = n / ((t() - a) / 1000);
      a = t(); for (let i = 0; i < n; i++) fs.statSync(p.join(d, 'f' + i));
      const s = n / ((t() - a) / 1000);
      a = t(); for (let i = 0; i < n; i++) fs.unlinkSync(p.join(d, 'f' + i));
      const u = n / ((t() - a) / 1000);
      fs.rmdirSync(d);
      console.log(JSON.stringify({ c, s, u }));`;
    const res: Record<string, { c: number[]; s: number[]; u: number[] }> = {};
    for (const t of targets) {
      res[t.name] = { c: [], s: [], u: [] };
      for (let r = 0; r < args.runs; r++) {
        const o = JSON.parse(sh(process.execPath, ['-e', script, path.join(t.dir, `files-${r}`)])) as { c: number; s: number; u: number };
        res[t.name]!.c.push(o.c);
        res[t.name]!.s.push(o.s);
        res[t.name]!.u.push(o.u);
      }
    }
    for (const [k, label] of [
      ['c', 'create 10,000 files'],
      ['s', 'stat 10,000 files'],
      ['u', 'unlink 10,000 files'],
    ] as const) {
      rows.push({ metric: label, unit: 'ops/s', values: Object.fromEntries(targets.map((t) => [t.name, median(res[t.name]![k])])), higherIsBetter: true });
    }
  }

  // ---------------------------------------------------------------- daemon memory, 1 and N mounts
  {
    const pid = Number(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8').trim());
    const rssMiB = (): number => {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) / 1024 : NaN;
    };
    const one = rssMiB();
    for (let i = 1; i < args.mounts; i++) {
      thinfs('create', `m${i}`, 'img');
      thinfs('mount', `m${i}`);
      const name = `m${i}`;
      cleanups.push(() => thinfs('umount', name));
    }
    // Touch every mount a little so each has a live view.
    for (let i = 1; i < args.mounts; i++) fs.readdirSync(path.join(root, 'mnt', `m${i}`, 'etc'));
    const many = rssMiB();
    rows.push({ metric: 'daemon RSS, 1 mounted container', unit: 'MiB', values: { thinfs: one }, higherIsBetter: false });
    rows.push({ metric: `daemon RSS, ${args.mounts} mounted containers`, unit: 'MiB', values: { thinfs: many }, higherIsBetter: false });
    rows.push({ metric: '  per extra container', unit: 'MiB', values: { thinfs: (many - one) / (args.mounts - 1) }, higherIsBetter: false });
  }
} finally {
  cleanup();
}
fs.rmSync(args.dir, { recursive: true, force: true });

if (args.json) {
  console.log(JSON.stringify({ runs: args.runs, sizeMiB: args.sizeMiB, targets: targets.map((t) => t.name), rows }, null, 2));
} else {
  const fmt = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? '' : Math.abs(x) >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2));
  const ratio = (r: Row, other: string) => {
    const a = r.values.thinfs;
    const b = r.values[other];
    if (a === undefined || b === undefined || a === 0 || b === 0) return '';
    return (r.higherIsBetter ? a / b : b / a).toFixed(2);
  };
  const head = ['metric', 'unit', ...targets.map((t) => t.name), 'thinfs/plain', ...(haveOverlay ? ['thinfs/overlay'] : [])];
  const table = new Table({ head });
  for (const r of rows) {
    table.push([r.metric, r.unit, ...targets.map((t) => fmt(r.values[t.name])), ratio(r, 'plain'), ...(haveOverlay ? [ratio(r, 'fuse-overlayfs')] : [])]);
  }
  console.log(`thinfs fio benchmark — median of ${args.runs} run(s), ${args.sizeMiB} MiB files; ratios > 1 mean thinfs is better`);
  console.log(table.toString());
}
