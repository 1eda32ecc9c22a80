/**
 * `npm run bench:space` — what an image costs on disk, and what small files cost in time,
 * for this build and (with --baseline) another build of thinfs in the same run (issue 9).
 *
 * Space: each tree (this project's node_modules, Debian's /usr/share/doc, a busybox rootfs
 * made by fixtures/build-busybox-rootfs.sh) is imported as one image into a fresh pool;
 * the pool's growth — bytes the data file allocates on the host plus the growth of the
 * metadata file, both after the pool is closed (committed, its log checkpointed) — is
 * divided by `du -s` of the tree (what ext4 allocates for it). Goal: <= 1.15.
 *
 * Speed, in-process through Filesystem (no FUSE):
 *   import time of each tree (the import and its commit);
 *   reading every file of the imported image, cold (pool just opened, host page cache
 *   dropped when running as root) and warm (the same pass again);
 *   create + write 1 KiB / stat / unlink of 10,000 files in one directory (ops/s).
 *
 * --inline-max BYTES,...: run this build once per inline threshold (pools made with
 * Pool.create's inlineMaxBytes; 0 is block-only), instead of once with its default.
 * --baseline DIR: a checkout of another commit with its dist/ built (for the block-only
 * build before inline blocks: `git worktree add /tmp/thinfs-base COMMIT`, symlink
 * node_modules and native-deps/build into it, `npx tsc -p .` there). Each figure is the
 * median of --runs runs (default 3); --trees picks trees (node_modules,doc,busybox);
 * --dir puts the scratch pools there (default: the OS temp directory, so that `du` of
 * the trees and the pools measure the same kind of file system); --json prints JSON.
 */
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import * as nodefs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Table from 'cli-table3';
import { dropCaches, median, nowMs } from './util.js';
import type * as FsApi from '../src/fs/index.js';
import type * as LayersApi from '../src/layers/index.js';
import type * as PoolApi from '../src/pool/index.js';

/** One build of thinfs: the three APIs the benchmark drives. */
interface Build {
  name: string;
  /** Pool.create options of this build's pools (e.g. an inline threshold). */
  createOpts: Record<string, number>;
  Pool: typeof PoolApi.Pool;
  Filesystem: typeof FsApi.Filesystem;
  importImage: typeof LayersApi.importImage;
}

interface Args {
  runs: number;
  json: boolean;
  dir: string;
  baseline: string | undefined;
  trees: string[];
  /** Inline thresholds to run this build with (bytes); none: its default. */
  inlineMax: number[];
}

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const REPO = path.resolve(HERE, '..', '..');
const TREES = ['node_modules', 'doc', 'busybox'];

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 3, json: false, dir: os.tmpdir(), baseline: undefined, trees: TREES, inlineMax: [] };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    if (x === '--json') a.json = true;
    else if (x === '--runs') a.runs = Number(argv[++i]);
    else if (x === '--dir') a.dir = path.resolve(argv[++i]!);
    else if (x === '--baseline') a.baseline = path.resolve(argv[++i]!);
    else if (x === '--trees') a.trees = argv[++i]!.split(',');
    else if (x === '--inline-max') a.inlineMax = argv[++i]!.split(',').map(Number);
    else if (x === '--help' || x === '-h') {
      console.log('usage: npm run bench:space -- [--baseline DIR] [--runs N] [--trees node_modules,doc,busybox] [--inline-max BYTES,...] [--dir DIR] [--json]');
      process.exit(0);
    } else {
      console.error(`bench:space: unknown option ${x}; see --help`);
      process.exit(2);
    }
  }
  if (!a.inlineMax.every((n) => Number.isInteger(n) && n >= 0)) {
    console.error('bench:space: --inline-max takes whole numbers of bytes, comma-separated');
    process.exit(2);
  }
  if (!(Number.isInteger(a.runs) && a.runs > 0)) {
    console.error('bench:space: --runs takes a positive whole number');
    process.exit(2);
  }
  const unknown = a.trees.filter((t) => !TREES.includes(t));
  if (unknown.length > 0) {
    console.error(`bench:space: unknown tree ${unknown.join(', ')}; choose from ${TREES.join(', ')}`);
    process.exit(2);
  }
  if (a.baseline !== undefined && !nodefs.existsSync(path.join(a.baseline, 'dist', 'src', 'pool', 'index.js'))) {
    console.error(`bench:space: ${a.baseline} has no dist/src/pool/index.js; build it first (npx tsc -p . there)`);
    process.exit(2);
  }
  return a;
}

