/**
 * `thinfs run` as root, through runc and through the namespaces + chroot fallback: the
 * same busybox image (fixtures/build-busybox-rootfs.sh) and the same checks for both —
 * a container environment (/proc of a new pid namespace, /dev nodes, pts, shm, links, a
 * hostname, /etc files bound from the run directory and not written into the container),
 * -e/-w/-u, --read-only, the exit status, signals forwarded, and afterwards no mount left
 * and, with --rm, no container. Needs root, /dev/fuse, busybox-static and util-linux;
 * the runc half needs runc (Debian package). Each skip says why.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountTable } from '../../src/fuse/kernel.js';
import { findProgram } from '../../src/run/index.js';
import { CLI } from '../cli/helpers.js';
import { fuseSkipReason, TestPool, type Run } from './helpers.js';

function missing(): string | undefined {
  const fuse = fuseSkipReason();
  if (fuse !== undefined) return fuse;
  if (process.getuid?.() !== 0) return 'these runs are the root half (run-rootless.test.ts is the other)';
  if (!fs.existsSync('/bin/busybox')) return 'busybox-static is not installed';
  if (findProgram('unshare') === undefined || findProgram('setpriv') === undefined) return 'util-linux (unshare, setpriv) is missing';
  return undefined;
}
const why = missing();
if (why !== undefined) console.warn(`skipping root run tests: ${why}`);
const RUNTIMES = ['runc', 'chroot'] as const;
if (findProgram('runc') === undefined) console.warn('skipping the runc half of the root run tests: runc is not installed (apt-get install runc)');

/** The host's pid namespace, to tell a container's apart. */
const HOST_PID_NS = fs.readlinkSync('/proc/self/ns/pid');

