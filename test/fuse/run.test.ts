/**
 * The rootless container: as an unprivileged user (uid 65534), import the busybox image
 * from a tar, then `thinfs run` it: id -u is 0 inside, the container writes, /bin has
 * every applet, and the image is unchanged afterwards. Needs /dev/fuse, busybox-static,
 * setpriv and unprivileged user namespaces; skips (and says why) only when one is missing.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tmpDir } from '../helpers/tmp.js';

const CLI = path.resolve('dist/src/cli/main.js');
const USER = 65534;

function missing(): string | undefined {
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (process.getuid?.() !== 0) return 'the test switches to uid 65534 and needs root to do so';
  if (!fs.existsSync('/bin/busybox')) return 'busybox-static is not installed';
  if (spawnSync('setpriv', ['--version']).status !== 0) return 'setpriv (util-linux) is missing';
  const ns = spawnSync('setpriv', [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', 'unshare', '--user', '--map-root-user', 'true']);
  if (ns.status !== 0) return 'unprivileged user namespaces are not available';
  return undefined;
}
const why = missing();
if (why !== undefined) console.warn(`skipping rootless run tests: ${why}`);

/** Run the CLI as uid 65534 (async: this process serves no mount, but stay uniform). */
function asUser(root: string, home: string, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('setpriv', [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', process.execPath, CLI, '--root', root, ...argv], {
      env: { ...process.env, HOME: home, THINFS_LOG_LEVEL: 'error' },
      cwd: home,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

describe.skipIf(why !== undefined)('thinfs run, rootless', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  let home: string;
  let applets: number;

  beforeAll(() => {
    t = tmpDir('thinfs-run-');
    fs.chmodSync(t.dir, 0o755);
    if ((fs.statSync('/dev/fuse').mode & 0o777) !== 0o666) fs.chmodSync('/dev/fuse', 0o666); // udev does this on normal systems
    const rootfs = path.join(t.dir, 'rootfs');
    const built = spawnSync('bash', ['fixtures/build-busybox-rootfs.sh', rootfs], { encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    applets = fs.readdirSync(path.join(rootfs, 'bin')).length;
    const tar = spawnSync('tar', ['-C', rootfs, '--numeric-owner', '-cf', path.join(t.dir, 'busybox.tar'), '.']);
    expect(tar.status).toBe(0);
    fs.chmodSync(path.join(t.dir, 'busybox.tar'), 0o644);
    home = path.join(t.dir, 'home');
    fs.mkdirSync(home);
    fs.chownSync(home, USER, USER);
    root = path.join(home, 'pool');
  });

  afterAll(() => {
    // The daemon exits after its last mount; if a failure left one behind, end it by its pid.
    try {
      const pid = Number(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8'));
      if (pid > 0) process.kill(pid, 'SIGTERM');
    } catch {
      /* no daemon left */
    }
    t.cleanup();
  });

  it('imports a root-owned busybox rootfs and runs it: uid 0 inside, writes, every applet; the image is unchanged', async () => {
    expect((await asUser(root, home, ['init', '--data-size', '10G'])).code).toBe(0);
    const imp = await asUser(root, home, ['import', 'busybox', path.join(t.dir, 'busybox.tar')]);
    expect(imp.code, imp.stderr).toBe(0);
    const r = await asUser(root, home, ['run', 'busybox', '--rm', '--', '/bin/sh', '-c', 'id -u; echo hi > /x; cat /x; ls /bin | wc -l; stat -c %u:%g:%a /bin/busybox']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n').map((l) => l.trim())).toEqual(['0', 'hi', String(applets), '0:0:755']);
    const again = await asUser(root, home, ['run', 'busybox', '--rm', '--', '/bin/sh', '-c', 'test -e /x && echo present || echo absent']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe('absent');
    const ls = await asUser(root, home, ['ls', '--json']);
    const devices = JSON.parse(ls.stdout) as { name: string }[];
    expect(devices.map((d) => d.name)).toEqual(['busybox']);
    const check = await asUser(root, home, ['check']);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });
});