async function loadBuild(name: string, distSrc: string, createOpts: Record<string, number> = {}): Promise<Build> {
  const load = async <T>(p: string) => (await import(pathToFileURL(path.join(distSrc, p)).href)) as T;
  const pool = await load<typeof PoolApi>('pool/index.js');
  const fs = await load<typeof FsApi>('fs/index.js');
  const layers = await load<typeof LayersApi>('layers/index.js');
  return { name, createOpts, Pool: pool.Pool, Filesystem: fs.Filesystem, importImage: layers.importImage };
}

// ------------------------------------------------------------------ helpers

const ROOT = { uid: 0, gid: 0 };
const GiB = 1024 ** 3;
const isRoot = process.getuid?.() === 0;

/** Bytes a file allocates on the host (0 when it is not there). */
function allocated(file: string): number {
  try {
    return nodefs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}

/** What the pool's files allocate: the data file, and the metadata file with its log. */
function poolBytes(root: string): { data: number; meta: number } {
  const meta = path.join(root, 'pool', 'metadata.db');
  return { data: allocated(path.join(root, 'pool', 'data')), meta: allocated(meta) + allocated(`${meta}-wal`) };
}

/** `du -s` of a tree in bytes (hard links counted once, as du does). */
function duBytes(dir: string): number {
  return Number(execFileSync('du', ['-s', '--block-size=1', dir], { encoding: 'utf8' }).split('\t')[0]);
}

function scratch(base: string, prefix: string): { dir: string; done: () => void } {
  const dir = nodefs.mkdtempSync(path.join(base, prefix));
  return { dir, done: () => nodefs.rmSync(dir, { recursive: true, force: true }) };
}

/** The trees to import: name -> directory. The busybox rootfs is built into `tmp`. */
function prepareTrees(names: string[], tmp: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of names) {
    if (n === 'node_modules') out.set(n, path.join(REPO, 'node_modules'));
    else if (n === 'doc') out.set(n, '/usr/share/doc');
    else {
      const dest = path.join(tmp, 'busybox-rootfs');
      execFileSync('sh', [path.join(REPO, 'fixtures', 'build-busybox-rootfs.sh'), dest], { stdio: ['ignore', 'ignore', 'inherit'] });
      out.set(n, dest);
    }
  }
  for (const [n, d] of out) {
    if (!nodefs.existsSync(d)) {
      console.error(`bench:space: the ${n} tree (${d}) is missing`);
      process.exit(1);
    }
    out.set(n, nodefs.realpathSync(d)); // a checkout may have node_modules as a symlink; import takes directories
  }
  return out;
}

// ------------------------------------------------------------------ measurements

interface TreeRun {
  growthBytes: number;
  dataBytes: number;
  metaBytes: number;
  importMs: number;
  files: number;
  readBytes: number;
  readColdMs: number;
  readWarmMs: number;
}

/** Read every regular file of the view in 128 KiB reads (as cat does); returns files and bytes. */
function readTree(fs: FsApi.Filesystem): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const walk = (dir: string) => {
    for (const e of fs.readdir(dir)) {
      if (e.name === '.' || e.name === '..') continue;
      const p = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
      const type = e.type & constants.S_IFMT;
      if (type === constants.S_IFDIR) walk(p);
      else if (type === constants.S_IFREG) {
        const fh = fs.open(p, constants.O_RDONLY);
        for (let off = 0; ; ) {
          const got = fs.read(fh, off, 128 * 1024);
          off += got.length;
          bytes += got.length;
          if (got.length < 128 * 1024) break;
        }
        fs.release(fh);
        files++;
      }
    }
  };
  walk('/');
  return { files, bytes };
}