describe.skipIf(why !== undefined)('thinfs run as root', () => {
  let t: TestPool;

  beforeAll(async () => {
    t = await TestPool.create({}, 'thinfs-run-');
    const rootfs = path.join(t.dir, 'rootfs');
    const built = await sh('bash', ['fixtures/build-busybox-rootfs.sh', rootfs]);
    expect(built.code, built.stderr).toBe(0);
    const imp = await t.cli('import', 'busybox', rootfs);
    expect(imp.code, imp.stderr).toBe(0);
  });

  afterAll(async () => {
    await t?.cleanup();
  });

  const thinfsMounts = () => mountTable().filter((m) => m.fstype === 'fuse.thinfs' && m.mountpoint.startsWith(`${t.root}/`));
  const devices = async () => (JSON.parse((await t.cli('ls', '--json')).stdout) as { name: string }[]).map((d) => d.name).sort();

  describe.each(RUNTIMES)('with --runtime %s', (runtime) => {
    const skip = runtime === 'runc' && findProgram('runc') === undefined;
    const run = (...args: string[]) => t.cli('run', '--runtime', runtime, ...args);

    it.skipIf(skip)('gives the container /proc of its own pid namespace, /dev nodes, pts, shm, a hostname and /etc files; no mount and no container after --rm', async () => {
      const name = `env-${runtime}`;
      const script = [
        'cat /proc/1/cmdline | tr "\\0" " "; echo',
        'readlink /proc/self/ns/pid',
        'echo x > /dev/null && echo null-ok',
        'for n in null zero full random urandom tty; do test -c /dev/$n || echo "no /dev/$n"; done',
        'head -c 16 /dev/zero | wc -c',
        'head -c 16 /dev/urandom | wc -c',
        'echo shared > /dev/shm/s && cat /dev/shm/s',
        'grep -c " /dev/pts devpts " /proc/mounts',
        'for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done',
        'hostname',
        'cat /etc/hostname',
        `grep -c "${name}" /etc/hosts`,
        'test -e /etc/resolv.conf && echo resolv-ok',
        'id -u; pwd; echo "$PATH"; echo "$HOSTNAME"',
      ].join('; ');
      const r = await run(...busyboxRun(name, '--rm'), '--', '/bin/sh', '-c', script);
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n').map((l) => l.trim());
      expect(lines[0]).toBe(`/bin/sh -c ${script}`); // pid 1 is the container's own process
      expect(lines[1]).not.toBe(HOST_PID_NS);
      expect(lines.slice(2)).toEqual([
        'null-ok',
        '16',
        '16',
        'shared',
        '1',
        '/proc/self/fd',
        '/proc/self/fd/0',
        '/proc/self/fd/1',
        '/proc/self/fd/2',
        'pts/ptmx',
        name,
        name,
        '1',
        'resolv-ok',
        '0',
        '/',
        '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        name,
      ]);
      expect(thinfsMounts()).toEqual([]);
      expect(await devices()).toEqual(['busybox']);
    });

    it.skipIf(skip)('takes -e, -w and -u: 1000:1000 by number, nobody by name from the image\'s /etc/passwd', async () => {
      const r = await run(...busyboxRun(`u-${runtime}`, '--rm'), '-e', 'FOO=bar baz', '-e', 'PATH=/bin', '-w', '/tmp', '-u', '1000:1000', '--', '/bin/sh', '-c', 'id -u; id -g; pwd; echo "$FOO"; echo "$PATH"; echo "$HOME"; echo > /dev/null && echo null-ok');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim().split('\n')).toEqual(['1000', '1000', '/tmp', 'bar baz', '/bin', '/', 'null-ok']);
      const nobody = await run(...busyboxRun(`n-${runtime}`, '--rm'), '-u', 'nobody', '-w', '/var/lib/new', '--', '/bin/sh', '-c', 'id -u; id -g; pwd; echo "$HOME"');
      expect(nobody.code, nobody.stderr).toBe(0);
      expect(nobody.stdout.trim().split('\n')).toEqual(['65534', '65534', '/var/lib/new', '/nonexistent']);
      expect(thinfsMounts()).toEqual([]);
    });

    it.skipIf(skip)('passes the exit status through; a container kept without --rm holds no copy of the run files', async () => {
      const name = `keep-${runtime}`;
      const r = await run(...busyboxRun(name), '--', '/bin/sh', '-c', 'echo kept > /kept; exit 7');
      expect(r.code).toBe(7);
      expect((await run('busybox', '--rm', '--', '/no/such/program')).code).toBe(127); // as a shell and podman report it
      expect((await run('busybox', '--rm', '--', '/etc/motd')).code).toBe(126);
      expect(thinfsMounts()).toEqual([]);
      expect(await devices()).toEqual(['busybox', name]);
      // Again on the same container: it is still there, and the bound /etc files were mountpoints only.
      const again = await t.cli('run', '--runtime', runtime, name, '--', '/bin/sh', '-c', 'cat /kept');
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toBe('kept\n');
      const mp = await t.mount(name);
      try {
        expect(fs.readFileSync(path.join(mp, 'etc/hostname'), 'utf8')).toBe('');
        expect(fs.readFileSync(path.join(mp, 'etc/hosts'), 'utf8')).toBe('');
      } finally {
        await t.umount(name);
      }
      expect((await t.cli('rm', name)).code).toBe(0);
    });

    it.skipIf(skip)('--read-only: the view is mounted read-only and the container cannot write to it; /dev and /dev/shm still work', async () => {
      const r = await run(...busyboxRun(`ro-${runtime}`, '--rm'), '--read-only', '--', '/bin/sh', '-c', 'touch /x 2>/dev/null && echo wrote || echo refused; echo > /dev/null && echo null-ok; echo s > /dev/shm/s && echo shm-ok; cat /etc/hostname');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim().split('\n')).toEqual(['refused', 'null-ok', 'shm-ok', `ro-${runtime}`]);
      expect(thinfsMounts()).toEqual([]);
    });

    it.skipIf(skip)('forwards SIGTERM to the container and still unmounts', async () => {
      const name = `sig-${runtime}`;
      const child = spawn(process.execPath, [CLI, '--root', t.root, 'run', '--runtime', runtime, 'busybox', '--name', name, '--rm', '--', '/bin/sh', '-c', 'trap "exit 3" TERM; echo ready; sleep 60 & wait'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
      const ready = await Promise.race([new Promise<boolean>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve(true))), exited.then(() => false)]);
      expect(ready, stderr).toBe(true);
      child.kill('SIGTERM');
      expect(await exited, stderr).toBe(3);
      expect(thinfsMounts()).toEqual([]);
      expect(await devices()).toEqual(['busybox']);
    });

    it.skipIf(skip)('fails with one line and leaves no mount and, with --rm, no container: an unknown user', async () => {
      const r = await run(...busyboxRun(`bad-${runtime}`, '--rm'), '-u', 'nosuchuser', '--', '/bin/true');
      expect(r.code).toBe(1);
      expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: EINVAL: unable to find user nosuchuser/)]);
      expect(thinfsMounts()).toEqual([]);
      expect(await devices()).toEqual(['busybox']);
    });
  });

  it.skipIf(findProgram('runc') === undefined || findProgram('script') === undefined)('-t: runc gives the container a terminal of its own (under script(1)); without a terminal on stdin, one line', async () => {
    const line = [CLI, '--root', t.root, 'run', '--runtime', 'runc', 'busybox', '--rm', '-t', '--', '/bin/sh', '-c', 'tty; echo "$TERM"; exit 4'].map((a) => `'${a}'`).join(' ');
    const r = await sh(findProgram('script')!, ['-qec', `${process.execPath} ${line}`, '/dev/null']);
    expect(r.code, r.stdout + r.stderr).toBe(4);
    expect(r.stdout.replace(/\r/g, '')).toMatch(/\/dev\/pts\/0\nxterm\n$/); // the terminal may echo a byte of script's empty input first
    const piped = await t.cli('run', 'busybox', '--rm', '-t', '--', '/bin/true');
    expect(piped.code).toBe(1);
    expect(piped.errLines).toEqual([expect.stringMatching(/^thinfs: ENOTTY: -t needs a terminal on stdin/)]);
    expect(thinfsMounts()).toEqual([]);
  });

  it('chroot: a failed setup (a container whose /proc is a file) is one line and exit 1, not an exit status, and leaves no mount', async () => {
    expect((await t.cli('create', 'procfile', 'busybox')).code).toBe(0);
    const mp = await t.mount('procfile');
    try {
      fs.rmdirSync(path.join(mp, 'proc'));
      fs.writeFileSync(path.join(mp, 'proc'), '');
    } finally {
      await t.umount('procfile');
    }
    const r = await t.cli('run', '--runtime', 'chroot', 'procfile', '--', '/bin/true');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: EIO: setting up the container failed: mount: .*proc/)]);
    expect(thinfsMounts()).toEqual([]);
    expect((await t.cli('rm', 'procfile')).code).toBe(0);
  });

  it('refuses an unknown image and bad options with one line', async () => {
    const r = await t.cli('run', 'nosuch', '--', '/bin/true');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: ENOENT: .*nosuch/)]);
    for (const bad of [['-w', 'relative'], ['-u', 'a:b:c'], ['-e', '=x'], ['--runtime', 'docker'], ['--hostname', 'a b']]) {
      const u = await t.cli('run', 'busybox', ...bad, '--', '/bin/true');
      expect(u.code, bad.join(' ')).toBe(2);
      expect(u.errLines.length, u.stderr).toBe(1);
    }
    expect(thinfsMounts()).toEqual([]);
    expect(await devices()).toEqual(['busybox']);
  });
});

/** `busybox --name NAME [extra]` as run arguments (the image first, as users type it). */
function busyboxRun(name: string, ...extra: string[]): string[] {
  return ['busybox', '--name', name, ...extra];
}

function sh(file: string, argv: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr, errLines: stderr.split('\n').filter((l) => l !== '') }));
  });
}
