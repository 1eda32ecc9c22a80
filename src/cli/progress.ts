/**
 * Progress bars of long commands (import, export; load has its own layout) on stderr, with
 * cli-progress — only when stderr is a terminal, so scripts and logs never see one. The
 * reports come from the operation wherever it runs: in this process, or in the pool's
 * daemon as progress lines of the control protocol (daemon/protocol.ts).
 */
import cliProgress from 'cli-progress';
import type { ImportProgress } from '../layers/index.js';
import { formatBytes } from './format.js';

/** A bar fed with reports; `stop` clears it (before the command prints its result). */
export interface ProgressBar {
  update: (p: unknown) => void;
  stop: () => void;
}

/**
 * A bar `label [====] 42% | 3 MB of 7 MB | 120 entries` for ImportProgress reports, or
 * undefined when stderr is not a terminal. The total may change between reports (an
 * estimate that grows).
 */
export function progressBar(label: string, opts: { entries?: boolean } = {}): ProgressBar | undefined {
  if (process.stderr.isTTY !== true) return undefined;
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done} of {total_h}${opts.entries === false ? '' : ' | {entries} entries'}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let stopped = false;
  return {
    update: (raw) => {
      if (stopped) return;
      const p = raw as ImportProgress;
      const show = (n: number) => (p.unit === 'bytes' ? formatBytes(n) : `${n}`);
      const payload = { done: show(p.done), total_h: show(p.total), entries: p.entries };
      const total = Math.max(p.total, 1);
      if (!started) {
        started = true;
        bar.start(total, p.done, payload);
      } else {
        bar.setTotal(total);
        bar.update(p.done, payload);
      }
    },
    stop: () => {
      if (started && !stopped) bar.stop();
      stopped = true;
    },
  };
}
