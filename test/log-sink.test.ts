/**
 * The log's destination (src/log-sink.ts): a log call never throws, whatever the
 * destination answers; refused lines wait, bounded, and follow a notice once writes
 * work again; held lines show or go as told.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BACKLOG_BYTES, LogSink, RETRY_MS } from '../src/log-sink.js';
import { tmpDir } from './helpers/tmp.js';

let t: { dir: string; cleanup: () => void };
beforeEach(() => {
  t = tmpDir('thinfs-log-');
});
afterEach(() => {
  vi.useRealTimers();
  t.cleanup();
});

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected, write`), { code, syscall: 'write' });
}

/** A destination file whose writes fail with `code` while `full` is set; at most `room` bytes of a write go through first. */
function faultyDisk(file: string) {
  const state = { full: false, room: 0, code: 'ENOSPC', calls: 0 };
  const writeSync = (fd: number, buf: Buffer, offset: number, length: number): number => {
    state.calls += 1;
    if (state.full) {
      if (state.room > 0) {
        const n = Math.min(state.room, length);
        state.room -= n;
        return fs.writeSync(fd, buf, offset, n);
      }
      throw errno(state.code);
    }
    return fs.writeSync(fd, buf, offset, length);
  };
  return { state, sink: new LogSink({ file }, { writeSync }) };
}

