/**
 * `npm run bench:small-writes` — small writes into small files through FUSE (issue 9):
 * does keeping small blocks inline in the metadata make them slower than whole pool blocks?
 * In-process, a 100-byte append to an inline block rewrites the whole blob (~2.5x the CPU of
 * a block-only pool); mounted, the kernel's writeback cache hands the daemon whole pages at
 * close or fsync, so this measures what a program on a mount sees.
 *
 * Targets, side by side in the same run, the order rotated run by run:
 *   thinfs inline      a pool made by `thinfs init` (inline blocks up to half a block)
 *   thinfs block-only  a pool made by `thinfs init --inline-max 0`
 *   fuse-overlayfs     over the same image directory, a fresh upper per run
 *   plain              a directory on the host's disk (a reference: no FUSE)
 *   baseline inline    with --baseline DIR: a pool made by another build's `thinfs init`
 *                      (DIR: a checkout with dist/ built, node_modules and native-deps/build
 *                      linked in), e.g. the commit before the inline write-back cache
 * Each run uses a fresh container of an image (created, mounted, unmounted, removed).
 *
 * Workloads (each timed from its first open to the close of its last file):
 *   append     --files files (2,000), round-robin, each round: open(O_APPEND), write
 *              --append bytes (100), close; until each file is --grow-to bytes (16 KiB)
 *   overwrite  --ow-files files (500) of --ow-size bytes (16 KiB), written and closed
 *              before the clock starts, reopened; --overwrites (8,000) 4 KiB pwrites at a
 *              random 4 KiB-aligned offset of a random file (the same seeded sequence for
 *              every target), fsync of that file every --fsync-every (16) writes; close all
 * Measured: wall time per operation, and the CPU (user + system) of the serving process
 * (the pool's daemon, the fuse-overlayfs process) per operation; then the container's
 * exclusive bytes (thinfs ls) or the upper's allocation (fuse-overlayfs, plain: du), and
 * the thinfs umount (its final commit). Figures are medians of --runs runs (default 3);
 * ratios are inline ÷ block-only and inline ÷ fuse-overlayfs (> 1: inline is slower).
 *
 * Needs FUSE (root or /dev/fuse 0666 with fusermount3). Everything lives under --dir
 * (default: a fresh directory in ./.bench) and is removed at the end, mounts first; the
 * daemons and fuse-overlayfs processes it started are ended by pid. This script never
 * serves a mount itself (the daemon and fuse-overlayfs are other processes), so its
 * synchronous calls into the mounts are safe.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { Command, InvalidArgumentError } from 'commander';
import { parseSize } from '../src/cli/sizes.js';
import { allocatedBytes, alive, cpuSeconds, median, mountsUnder, nowMs } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const REPO = path.resolve(HERE, '..', '..');
const CLI = path.resolve(HERE, '..', 'src', 'cli', 'main.js');
const KiB = 1024;
const PAGE = 4 * KiB;

// ------------------------------------------------------------------ options

interface Options {
  runs: number;
  files: number;
  append: number;
  growTo: number;
  owFiles: number;
  owSize: number;
  overwrites: number;
  fsyncEvery: number;
  overlay: boolean;
  plain: boolean;
  dir: string;
  baseline?: string;
  json: boolean;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('takes a positive whole number');
  return n;
}
function size(v: string): number {
  try {
    return parseSize(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

const opt = new Command('bench:small-writes')
  .description('small appends and 4 KiB overwrites in small files, mounted: inline blocks vs block-only vs fuse-overlayfs (see bench/small-writes.ts)')
  .option('--runs <n>', 'runs; each figure is their median', positiveInt, 3)
  .option('--files <n>', 'files of the append workload', positiveInt, 2000)
  .option('--append <size>', 'bytes per append', size, 100)
  .option('--grow-to <size>', 'append until each file has this size', size, 16 * KiB)
  .option('--ow-files <n>', 'files of the overwrite workload', positiveInt, 500)
  .option('--ow-size <size>', 'size of each file of the overwrite workload (a multiple of 4K)', size, 16 * KiB)
  .option('--overwrites <n>', '4 KiB overwrites', positiveInt, 8000)
  .option('--fsync-every <n>', 'fsync the file written every N overwrites', positiveInt, 16)
  .option('--no-overlay', 'leave fuse-overlayfs out')
  .option('--no-plain', 'leave the plain directory out')
  .option('--dir <dir>', 'scratch directory (removed at the end)', path.join(REPO, '.bench', `small-writes-${process.pid}`))
  .option('--baseline <dir>', 'also measure a pool of the build in DIR (its dist/src/cli/main.js), inline blocks on')
  .option('--json', 'print JSON instead of tables')
  .parse()
  .opts<Options>();
opt.dir = path.resolve(opt.dir);
if (opt.owSize % PAGE !== 0 || opt.owSize < PAGE) {
  console.error('bench:small-writes: --ow-size must be a multiple of 4K');
  process.exit(2);
}
const baselineCli = opt.baseline === undefined ? undefined : path.resolve(opt.baseline, 'dist', 'src', 'cli', 'main.js');
if (baselineCli !== undefined && !fs.existsSync(baselineCli)) {
  console.error(`bench:small-writes: ${baselineCli} is missing; build the baseline first (npx tsc -p . there)`);
  process.exit(2);
}
const haveOverlay = opt.overlay && spawnSync('fuse-overlayfs', ['--version']).status === 0;
if (opt.overlay && !haveOverlay) console.error('bench:small-writes: fuse-overlayfs is not installed (apt-get install fuse-overlayfs): measuring without it');

function progress(msg: string): void {
  if (!opt.json) console.error(`bench:small-writes: ${msg}`);
}

// ------------------------------------------------------------------ processes and mounts

const sleepBuf = new Int32Array(new SharedArrayBuffer(4));
function waitUntil(what: string, ms: number, ok: () => boolean): void {
  const deadline = nowMs() + ms;
  while (!ok()) {
    if (nowMs() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    Atomics.wait(sleepBuf, 0, 0, 20);
  }
}
const isMounted = (mp: string) => mountsUnder(mp)[0] === mp;

/** Cleanups in reverse order of setup; each runs once; failures are reported, not thrown. */
const cleanups: { what: string; fn: () => void }[] = [];
function unwind(mark = 0): void {
  while (cleanups.length > mark) {
    const c = cleanups.pop()!;
    try {
      c.fn();
    } catch (err) {
      console.error(`bench:small-writes: cleanup (${c.what}) failed: ${(err as Error).message}`);
    }
  }
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    console.error(`bench:small-writes: ${sig}: cleaning up`);
    unwind();
    process.exit(130);
  });
}

