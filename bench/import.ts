/**
 * `node dist/bench/import.js` — does a `thinfs import` in the daemon hold up the mounts
 * it serves?
 *
 * A tree of --files small files (1-8 KiB) and one --big-mib file of random data is made,
 * and a tar of it. A container of a tiny image is mounted (the daemon starts). Then this
 * script stats a name of that mount that does not exist, a new one each time (a LOOKUP
 * the kernel must send to the daemon: it caches attributes and entries, also negative
 * ones, but never saw that name), and times create+write+unlink round trips (which no
 * kernel cache can answer either) — first with
 * the daemon idle, then while it imports the tree (a directory import), then the tar,
 * both sent to the daemon by `thinfs import`. It prints the latency percentiles of each
 * phase and the imports' throughput, and how many progress reports the importing
 * command received over the control socket (it asks for them; the bar itself only shows
 * on a terminal).
 *
 * Needs root (mounts) and the built CLI (npm run build). Everything lives under --dir
 * (default ./.bench-import) and is removed at the end; the daemon is ended by its pid.
 * This script never serves a mount itself, so it may use synchronous calls on it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? def : Number(process.argv[i + 1]);
}
const dirArg = process.argv.indexOf('--dir');
const DIR = path.resolve(dirArg < 0 ? '.bench-import' : process.argv[dirArg + 1]!);
const FILES = arg('files', 20_000);
const BIG_MIB = arg('big-mib', 256);
const IDLE_MS = arg('idle-ms', 3000);
const ROOT = path.join(DIR, 'root');

function thinfs(...args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, '--root', ROOT, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`thinfs ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

type Probe = (n: number) => number;

/** One stat of a name never asked for before (ENOENT from the daemon); its latency in ms. */
const statProbe = (dir: string, tag: string): Probe => (n) => {
  const t0 = nowMs();
  fs.statSync(path.join(dir, `missing-${tag}-${n}`), { throwIfNoEntry: false });
  return nowMs() - t0;
};

/** One create+write+close+unlink through the mount; its latency in ms. */
const roundTripProbe = (mnt: string): Probe => (n) => {
  const f = path.join(mnt, `probe-${n}`);
  const t0 = nowMs();
  fs.writeFileSync(f, 'x');
  fs.unlinkSync(f);
  return nowMs() - t0;
};

/** Run `probe` until `until()`, giving the event loop a turn between probes (so a child's exit is seen). */
async function probeLoop(probe: Probe, until: () => boolean): Promise<number[]> {
  const out: number[] = [];
  for (let n = 0; !until(); n++) {
    out.push(probe(n));
    if (n % 16 === 0) await new Promise((r) => setImmediate(r));
  }
  return out;
}

interface Phase {
  name: string;
  stat: number[];
  trip: number[];
}