function records(file: string): Record<string, unknown>[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('a destination that refuses writes', () => {
  it.each(['ENOSPC', 'EIO', 'EPIPE', 'EDQUOT', 'EBADF'])('%s: no log call throws', (code) => {
    const file = path.join(t.dir, 'logs', 'daemon.log');
    const { state, sink } = faultyDisk(file);
    const log = pino({ level: 'debug' }, sink);
    state.full = true;
    state.code = code;
    for (let i = 0; i < 1000; i++) expect(() => log.warn({ i, err: new Error('x') }, 'a write failed')).not.toThrow();
    expect(sink.stats()).toMatchObject({ lastError: code });
    expect(sink.stats().waiting).toBeGreaterThan(0);
  });

  it('a real full device (/dev/full) takes log calls without a throw', () => {
    const log = pino({ level: 'info' }, new LogSink({ file: '/dev/full' }));
    for (let i = 0; i < 100; i++) expect(() => log.error({ i }, 'disk full')).not.toThrow();
  });

  it('a log file that cannot be created is retried, not thrown', () => {
    vi.useFakeTimers();
    const blocker = path.join(t.dir, 'logs');
    fs.writeFileSync(blocker, 'a file where the log directory should be');
    const file = path.join(blocker, 'daemon.log');
    const sink = new LogSink({ file });
    const log = pino({ level: 'info' }, sink);
    expect(() => log.info('first')).not.toThrow();
    expect(sink.stats().waiting).toBe(1);
    fs.rmSync(blocker);
    vi.advanceTimersByTime(RETRY_MS + 1);
    expect(records(file).map((r) => r.msg)).toEqual([expect.stringMatching(/could not be written .* 0 log lines were dropped, 1 delayed lines follow/), 'first']);
  });
});

describe('when space returns', () => {
  it('one notice, then the delayed lines in order, then new ones', () => {
    vi.useFakeTimers();
    const file = path.join(t.dir, 'daemon.log');
    const { state, sink } = faultyDisk(file);
    const log = pino({ level: 'info' }, sink);
    log.info({ n: 0 }, 'before');
    state.full = true;
    for (let n = 1; n <= 5; n++) log.info({ n }, 'during');
    state.full = false;
    vi.advanceTimersByTime(RETRY_MS + 1);
    log.info({ n: 6 }, 'after');
    const r = records(file);
    expect(r.map((x) => x.n ?? 'notice')).toEqual([0, 'notice', 1, 2, 3, 4, 5, 6]);
    expect(r[1]).toMatchObject({ level: 40, component: 'log', dropped: 0, msg: expect.stringMatching(/\(ENOSPC\): 0 log lines were dropped, 5 delayed lines follow/) });
  });

  it('retries at most every RETRY_MS while the destination refuses', () => {
    vi.useFakeTimers();
    const { state, sink } = faultyDisk(path.join(t.dir, 'daemon.log'));
    const log = pino({ level: 'info' }, sink);
    state.full = true;
    log.info('first');
    const calls = state.calls;
    for (let i = 0; i < 100; i++) log.info('more');
    expect(state.calls).toBe(calls);
    vi.advanceTimersByTime(RETRY_MS + 1);
    expect(state.calls).toBe(calls + 1);
  });

  it('beyond BACKLOG_BYTES the oldest lines are dropped, and the notice counts them', () => {
    vi.useFakeTimers();
    const file = path.join(t.dir, 'daemon.log');
    const { state, sink } = faultyDisk(file);
    const log = pino({ level: 'info' }, sink);
    state.full = true;
    const pad = 'x'.repeat(1000);
    const total = Math.ceil((3 * BACKLOG_BYTES) / 1000);
    for (let n = 0; n < total; n++) log.info({ n, pad }, 'during');
    expect(sink.stats().dropped).toBeGreaterThan(0);
    state.full = false;
    vi.advanceTimersByTime(RETRY_MS + 1);
    const r = records(file);
    const notice = r[0]!;
    const kept = r.slice(1).map((x) => x.n as number);
    expect(notice.dropped).toBe(total - kept.length);
    expect(kept[0]).toBe(notice.dropped);
    expect(kept.at(-1)).toBe(total - 1);
    expect(kept).toEqual([...kept].sort((a, b) => a - b));
  });

  it('a line cut short by the error is finished first: every line of the file parses', () => {
    vi.useFakeTimers();
    const file = path.join(t.dir, 'daemon.log');
    const { state, sink } = faultyDisk(file);
    const log = pino({ level: 'info' }, sink);
    state.full = true;
    state.room = 17; // half a line gets in, then ENOSPC
    log.info({ n: 1, text: 'ünïcödé is cut anywhere' }, 'cut');
    log.info({ n: 2 }, 'queued');
    state.full = false;
    vi.advanceTimersByTime(RETRY_MS + 1);
    expect(records(file).map((x) => x.n ?? 'notice')).toEqual([1, 'notice', 2]);
  });

  it('a cut line whose tail was dropped is ended with a newline before the notice', () => {
    vi.useFakeTimers();
    const file = path.join(t.dir, 'daemon.log');
    const { state, sink } = faultyDisk(file);
    const log = pino({ level: 'info' }, sink);
    state.full = true;
    state.room = 10;
    log.info({ n: 0 }, 'cut');
    for (let n = 1; n < (2 * BACKLOG_BYTES) / 100; n++) log.info({ n, pad: 'y'.repeat(100) }, 'during');
    state.full = false;
    vi.advanceTimersByTime(RETRY_MS + 1);
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    expect(lines[0]).toHaveLength(10); // the torn head, on a line of its own
    for (const l of lines.slice(1, -1)) expect(() => JSON.parse(l)).not.toThrow();
  });
});

describe('holding (the CLI at its default level)', () => {
  it('release(false) discards, release(true) writes, and afterwards lines go straight out', () => {
    const file = path.join(t.dir, 'a.log');
    const held = new LogSink({ file }, { hold: true });
    const log = pino({ level: 'error' }, held);
    log.error('held back');
    expect(fs.existsSync(file)).toBe(false);
    held.release(false);
    log.error('after');
    expect(records(file).map((r) => r.msg)).toEqual(['after']);

    const file2 = path.join(t.dir, 'b.log');
    const shown = new LogSink({ file: file2 }, { hold: true });
    pino({ level: 'error' }, shown).error('shown at the end');
    shown.release(true);
    shown.release(false); // no longer holding: nothing changes
    expect(records(file2).map((r) => r.msg)).toEqual(['shown at the end']);
  });

  it('a formatter that throws costs nothing: the JSON line is written', () => {
    const file = path.join(t.dir, 'c.log');
    const sink = new LogSink({ file }, {
      format: () => {
        throw new Error('formatter bug');
      },
    });
    pino({ level: 'info' }, sink).info('kept');
    expect(records(file).map((r) => r.msg)).toEqual(['kept']);
  });
});
