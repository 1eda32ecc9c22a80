/**
 * Busy views and stray writes, on real mounts: `thinfs umount` of a view that a process
 * holds (cwd, open file) is refused with EBUSY naming the holders, and the holders keep
 * working; `--force` detaches lazily and warns; the default mountpoint ROOT/mnt/NAME
 * exists only while mounted (also after a kill -9 and a SIGTERM with a busy view); a
 * mountpoint with files in it is refused with one line, its files untouched.
 *
 * The holders are child processes this test spawns; each is ended by its pid in a
 * `finally`, and the pool's cleanup unmounts and stops the daemons it saw.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, fuseSkipReason, shOk, sleep, TestPool } from './helpers.js';

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/fuse/busy: skipped: ${skip}`);

/** A process with its cwd in `dir` (sleep). */
function cwdHolder(dir: string): ChildProcess {
  return spawn('sleep', ['600'], { cwd: dir, stdio: 'ignore' });
}

/**
 * A shell (cwd outside the view) holding `file` open for appending on fd 3, as `exec 3>>file`:
 * it writes "before" at once, then each line it reads from stdin, answering "ok" (or exits 3
 * when the write or its sync fails).
 */
async function fdHolder(file: string, cwd: string): Promise<ChildProcess & { send(line: string): Promise<void> }> {
  // Each line is written and synced (the writeback cache takes an unsynced write even on a dead mount).
  const script = 'exec 3>>"$1"; echo before >&3; echo ready; while read -r line; do { echo "$line" >&3 && sync -d /proc/self/fd/3; } || exit 3; echo ok; done';
  const child = spawn('bash', ['-c', script, 'holder', file], { cwd, stdio: ['pipe', 'pipe', 'ignore'] });
  let buffered = '';
  const waiters: ((line: string) => void)[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      waiters.shift()?.(line);
    }
  });
  const next = () => new Promise<string>((resolve) => waiters.push(resolve));
  expect(await next()).toBe('ready');
  return Object.assign(child, {
    async send(line: string): Promise<void> {
      const answer = next();
      child.stdin!.write(`${line}\n`);
      expect(await answer).toBe('ok');
    },
  });
}

