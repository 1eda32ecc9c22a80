/**
 * Where views are mounted, on real mounts through the built CLI:
 *  - `ls` (MOUNTED column, `mount` in --json) and `inspect` (Mounted) show the daemon's
 *    mount table; `umount --all` unmounts every view (the daemon then exits), says each,
 *    and with nothing mounted says "no mounts";
 *  - `umount --all` goes on past a busy view and ends with one EBUSY line naming it
 *    (exit 1); `--all --force` then detaches it with the usual warning;
 *  - progress bars of import and export show on a terminal (a pty from script(1)) while
 *    the daemon does the work, and never when stderr is not a terminal.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceSummary, InspectResult } from '../../src/daemon/ops/index.js';
import { fuseSkipReason, TestPool } from '../fuse/helpers.js';
import { CLI, json, type Run } from './helpers.js';

const noFuse = fuseSkipReason();
if (noFuse !== undefined) console.warn(`skipping the mount table tests: ${noFuse}`);

const SCRIPT = ['/usr/bin/script', '/bin/script'].find((f) => fs.existsSync(f));
if (SCRIPT === undefined) console.warn('skipping the progress-on-a-terminal test: script(1) (bsdutils) is missing');

type Mounted = DeviceSummary & { mount: { mountpoint: string; readOnly: boolean; state: string } | null };

function mounted(mp: string): boolean {
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mp);
}

async function end(child: ChildProcess | undefined): Promise<void> {
  if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** Run `thinfs ARGS` with stdin, stdout and stderr on a pty (script(1)); returns what the terminal showed. */
function onTerminal(args: string[]): Promise<Run> {
  const quoted = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve) => {
    const child = spawn(SCRIPT!, ['-qefc', quoted, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr, errLines: stderr.split('\n').filter((l) => l !== '') }));
  });
}

