/**
 * Per-mount activity counters of the FUSE adapter (`thinfs stats`): every answered
 * operation by kind — count, errors, latency — and the bytes read and written. The
 * adapter's one reply path records each operation once, with the milliseconds it already
 * measures for its log line; so counting costs a map lookup and a few additions per
 * request, and nothing is kept per request.
 *
 * Latency is kept as a histogram with fixed bucket bounds (a 1-2-5 series from 10 µs to
 * 10 s, then +Inf): percentiles are read from it as the bound of the bucket they fall in
 * ("p99 ≤ 2 ms", or the max when that is lower), mean and max are exact. What a request spends in the kernel and in
 * libfuse's queue before the handler runs is not in it.
 */

import type { BlockMapStats } from './lowlevel.js';

/** Upper bounds (inclusive, ms) of the latency buckets; one more bucket holds the rest. */
export const LATENCY_BOUNDS_MS: readonly number[] = [
  0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000,
];

/** The counters of one kind of operation (or of all of them). */
export interface OpStats {
  count: number;
  /** Answered with an errno. */
  errors: number;
  meanMs: number;
  /** Upper bound of the bucket the median falls in (past the last bound: maxMs). */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Counts per bucket of LATENCY_BOUNDS_MS, the last one past the last bound. */
  buckets: number[];
}

/** A snapshot of a mount's counters, plain JSON. */
export interface CountersSnapshot {
  /** ISO 8601: when counting began (the mount). */
  since: string;
  ops: Record<string, OpStats>;
  total: OpStats;
  bytesRead: number;
  bytesWritten: number;
  /** Operations whose data went through the adapter (read, write), for averages. */
  reads: number;
  writes: number;
  /**
   * Of those, the reads and writes the C hot path answered in libfuse's workers (fuse/blockmap.ts):
   * counted in bytesRead/bytesWritten and reads/writes, not in ops (no latency is measured there).
   */
  native: { reads: number; writes: number; readErrors: number; writeErrors: number; opens: number; getattrs: number };
}

/** What the C hot path counted (LowLevelSession.blockMapStats). */
export type NativeCounts = Pick<BlockMapStats, 'reads' | 'readBytes' | 'readErrors' | 'writes' | 'writeBytes' | 'writeErrors' | 'opens'> & {
  /** GETATTRs answered from the attribute cache (LowLevelSession.attrCacheStats). */
  getattrs: number;
};

class OpCounter {
  count = 0;
  errors = 0;
  totalMs = 0;
  maxMs = 0;
  readonly buckets = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);

  add(ms: number, failed: boolean): void {
    this.count += 1;
    if (failed) this.errors += 1;
    this.totalMs += ms;
    if (ms > this.maxMs) this.maxMs = ms;
    let i = 0;
    while (i < LATENCY_BOUNDS_MS.length && ms > LATENCY_BOUNDS_MS[i]!) i += 1;
    this.buckets[i]! += 1;
  }

  merge(o: OpCounter): void {
    this.count += o.count;
    this.errors += o.errors;
    this.totalMs += o.totalMs;
    this.maxMs = Math.max(this.maxMs, o.maxMs);
    for (let i = 0; i < this.buckets.length; i++) this.buckets[i]! += o.buckets[i]!;
  }

  stats(): OpStats {
    return {
      count: this.count,
      errors: this.errors,
      meanMs: this.count === 0 ? 0 : this.totalMs / this.count,
      p50Ms: this.percentile(0.5),
      p99Ms: this.percentile(0.99),
      maxMs: this.maxMs,
      buckets: [...this.buckets],
    };
  }

  private percentile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i]!;
      if (seen >= rank) return i < LATENCY_BOUNDS_MS.length ? Math.min(LATENCY_BOUNDS_MS[i]!, this.maxMs) : this.maxMs;
    }
    return this.maxMs;
  }
}

/** The counters of one mount; the adapter records into them, the daemon reads snapshots. */
export class MountCounters {
  private readonly since = new Date();
  private readonly byOp = new Map<string, OpCounter>();
  private bytesRead = 0;
  private bytesWritten = 0;
  private reads = 0;
  private writes = 0;
  /** The C hot path's counts, read at each snapshot (set by the mount). */
  native: (() => NativeCounts | undefined) | undefined = undefined;

  /** One answered operation: its kind, how long the handler took, and its errno (0: success). */
  record(op: string, ms: number, errno: number): void {
    let c = this.byOp.get(op);
    if (c === undefined) {
      c = new OpCounter();
      this.byOp.set(op, c);
    }
    c.add(ms, errno !== 0);
  }

  /** Bytes a read answered with. */
  read(bytes: number): void {
    this.reads += 1;
    this.bytesRead += bytes;
  }

  /** Bytes a write took. */
  wrote(bytes: number): void {
    this.writes += 1;
    this.bytesWritten += bytes;
  }

  snapshot(): CountersSnapshot {
    const ops: Record<string, OpStats> = {};
    const total = new OpCounter();
    for (const [op, c] of [...this.byOp].sort(([a], [b]) => (a < b ? -1 : 1))) {
      ops[op] = c.stats();
      total.merge(c);
    }
    const n = this.native?.() ?? { reads: 0, readBytes: 0, readErrors: 0, writes: 0, writeBytes: 0, writeErrors: 0, opens: 0, getattrs: 0 };
    return {
      since: this.since.toISOString(),
      ops,
      total: total.stats(),
      bytesRead: this.bytesRead + n.readBytes,
      bytesWritten: this.bytesWritten + n.writeBytes,
      reads: this.reads + n.reads,
      writes: this.writes + n.writes,
      native: { reads: n.reads, writes: n.writes, readErrors: n.readErrors, writeErrors: n.writeErrors, opens: n.opens, getattrs: n.getattrs },
    };
  }
}
