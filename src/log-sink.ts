/**
 * Where the log's lines go: a file (the daemon's ROOT/logs/daemon.log) or stderr, written
 * synchronously — and a log call never throws because of it.
 *
 * Why not pino.destination (SonicBoom): it reports a failed write by emitting 'error';
 * with no listener the EventEmitter throws it, out of the log call itself in sync mode.
 * When the host filesystem filled up, that ENOSPC came out of a `log.warn` in the daemon,
 * the uncaughtException handler logged it through the same destination, threw again,
 * and the daemon died: every mount answered ENOTCONN. A log line is worth less than the
 * process writing it (DESIGN.md §5: a failing log write never takes the daemon down).
 *
 * Contract of LogSink:
 *  - `write` never throws, whatever the destination answers (ENOSPC, EDQUOT, EFBIG, EIO,
 *    EPIPE, EBADF, a log file that cannot be opened or created).
 *  - A line that cannot be written waits in a backlog, in order, bounded to
 *    BACKLOG_BYTES; older lines beyond the bound are dropped and counted. While lines
 *    wait, writing is retried at most every RETRY_MS (on the next line, and by a timer
 *    that does not keep the process alive). When a retry gets through, one notice line
 *    says how many lines were delayed and dropped and what the error was, then the
 *    backlog follows. Lines never interleave: a line cut short by the error is finished
 *    first (or, if it was dropped, ended with a newline).
 *  - A holding sink (the CLI at its default level, see log.ts `releaseLog`) keeps its
 *    lines back, bounded the same way, until it is told to show or discard them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The bound on lines kept back (waiting for space, or held), in bytes. */
export const BACKLOG_BYTES = 256 * 1024;
/** How often a failing destination is tried again. */
export const RETRY_MS = 1000;
/** How long one write waits for a pipe reader (EAGAIN on a non-blocking stderr) before it counts as failed. */
const EAGAIN_WAIT_MS = 50;

export type SinkTarget = { fd: number } | { file: string };

export interface SinkOptions {
  /** Turns one JSON line into what is written (pino-pretty's formatter); default as is. */
  format?: (line: string) => string;
  /** Keep lines back until `release`. */
  hold?: boolean;
  /** The write call, replaceable to inject faults (tests); default fs.writeSync. */
  writeSync?: (fd: number, buf: Buffer, offset: number, length: number) => number;
}

/** What a sink could not write so far. */
export interface SinkStats {
  /** Lines dropped for good (beyond the backlog bound), since the last notice. */
  dropped: number;
  /** Lines waiting for the destination to take writes again. */
  waiting: number;
  /** The error of the last failed write, while lines wait. */
  lastError: string | undefined;
}

