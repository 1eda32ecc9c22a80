/**
 * `npm run bench` — thinfs through FUSE against fuse-overlayfs and a plain directory,
 * side by side in one run (issue 8's table):
 *
 *   the image: one file of --size-mib (1 GiB) whose blocks all hold data, and a tree of
 *   many small files (--tree, default /usr/share/doc) — imported into a thinfs image and
 *   mounted as a container of it; the same files as fuse-overlayfs's lowerdir (mounted
 *   the way containers/storage does for rootless users: `-o lowerdir=,upperdir=,workdir=`);
 *   and a copy of them in a plain directory on the same disk.
 *
 *   read   seq read 1M and rand read 4k of the image file, cold and warm (fio psync QD1)
 *   write  seq write 1M and rand write 4k of a fresh file, end_fsync included
 *   files  create, stat (warm, and after drop_caches) and unlink of --files empty files
 *   tree   `find -type f` cold; reading every file (cat) cold and warm
 *   cow    the first 32 KiB write into the image's big file: a fresh container and a fresh
 *          fuse-overlayfs upper for every run, so each run is a real first write
 *   rss    the serving processes' memory with 1 and --mounts mounted containers
 *
 * cold = sync + `echo 3 > /proc/sys/vm/drop_caches` right before; warm = the same bytes
 * read once through the same target right before (fio with --invalidate=0, else fio drops
 * the file's pages itself and "warm" measures cold). Every measured operation starts with a
 * sync, so nobody's earlier dirty data is written inside it. CPU = utime + stime of the
 * serving process (the thinfs daemon from ROOT/run/daemon.pid; the fuse-overlayfs process)
 * during the measured operation ÷ its duration: 100% is one core.
 *
 * Figures are medians of --runs runs (default 3), the targets interleaved within each run.
 * Ratios are thinfs ÷ baseline, inverted for times, bytes and memory, so > 1 always means
 * thinfs is better. `--quick` is a smaller run (--runs 1, 256 MiB, 2,000 files, 5 mounts).
 * Needs root (drop_caches, mounts) and fio. Everything lives under --dir (default ./.bench,
 * so the plain directory shares the disk) and is removed at the end, mounts first; servers
 * this script started are ended by pid. This script never serves a mount itself (the thinfs
 * daemon and fuse-overlayfs are other processes), so its synchronous child processes are safe.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { Command, InvalidArgumentError } from 'commander';
import { allocatedBytes, alive, cpuSeconds, dropCaches, median, mountsUnder, nowMs, rssBytes } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const CLI = path.resolve(HERE, '..', 'src', 'cli', 'main.js');
const MiB = 1 << 20;

// ------------------------------------------------------------------ options

const GROUPS = ['read', 'write', 'files', 'tree', 'cow', 'rss'] as const;
type Group = (typeof GROUPS)[number];

interface Options {
  runs: number;
  sizeMiB: number;
  files: number;
  mounts: number;
  randRuntimeS: number;
  tree: string;
  only: Set<Group>;
  overlay: boolean;
  dir: string;
  label?: string;
  json: boolean;
  quick: boolean;
  cliTimeoutS: number;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('takes a positive whole number');
  return n;
}

function parseOptions(argv: string[]): Options {
  const defaultTree = fs.existsSync('/usr/share/doc') ? '/usr/share/doc' : path.join(REPO, 'node_modules');
  const o = new Command('npm run bench --')
    .description('thinfs vs fuse-overlayfs vs a plain directory, side by side (see bench/fio.ts)')
    .option('--quick', 'a run of a couple of minutes: --runs 1 --size-mib 256 --files 2000 --mounts 5 --rand-runtime 2')
    .option('--runs <n>', 'runs per row; figures are medians (default 3)', positiveInt)
    .option('--size-mib <n>', 'size of the image file and of the written file (default 1024)', positiveInt)
    .option('--files <n>', 'files created, stat-ed and unlinked (default 10000)', positiveInt)
    .option('--mounts <n>', 'mounted containers for the memory row (default 50)', positiveInt)
    .option('--rand-runtime <s>', 'seconds cap of each random fio job (default 5)', positiveInt)
    .option('--tree <dir>', 'the tree of many small files put in the image', defaultTree)
    .option('--only <groups>', `run only these row groups (comma-separated: ${GROUPS.join(',')})`)
    .option('--no-overlay', 'leave fuse-overlayfs out')
    .option('--dir <dir>', 'scratch directory on the disk to measure (removed at the end)', '.bench')
    .option('--label <text>', 'what is measured (default: the git commit of this checkout)')
    .option('--cli-timeout <s>', 'seconds a thinfs command may take before the daemon counts as wedged (default 120; import: 3600)', positiveInt)
    .option('--json', 'print JSON instead of the table')
    .parse(['node', 'bench', ...argv])
    .opts<{
      quick?: boolean;
      runs?: number;
      sizeMib?: number;
      files?: number;
      mounts?: number;
      randRuntime?: number;
      tree: string;
      only?: string;
      overlay: boolean;
      dir: string;
      label?: string;
      json?: boolean;
      cliTimeout?: number;
    }>();
  const quick = o.quick === true;
  const only = new Set<Group>();
  for (const g of (o.only ?? GROUPS.join(',')).split(',').filter(Boolean)) {
    if (!(GROUPS as readonly string[]).includes(g)) {
      console.error(`bench: --only: unknown group ${g} (groups: ${GROUPS.join(', ')})`);
      process.exit(2);
    }
    only.add(g as Group);
  }
  return {
    runs: o.runs ?? (quick ? 1 : 3),
    sizeMiB: o.sizeMib ?? (quick ? 256 : 1024),
    files: o.files ?? (quick ? 2000 : 10000),
    mounts: o.mounts ?? (quick ? 5 : 50),
    randRuntimeS: o.randRuntime ?? (quick ? 2 : 5),
    tree: path.resolve(o.tree),
    only,
    overlay: o.overlay,
    dir: path.resolve(o.dir),
    label: o.label,
    json: o.json === true,
    quick,
    cliTimeoutS: o.cliTimeout ?? 120,
  };
}

const opt = parseOptions(process.argv.slice(2));
if (process.getuid?.() !== 0) fatal('run as root (it drops the page cache and mounts file systems)');
if (spawnSync('fio', ['--version']).status !== 0) fatal('fio is not installed: apt-get install -y --no-install-recommends fio');
if (!fs.existsSync(CLI)) fatal(`${CLI} is missing: build first (npm run build)`);
if (!fs.statSync(opt.tree, { throwIfNoEntry: false })?.isDirectory()) fatal(`--tree ${opt.tree} is not a directory`);
const overlayVersion = opt.overlay ? /version ([\d.]+)/.exec(spawnSync('fuse-overlayfs', ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1] : undefined;
if (opt.overlay && overlayVersion === undefined) console.error('bench: fuse-overlayfs is not installed (apt-get install fuse-overlayfs): measuring without it');
const haveOverlay = overlayVersion !== undefined;

function fatal(msg: string): never {
  console.error(`bench: ${msg}`);
  process.exit(1);
}
function progress(msg: string): void {
  console.error(`bench: ${msg}`);
}

// ------------------------------------------------------------------ processes and mounts

const sleepBuf = new Int32Array(new SharedArrayBuffer(4));
function sleepSync(ms: number): void {
  Atomics.wait(sleepBuf, 0, 0, ms);
}
function sh(cmd: string, argv: string[]): string {
  // A tool stuck on a wedged mount ends the row with an error instead of hanging the run.
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * MiB, timeout: 900_000 });
}
function waitUntil(what: string, ms: number, ok: () => boolean): void {
  const deadline = nowMs() + ms;
  while (!ok()) {
    if (nowMs() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    sleepSync(20);
  }
}
const isMounted = (mp: string) => mountsUnder(mp)[0] === mp;

/** Cleanups in reverse order of setup; each runs once, failures are reported, not thrown. */
const cleanups: { what: string; fn: () => void }[] = [];
function unwind(mark = 0): void {
  while (cleanups.length > mark) {
    const c = cleanups.pop()!;
    try {
      c.fn();
    } catch (err) {
      console.error(`bench: cleanup (${c.what}) failed: ${(err as Error).message}`);
    }
  }
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    console.error(`bench: ${sig}: cleaning up`);
    unwind();
    process.exit(130);
  });
}

