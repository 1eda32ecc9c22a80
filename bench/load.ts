/**
 * `npm run bench:load` — does a `thinfs load` in the daemon hold up the mounts it serves?
 *
 * A big image (--files small files of 1-8 KiB and one --big-mib file of random data) is
 * imported, saved as an oci-archive with `thinfs save` and removed again. A container of
 * a tiny image is mounted (the daemon starts), and this script times one metadata round
 * trip through that mount over and over — create + write + close + unlink of a new file,
 * which the kernel can't answer from its caches — first with the daemon idle, then while
 * the daemon loads the big archive (`thinfs load`, sent to the daemon). It prints the
 * latency percentiles of both phases, their ratio, and the load's throughput.
 *
 * Needs root (mounts) and the built CLI (npm run build). Everything lives under --dir
 * (default ./.bench-load) and is removed at the end; the daemon is ended by its pid. This
 * script never serves a mount itself, so its child processes may be synchronous.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

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
const DIR = path.resolve(dirArg < 0 ? '.bench-load' : process.argv[dirArg + 1]!);
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

/** One create+write+close+unlink round trip through the mount; its latency in ms. */
async function roundTrip(mnt: string, n: number): Promise<number> {
  const f = path.join(mnt, `probe-${n}`);
  const t0 = nowMs();
  await fs.promises.writeFile(f, 'x');
  await fs.promises.unlink(f);
  return nowMs() - t0;
}

async function probe(mnt: string, until: () => boolean): Promise<number[]> {
  const out: number[] = [];
  for (let n = 0; !until(); n++) out.push(await roundTrip(mnt, n));
  return out;
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
    thinfs('import', 'big', src);
    const archive = path.join(DIR, 'big.oci.tar');
    thinfs('save', 'big', `oci-archive:${archive}`);
    thinfs('rm', 'big');
    fs.rmSync(src, { recursive: true });
    const tiny = path.join(DIR, 'tiny');
    fs.mkdirSync(tiny);
    fs.writeFileSync(path.join(tiny, 'hello'), 'hi\n');
    thinfs('import', 'tiny', tiny);
    thinfs('create', 'c', 'tiny');
    const mnt = (JSON.parse(thinfs('mount', 'c', '--json')) as { mountpoint: string }).mountpoint;
    daemon = Number(fs.readFileSync(path.join(ROOT, 'run', 'daemon.pid'), 'utf8'));

    const idleEnd = nowMs() + IDLE_MS;
    const idle = await probe(mnt, () => nowMs() > idleEnd);
    let loading = true;
    const started = nowMs();
    const load = spawn(process.execPath, [CLI, '--root', ROOT, 'load', '--json', archive, '--name', 'big2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    load.stdout.on('data', (c: Buffer) => (out += c.toString()));
    load.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number>((resolve) => load.on('close', (code) => resolve(code ?? -1)));
    void exited.then(() => (loading = false));
    const busy = await probe(mnt, () => !loading);
    const code = await exited;
    const loadMs = nowMs() - started;
    if (code !== 0) throw new Error(`load failed: ${err}`);
    const r = JSON.parse(out) as { newLayers: number; dataBytes: number };
    thinfs('umount', mnt);

    const row = (name: string, xs: number[]) =>
      `${name.padEnd(14)} ${String(xs.length).padStart(7)} ${[50, 99, 100].map((p) => percentile(xs, p).toFixed(2).padStart(9)).join(' ')}`;
    console.log(`image: ${FILES} files + ${BIG_MIB} MiB in one file; archive ${(fs.statSync(archive).size / 2 ** 20).toFixed(0)} MiB`);
    console.log(`load through the daemon: ${(loadMs / 1000).toFixed(2)} s, ${(r.dataBytes / 2 ** 20 / (loadMs / 1000)).toFixed(1)} MiB/s of file data, ${r.newLayers} new layer(s)`);
    console.log(`${'mount probe'.padEnd(14)} ${'ops'.padStart(7)} ${'p50 ms'.padStart(9)} ${'p99 ms'.padStart(9)} ${'max ms'.padStart(9)}`);
    console.log(row('daemon idle', idle));
    console.log(row('during load', busy));
    console.log(`ratio during/idle: p50 ${(percentile(busy, 50) / percentile(idle, 50)).toFixed(1)}x, p99 ${(percentile(busy, 99) / percentile(idle, 99)).toFixed(1)}x, max ${(percentile(busy, 100) / percentile(idle, 100)).toFixed(1)}x`);
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