/** A pino destination stream whose `write` never throws; see the contract above. */
export class LogSink {
  private fd: number | undefined;
  private readonly ownsFd: boolean;
  private readonly format: (line: string) => string;
  private readonly writeSync: NonNullable<SinkOptions['writeSync']>;
  private hold: boolean;
  /** Lines kept back while holding. */
  private readonly held = new Backlog();
  /** Lines the destination refused, oldest first. */
  private readonly waiting = new Backlog();
  /** The first waiting entry is the tail of a line whose head is already in the file. */
  private cut = false;
  /** A cut line's tail was dropped: the file needs a newline before the next line. */
  private torn = false;
  /** A notice is owed: writing failed, or lines were dropped, since the last one. */
  private noticeDue = false;
  private lastError: string | undefined;
  private failingSince = 0;
  private nextRetryAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly target: SinkTarget,
    opts: SinkOptions = {},
  ) {
    this.ownsFd = 'file' in target;
    if ('fd' in target) this.fd = target.fd;
    this.format = opts.format ?? ((l) => l);
    this.hold = opts.hold === true;
    this.writeSync = opts.writeSync ?? ((fd, buf, offset, length) => fs.writeSync(fd, buf, offset, length));
  }

  /** Take one line from pino (a JSON line ending in a newline). Never throws. */
  write(line: string): void {
    try {
      let text: string;
      try {
        text = this.format(line);
      } catch {
        text = line; // a formatter bug must not cost the line
      }
      const buf = Buffer.from(text, 'utf8');
      if (this.hold) this.held.push(buf);
      else this.put(buf);
    } catch {
      // Only a bug of this class gets here; it must not become the caller's exception.
    }
  }

  /** End holding: write the held lines (`show`) or discard them. No-op when not holding. */
  release(show: boolean): void {
    if (!this.hold) return;
    this.hold = false;
    const { lines, dropped } = this.held.take();
    if (!show) return;
    try {
      if (dropped > 0) this.put(this.notice(`${dropped} log lines were dropped while the log was held back`, dropped));
      for (const l of lines) this.put(l);
    } catch {
      // As in write: never the caller's exception (this runs in the CLI's exit handler).
    }
  }

  /** What this sink could not write so far (for status output and tests). */
  stats(): SinkStats {
    return { dropped: this.waiting.dropped, waiting: this.waiting.length, lastError: this.lastError };
  }

  // Not named `emit`: pino calls a stream's emit('message', config) if it has one.
  private put(buf: Buffer): void {
    if (this.waiting.length > 0) {
      this.push(buf);
      if (Date.now() >= this.nextRetryAt) this.retry();
      return;
    }
    const n = this.writeOut(buf);
    if (n === buf.length) return;
    this.failingSince = Date.now();
    this.noticeDue = true;
    this.cut = n > 0;
    this.push(buf.subarray(n));
    this.stillFailing();
  }

  /** Finish a cut line, write the notice, then the backlog in order, until the destination refuses again. */
  private retry(): void {
    if (this.cut) {
      if (!this.writeHead()) return this.stillFailing();
      this.cut = false;
    }
    if (this.noticeDue || this.torn) {
      const dropped = this.waiting.dropped;
      const seconds = Math.round((Date.now() - this.failingSince) / 1000);
      const what = `the log could not be written for ${seconds} s (${this.lastError ?? 'unknown error'}): ${dropped} log lines were dropped, ${this.waiting.length} delayed lines follow`;
      const notice = Buffer.concat([Buffer.from(this.torn ? '\n' : ''), this.notice(what, dropped)]);
      const n = this.writeOut(notice);
      if (n < notice.length) {
        // A notice cut short is given up (and its line ended next time): it is written whole or not at all.
        this.torn ||= n > 0;
        return this.stillFailing();
      }
      this.torn = false;
      this.noticeDue = false;
      this.waiting.dropped = 0;
    }
    while (this.waiting.length > 0) {
      if (!this.writeHead()) return this.stillFailing();
    }
    this.lastError = undefined;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Write the first waiting entry; true when all of it went, else its rest stays first (and is a cut line if any went). */
  private writeHead(): boolean {
    const head = this.waiting.shift()!;
    const n = this.writeOut(head);
    if (n === head.length) return true;
    this.waiting.unshift(head.subarray(n));
    if (n > 0) this.cut = true;
    return false;
  }

  /** Add a refused line to the backlog; if that evicts a cut line's tail, the file has a torn line. */
  private push(buf: Buffer): void {
    const before = this.waiting.dropped;
    this.waiting.push(buf);
    if (this.waiting.dropped > before) {
      this.noticeDue = true;
      if (this.cut) {
        this.cut = false;
        this.torn = true;
      }
    }
  }

  private stillFailing(): void {
    this.nextRetryAt = Date.now() + RETRY_MS;
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      try {
        if (this.waiting.length > 0) this.retry();
      } catch {
        // An exception from a timer would be uncaught: the very thing this class prevents.
      }
    }, RETRY_MS);
    this.timer.unref();
  }

  /** Write as much of `buf` as the destination takes; the number of bytes written. */
  private writeOut(buf: Buffer): number {
    let off = 0;
    let waitedMs = 0;
    while (off < buf.length) {
      try {
        off += this.writeSync(this.openFd(), buf, off, buf.length - off);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN' && waitedMs < EAGAIN_WAIT_MS) {
          sleepMs(1);
          waitedMs += 1;
          continue;
        }
        this.lastError = code ?? String(err);
        // A descriptor of our log file closed behind our back is opened again on the next try.
        if (this.ownsFd && code === 'EBADF') this.dropFd();
        break;
      }
    }
    return off;
  }

  private openFd(): number {
    if (this.fd !== undefined) return this.fd;
    const file = (this.target as { file: string }).file;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.fd = fs.openSync(file, 'a', 0o644);
    return this.fd;
  }

  private dropFd(): void {
    if (this.fd === undefined) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already gone */
    }
    this.fd = undefined;
  }

  /** A warn-level line in pino's JSON shape (written below pino, so formatted here). */
  private notice(msg: string, dropped: number): Buffer {
    const line = JSON.stringify({ level: 40, time: Date.now(), pid: process.pid, hostname: os.hostname(), component: 'log', dropped, msg }) + '\n';
    let text = line;
    try {
      text = this.format(line);
    } catch {
      /* as JSON then */
    }
    return Buffer.from(text, 'utf8');
  }
}

/** Lines in order, at most BACKLOG_BYTES of them (always the newest one); the oldest go first and are counted. */
class Backlog {
  private lines: Buffer[] = [];
  private bytes = 0;
  dropped = 0;

  get length(): number {
    return this.lines.length;
  }

  push(line: Buffer): void {
    this.lines.push(line);
    this.bytes += line.length;
    while (this.bytes > BACKLOG_BYTES && this.lines.length > 1) {
      this.bytes -= this.lines.shift()!.length;
      this.dropped += 1;
    }
  }

  shift(): Buffer | undefined {
    const l = this.lines.shift();
    if (l !== undefined) this.bytes -= l.length;
    return l;
  }

  unshift(line: Buffer): void {
    this.lines.unshift(line);
    this.bytes += line.length;
  }

  take(): { lines: Buffer[]; dropped: number } {
    const out = { lines: this.lines, dropped: this.dropped };
    this.lines = [];
    this.bytes = 0;
    this.dropped = 0;
    return out;
  }
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