/** One thinfs pool under --dir: `thinfs --root ROOT ...` and its daemons, ended by pid at the end. */
class ThinfsPool {
  readonly root: string;
  private readonly daemons = new Set<number>();
  constructor(
    name: string,
    private readonly main = CLI,
  ) {
    this.root = path.join(opt.dir, name);
  }
  cli(...argv: string[]): string {
    const r = spawnSync(process.execPath, [this.main, '--root', this.root, ...argv], { encoding: 'utf8', timeout: 600_000 });
    if (r.status !== 0) throw new Error(`thinfs ${argv.join(' ')} failed: ${(r.stderr || r.stdout || String(r.error ?? r.signal)).trim()}`);
    return r.stdout;
  }
  daemonPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(path.join(this.root, 'run', 'daemon.pid'), 'utf8').trim()) || undefined;
      if (pid !== undefined) this.daemons.add(pid);
      return pid;
    } catch {
      return undefined;
    }
  }
  /** Ends every daemon it saw that is still there (each should have exited after its last umount). */
  endDaemons(): void {
    for (const pid of this.daemons) {
      for (const sig of [undefined, 'SIGTERM', 'SIGKILL'] as const) {
        if (sig !== undefined && alive(pid)) process.kill(pid, sig);
        try {
          waitUntil(`the thinfs daemon ${pid} to exit`, 10_000, () => !alive(pid));
          break;
        } catch {
          /* the next signal */
        }
      }
    }
  }
}

