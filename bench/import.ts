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
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CLI, makeTree, mountTinyContainer, runBusyDaemonBench, runInBackground, type BusyDaemonBench } from './busy-daemon.js';
import { nowMs, percentile } from './util.js';

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
async function duringImport(b: BusyDaemonBench, mnt: string, name: string, source: string): Promise<Phase & { ms: number; progress: number; bytes: number }> {
  const started = nowMs();
  // What `thinfs import` does, plus a count of the progress reports it gets over the socket.
  const client = pathToFileURL(path.join(path.dirname(CLI), '..', 'daemon', 'client.js')).href;
  const script = `import { runOp } from ${JSON.stringify(client)};
let n = 0;
const r = await runOp(${JSON.stringify(b.root)}, 'import', { name: ${JSON.stringify(name)}, source: ${JSON.stringify(source)} }, { onProgress: () => n++ });
console.log(JSON.stringify({ progress: n, dataBytes: r.stats.dataBytes }));`;
  const child = runInBackground(['--input-type=module', '-e', script]);
  const stat: number[] = [];
  const trip: number[] = [];
  const s = statProbe(mnt, name);
  const t = roundTripProbe(mnt);
  for (let n = 0; child.running(); n++) {
    stat.push(s(n));
    trip.push(t(n));
    if (n % 8 === 0) await new Promise((r) => setImmediate(r));
  }
  const { code, out, err } = await child.exited;
  const ms = nowMs() - started;
  if (code !== 0) throw new Error(`import failed: ${err}`);
  const r = JSON.parse(out) as { progress: number; dataBytes: number };
  return { name, stat, trip, ms, progress: r.progress, bytes: r.dataBytes };
}

runBusyDaemonBench('import', async (b) => {
  b.thinfs('init', '--data-size', '8G');
  const src = path.join(b.dir, 'src');
  makeTree(b, src);
  const tar = path.join(b.dir, 'src.tar');
  const t = spawnSync('tar', ['-C', src, '-cf', tar, '.']);
  if (t.status !== 0) throw new Error(`tar failed: ${t.stderr.toString()}`);
  const mnt = mountTinyContainer(b);

  const idleStatEnd = nowMs() + b.idleMs / 2;
  const idleStat = await probeLoop(statProbe(mnt, 'idle'), () => nowMs() > idleStatEnd);
  const idleTripEnd = nowMs() + b.idleMs / 2;
  const idleTrip = await probeLoop(roundTripProbe(mnt), () => nowMs() > idleTripEnd);
  const dir = await duringImport(b, mnt, 'from-dir', src);
  const fromTar = await duringImport(b, mnt, 'from-tar', tar);
  b.thinfs('umount', mnt);

  const row = (name: string, xs: number[], base: number[]) =>
    `${name.padEnd(26)} ${String(xs.length).padStart(7)} ${[50, 99, 100].map((p) => percentile(xs, p).toFixed(3).padStart(9)).join(' ')}` +
    (xs === base ? '' : `   p50 ${(percentile(xs, 50) / percentile(base, 50)).toFixed(1)}x, p99 ${(percentile(xs, 99) / percentile(base, 99)).toFixed(1)}x`);
  console.log(`tree: ${b.files} files of 1-8 KiB + ${b.bigMib} MiB in one file; tar ${(fs.statSync(tar).size / 2 ** 20).toFixed(0)} MiB`);
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
});