async function treeRun(b: Build, tree: string, base: string): Promise<TreeRun> {
  const s = scratch(base, 'bench-space-');
  try {
    const root = path.join(s.dir, 'root');
    b.Pool.create(root, { dataSizeBytes: 16 * GiB, minFreePercent: 0, ...b.createOpts }).close();
    const before = poolBytes(root);
    let pool = b.Pool.open(root);
    const t0 = nowMs();
    const r = await b.importImage(pool, { name: 'img', source: tree });
    pool.close();
    const importMs = nowMs() - t0;
    const after = poolBytes(root);
    const dataBytes = after.data - before.data;
    const metaBytes = after.meta - before.meta;

    if (isRoot) dropCaches();
    pool = b.Pool.open(root, { readOnly: true });
    const fs = b.Filesystem.open(pool, r.id, { readOnly: true });
    const c0 = nowMs();
    const cold = readTree(fs);
    const readColdMs = nowMs() - c0;
    const w0 = nowMs();
    readTree(fs);
    const readWarmMs = nowMs() - w0;
    fs.close();
    pool.close();
    return { growthBytes: dataBytes + metaBytes, dataBytes, metaBytes, importMs, files: cold.files, readBytes: cold.bytes, readColdMs, readWarmMs };
  } finally {
    s.done();
  }
}

const N_FILES = 10_000;

interface SmallFiles {
  create: number;
  stat: number;
  unlink: number;
}

/** create + write 1 KiB + release, stat, unlink of 10k files in one directory (ops/s), committed at the end of each phase. */
function smallFiles(b: Build, base: string): SmallFiles {
  const s = scratch(base, 'bench-space-');
  try {
    const pool = b.Pool.create(path.join(s.dir, 'root'), { dataSizeBytes: 16 * GiB, minFreePercent: 0, ...b.createOpts });
    const fs = b.Filesystem.open(pool, pool.createThin('bench'));
    fs.mkdir('/dir', 0o755, ROOT);
    const names = Array.from({ length: N_FILES }, (_, i) => `/dir/file-${i}`);
    const data = Buffer.alloc(1024, 0x5a);
    const rate = (fn: () => void) => {
      const t0 = nowMs();
      fn();
      return (N_FILES / (nowMs() - t0)) * 1000;
    };
    const create = rate(() => {
      for (const n of names) {
        const fh = fs.create(n, 0o644, ROOT, constants.O_WRONLY | constants.O_CREAT);
        fs.write(fh, 0, data);
        fs.release(fh);
      }
      fs.commit();
    });
    fs.dropCaches();
    const stat = rate(() => {
      for (const n of names) fs.getattr(n);
    });
    const unlink = rate(() => {
      for (const n of names) fs.unlink(n);
      fs.commit();
    });
    fs.close();
    pool.close();
    return { create, stat, unlink };
  } finally {
    s.done();
  }
}

// ------------------------------------------------------------------ main