interface View {
  dir: string;
  /** The serving process, if any. */
  pid: number | undefined;
  /** Bytes the view's own changes hold (read before close). */
  stored: () => number;
  /** Unmounts and removes the view; returns how long the unmount took (ms), if it is a mount. */
  close: () => number | undefined;
}

function thinfsView(pool: ThinfsPool, name: string): View {
  pool.cli('create', name, 'img');
  const mp = JSON.parse(pool.cli('mount', name, '--json')) as { mountpoint: string };
  const undo = { what: `thinfs umount ${name}`, fn: () => isMounted(mp.mountpoint) && pool.cli('umount', name) };
  cleanups.push(undo);
  return {
    dir: mp.mountpoint,
    pid: pool.daemonPid(),
    stored: () => (JSON.parse(pool.cli('ls', '--json')) as { name: string; exclusiveBytes: number }[]).find((d) => d.name === name)!.exclusiveBytes,
    close: () => {
      const t0 = nowMs();
      pool.cli('umount', name);
      const ms = nowMs() - t0;
      cleanups.splice(cleanups.indexOf(undo), 1);
      pool.cli('rm', name);
      return ms;
    },
  };
}

/** fuse-overlayfs over `lower` with a fresh upper, in the foreground so that its pid is known. */
function overlayView(lower: string, name: string): View {
  const base = path.join(opt.dir, 'ovl', name);
  const [upper, work, mnt] = ['upper', 'work', 'mnt'].map((d) => path.join(base, d)) as [string, string, string];
  for (const d of [upper, work, mnt]) fs.mkdirSync(d, { recursive: true });
  const log = fs.openSync(path.join(base, 'log'), 'a');
  const child: ChildProcess = spawn('fuse-overlayfs', ['-f', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, mnt], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const end = () => {
    const pid = child.pid;
    if (isMounted(mnt)) spawnSync('fusermount3', ['-u', mnt]);
    if (pid !== undefined) {
      for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
        try {
          waitUntil(`fuse-overlayfs ${pid} to exit`, 5000, () => !alive(pid));
          break;
        } catch {
          if (alive(pid)) process.kill(pid, sig);
        }
      }
    }
    if (isMounted(mnt)) spawnSync('umount', ['-l', mnt]);
    if (!isMounted(mnt)) fs.rmSync(base, { recursive: true, force: true });
  };
  const undo = { what: `fuse-overlayfs ${name}`, fn: end };
  cleanups.push(undo);
  waitUntil(`fuse-overlayfs to mount ${mnt}`, 10_000, () => {
    if (child.pid === undefined || !alive(child.pid)) throw new Error(`fuse-overlayfs exited: ${fs.readFileSync(path.join(base, 'log'), 'utf8').trim()}`);
    return isMounted(mnt);
  });
  return {
    dir: mnt,
    pid: child.pid,
    stored: () => allocatedBytes(upper),
    close: () => {
      const t0 = nowMs();
      end();
      cleanups.splice(cleanups.indexOf(undo), 1);
      return nowMs() - t0;
    },
  };
}

function plainView(name: string): View {
  const dir = path.join(opt.dir, 'plain', name);
  fs.mkdirSync(dir, { recursive: true });
  return { dir, pid: undefined, stored: () => allocatedBytes(dir), close: () => (fs.rmSync(dir, { recursive: true, force: true }), undefined) };
}

// ------------------------------------------------------------------ workloads

interface Sample {
  wallMs: number;
  /** CPU seconds of the serving process during the workload; undefined without one. */
  cpuS: number | undefined;
  ops: number;
}

function measure(pid: number | undefined, ops: number, fn: () => void): Sample {
  const c0 = pid === undefined ? undefined : cpuSeconds(pid);
  const t0 = nowMs();
  fn();
  const wallMs = nowMs() - t0;
  const c1 = pid === undefined ? undefined : cpuSeconds(pid);
  return { wallMs, cpuS: c0 === undefined || c1 === undefined ? undefined : c1 - c0, ops };
}