const root = path.join(opt.dir, 'pool');
const src = path.join(opt.dir, 'src');
const plain = path.join(opt.dir, 'plain');

/** Things to say under the table: a daemon that stopped answering, died, or had to be ended. */
const warnings: string[] = [];
/** Set once a thinfs command timed out: the daemon is wedged, later commands are not tried. */
let wedged = '';

function thinfs(...argv: string[]): string {
  if (wedged) throw new Error(`thinfs ${argv.join(' ')} not tried: ${wedged}`);
  const timeoutS = argv[0] === 'import' ? Math.max(3600, opt.cliTimeoutS) : opt.cliTimeoutS;
  const r = spawnSync(process.execPath, [CLI, '--root', root, ...argv], { encoding: 'utf8', timeout: timeoutS * 1000, killSignal: 'SIGTERM' });
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
    wedged = `\`thinfs ${argv.join(' ')}\` got no answer in ${timeoutS} s (daemon pid ${daemonPid() ?? 'none'})`;
    warnings.push(`the thinfs daemon stopped answering: ${wedged}`);
    throw new Error(wedged);
  }
  if (r.status !== 0) throw new Error(`thinfs ${argv.join(' ')} failed: ${(r.stderr || r.stdout || String(r.error ?? r.signal)).trim()}`);
  return r.stdout;
}
/** Every daemon pid seen for this pool: the cleanup makes sure each one has ended. */
const daemons = new Set<number>();
function daemonPid(): number | undefined {
  let pid: number | undefined;
  try {
    pid = Number(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8').trim()) || undefined;
  } catch {
    return undefined;
  }
  if (pid !== undefined) daemons.add(pid);
  return pid;
}
/**
 * After every unmount: each daemon of this scratch pool should exit by itself (after its
 * last mount); one that does not is ended by pid (SIGTERM, then SIGKILL), and whatever is
 * still mounted under --dir is detached (umount -l) so the directory can go.
 */
function endDaemonsAndMounts(): void {
  for (const pid of daemons) {
    for (const sig of [undefined, 'SIGTERM', 'SIGKILL'] as const) {
      if (sig !== undefined && alive(pid)) {
        warnings.push(`the thinfs daemon ${pid} had to be ended with ${sig}`);
        process.kill(pid, sig);
      }
      try {
        waitUntil(`the thinfs daemon ${pid} to exit`, 10_000, () => !alive(pid));
        break;
      } catch {
        /* next signal */
      }
    }
  }
  for (const mp of mountsUnder(opt.dir)) {
    warnings.push(`${mp} was still mounted at the end: detached it (umount -l)`);
    spawnSync('umount', ['-l', mp]);
  }
}
/** Creates (unless it exists) and mounts container `name` of image img; returns its mountpoint. */
function mountThinfs(name: string, create = true): string {
  if (create) thinfs('create', name, 'img');
  const mp = path.join(root, 'mnt', name);
  thinfs('mount', name);
  cleanups.push({ what: `thinfs umount ${name}`, fn: () => isMounted(mp) && thinfs('umount', name) });
  return mp;
}
function unmountThinfs(name: string, rm: boolean): void {
  thinfs('umount', name);
  if (rm) thinfs('rm', name);
}

interface OverlayMount {
  mnt: string;
  upper: string;
  child: ChildProcess;
}
/** Mounts fuse-overlayfs (in the foreground, so its pid is known) over src with a fresh upper. */
function mountOverlay(name: string): OverlayMount {
  const base = path.join(opt.dir, 'ovl', name);
  fs.rmSync(base, { recursive: true, force: true });
  const [upper, work, mnt] = ['upper', 'work', 'mnt'].map((d) => path.join(base, d)) as [string, string, string];
  for (const d of [upper, work, mnt]) fs.mkdirSync(d, { recursive: true });
  const logFile = path.join(base, 'fuse-overlayfs.log');
  const out = fs.openSync(logFile, 'a');
  // What containers/storage runs as a rootless storage driver's mount_program.
  const child = spawn('fuse-overlayfs', ['-f', '-o', `lowerdir=${src},upperdir=${upper},workdir=${work}`, mnt], { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  const m = { mnt, upper, child };
  cleanups.push({ what: `fuse-overlayfs ${name}`, fn: () => unmountOverlay(m) });
  try {
    waitUntil(`fuse-overlayfs to mount ${mnt}`, 10_000, () => {
      if (child.pid === undefined || !alive(child.pid)) throw new Error(`fuse-overlayfs exited: ${fs.readFileSync(logFile, 'utf8').trim()}`);
      return isMounted(mnt);
    });
  } catch (err) {
    unwind(cleanups.length - 1);
    throw err;
  }
  return m;
}
/** Unmounts, waits for the process to end (SIGTERM, then SIGKILL, by pid), removes its dirs. */
function unmountOverlay(m: OverlayMount): void {
  const pid = m.child.pid;
  if (isMounted(m.mnt)) {
    const r = spawnSync('fusermount3', ['-u', m.mnt], { encoding: 'utf8' });
    if (r.status !== 0) console.error(`bench: fusermount3 -u ${m.mnt}: ${r.stderr.trim()}`);
  }
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
  if (isMounted(m.mnt)) spawnSync('umount', ['-l', m.mnt]);
  if (!isMounted(m.mnt)) fs.rmSync(path.dirname(m.mnt), { recursive: true, force: true });
}

// ------------------------------------------------------------------ rows and measuring

type Name = 'thinfs' | 'fuse-overlayfs' | 'plain';
interface Target {
  name: Name;
  /** Where the image's files are seen: DIR/big and DIR/tree. */
  dir: string;
  /** The process serving it (CPU is sampled from it), if any. */
  pid: () => number | undefined;
}
interface Sample {
  value: number;
  cpuPct?: number;
}
interface Row {
  metric: string;
  unit: string;
  /** Times, bytes and memory: lower is better, and ratios are inverted. */
  lowerIsBetter: boolean;
  samples: Partial<Record<Name, Sample[]>>;
  errors: Partial<Record<Name, string>>;
  /** Rows without a CPU column (memory). */
  noCpu?: boolean;
}
const rows: Row[] = [];
function row(metric: string, unit: string, lowerIsBetter = false, noCpu = false): Row {
  const r: Row = { metric, unit, lowerIsBetter, samples: {}, errors: {}, noCpu };
  rows.push(r);
  return r;
}
function put(r: Row, t: Name, s: Sample): void {
  (r.samples[t] ??= []).push(s);
}
function failed(r: Row, t: Name, err: unknown): void {
  const msg = (err as Error).message?.split('\n')[0] ?? String(err);
  r.errors[t] ??= msg;
  progress(`  ${t}: ${r.metric}: ${msg}`);
}

/**
 * Runs one measured operation on a target after a sync, sampling the serving process's CPU
 * around it. `op` returns the figure and, when it knows better than the wall clock (fio's
 * job runtime, a worker's own timer), the milliseconds the figure covers.
 */
function measure(t: Target, op: () => { value: number; ms?: number }): Sample {
  execFileSync('sync');
  const pid = t.pid();
  const c0 = pid === undefined ? undefined : cpuSeconds(pid);
  const t0 = nowMs();
  const r = op();
  const wallMs = nowMs() - t0;
  const c1 = pid === undefined ? undefined : cpuSeconds(pid);
  const cpuPct = c0 === undefined || c1 === undefined ? undefined : ((c1 - c0) / ((r.ms ?? wallMs) / 1000)) * 100;
  return { value: r.value, cpuPct };
}

interface FioSide {
  bw: number;
  iops: number;
}
/** One fio job (psync, QD1); its read and write results and its runtime in ms. */
function fio(args: string[]): { read: FioSide; write: FioSide; ms: number } {
  const out = sh('fio', ['--name=bench', '--ioengine=psync', '--numjobs=1', '--output-format=json', ...args]);
  const job = (
    JSON.parse(out.slice(out.indexOf('{'))) as {
      jobs: { error: number; job_runtime: number; read: FioSide & { runtime: number }; write: FioSide & { runtime: number } }[];
    }
  ).jobs[0]!;
  if (job.error !== 0) throw new Error(`fio ${args.join(' ')}: error ${job.error}`);
  return { read: job.read, write: job.write, ms: job.job_runtime || Math.max(job.read.runtime, job.write.runtime) };
}

// ------------------------------------------------------------------ setup

const bigName = `${opt.sizeMiB >= 1024 && opt.sizeMiB % 1024 === 0 ? `${opt.sizeMiB / 1024} GiB` : `${opt.sizeMiB} MiB`}`;
const loadBefore = os.loadavg();
const started = nowMs();
const targets: Target[] = [];
let treeFiles = 0;
let treeBytes = 0;
let importS = 0;

let setupError = '';

const leftovers = mountsUnder(opt.dir);
if (leftovers.length > 0) fatal(`${opt.dir} still has mounts from an earlier run (${leftovers.join(', ')}): unmount them first`);
fs.rmSync(opt.dir, { recursive: true, force: true });

try {
  progress(`setup in ${opt.dir}: a ${bigName} file and a copy of ${opt.tree}`);
  fs.mkdirSync(src, { recursive: true });
  {
    // Data in every block (not zeros, not one repeated block), so nothing can skip it.
    const fd = fs.openSync(path.join(src, 'big'), 'w');
    const chunk = randomBytes(MiB);
    for (let i = 0; i < opt.sizeMiB; i++) {
      chunk.writeUInt32LE(i, 0);
      fs.writeSync(fd, chunk, 0, MiB, i * MiB);
    }
    fs.closeSync(fd);
  }
  sh('cp', ['-a', opt.tree, path.join(src, 'tree')]);
  sh('cp', ['-a', src, plain]);
  thinfs('init', '--data-size', `${Math.max(64, Math.ceil((opt.sizeMiB * 4) / 1024) + 32)}G`);
  let t0 = nowMs();
  thinfs('import', 'img', src);
  importS = (nowMs() - t0) / 1000;
  const thinDir = mountThinfs('c0');
  targets.push({ name: 'thinfs', dir: thinDir, pid: daemonPid });
  if (haveOverlay) {
    const m = mountOverlay('main');
    targets.push({ name: 'fuse-overlayfs', dir: m.mnt, pid: () => m.child.pid });
  }
  targets.push({ name: 'plain', dir: plain, pid: () => undefined });
  const firstDaemon = daemonPid();

  /** For each run, each target (interleaved): prep, then one measured sample into the row. */
  const eachRun = (r: Row, prep: (t: Target) => void, op: (t: Target) => { value: number; ms?: number }) => {
    for (let run = 0; run < opt.runs; run++) {
      for (const t of targets) {
        if (r.errors[t.name] !== undefined) continue;
        try {
          prep(t);
          put(r, t.name, measure(t, () => op(t)));
        } catch (err) {
          failed(r, t.name, err);
        }
      }
    }
  };
  const begin = (label: string) => progress(`${label}  (${((nowMs() - started) / 1000).toFixed(0)} s)`);

  // ---------------------------------------------------------------- read: the image's big file
  if (opt.only.has('read')) {
    const big = (t: Target) => `--filename=${path.join(t.dir, 'big')}`;
    const read = (t: Target, rw: string, bs: string, invalidate: 0 | 1, capped: boolean) =>
      fio([big(t), `--rw=${rw}`, `--bs=${bs}`, `--size=${opt.sizeMiB}M`, '--readonly', `--invalidate=${invalidate}`, ...(capped ? [`--runtime=${opt.randRuntimeS}`] : [])]);
    const cold = () => dropCaches();
    /** Read the whole file once through the same target, leaving it in the page cache. */
    const warm = (t: Target) => void read(t, 'read', '1M', 0, false);
    const cases = [
      { metric: 'seq read 1M, cold', unit: 'MiB/s', prep: cold, op: (t: Target) => read(t, 'read', '1M', 1, false), iops: false },
      { metric: 'seq read 1M, warm', unit: 'MiB/s', prep: warm, op: (t: Target) => read(t, 'read', '1M', 0, false), iops: false },
      { metric: 'rand read 4k, cold', unit: 'IOPS', prep: cold, op: (t: Target) => read(t, 'randread', '4k', 1, true), iops: true },
      { metric: 'rand read 4k, warm', unit: 'IOPS', prep: warm, op: (t: Target) => read(t, 'randread', '4k', 0, true), iops: true },
    ];
    for (const c of cases) {
      begin(c.metric);
      eachRun(row(c.metric, c.unit), c.prep, (t) => {
        const f = c.op(t);
        return { value: c.iops ? f.read.iops : f.read.bw / 1024, ms: f.ms };
      });
    }
  }

  // ---------------------------------------------------------------- write: a fresh file
  if (opt.only.has('write')) {
    begin('seq write 1M / rand write 4k');
    const seq = row('seq write 1M (+fsync)', 'MiB/s');
    const rnd = row('rand write 4k (+fsync)', 'IOPS');
    for (let run = 0; run < opt.runs; run++) {
      for (const t of targets) {
        const file = path.join(t.dir, `written-${run}`);
        try {
          if (seq.errors[t.name] === undefined) {
            try {
              put(seq, t.name, measure(t, () => {
                const f = fio([`--filename=${file}`, '--rw=write', '--bs=1M', `--size=${opt.sizeMiB}M`, '--end_fsync=1']);
                return { value: f.write.bw / 1024, ms: f.ms };
              }));
            } catch (err) {
              failed(seq, t.name, err);
            }
          }
          // Into the file just written: blocks this layer already owns (fio lays it out if seq failed).
          if (rnd.errors[t.name] === undefined) {
            try {
              put(rnd, t.name, measure(t, () => {
                const f = fio([`--filename=${file}`, '--rw=randwrite', '--bs=4k', `--size=${opt.sizeMiB}M`, `--runtime=${opt.randRuntimeS}`, '--end_fsync=1']);
                return { value: f.write.iops, ms: f.ms };
              }));
            } catch (err) {
              failed(rnd, t.name, err);
            }
          }
        } finally {
          fs.rmSync(file, { force: true });
        }
      }
    }
  }

  // ---------------------------------------------------------------- files: create / stat / unlink
  if (opt.only.has('files')) {
    begin(`create / stat / unlink ${opt.files.toLocaleString('en-US')} files`);
    const n = opt.files.toLocaleString('en-US');
    const create = row(`create ${n} files`, 's', true);
    const statWarm = row(`stat ${n} files, warm`, 's', true);
    const statCold = row(`stat ${n} files, after drop_caches`, 's', true);
    const unlink = row(`unlink ${n} files`, 's', true);
    // One phase per process; it times itself, so node's start-up is not in the figure.
    const worker = `
      const fs = require('fs'), p = require('path');
      const [mode, d, n] = [process.argv[1], process.argv[2], Number(process.argv[3])];
      const t0 = process.hrtime.bigint();
      if (mode === 'create') { fs.mkdirSync(d); for (let i = 0; i < n; i++) fs.closeSync(fs.openSync(p.join(d, 'f' + i), 'w')); }
      else if (mode === 'stat') { for (let i = 0; i < n; i++) fs.statSync(p.join(d, 'f' + i)); }
      else if (mode === 'unlink') { for (let i = 0; i < n; i++) fs.unlinkSync(p.join(d, 'f' + i)); fs.rmdirSync(d); }
      console.log(Number(process.hrtime.bigint() - t0) / 1e6);`;
    const phase = (mode: string, dir: string) => {
      const ms = Number(sh(process.execPath, ['-e', worker, mode, dir, String(opt.files)]).trim());
      return { value: ms / 1000, ms };
    };
    for (let run = 0; run < opt.runs; run++) {
      for (const t of targets) {
        const dir = path.join(t.dir, `files-${run}`);
        const step = (r: Row, mode: string, prep?: () => void) => {
          if (r.errors[t.name] !== undefined) return;
          try {
            prep?.();
            put(r, t.name, measure(t, () => phase(mode, dir)));
          } catch (err) {
            failed(r, t.name, err);
          }
        };
        try {
          step(create, 'create');
          step(statWarm, 'stat', () => phase('stat', dir));
          step(statCold, 'stat', dropCaches);
          step(unlink, 'unlink');
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      }
    }
  }

  // ---------------------------------------------------------------- tree: many small files
  {
    const out = sh('sh', ['-c', 'find "$1" -type f -printf "%s\\n"', 'sh', path.join(plain, 'tree')]).trim().split('\n');
    treeFiles = out.length;
    treeBytes = out.reduce((a, s) => a + Number(s), 0);
  }
  if (opt.only.has('tree')) {
    begin(`tree: find and cat of ${treeFiles.toLocaleString('en-US')} files`);
    const n = treeFiles.toLocaleString('en-US');
    const find = row(`tree of ${n} files: find -type f, cold`, 's', true);
    const catCold = row(`tree: read every file (cat), cold`, 's', true);
    const catWarm = row(`tree: read every file (cat), warm`, 's', true);
    /** Runs a pipeline on DIR/tree, checks its count against the plain copy's, returns seconds. */
    const pipeline = (t: Target, script: string, expect: number) => {
      const t0 = nowMs();
      const got = Number(sh('sh', ['-c', script, 'sh', path.join(t.dir, 'tree')]).trim());
      const ms = nowMs() - t0;
      if (got !== expect) throw new Error(`${script.split(' ')[0]} saw ${got} where the plain copy has ${expect}`);
      return { value: ms / 1000, ms };
    };
    const findOp = (t: Target) => pipeline(t, 'find "$1" -type f | wc -l', treeFiles);
    const catOp = (t: Target) => pipeline(t, 'find "$1" -type f -print0 | xargs -0 cat | wc -c', treeBytes);
    for (let run = 0; run < opt.runs; run++) {
      for (const t of targets) {
        const step = (r: Row, op: (t: Target) => { value: number; ms: number }, prep?: () => void) => {
          if (r.errors[t.name] !== undefined) return;
          try {
            prep?.();
            put(r, t.name, measure(t, () => op(t)));
          } catch (err) {
            failed(r, t.name, err);
          }
        };
        step(find, findOp, dropCaches);
        step(catCold, catOp, dropCaches);
        step(catWarm, catOp); // the cold pass just read every file once
      }
    }
  }

  // ---------------------------------------------------------------- cow: first write into the image file
  if (opt.only.has('cow')) {
    begin('first 32 KiB write into the image file');
    const ms = row(`CoW: first 32 KiB write into the ${bigName} image file, cold`, 'ms', true);
    const bytes = row('CoW: bytes allocated by that write', 'bytes', true, true);
    const buf = Buffer.alloc(32 * 1024, 0xc3);
    const offset = 100 * MiB + 16 * 1024; // inside one 64 KiB block, far from the start
    const dataUsed = () => (JSON.parse(thinfs('info', '--json')) as { dataUsed: number }).dataUsed;
    for (let run = 0; run < opt.runs; run++) {
      for (const t of targets) {
        if (ms.errors[t.name] !== undefined) continue;
        const mark = cleanups.length;
        try {
          // A fresh view every run: a new container, a new fuse-overlayfs upper (the plain file is written in place).
          let view: Target;
          let used: () => number;
          if (t.name === 'thinfs') {
            const name = `cow${run}`;
            thinfs('create', name, 'img');
            cleanups.push({ what: `thinfs rm ${name}`, fn: () => thinfs('rm', name) });
            view = { ...t, dir: mountThinfs(name, false) };
            used = dataUsed;
          } else if (t.name === 'fuse-overlayfs') {
            const m = mountOverlay(`cow${run}`);
            view = { ...t, dir: m.mnt, pid: () => m.child.pid };
            used = () => allocatedBytes(m.upper);
          } else {
            view = t;
            used = () => allocatedBytes(path.join(plain, 'big'));
          }
          dropCaches();
          const before = used();
          put(ms, t.name, measure(view, () => {
            const t0 = nowMs();
            const fd = fs.openSync(path.join(view.dir, 'big'), 'r+');
            try {
              fs.writeSync(fd, buf, 0, buf.length, offset);
              fs.fsyncSync(fd);
            } finally {
              fs.closeSync(fd);
            }
            return { value: nowMs() - t0 };
          }));
          execFileSync('sync');
          put(bytes, t.name, { value: used() - before });
        } catch (err) {
          failed(ms, t.name, err);
        } finally {
          // Unmount, then remove the container (cleanups run in reverse).
          unwind(mark);
        }
      }
    }
  }

  // ---------------------------------------------------------------- rss: 1 and N mounted containers
  if (opt.only.has('rss')) {
    const pid0 = daemonPid();
    if (pid0 !== firstDaemon || pid0 === undefined || !alive(pid0)) warnings.push(`the thinfs daemon (pid ${firstDaemon}) is gone or was replaced (now ${pid0 ?? 'none'})`);
    begin(`memory with 1 and ${opt.mounts} mounted containers`);
    const after = row('RSS of the thinfs daemon after the rows above', 'MiB', true, true);
    const one = row('RSS, 1 container mounted (fresh server)', 'MiB', true, true);
    const many = row(`RSS, ${opt.mounts} containers mounted`, 'MiB', true, true);
    const per = row('RSS per extra mounted container', 'MiB', true, true);
    const touch = (dir: string) => {
      fs.readdirSync(dir);
      fs.readdirSync(path.join(dir, 'tree'));
      fs.statSync(path.join(dir, 'big'));
    };
    const mark = cleanups.length;
    try {
      if (pid0 !== undefined) put(after, 'thinfs', { value: (rssBytes(pid0) ?? NaN) / MiB });
      // A fresh daemon: the one serving c0 exits after its last mount.
      unmountThinfs('c0', false);
      if (pid0 !== undefined) waitUntil(`the thinfs daemon ${pid0} to exit`, 15_000, () => !alive(pid0));
      let rss1 = NaN;
      for (let i = 1; i <= opt.mounts; i++) {
        touch(mountThinfs(`m${i}`));
        if (i === 1) rss1 = rssBytes(daemonPid()!)! / MiB;
      }
      const rssN = rssBytes(daemonPid()!)! / MiB;
      put(one, 'thinfs', { value: rss1 });
      put(many, 'thinfs', { value: rssN });
      put(per, 'thinfs', { value: (rssN - rss1) / Math.max(1, opt.mounts - 1) });
    } catch (err) {
      failed(many, 'thinfs', err);
    } finally {
      unwind(mark);
    }
    if (haveOverlay) {
      try {
        const ms: OverlayMount[] = [];
        for (let i = 1; i <= opt.mounts; i++) {
          const m = mountOverlay(`m${i}`);
          ms.push(m);
          touch(m.mnt);
        }
        const rss = ms.map((m) => rssBytes(m.child.pid!)! / MiB);
        const sum = rss.reduce((a, b) => a + b, 0);
        put(one, 'fuse-overlayfs', { value: rss[0]! });
        put(many, 'fuse-overlayfs', { value: sum });
        put(per, 'fuse-overlayfs', { value: (sum - rss[0]!) / Math.max(1, opt.mounts - 1) });
      } catch (err) {
        failed(many, 'fuse-overlayfs', err);
      } finally {
        unwind(mark);
      }
    }
  } else {
    const pid = daemonPid();
    if (pid !== firstDaemon || pid === undefined || !alive(pid)) warnings.push(`the thinfs daemon (pid ${firstDaemon}) is gone or was replaced (now ${pid ?? 'none'})`);
  }
} catch (err) {
  // Setup failed (or a bug here): nothing to tabulate; the rows' own failures are caught per row.
  setupError = (err as Error).message ?? String(err);
} finally {
  unwind();
  endDaemonsAndMounts();
  const daemonLog = path.join(root, 'logs', 'daemon.log');
  if ((warnings.length > 0 || rows.some((r) => Object.keys(r.errors).length > 0)) && fs.existsSync(daemonLog)) {
    fs.copyFileSync(daemonLog, `${opt.dir}-daemon.log`);
    warnings.push(`the daemon's log is kept in ${opt.dir}-daemon.log`);
  }
  const left = mountsUnder(opt.dir);
  if (left.length > 0) console.error(`bench: ${opt.dir} kept: still mounted: ${left.join(', ')}`);
  else fs.rmSync(opt.dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ report

if (setupError) {
  for (const w of warnings) console.error(`bench: warning: ${w}`);
  fatal(`failed: ${setupError}`);
}

const loadAfter = os.loadavg();
const names = targets.map((t) => t.name);
const med = (r: Row, t: Name) => {
  const xs = r.samples[t]?.map((s) => s.value);
  return xs && xs.length > 0 ? median(xs) : undefined;
};
const medCpu = (r: Row, t: Name) => {
  const xs = r.samples[t]?.map((s) => s.cpuPct).filter((x): x is number => x !== undefined);
  return xs && xs.length > 0 ? median(xs) : undefined;
};
const ratio = (r: Row, other: Name): number | undefined => {
  const a = med(r, 'thinfs');
  const b = med(r, other);
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b)) return undefined;
  if (a === 0 && b === 0) return undefined;
  if (r.lowerIsBetter) return a === 0 ? Infinity : b / a;
  return b === 0 ? Infinity : a / b;
};
const label = opt.label ?? describeCheckout();

function describeCheckout(): string {
  const r = spawnSync('git', ['-C', REPO, 'log', '-1', '--format=%h of %cd', '--date=format:%Y-%m-%d %H:%M'], { encoding: 'utf8' });
  if (r.status !== 0) return `thinfs at ${REPO}`;
  const dirty = spawnSync('git', ['-C', REPO, 'status', '--porcelain', '--', 'src', 'native-deps'], { encoding: 'utf8' }).stdout.trim();
  return `thinfs ${r.stdout.trim()}${dirty ? ' + uncommitted changes in src/ or native-deps/' : ''}`;
}

if (opt.json) {
  console.log(
    JSON.stringify(
      {
        label,
        options: { ...opt, only: [...opt.only] },
        machine: { cores: os.cpus().length, kernel: os.release(), loadBefore, loadAfter },
        tree: { path: opt.tree, files: treeFiles, bytes: treeBytes },
        importSeconds: importS,
        warnings,
        rows: rows.map((r) => ({
          metric: r.metric,
          unit: r.unit,
          lowerIsBetter: r.lowerIsBetter,
          median: Object.fromEntries(names.map((n) => [n, med(r, n)])),
          cpuPct: Object.fromEntries(names.map((n) => [n, medCpu(r, n)])),
          ratioOverlay: ratio(r, 'fuse-overlayfs'),
          ratioPlain: ratio(r, 'plain'),
          samples: r.samples,
          errors: r.errors,
        })),
      },
      null,
      2,
    ),
  );
} else {
  const num = (x: number | undefined, unit = '') => {
    if (x === undefined || Number.isNaN(x)) return '';
    if (unit === 'bytes') return Math.round(x).toLocaleString('en-US');
    if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
    return x >= 10 ? x.toFixed(1) : x.toFixed(x >= 1 ? 2 : 3);
  };
  const rat = (x: number | undefined) => (x === undefined ? '' : x === Infinity ? '∞' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(2));
  const pct = (x: number | undefined) => (x === undefined ? '' : `${Math.round(x)}%`);
  const cell = (r: Row, n: Name) => (r.errors[n] !== undefined && r.samples[n] === undefined ? 'error' : num(med(r, n), r.unit) + (r.errors[n] !== undefined ? ' (error)' : ''));
  const head = ['row', 'unit', ...names, ...(haveOverlay ? ['thinfs÷overlay'] : []), 'thinfs÷plain', 'CPU thinfs', ...(haveOverlay ? ['CPU overlay'] : [])];
  const table = new Table({ head, style: { head: [], border: [], compact: true }, colAligns: ['left', 'left', ...head.slice(2).map(() => 'right' as const)] });
  for (const r of rows) {
    table.push([
      r.metric,
      r.unit,
      ...names.map((n) => cell(r, n)),
      ...(haveOverlay ? [rat(ratio(r, 'fuse-overlayfs'))] : []),
      rat(ratio(r, 'plain')),
      r.noCpu ? '' : pct(medCpu(r, 'thinfs')),
      ...(haveOverlay ? [r.noCpu ? '' : pct(medCpu(r, 'fuse-overlayfs'))] : []),
    ]);
  }
  const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  const lines = [
    `thinfs benchmark (npm run bench${opt.quick ? ' -- --quick' : ''}) — ${label}`,
    `${new Date().toISOString()}; ${os.cpus().length} cores, kernel ${os.release()}; load average before ${load(loadBefore)}, after ${load(loadAfter)} (a shared machine: other work may run beside it); ${((nowMs() - started) / 1000).toFixed(0)} s in all`,
    `median of ${opt.runs} run(s), targets interleaved; fio psync QD1 on the image's ${bigName} file (reads) and on a fresh ${opt.sizeMiB} MiB file (writes; random jobs capped at ${opt.randRuntimeS} s); tree = ${opt.tree} (${treeFiles.toLocaleString('en-US')} files, ${(treeBytes / MiB).toFixed(0)} MiB); thinfs import of the image took ${importS.toFixed(1)} s`,
    `thinfs: a container of an imported image; ${haveOverlay ? `fuse-overlayfs ${overlayVersion}: -o lowerdir=SRC,upperdir=,workdir= over the same files` : `fuse-overlayfs ${opt.overlay ? 'not installed' : 'left out (--no-overlay)'}`}; plain: a copy of them in a directory on the same disk`,
    'cold = sync + echo 3 > /proc/sys/vm/drop_caches first; warm = read once through the same target right before (fio --invalidate=0)',
    'ratios: thinfs÷overlay = thinfs ÷ fuse-overlayfs, thinfs÷plain = thinfs ÷ plain; for times (s, ms), bytes and MiB inverted (baseline ÷ thinfs), so > 1 always means thinfs is better (faster, smaller)',
    'CPU: utime+stime of the serving process during the measured operation ÷ its duration (100% = one core): the thinfs daemon, the fuse-overlayfs process',
    `CoW: open + write + fsync + close in a fresh container / over a fresh upper each run (plain: in place); bytes = thinfs info dataUsed, or st_blocks of the upper (plain: of the file), after - before`,
    `RSS: VmRSS of the one thinfs daemon; of fuse-overlayfs, the sum over its processes (one per mount); each mount listed and one file stat-ed`,
  ];
  console.log(lines.join('\n'));
  console.log(table.toString());
  const errs = rows.flatMap((r) => Object.entries(r.errors).map(([n, e]) => `  ${r.metric} on ${n}: ${e}`));
  if (errs.length > 0) console.log(['errors:', ...errs].join('\n'));
  for (const w of warnings) console.log(`warning: ${w}`);
}
if (warnings.length > 0 || rows.some((r) => Object.keys(r.errors).length > 0)) process.exitCode = 1;
