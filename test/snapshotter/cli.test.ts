/**
 * `thinfs snapshotter` as a command (the built CLI), without containerd and without FUSE:
 * help, bad input answered with one line, the default socket, queries served without
 * starting a daemon, one server per address, and SIGTERM stopping it cleanly (exit 0,
 * socket removed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, thinfs } from '../cli/helpers.js';
import { alive, sleep } from '../fuse/helpers.js';
import { tmpDir } from '../helpers/tmp.js';
import { codeOf, Snapshots } from './helpers.js';

describe('thinfs snapshotter (command)', () => {
  const t = tmpDir('thinfs-snapshotter-cli-');
  const root = path.join(t.dir, 'root');
  const sock = path.join(root, 'run', 'snapshotter.sock');
  let child: ChildProcess | undefined;
  let stderr = '';
  let exit: Promise<number | null>;

  beforeAll(async () => {
    const r = await thinfs(['--root', root, 'init', '--data-size', '1G']);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    if (child?.pid !== undefined && alive(child.pid)) {
      child.kill('SIGKILL');
      await exit;
    }
    t.cleanup();
  });

  it('says how to configure containerd', async () => {
    const r = await thinfs(['snapshotter', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('[proxy_plugins.thinfs]');
    expect(r.stdout).toContain('type = "snapshot"');
    expect(r.stdout).toContain('ROOT/run/snapshotter.sock');
  });

  it('refuses a missing pool and an empty address with one line', async () => {
    const none = await thinfs(['--root', path.join(t.dir, 'nothing'), 'snapshotter']);
    expect(none.code).toBe(1);
    expect(none.errLines).toEqual([expect.stringMatching(/^thinfs: ENOENT: no thinfs pool here/)]);
    const empty = await thinfs(['--root', root, 'snapshotter', '--address', '']);
    expect(empty.code).toBe(2);
    expect(empty.errLines).toHaveLength(1);
    expect(fs.existsSync(sock)).toBe(false);
  });

  it('serves on ROOT/run/snapshotter.sock; queries need no daemon', async () => {
    child = spawn(process.execPath, [CLI, '--root', root, 'snapshotter'], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    exit = new Promise((resolve) => child!.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 15_000;
    while (!fs.existsSync(sock) && Date.now() < deadline) await sleep(50);
    expect(fs.statSync(sock).isSocket()).toBe(true);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    const c = new Snapshots(sock);
    try {
      expect((await c.list()).infos).toEqual([]);
      expect(await codeOf(c.stat('default/1/sha256:nothing'))).toBe('NOT_FOUND');
      expect(await codeOf(c.remove('default/1/sha256:nothing'))).toBe('NOT_FOUND');
      expect(await codeOf(c.list(['kind==']))).toBe('INVALID_ARGUMENT');
    } finally {
      c.close();
    }
    expect(fs.existsSync(path.join(root, 'run', 'daemon.pid'))).toBe(false);
    expect(stderr).toContain('thinfs snapshotter serving containerd');
  });

  it('a second snapshotter on the same address is refused, the first one keeps serving', async () => {
    const second = await thinfs(['--root', root, 'snapshotter', '--address', sock]);
    expect(second.code).toBe(1);
    expect(second.errLines).toEqual([expect.stringMatching(/^thinfs: EADDRINUSE: another server answers on this socket/)]);
    const c = new Snapshots(sock);
    try {
      expect((await c.list()).infos).toEqual([]);
    } finally {
      c.close();
    }
  });

  it('SIGTERM stops it: exit 0, the socket is gone', async () => {
    child!.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
    expect(stderr).toContain('thinfs snapshotter stopping');
  });
});