/** End a process this test started, by its pid, and wait for it. */
async function end(child: ChildProcess | undefined): Promise<void> {
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

function exitOf(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

function mounted(mp: string): boolean {
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mp);
}

describe.skipIf(skip !== undefined)('busy views and stray writes', () => {
  let pool: TestPool;
  beforeAll(async () => {
    pool = await TestPool.create({ c1: 'container' }, 'thinfs-busy-');
  });
  afterAll(async () => {
    await pool?.cleanup();
  });

  it('refuses to unmount a busy view, naming its holders; they keep writing, and their data is there after a later umount', async () => {
    const m = await pool.mount('c1');
    let sleeper: ChildProcess | undefined;
    let writer: Awaited<ReturnType<typeof fdHolder>> | undefined;
    try {
      sleeper = cwdHolder(m);
      writer = await fdHolder(path.join(m, 'held'), pool.dir);
      const r = await pool.cli('umount', 'c1');
      expect(r.code).toBe(1);
      expect(r.errLines).toHaveLength(1);
      expect(r.errLines[0]).toMatch(/^thinfs: EBUSY: target is busy \(held by /);
      expect(r.errLines[0]).toContain(`pid ${sleeper.pid} (sleep): cwd`);
      expect(r.errLines[0]).toContain(`pid ${writer.pid} (bash): open file ${m}/held`);
      expect(r.errLines[0]).toContain('--force');

      // Nothing changed: still mounted and served, the holder writes on.
      expect(mounted(m)).toBe(true);
      await writer.send('after');
      expect(fs.readFileSync(path.join(m, 'held'), 'utf8')).toBe('before\nafter\n');
      expect((await pool.cli('mounts')).stdout).toMatch(/^c1 +\S+ +rw +mounted/m);
    } finally {
      await end(sleeper);
      await end(writer);
    }
    await pool.umount('c1');
    expect(fs.existsSync(m)).toBe(false);
    await pool.mount('c1');
    expect(fs.readFileSync(path.join(m, 'held'), 'utf8')).toBe('before\nafter\n');
    await pool.umount('c1');
    await pool.waitDaemonsGone();
  });

  it('umount --force detaches a busy view lazily and warns that unsynced writes may be lost', async () => {
    const m = await pool.mount('c1');
    let writer: Awaited<ReturnType<typeof fdHolder>> | undefined;
    try {
      writer = await fdHolder(path.join(m, 'forced'), pool.dir);
      const r = await pool.cli('umount', '--force', 'c1');
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`unmounted c1 from ${m}\n`);
      expect(r.errLines).toHaveLength(1);
      expect(r.errLines[0]).toMatch(/^thinfs: warning: .* was busy \(held by pid \d+/);
      expect(r.errLines[0]).toContain(`pid ${writer.pid} (bash): open file ${m}/forced`);
      expect(r.errLines[0]).toMatch(/unsynced writes of these processes may be lost/);
      expect(mounted(m)).toBe(false);
      expect(fs.existsSync(m)).toBe(false);
      // What the warning says: the holder's next write fails.
      await pool.waitDaemonsGone();
      writer.stdin!.write('lost\n');
      expect(await exitOf(writer, 10_000)).toBe(3);
    } finally {
      await end(writer);
    }
    // What reached the daemon before the detach was committed.
    await pool.mount('c1');
    expect(fs.readFileSync(path.join(m, 'forced'), 'utf8')).toBe('before\n');
    await pool.umount('c1');
    await pool.waitDaemonsGone();
  });

  it('the default mountpoint exists only while mounted, also after a killed daemon', async () => {
    const m = path.join(pool.root, 'mnt', 'c1');
    expect(fs.existsSync(m)).toBe(false);
    expect(await pool.mount('c1')).toBe(m);
    expect(fs.statSync(m).isDirectory()).toBe(true);
    await pool.umount('c1');
    expect(fs.existsSync(m)).toBe(false);

    // kill -9: the dead mount stays (writes get ENOTCONN, never the host directory) until
    // `thinfs umount` detaches it and removes the directory.
    await pool.mount('c1');
    process.kill(pool.noteDaemon()!, 'SIGKILL');
    await pool.waitDaemonsGone();
    expect(() => fs.writeFileSync(path.join(m, 'x'), 'x')).toThrow(/ENOTCONN|ECONNABORTED/);
    const r = await pool.cli('umount', 'c1');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/detached the dead mount/);
    expect(fs.existsSync(m)).toBe(false);

    // ...or the next daemon does, when the next mount starts it.
    await pool.mount('c1');
    process.kill(pool.noteDaemon()!, 'SIGKILL');
    await pool.waitDaemonsGone();
    await pool.mount('c1');
    await pool.umount('c1');
    expect(fs.existsSync(m)).toBe(false);
    await pool.waitDaemonsGone();
  });

  it('SIGTERM with a busy view commits, detaches it with a logged warning, and leaves no directory to write into', async () => {
    const m = await pool.mount('c1');
    const pid = pool.noteDaemon()!;
    let sleeper: ChildProcess | undefined;
    try {
      await shOk(`echo kept > "${m}/term"`);
      sleeper = cwdHolder(m);
      await sleep(200);
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(100);
      expect(alive(pid)).toBe(false);
      const log = fs.readFileSync(path.join(pool.root, 'logs', 'daemon.log'), 'utf8');
      expect(log).toMatch(new RegExp(`"holders":"held by pid ${sleeper.pid} \\(sleep\\): cwd".*shutting down with a busy view`));
      expect(log).toMatch(/"code":0,"msg":"thinfs daemon stopped"/);
      expect(mounted(m)).toBe(false);
      // The holder's path leads nowhere: a write by path fails instead of landing in the host directory.
      expect(fs.existsSync(m)).toBe(false);
      expect(() => fs.writeFileSync(path.join(m, 'stray'), 'x')).toThrow(/ENOENT/);
    } finally {
      await end(sleeper);
    }
    await pool.mount('c1');
    expect(fs.readFileSync(path.join(m, 'term'), 'utf8')).toBe('kept\n');
    await pool.umount('c1');
    await pool.waitDaemonsGone();
  });

  it('refuses a mountpoint that is not empty with one line, leaving its files alone', async () => {
    const user = path.join(pool.dir, 'user-mp');
    fs.mkdirSync(path.join(user, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(user, 'keep'), 'mine');
    const r = await pool.cli('mount', 'c1', user);
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: ENOTEMPTY: the mountpoint is not empty \(it holds '(keep|sub)', '(keep|sub)'\)/)]);
    expect(mounted(user)).toBe(false);
    expect(fs.readFileSync(path.join(user, 'keep'), 'utf8')).toBe('mine');
    expect(fs.readdirSync(user).sort()).toEqual(['keep', 'sub']);

    // Files in a bare default mountpoint were written while the view was not mounted.
    const m = path.join(pool.root, 'mnt', 'c1');
    fs.mkdirSync(m, { recursive: true });
    fs.writeFileSync(path.join(m, 'stray'), 'missed the container');
    const d = await pool.cli('mount', 'c1');
    expect(d.code).toBe(1);
    expect(d.errLines).toEqual([expect.stringMatching(/^thinfs: ENOTEMPTY: the mountpoint is not empty \(it holds 'stray'\); these were written there while the view was not mounted/)]);
    expect(fs.readFileSync(path.join(m, 'stray'), 'utf8')).toBe('missed the container');
    expect(pool.daemonPid()).toBeUndefined(); // refused before a daemon was started for it

    // Once empty, the user's directory mounts, and stays after the umount.
    fs.rmSync(path.join(m, 'stray'));
    fs.rmSync(path.join(user, 'keep'));
    fs.rmdirSync(path.join(user, 'sub'));
    expect(await pool.mount('c1', user)).toBe(user);
    await pool.umount(user);
    expect(fs.statSync(user).isDirectory()).toBe(true);
    await pool.waitDaemonsGone();
  });
});
