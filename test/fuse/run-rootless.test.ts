/**
 * The rootless container: as an unprivileged user (uid 65534, a HOME, and a PATH without
 * /usr/sbin — what a normal Debian user has), import the busybox image from a tar, then
 * `thinfs run` it through rootless runc and through unshare + chroot: id -u is 0 inside,
 * root-owned files are root's, the container writes, /bin has every applet, /proc is of a
 * new pid namespace, /dev/null is writable, the hostname is the container's, the exit
 * status passes through; afterwards no mount is left, --rm left no container and the image
 * is unchanged. Needs root (to switch to 65534), /dev/fuse, busybox-static, setpriv and
 * unprivileged user namespaces; the runc half needs runc. Each skip says why.
 */
import { checkoutUnreadableBy, thinfsAs } from '../helpers/unprivileged.js';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountTable } from '../../src/fuse/kernel.js';
import { findProgram } from '../../src/run/index.js';
import { tmpDir } from '../helpers/tmp.js';
import { alive, sleep, type Run } from './helpers.js';

const USER = 65534;
/** A normal user's PATH: no /usr/sbin, where runc and chroot live. */
const USER_PATH = '/usr/local/bin:/usr/bin:/bin';
const SETPRIV = findProgram('setpriv');

function missing(): string | undefined {
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (process.getuid?.() !== 0) return 'the test switches to uid 65534 and needs root to do so';
  if (!fs.existsSync('/bin/busybox')) return 'busybox-static is not installed';
  if (SETPRIV === undefined || findProgram('unshare') === undefined) return 'util-linux (setpriv, unshare) is missing';
  const ns = spawnSync(SETPRIV, [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', findProgram('unshare')!, '--user', '--map-root-user', 'true']);
  if (ns.status !== 0) return 'unprivileged user namespaces are not available';
  return checkoutUnreadableBy(USER);
}
const why = missing();
if (why !== undefined) console.warn(`skipping rootless run tests: ${why}`);
const RUNTIMES = ['runc', 'chroot'] as const;
if (findProgram('runc') === undefined) console.warn('skipping the runc half of the rootless run tests: runc is not installed (apt-get install runc)');

describe.skipIf(why !== undefined)('thinfs run, rootless', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  let home: string;
  let applets: number;

  /** Run the CLI as uid 65534 with only HOME and a user's PATH in its environment. */
  const asUser = (argv: string[]): Promise<Run> => thinfsAs(USER, SETPRIV!, { root, home, path: USER_PATH }, argv);
  const thinfsMounts = () => mountTable().filter((m) => m.fstype === 'fuse.thinfs' && m.mountpoint.startsWith(`${root}/`));
  const devices = async () => (JSON.parse((await asUser(['ls', '--json'])).stdout) as { name: string }[]).map((d) => d.name).sort();

  beforeAll(async () => {
    t = tmpDir('thinfs-run-rootless-');
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
    expect((await asUser(['init', '--data-size', '10G'])).code).toBe(0);
    const imp = await asUser(['import', 'busybox', path.join(t.dir, 'busybox.tar')]);
    expect(imp.code, imp.stderr).toBe(0);
  });

  afterAll(async () => {
    // The daemon exits after its last mount; if a failure left one behind, end it by its pid.
    try {
      const pid = Number(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8'));
      if (pid > 0 && alive(pid)) {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      }
    } catch {
      /* no daemon left */
    }
    t?.cleanup();
  });

  describe.each(RUNTIMES)('with --runtime %s', (runtime) => {
    const skip = runtime === 'runc' && findProgram('runc') === undefined;

    it.skipIf(skip)('runs the root-owned busybox image: uid 0 inside, writes, every applet, its own /proc, /dev and hostname; the image is unchanged', async () => {
      const name = `rl-${runtime}`;
      const script = [
        'id -u; echo hi > /x; cat /x; ls /bin | wc -l; stat -c %u:%g:%a /bin/busybox',
        'cat /proc/1/cmdline | tr "\\0" " "; echo',
        'echo x > /dev/null && echo null-ok',
        'for n in null zero full random urandom tty; do test -c /dev/$n || echo "no /dev/$n"; done',
        'head -c 8 /dev/urandom | wc -c',
        'echo s > /dev/shm/s && cat /dev/shm/s',
        'hostname; cat /etc/hostname',
      ].join('; ');
      const r = await asUser(['run', '--runtime', runtime, 'busybox', '--name', name, '--rm', '--', '/bin/sh', '-c', script]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim().split('\n').map((l) => l.trim())).toEqual(['0', 'hi', String(applets), '0:0:755', `/bin/sh -c ${script}`, 'null-ok', '8', 's', name, name]);
      expect(r.stderr).toBe(''); // no warning about allow_other: a rootless container is the caller's uid only
      expect(thinfsMounts()).toEqual([]);
      expect(await devices()).toEqual(['busybox']);
      const again = await asUser(['run', '--runtime', runtime, 'busybox', '--rm', '--', '/bin/sh', '-c', 'test -e /x && echo present || echo absent']);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout.trim()).toBe('absent');
    });

    it.skipIf(skip)('passes -e, -w and the exit status through', async () => {
      const r = await asUser(['run', '--runtime', runtime, 'busybox', '--rm', '-e', 'GREETING=hello', '-w', '/var/lib/app', '--', '/bin/sh', '-c', 'echo "$GREETING"; pwd; cat a; exit 42']);
      expect(r.code, r.stderr).toBe(42);
      expect(r.stdout.trim().split('\n')).toEqual(['hello', '/var/lib/app', 'a']);
      expect(thinfsMounts()).toEqual([]);
      expect(await devices()).toEqual(['busybox']);
    });

    it.skipIf(skip)('refuses a user other than root with one line (only the caller is mapped), leaving no mount and no container', async () => {
      const r = await asUser(['run', '--runtime', runtime, 'busybox', '--rm', '-u', '1000:1000', '--', '/bin/true']);
      expect(r.code).toBe(1);
      expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: EINVAL: a rootless run maps only your own uid/)]);
      expect(thinfsMounts()).toEqual([]);
      expect(await devices()).toEqual(['busybox']);
    });
  });

  it('leaves a pool that checks clean', async () => {
    const check = await asUser(['check']);
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });
});
