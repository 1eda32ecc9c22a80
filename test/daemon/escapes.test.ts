/**
 * The daemon's last-resort handlers (src/daemon/escapes.ts), in a child process whose log
 * file and stderr are /dev/full (every write ENOSPC): a bug that escapes, a rejected
 * promise, a failed stdio write and an error that cannot even be serialized are all
 * survived, and the process ends only when it decides to.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT } from '../cli/helpers.js';

const DIST = path.join(PROJECT, 'dist', 'src');

const SCRIPT = `
const { configureLog, logger } = await import(${JSON.stringify(path.join(DIST, 'log.js'))});
const { keepServingThroughEscapes, isOutputError } = await import(${JSON.stringify(path.join(DIST, 'daemon', 'escapes.js'))});
configureLog({ level: 'debug', file: process.env.LOG_FILE });
keepServingThroughEscapes();
const log = logger('test');
const steps = [
  () => log.warn({ err: new Error('x') }, 'a warning into a full disk'),
  () => { throw new Error('a bug that escaped'); },
  () => { void Promise.reject(new Error('a rejection nobody handled')); },
  () => process.stderr.write('x'.repeat(65536)),
  () => process.stderr.write('more after the stream failed'),
  () => { const e = new Error('unserializable'); Object.defineProperty(e, 'boom', { enumerable: true, get() { throw new Error('getter'); } }); throw e; },
  () => log.error('still logging'),
];
let i = 0;
const next = () => {
  if (i < steps.length) { setTimeout(next, 5); steps[i++](); return; }
  process.stdout.write(JSON.stringify({ alive: true, classified: [
    isOutputError(Object.assign(new Error('w'), { code: 'ENOSPC', syscall: 'write' })),
    isOutputError(Object.assign(new Error('r'), { code: 'ENOSPC', syscall: 'open' })),
    isOutputError(new TypeError('bug')),
    isOutputError('a string'),
  ] }));
  process.exit(0);
};
setTimeout(next, 5);
`;

function runChild(logFile: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }> {
  const full = fs.openSync('/dev/full', 'w');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', SCRIPT], {
      stdio: ['ignore', 'pipe', full],
      env: { ...process.env, LOG_FILE: logFile },
    });
    fs.closeSync(full);
    let stdout = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout }));
  });
}

describe.skipIf(!fs.existsSync('/dev/full'))('escaped errors while every log write fails with ENOSPC', () => {
  it('the process survives them all and exits when it chooses', async () => {
    const r = await runChild('/dev/full');
    expect(r).toMatchObject({ code: 0, signal: null });
    expect(JSON.parse(r.stdout)).toEqual({ alive: true, classified: [true, false, false, false] });
  });

  it('with a log file that works, each escape is logged: output failures as warnings, bugs with their stack', async () => {
    const dir = fs.mkdtempSync(path.join(PROJECT, '.tmp-escapes-'));
    try {
      const logFile = path.join(dir, 'daemon.log');
      const r = await runChild(logFile);
      expect(r).toMatchObject({ code: 0, signal: null });
      const lines = fs.readFileSync(logFile, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; err?: { stack?: string } });
      // Each of the two stderr writes fails on its own: one warning each (consecutive ones folded here).
      const seen = lines.map((l) => [l.level, l.msg]).filter((l, i, all) => i === 0 || l[1] !== all[i - 1]![1]);
      expect(seen).toEqual([
        [40, 'a warning into a full disk'],
        [50, 'uncaught exception (the daemon keeps running)'],
        [50, 'unhandled rejection (the daemon keeps running)'],
        [40, "a write to stdout/stderr failed: writing the daemon's output failed (ENOSPC); the daemon keeps running"],
        [50, 'uncaught exception (the daemon keeps running; the error could not be logged)'],
        [50, 'still logging'],
      ]);
      expect(lines[1]!.err?.stack).toContain('a bug that escaped');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