describe.skipIf(noFuse !== undefined)('mount table in ls and inspect; umount --all', () => {
  let p: TestPool;
  beforeAll(async () => {
    p = await TestPool.create({}, 'thinfs-mounts-');
    const src = path.join(p.dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'hello'), 'hi\n');
    expect((await p.cli('import', 'img', src)).code).toBe(0);
    for (const c of ['c1', 'c2']) expect((await p.cli('create', c, 'img')).code).toBe(0);
  });
  afterAll(async () => {
    await p?.cleanup();
  });

  it('ls and inspect show where each device is mounted; umount --all unmounts them all and the daemon exits', async () => {
    const m1 = await p.mount('c1');
    const m2 = await p.mount('img');
    const ls = json<Mounted[]>(await p.cli('ls', '--json'));
    expect(Object.fromEntries(ls.map((d) => [d.name, d.mount?.mountpoint ?? null]))).toEqual({ img: m2, c1: m1, c2: null });
    expect(ls.find((d) => d.name === 'img')!.mount).toMatchObject({ readOnly: true, state: 'mounted' });
    const text = (await p.cli('ls')).stdout;
    expect(text).toMatch(/^NAME\s+KIND\s+PARENT\s+MODE\s+USED\s+EXCLUSIVE\s+CREATED\s+STATE\s+MOUNTED\n/);
    expect(text).toMatch(new RegExp(`^c1\\s+container\\s+img\\s+rw\\s.*\\sactive\\s+${m1}$`, 'm'));
    expect(text).toMatch(/^c2\s+container\s+img\s+rw\s.*\sactive\s+-$/m);
    expect((await p.cli('inspect', 'c1')).stdout).toMatch(new RegExp(`\\n Mounted: ${m1} \\(rw, since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\)\\n`));
    expect((await p.cli('inspect', 'c2')).stdout).toContain('\n Mounted: -\n');
    expect(json<InspectResult & { mount: unknown }>(await p.cli('inspect', '--json', 'img')).mount).toMatchObject({ mountpoint: m2, readOnly: true });

    const all = await p.cli('umount', '--all');
    expect(all).toMatchObject({ code: 0, stderr: '' });
    expect(all.stdout.split('\n').filter((l) => l !== '').sort()).toEqual([`unmounted c1 from ${m1}`, `unmounted img from ${m2}`]);
    expect(mounted(m1) || mounted(m2)).toBe(false);
    await p.waitDaemonsGone();
    expect(json<Mounted[]>(await p.cli('ls', '--json')).every((d) => d.mount === null)).toBe(true);
    expect(await p.cli('umount', '--all')).toMatchObject({ code: 0, stdout: 'no mounts\n', stderr: '' });
    expect(json(await p.cli('umount', '--all', '--json'))).toEqual({ unmounted: [], failed: [] });
  });

  it('umount --all goes on past a busy view and names it in one EBUSY line; --all --force detaches it', async () => {
    const m1 = await p.mount('c1');
    const m2 = await p.mount('c2');
    let holder: ChildProcess | undefined;
    try {
      holder = spawn('sleep', ['600'], { cwd: m1, stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 200));
      const r = await p.cli('umount', '--all');
      expect(r.code).toBe(1);
      expect(r.stdout).toBe(`unmounted c2 from ${m2}\n`);
      expect(r.errLines).toHaveLength(1);
      expect(r.errLines[0]).toMatch(/^thinfs: EBUSY: 1 of 2 views still mounted: c1 \(EBUSY: target is busy \(held by pid \d+ \(sleep\): cwd/);
      expect(mounted(m1)).toBe(true);
      expect(mounted(m2)).toBe(false);
      const j = await p.cli('umount', '--all', '--json');
      expect(j.code).toBe(1);
      expect(json<{ failed: { name: string; code: string }[] }>(j).failed).toMatchObject([{ name: 'c1', code: 'EBUSY' }]);
      expect(JSON.parse(j.errLines[0]!)).toMatchObject({ error: { code: 'EBUSY', errno: 16 } });

      const f = await p.cli('umount', '--all', '--force');
      expect(f.code).toBe(0);
      expect(f.stdout).toBe(`unmounted c1 from ${m1}\n`);
      expect(f.errLines).toEqual([expect.stringMatching(/^thinfs: warning: .* was busy \(held by pid \d+ \(sleep\): cwd/)]);
      expect(mounted(m1)).toBe(false);
    } finally {
      await end(holder);
    }
    await p.waitDaemonsGone();
  });

  it.skipIf(SCRIPT === undefined)('import and export show a progress bar on a terminal while the daemon works, none otherwise', async () => {
    const big = path.join(p.dir, 'big');
    fs.mkdirSync(big);
    fs.writeFileSync(path.join(big, 'blob'), Buffer.alloc(64 * 1024 * 1024, 3));
    for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(big, `f${i}`), `${i}\n`);
    const m = await p.mount('c1');
    try {
      const imp = await onTerminal(['--root', p.root, 'import', 'big', big]);
      expect(imp.code).toBe(0);
      expect(imp.stdout).toMatch(/importing big \[[█░]+\] \d+% \| \d+ of 202 \| \d+ entries/);
      expect(imp.stdout).toMatch(/imported image big from .* 202 entries/);
      const tar = path.join(p.dir, 'big.tar');
      const exp = await onTerminal(['--root', p.root, 'export', 'big', tar]);
      expect(exp.code).toBe(0);
      expect(exp.stdout).toMatch(/exporting big \[[█░]+\] \d+% \| [\d.]+ [KMG]?B of [\d.]+ [KMG]?B/);
      expect(exp.stdout).toMatch(/exporting big \[█+\] 100% \| 64/);
      // The daemon did the work: it still serves c1, and an import piped (no terminal) shows no bar.
      expect(p.daemonPid()).toBeDefined();
      const quiet = await p.cli('import', 'big2', big);
      expect(quiet).toMatchObject({ code: 0, stderr: '' });
      const quietExport = await p.cli('export', 'big2', path.join(p.dir, 'big2.tar'));
      expect(quietExport).toMatchObject({ code: 0, stderr: '' });
    } finally {
      await p.umount(m);
    }
  });
});