interface BuildResult {
  build: string;
  trees: Record<string, { du: number } & TreeRun & { ratio: number }>;
  smallFiles: SmallFiles;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const builds: Build[] = [];
  if (args.baseline !== undefined) builds.push(await loadBuild(`baseline (${path.basename(args.baseline)})`, path.join(args.baseline, 'dist', 'src')));
  const here = path.resolve(HERE, '..', 'src');
  if (args.inlineMax.length === 0) builds.push(await loadBuild('this build', here));
  for (const n of args.inlineMax) builds.push(await loadBuild(`this build, inline max ${n / 1024} KiB`, here, { inlineMaxBytes: n }));
  const tmp = scratch(args.dir, 'bench-space-trees-');
  try {
    const trees = prepareTrees(args.trees, tmp.dir);
    const du = new Map([...trees].map(([n, d]) => [n, duBytes(d)]));
    // The builds take turns run by run, so that a busy machine weighs on each alike.
    const treeRuns = new Map<string, TreeRun[][]>([...trees.keys()].map((n) => [n, builds.map(() => [])]));
    const smallRuns: SmallFiles[][] = builds.map(() => []);
    for (let i = 0; i < args.runs; i++) {
      for (const [name, dir] of trees) for (const [bi, b] of builds.entries()) treeRuns.get(name)![bi]!.push(await treeRun(b, dir, args.dir));
      for (const [bi, b] of builds.entries()) smallRuns[bi]!.push(smallFiles(b, args.dir));
    }
    const results: BuildResult[] = builds.map((b, bi) => {
      const res: BuildResult = { build: b.name, trees: {}, smallFiles: { create: 0, stat: 0, unlink: 0 } };
      for (const name of trees.keys()) {
        const runs = treeRuns.get(name)![bi]!;
        const m = (k: keyof TreeRun) => median(runs.map((r) => r[k]));
        const growth = m('growthBytes');
        res.trees[name] = {
          du: du.get(name)!,
          growthBytes: growth,
          dataBytes: m('dataBytes'),
          metaBytes: m('metaBytes'),
          importMs: m('importMs'),
          files: m('files'),
          readBytes: m('readBytes'),
          readColdMs: m('readColdMs'),
          readWarmMs: m('readWarmMs'),
          ratio: growth / du.get(name)!,
        };
      }
      const sf = smallRuns[bi]!;
      res.smallFiles = { create: median(sf.map((x) => x.create)), stat: median(sf.map((x) => x.stat)), unlink: median(sf.map((x) => x.unlink)) };
      return res;
    });
    if (args.json) {
      console.log(JSON.stringify({ root: isRoot, runs: args.runs, results }, null, 2));
      return;
    }
    print(results, args, isRoot);
  } finally {
    tmp.done();
  }
}

function mib(n: number): string {
  return `${(n / 2 ** 20).toFixed(1)} MiB`;
}

function print(results: BuildResult[], args: Args, root: boolean): void {
  const space = new Table({ head: ['tree', 'files', 'du -s (ext4)', ...results.flatMap((r) => [`${r.build}: pool growth (data + meta)`, 'ratio'])] });
  for (const tree of Object.keys(results[0]!.trees)) {
    const t0 = results[0]!.trees[tree]!;
    space.push([
      tree,
      String(t0.files),
      mib(t0.du),
      ...results.flatMap((r) => {
        const t = r.trees[tree]!;
        return [`${mib(t.growthBytes)} (${mib(t.dataBytes)} + ${mib(t.metaBytes)})`, `${t.ratio.toFixed(2)}x${t.ratio <= 1.15 ? '' : ' (goal <= 1.15)'}`];
      }),
    ]);
  }
  console.log(`space (median of ${args.runs} runs)`);
  console.log(space.toString());
  const speed = new Table({ head: ['measure', ...results.map((r) => r.build), ...(results.length > 1 ? ['this / baseline'] : [])] });
  const row = (what: string, get: (r: BuildResult) => number, unit: string, higherIsBetter: boolean) => {
    const v = results.map(get);
    const cells = v.map((x) => `${x.toFixed(x >= 100 ? 0 : 1)} ${unit}`);
    if (v.length > 1) cells.push(`${(v[v.length - 1]! / v[0]!).toFixed(2)} (${higherIsBetter ? 'higher' : 'lower'} is better)`);
    speed.push([what, ...cells]);
  };
  for (const tree of Object.keys(results[0]!.trees)) {
    row(`import ${tree}`, (r) => r.trees[tree]!.importMs, 'ms', false);
    row(`read every file of ${tree}, cold${root ? '' : ' (no page-cache drop: not root)'}`, (r) => r.trees[tree]!.readColdMs, 'ms', false);
    row(`read every file of ${tree}, warm`, (r) => r.trees[tree]!.readWarmMs, 'ms', false);
  }
  row('10k files: create + write 1 KiB', (r) => r.smallFiles.create, 'ops/s', true);
  row('10k files: stat (caches dropped)', (r) => r.smallFiles.stat, 'ops/s', true);
  row('10k files: unlink', (r) => r.smallFiles.unlink, 'ops/s', true);
  console.log(`speed, in-process through Filesystem (median of ${args.runs} runs)`);
  console.log(speed.toString());
}

await main();
