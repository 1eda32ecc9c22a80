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
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, makeTree, mountTinyContainer, runBusyDaemonBench, runInBackground } from './busy-daemon.js';
import { nowMs, percentile } from './util.js';

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

runBusyDaemonBench('load', async (b) => {
  b.thinfs('init', '--data-size', '8G');
  const src = path.join(b.dir, 'src');
  makeTree(b, src);
  b.thinfs('import', 'big', src);
  const archive = path.join(b.dir, 'big.oci.tar');
  b.thinfs('save', 'big', `oci-archive:${archive}`);
  b.thinfs('rm', 'big');
  fs.rmSync(src, { recursive: true });
  const mnt = mountTinyContainer(b);

  const idleEnd = nowMs() + b.idleMs;
  const idle = await probe(mnt, () => nowMs() > idleEnd);
  const started = nowMs();
  const load = runInBackground([CLI, '--root', b.root, 'load', '--json', archive, '--name', 'big2']);
  const busy = await probe(mnt, () => !load.running());
  const { code, out, err } = await load.exited;
  const loadMs = nowMs() - started;
  if (code !== 0) throw new Error(`load failed: ${err}`);
  const r = JSON.parse(out) as { newLayers: number; dataBytes: number };
  b.thinfs('umount', mnt);

  const row = (name: string, xs: number[]) =>
    `${name.padEnd(14)} ${String(xs.length).padStart(7)} ${[50, 99, 100].map((p) => percentile(xs, p).toFixed(2).padStart(9)).join(' ')}`;
  console.log(`image: ${b.files} files + ${b.bigMib} MiB in one file; archive ${(fs.statSync(archive).size / 2 ** 20).toFixed(0)} MiB`);
  console.log(`load through the daemon: ${(loadMs / 1000).toFixed(2)} s, ${(r.dataBytes / 2 ** 20 / (loadMs / 1000)).toFixed(1)} MiB/s of file data, ${r.newLayers} new layer(s)`);
  console.log(`${'mount probe'.padEnd(14)} ${'ops'.padStart(7)} ${'p50 ms'.padStart(9)} ${'p99 ms'.padStart(9)} ${'max ms'.padStart(9)}`);
  console.log(row('daemon idle', idle));
  console.log(row('during load', busy));
  console.log(`ratio during/idle: p50 ${(percentile(busy, 50) / percentile(idle, 50)).toFixed(1)}x, p99 ${(percentile(busy, 99) / percentile(idle, 99)).toFixed(1)}x, max ${(percentile(busy, 100) / percentile(idle, 100)).toFixed(1)}x`);
});