/** Probe while `thinfs import NAME SOURCE` runs through the daemon (stat and round trips alternate in halves). */
async function duringImport(mnt: string, name: string, source: string): Promise<Phase & { ms: number; progress: number; bytes: number }> {
  let running = true;
  const started = nowMs();
  // What `thinfs import` does, plus a count of the progress reports it gets over the socket.
  const client = pathToFileURL(path.join(path.dirname(CLI), '..', 'daemon', 'client.js')).href;
  const script = `import { runOp } from ${JSON.stringify(client)};
let n = 0;
const r = await runOp(${JSON.stringify(ROOT)}, 'import', { name: ${JSON.stringify(name)}, source: ${JSON.stringify(source)} }, { onProgress: () => n++ });
console.log(JSON.stringify({ progress: n, dataBytes: r.stats.dataBytes }));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  void exited.then(() => (running = false));
  const stat: number[] = [];
  const trip: number[] = [];
  const s = statProbe(mnt, name);
  const t = roundTripProbe(mnt);
  for (let n = 0; running; n++) {
    stat.push(s(n));
    trip.push(t(n));
    if (n % 8 === 0) await new Promise((r) => setImmediate(r));
  }
  const code = await exited;
  const ms = nowMs() - started;
  if (code !== 0) throw new Error(`import failed: ${err}`);
  const r = JSON.parse(out) as { progress: number; dataBytes: number };
  return { name, stat, trip, ms, progress: r.progress, bytes: r.dataBytes };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (it mounts)');
  fs.rmSync(DIR, { recursive: true, force: true });
  fs.mkdirSync(DIR, { recursive: true });
  let daemon: number | undefined;
  try {
    thinfs('init', '--data-size', '8G');
    const src = path.join(DIR, 'src');
    fs.mkdirSync(src);
    for (let i = 0; i < FILES; i++) {
      const d = path.join(src, `d${i % 100}`);
      if (i < 100) fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, `f${i}`), randomBytes(1024 + (i % 8) * 1024));
    }
    const big = fs.openSync(path.join(src, 'big'), 'w');
    for (let i = 0; i < BIG_MIB; i++) fs.writeSync(big, randomBytes(1024 * 1024));
    fs.closeSync(big);
    const tar = path.join(DIR, 'src.tar');
    const t = spawnSync('tar', ['-C', src, '-cf', tar, '.']);
    if (t.status !== 0) throw new Error(`tar failed: ${t.stderr.toString()}`);
    const tiny = path.join(DIR, 'tiny');
    fs.mkdirSync(tiny);
    fs.writeFileSync(path.join(tiny, 'hello'), 'hi\n');
    thinfs('import', 'tiny', tiny);
    thinfs('create', 'c', 'tiny');
    const mnt = (JSON.parse(thinfs('mount', 'c', '--json')) as { mountpoint: string }).mountpoint;
    daemon = Number(fs.readFileSync(path.join(ROOT, 'run', 'daemon.pid'), 'utf8'));

    const idleStatEnd = nowMs() + IDLE_MS / 2;
    const idleStat = await probeLoop(statProbe(mnt, 'idle'), () => nowMs() > idleStatEnd);
    const idleTripEnd = nowMs() + IDLE_MS / 2;
    const idleTrip = await probeLoop(roundTripProbe(mnt), () => nowMs() > idleTripEnd);
    const dir = await duringImport(mnt, 'from-dir', src);
    const fromTar = await duringImport(mnt, 'from-tar', tar);
    thinfs('umount', mnt);

    const row = (name: string, xs: number[], base: number[]) =>
      `${name.padEnd(26)} ${String(xs.length).padStart(7)} ${[50, 99, 100].map((p) => percentile(xs, p).toFixed(3).padStart(9)).join(' ')}` +
      (xs === base ? '' : `   p50 ${(percentile(xs, 50) / percentile(base, 50)).toFixed(1)}x, p99 ${(percentile(xs, 99) / percentile(base, 99)).toFixed(1)}x`);
    console.log(`tree: ${FILES} files of 1-8 KiB + ${BIG_MIB} MiB in one file; tar ${(fs.statSync(tar).size / 2 ** 20).toFixed(0)} MiB`);
    for (const p of [dir, fromTar]) {
      console.log(`import ${p.name} through the daemon: ${(p.ms / 1000).toFixed(2)} s, ${(p.bytes / 2 ** 20 / (p.ms / 1000)).toFixed(1)} MiB/s of file data, ${p.progress} progress reports received`);
    }
    console.log(`${'probe on the other mount'.padEnd(26)} ${'ops'.padStart(7)} ${'p50 ms'.padStart(9)} ${'p99 ms'.padStart(9)} ${'max ms'.padStart(9)}   vs idle`);
    console.log(row('stat, idle', idleStat, idleStat));
    console.log(row('stat, dir import', dir.stat, idleStat));
    console.log(row('stat, tar import', fromTar.stat, idleStat));
    console.log(row('create+unlink, idle', idleTrip, idleTrip));
    console.log(row('create+unlink, dir import', dir.trip, idleTrip));
    console.log(row('create+unlink, tar import', fromTar.trip, idleTrip));
  } finally {
    spawnSync(process.execPath, [CLI, '--root', ROOT, 'umount', '--force', path.join(ROOT, 'mnt', 'c')], { encoding: 'utf8' });
    if (daemon !== undefined && alive(daemon)) {
      process.kill(daemon, 'SIGTERM');
      for (let i = 0; i < 50 && alive(daemon); i++) await sleep(100);
      if (alive(daemon)) process.kill(daemon, 'SIGKILL');
    }
    fs.rmSync(DIR, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
