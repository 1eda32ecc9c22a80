/**
 * `thinfs stats [NAME] [--json] [--watch [--interval S]]`: live counters of the mounts the
 * pool's daemon serves (daemon/ops/mount-ops.ts stats), like `docker stats`: operations
 * by kind with errors and latency (mean, p50/p99 from a histogram, max), bytes read and
 * written, the device's own blocks since the mount, and pool commits. --watch samples
 * again every interval until interrupted (Ctrl-C ends it with status 0), showing rates
 * over the last interval; on a terminal each sample replaces the last, and with --json
 * each sample is one JSON line.
 */
import { InvalidArgumentError, type Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { MountStats, StatsResult } from '../../daemon/ops/index.js';
import type { OpStats } from '../../fuse/index.js';
import { formatBytes, formatJson, formatTable, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';
import { ago } from './ls.js';

interface StatsOptions {
  json?: boolean;
  watch?: boolean;
  interval: number;
}

/** Add `thinfs stats` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('stats')
      .description("live counters of the daemon's mounts: operations by kind, latency, bytes read and written, blocks, commits")
      .argument('[name]', 'only the mount of this container or image')
      .option('--watch', 'sample again every interval until interrupted (rates over the last interval)')
      .option('--interval <seconds>', 'time between samples with --watch', intervalArg, 1)
      .addHelpText(
        'after',
        `
Counted since each mount, in the daemon's FUSE adapter (what the kernel answers from its
caches is not seen there): every answered request by kind,
its errno (ERRORS) and the time its handler took (P50/P99 are the bounds of the
histogram bucket they fall in: "≤ 50 µs"). "blocks" is how the device's own blocks
changed since the mount (allocated minus freed); "commits" counts the pool's commits
since then (every view's changes commit together). Copy-on-write copies are not counted
yet. Without a running daemon nothing is mounted: "no mounts".`,
      ),
  ).action(async (name: string | undefined, o: StatsOptions, cmd: Command) => {
    const { root } = globals(cmd);
    const sample = () => runOp<StatsResult>(root, 'stats', { name });
    if (o.watch !== true) {
      const r = await sample();
      out(o.json === true ? formatJson(r) : formatStats(r, undefined, 0));
      return;
    }
    await watch(sample, o);
  });
}

function intervalArg(text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0.1 || n > 3600) throw new InvalidArgumentError('expected a number of seconds from 0.1 to 3600');
  return n;
}

/** Sample until SIGINT/SIGTERM; each frame replaces the last on a terminal. */
async function watch(sample: () => Promise<StatsResult>, o: StatsOptions): Promise<void> {
  let stop = false;
  let wake: () => void = () => {};
  const onSignal = () => {
    stop = true;
    wake();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const tty = process.stdout.isTTY === true && o.json !== true;
  let previous: { at: number; r: StatsResult } | undefined;
  try {
    while (!stop) {
      const r = await sample();
      const at = Date.now();
      if (o.json === true) out(`${JSON.stringify({ at: new Date(at).toISOString(), ...r })}\n`);
      else {
        const frame = formatStats(r, previous?.r, previous === undefined ? 0 : at - previous.at);
        out(tty ? `\x1b[H\x1b[2J${frame}` : `${frame}\n`);
      }
      previous = { at, r };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, o.interval * 1000);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The text of one sample; with the previous one, rates over `elapsedMs` too. */
function formatStats(r: StatsResult, prev: StatsResult | undefined, elapsedMs: number): string {
  if (r.mounts.length === 0) return r.daemon ? 'no mounts\n' : 'no mounts (no thinfs daemon runs for this pool)\n';
  return r.mounts.map((m) => formatMount(m, prev?.mounts.find((p) => p.name === m.name && p.mountedAt === m.mountedAt), elapsedMs)).join('\n');
}

function formatMount(m: MountStats, prev: MountStats | undefined, elapsedMs: number): string {
  const c = m.counters;
  const t = c.total;
  const lines = [
    `${m.name} (${m.readOnly ? 'ro' : 'rw'}) at ${m.mountpoint}, mounted ${ago(Date.now() - Date.parse(m.mountedAt))}`,
    ` operations: ${t.count} (${t.errors} failed), ${latency(t)}`,
    ` data: read ${formatBytes(c.bytesRead)} in ${c.reads} reads, written ${formatBytes(c.bytesWritten)} in ${c.writes} writes`,
    ` blocks: ${signed(m.device.ownBlocksSinceMount)} own since the mount (${sign(m.device.ownBlocksSinceMount)}${formatBytes(Math.abs(m.device.ownBlocksSinceMount) * m.device.blockSize)}); ` +
      `${formatBytes(m.device.mappedBytes)} used, ${formatBytes(m.device.exclusiveBytes)} exclusive`,
    ` commits: ${m.commits} since the mount (pool-wide); copy-on-write copies: not counted yet`,
  ];
  if (prev !== undefined && elapsedMs > 0) {
    const per = (n: number) => (n * 1000) / elapsedMs;
    const ops = per(t.count - prev.counters.total.count);
    lines.push(
      ` last ${(elapsedMs / 1000).toFixed(1)} s: ${ops.toFixed(ops < 10 ? 1 : 0)} ops/s, read ${formatBytes(per(c.bytesRead - prev.counters.bytesRead))}/s, written ${formatBytes(per(c.bytesWritten - prev.counters.bytesWritten))}/s`,
    );
  }
  const rows = Object.entries(c.ops).map(([op, s]) => [op, s.count, s.errors, ms(s.meanMs), `≤ ${ms(s.p50Ms)}`, `≤ ${ms(s.p99Ms)}`, ms(s.maxMs)]);
  const table = rows.length === 0 ? '' : formatTable(['OP', 'COUNT', 'ERRORS', 'MEAN', 'P50', 'P99', 'MAX'], rows);
  return `${lines.join('\n')}\n${table}`;
}

function latency(s: OpStats): string {
  return s.count === 0 ? 'no latency yet' : `mean ${ms(s.meanMs)}, p50 ≤ ${ms(s.p50Ms)}, p99 ≤ ${ms(s.p99Ms)}, max ${ms(s.maxMs)}`;
}

/** A latency given in ms, with three significant digits: `81.8 µs`, `1.23 ms`. */
function ms(v: number): string {
  return v < 1 ? `${Number((v * 1000).toPrecision(3))} µs` : `${Number(v.toPrecision(3))} ms`;
}

function sign(n: number): string {
  return n < 0 ? '-' : '+';
}

function signed(n: number): string {
  return `${sign(n)}${Math.abs(n)}`;
}