function appendWorkload(dir: string, pid: number | undefined): Sample {
  const d = path.join(dir, 'append');
  fs.mkdirSync(d);
  const names = Array.from({ length: opt.files }, (_, i) => path.join(d, `log-${i}`));
  const buf = Buffer.alloc(opt.append, 0x61);
  const rounds = Math.ceil(opt.growTo / opt.append);
  return measure(pid, rounds * opt.files, () => {
    for (let r = 0; r < rounds; r++) {
      for (const n of names) {
        const fd = fs.openSync(n, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o644);
        fs.writeSync(fd, buf);
        fs.closeSync(fd);
      }
    }
  });
}

/** mulberry32: the same pseudo-random sequence for every target. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function overwriteWorkload(dir: string, pid: number | undefined): Sample {
  const d = path.join(dir, 'overwrite');
  fs.mkdirSync(d);
  const names = Array.from({ length: opt.owFiles }, (_, i) => path.join(d, `db-${i}`));
  const init = Buffer.alloc(opt.owSize, 0x30);
  for (const n of names) fs.writeFileSync(n, init);
  const fds = names.map((n) => fs.openSync(n, fs.constants.O_RDWR));
  const rand = prng(9);
  const page = Buffer.alloc(PAGE, 0x77);
  const pages = opt.owSize / PAGE;
  return measure(pid, opt.overwrites, () => {
    for (let i = 1; i <= opt.overwrites; i++) {
      const fd = fds[Math.floor(rand() * fds.length)]!;
      page[0] = i & 0xff;
      fs.writeSync(fd, page, 0, PAGE, Math.floor(rand() * pages) * PAGE);
      if (i % opt.fsyncEvery === 0) fs.fsyncSync(fd);
    }
    for (const fd of fds) fs.closeSync(fd);
  });
}

// ------------------------------------------------------------------ main

type TargetName = 'thinfs inline' | 'thinfs block-only' | 'fuse-overlayfs' | 'plain' | 'baseline inline';
interface Target {
  name: TargetName;
  open: (run: string) => View;
}
interface RunResult {
  append: Sample;
  overwrite: Sample;
  storedBytes: number;
  umountMs: number | undefined;
}

function main(): void {
  fs.mkdirSync(opt.dir, { recursive: true });
  cleanups.push({ what: `rm -r ${opt.dir}`, fn: () => fs.rmSync(opt.dir, { recursive: true, force: true }) });
  const lower = path.join(opt.dir, 'img');
  fs.mkdirSync(path.join(lower, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(lower, 'etc', 'hostname'), 'bench\n');

  const pools: Record<string, ThinfsPool> = { inline: new ThinfsPool('pool-inline'), block: new ThinfsPool('pool-block') };
  if (baselineCli !== undefined) pools.baseline = new ThinfsPool('pool-baseline', baselineCli);
  cleanups.push({ what: 'thinfs daemons', fn: () => Object.values(pools).forEach((p) => p.endDaemons()) });
  pools.inline!.cli('init', '--data-size', '16G');
  pools.block!.cli('init', '--data-size', '16G', '--inline-max', '0');
  pools.baseline?.cli('init', '--data-size', '16G');
  for (const p of Object.values(pools)) p.cli('import', 'img', lower);
  const inlineMax = (JSON.parse(pools.inline!.cli('info', '--json')) as { inlineMax: number }).inlineMax;

  const targets: Target[] = [
    { name: 'thinfs inline', open: (run) => thinfsView(pools.inline!, `c${run}`) },
    { name: 'thinfs block-only', open: (run) => thinfsView(pools.block!, `c${run}`) },
    ...(pools.baseline !== undefined ? [{ name: 'baseline inline' as const, open: (run: string) => thinfsView(pools.baseline!, `c${run}`) }] : []),
    ...(haveOverlay ? [{ name: 'fuse-overlayfs' as const, open: (run: string) => overlayView(lower, run) }] : []),
    ...(opt.plain ? [{ name: 'plain' as const, open: (run: string) => plainView(run) }] : []),
  ];
  const results = new Map<TargetName, RunResult[]>(targets.map((t) => [t.name, []]));
  for (let run = 0; run < opt.runs; run++) {
    // Rotate the order so that a busy machine, warm caches or a slow start weigh on each alike.
    const order = targets.map((_, i) => targets[(i + run) % targets.length]!);
    for (const t of order) {
      progress(`run ${run + 1}/${opt.runs}: ${t.name}`);
      const v = t.open(String(run));
      const append = appendWorkload(v.dir, v.pid);
      const overwrite = overwriteWorkload(v.dir, v.pid);
      const storedBytes = v.stored();
      const umountMs = v.close();
      results.get(t.name)!.push({ append, overwrite, storedBytes, umountMs });
    }
  }
  report(targets.map((t) => t.name), results, inlineMax);
}

function report(names: TargetName[], results: Map<TargetName, RunResult[]>, inlineMax: number): void {
  const all = (name: TargetName, f: (r: RunResult) => number | undefined): number[] => results.get(name)!.map(f).filter((x): x is number => x !== undefined);
  const rows: { measure: string; unit: string; values: Record<string, number | undefined>; ranges: Record<string, [number, number] | undefined> }[] = [];
  const row = (measure: string, unit: string, f: (r: RunResult) => number | undefined) =>
    rows.push({
      measure,
      unit,
      values: Object.fromEntries(names.map((n) => [n, all(n, f).length === 0 ? undefined : median(all(n, f))])),
      ranges: Object.fromEntries(names.map((n) => [n, all(n, f).length === 0 ? undefined : [Math.min(...all(n, f)), Math.max(...all(n, f))]])),
    });
  const perOpUs = (s: Sample) => (s.wallMs * 1000) / s.ops;
  const cpuUs = (s: Sample) => (s.cpuS === undefined ? undefined : (s.cpuS * 1e6) / s.ops);
  const appendOps = Math.ceil(opt.growTo / opt.append) * opt.files;
  row(`append: open+write ${opt.append} B+close (x${appendOps}), wall`, 'µs/op', (r) => perOpUs(r.append));
  row('append: server CPU', 'µs/op', (r) => cpuUs(r.append));
  row(`overwrite 4 KiB (x${opt.overwrites}, fsync every ${opt.fsyncEvery}), wall`, 'µs/op', (r) => perOpUs(r.overwrite));
  row('overwrite: server CPU', 'µs/op', (r) => cpuUs(r.overwrite));
  row('stored after both (container exclusive / upper du)', 'MiB', (r) => r.storedBytes / 2 ** 20);
  row('umount (final commit)', 'ms', (r) => r.umountMs);
  if (opt.json) {
    console.log(JSON.stringify({ options: opt, inlineMax, rows, runs: Object.fromEntries(results) }, null, 2));
    return;
  }
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`);
  const extra = [...(names.includes('fuse-overlayfs') ? ['inline ÷ fuse-overlayfs'] : []), ...(names.includes('baseline inline') ? ['inline ÷ baseline inline'] : [])];
  const table = new Table({ head: ['measure', ...names, 'inline ÷ block-only', ...extra] });
  for (const r of rows) {
    const fmt = (v: number) => v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);
    const cells = names.map((n) => {
      const v = r.values[n];
      const range = r.ranges[n];
      return v === undefined ? '-' : `${fmt(v)} ${r.unit}${range !== undefined && opt.runs > 1 ? `\n(${fmt(range[0])}-${fmt(range[1])})` : ''}`;
    });
    const more = extra.map((h) => ratio(r.values['thinfs inline'], r.values[h.slice('inline ÷ '.length)]));
    table.push([r.measure, ...cells, ratio(r.values['thinfs inline'], r.values['thinfs block-only']), ...more]);
  }
  console.log(
    `small writes into small files, mounted (median of ${opt.runs} runs, their range below it; ${opt.files} files grown to ${opt.growTo} B by ${opt.append}-byte appends; ` +
      `${opt.owFiles} files of ${opt.owSize} B; thinfs inline max ${inlineMax} B)`,
  );
  console.log(table.toString());
}

try {
  main();
} finally {
  unwind();
}
