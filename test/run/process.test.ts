/**
 * The runtime-independent half of `thinfs run`, without mounts: the process from an image
 * config and the command line (podman's precedence rules), users resolved in the image's
 * own /etc/passwd and /etc/group, paths resolved inside the rootfs whatever its symlinks
 * say, and the OCI runtime config for root and rootless runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { inRoot } from '../../src/run/rootfs.js';
import { resolveUser } from '../../src/run/user.js';
import { chooseRuntime, createMountpoints, missingMountpoints, mountpointsOf, processSpec, runtimeConfig, SYSTEM_PATH, type ContainerSpec } from '../../src/run/index.js';
import { tmpDir } from '../helpers/tmp.js';

let t: { dir: string; cleanup: () => void };
let rootfs: string;

beforeEach(() => {
  t = tmpDir('thinfs-run-unit-');
  rootfs = path.join(t.dir, 'rootfs');
  fs.mkdirSync(path.join(rootfs, 'etc'), { recursive: true });
  fs.writeFileSync(
    path.join(rootfs, 'etc/passwd'),
    ['root:x:0:0:root:/root:/bin/sh', 'app:x:1000:1001:app:/home/app:/bin/sh', 'broken line', 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false', ''].join('\n'),
  );
  fs.writeFileSync(path.join(rootfs, 'etc/group'), ['root:x:0:', 'app:x:1001:', 'audio:x:29:app,other', 'video:x:44:app', 'staff:x:50:', ''].join('\n'));
});
afterEach(() => t.cleanup());

const base = { cmd: [] as string[], env: [] as string[], hostname: 'box' };

describe('processSpec', () => {
  it('runs /bin/sh as root in / for an image without a config, with the default PATH, HOSTNAME and HOME', () => {
    const p = processSpec(rootfs, null, base);
    expect(p.args).toEqual(['/bin/sh']);
    expect(p.cwd).toBe('/');
    expect(p.user).toEqual({ uid: 0, gid: 0, additionalGids: [], home: '/root' });
    expect(p.env).toEqual([`PATH=${SYSTEM_PATH}`, 'HOSTNAME=box', 'HOME=/root']);
    expect(SYSTEM_PATH).toBe('/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  });

  it('takes Entrypoint + Cmd, Env, WorkingDir and User from the config', () => {
    const config = { Entrypoint: ['/bin/app'], Cmd: ['--serve'], Env: ['PATH=/opt/bin', 'MODE=prod'], WorkingDir: '/srv', User: 'app' };
    const p = processSpec(rootfs, config, base);
    expect(p.args).toEqual(['/bin/app', '--serve']);
    expect(p.env).toEqual(['PATH=/opt/bin', 'MODE=prod', 'HOSTNAME=box', 'HOME=/home/app']);
    expect(p.cwd).toBe('/srv');
    expect(p.user).toEqual({ uid: 1000, gid: 1001, additionalGids: [29, 44], home: '/home/app' });
  });

  it('lets the command line override: CMD replaces Cmd only, --entrypoint drops Cmd, -e/-w/-u win', () => {
    const config = { Entrypoint: ['/bin/app'], Cmd: ['--serve'], Env: ['MODE=prod', 'KEEP=1'], WorkingDir: '/srv', User: 'app' };
    expect(processSpec(rootfs, config, { ...base, cmd: ['--check'] }).args).toEqual(['/bin/app', '--check']);
    expect(processSpec(rootfs, config, { ...base, entrypoint: ['/bin/other'] }).args).toEqual(['/bin/other']);
    expect(processSpec(rootfs, config, { ...base, entrypoint: [], cmd: ['/bin/echo', 'x'] }).args).toEqual(['/bin/echo', 'x']);
    const p = processSpec(rootfs, config, { ...base, env: ['MODE=dev', 'FROM_CALLER', 'UNSET_IN_CALLER', 'NEW=a=b'], workdir: '/tmp', user: '0' }, { FROM_CALLER: 'c' });
    expect(p.env).toEqual(['MODE=dev', 'KEEP=1', 'FROM_CALLER=c', 'NEW=a=b', `PATH=${SYSTEM_PATH}`, 'HOSTNAME=box', 'HOME=/root']);
    expect(p.cwd).toBe('/tmp');
    expect(p.user.uid).toBe(0);
  });

  it('refuses a config without Entrypoint and Cmd when no command is given, and a relative WorkingDir', () => {
    expect(() => processSpec(rootfs, { Env: [] }, base)).toThrow(/EINVAL: the image has no Entrypoint or Cmd/);
    expect(() => processSpec(rootfs, { Cmd: ['x'], WorkingDir: 'srv' }, base)).toThrow(/EINVAL: the working directory must be an absolute path/);
  });
});

describe('resolveUser', () => {
  it('resolves names and numbers through the image files, as runc does', () => {
    expect(resolveUser(rootfs, '')).toEqual({ uid: 0, gid: 0, additionalGids: [], home: '/root' });
    expect(resolveUser(rootfs, '1000')).toEqual({ uid: 1000, gid: 1001, additionalGids: [29, 44], home: '/home/app' });
    expect(resolveUser(rootfs, 'app:staff')).toEqual({ uid: 1000, gid: 50, additionalGids: [], home: '/home/app' });
    expect(resolveUser(rootfs, '1000:1000')).toEqual({ uid: 1000, gid: 1000, additionalGids: [], home: '/home/app' });
    expect(resolveUser(rootfs, '4242')).toEqual({ uid: 4242, gid: 0, additionalGids: [], home: '/' });
    expect(resolveUser(rootfs, '4242:7')).toEqual({ uid: 4242, gid: 7, additionalGids: [], home: '/' });
    expect(resolveUser(rootfs, 'nobody')).toEqual({ uid: 65534, gid: 65534, additionalGids: [], home: '/nonexistent' });
  });

  it('refuses unknown names and bad specs with EINVAL', () => {
    expect(() => resolveUser(rootfs, 'ghost')).toThrow(/EINVAL: unable to find user ghost/);
    expect(() => resolveUser(rootfs, 'app:ghosts')).toThrow(/EINVAL: unable to find group ghosts/);
    expect(() => resolveUser(rootfs, 'a:b:c')).toThrow(/EINVAL/);
    expect(() => resolveUser(rootfs, '1000:')).toThrow(/EINVAL/);
  });

  it('reads the image\'s /etc/passwd even when it is a symlink pointing at a host path', () => {
    fs.mkdirSync(path.join(rootfs, 'real'));
    fs.renameSync(path.join(rootfs, 'etc/passwd'), path.join(rootfs, 'real/passwd'));
    fs.symlinkSync('/real/passwd', path.join(rootfs, 'etc/passwd')); // absolute: the host's /real/passwd if followed on the host
    expect(resolveUser(rootfs, 'app').uid).toBe(1000);
    fs.rmSync(path.join(rootfs, 'etc/passwd'));
    fs.symlinkSync('../../../../../../real/passwd', path.join(rootfs, 'etc/passwd')); // climbs no higher than the image's /
    expect(resolveUser(rootfs, 'app').uid).toBe(1000);
    const host = path.join(t.dir, 'host-passwd');
    fs.writeFileSync(host, 'app:x:7:7:host:/:/bin/sh\n');
    fs.rmSync(path.join(rootfs, 'etc/passwd'));
    fs.symlinkSync(host, path.join(rootfs, 'etc/passwd')); // a host file, if followed on the host
    expect(() => resolveUser(rootfs, 'app')).toThrow(/unable to find user app/);
  });
});

describe('inRoot and mountpoints', () => {
  it('keeps every path inside the rootfs: .., absolute and relative symlinks, loops', () => {
    fs.symlinkSync('/', path.join(rootfs, 'up'));
    fs.symlinkSync('../..', path.join(rootfs, 'etc/rel'));
    fs.symlinkSync('loop', path.join(rootfs, 'loop'));
    expect(inRoot(rootfs, '/../../etc/passwd')).toBe(path.join(rootfs, 'etc/passwd'));
    expect(inRoot(rootfs, '/up/up/etc')).toBe(path.join(rootfs, 'etc'));
    expect(inRoot(rootfs, '/etc/rel/etc/x')).toBe(path.join(rootfs, 'etc/x'));
    expect(inRoot(rootfs, '/missing/a/b')).toBe(path.join(rootfs, 'missing/a/b'));
    expect(inRoot(rootfs, '/missing/../../../x')).toBe(path.join(rootfs, 'x'));
    expect(inRoot(rootfs, '/missing/../up/etc')).toBe(path.join(rootfs, 'etc')); // a symlink after a name that does not exist
    expect(() => inRoot(rootfs, '/loop/x')).toThrow(/ELOOP/);
  });

  it('creates what a runtime mounts onto: /proc /dev /sys, empty /etc files, the working directory', () => {
    fs.symlinkSync('/srv/data', path.join(rootfs, 'data'));
    const points = mountpointsOf('/data/work');
    expect(missingMountpoints(rootfs, points).map((m) => m.path)).toEqual(['/proc', '/dev', '/sys', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/data/work']);
    createMountpoints(rootfs, points);
    expect(missingMountpoints(rootfs, points)).toEqual([]);
    expect(fs.readFileSync(path.join(rootfs, 'etc/hosts'), 'utf8')).toBe('');
    expect(fs.statSync(path.join(rootfs, 'srv/data/work')).isDirectory()).toBe(true); // through the image's symlink, inside the rootfs
  });
});

describe('runtimeConfig', () => {
  const spec = (rootless?: { uid: number; gid: number }): ContainerSpec => ({
    id: 'c-1',
    rootfs: '/pool/mnt/c',
    readOnly: true,
    hostname: 'c',
    process: { args: ['/bin/sh'], env: ['PATH=/bin'], cwd: '/', user: { uid: 1000, gid: 1001, additionalGids: [29], home: '/' } },
    tty: false,
    files: { dir: '/pool/run/containers/c-1', binds: [{ destination: '/etc/hosts', source: '/pool/run/containers/c-1/hosts' }], remove: () => {} },
    rootless,
    stateDir: '/pool/run/runc',
  });

  it('as root: the view as a read-only root, podman\'s capabilities, no network namespace, devpts gid 5, cgroup device rules', () => {
    const c = runtimeConfig(spec()) as any;
    expect(c.root).toEqual({ path: '/pool/mnt/c', readonly: true });
    expect(c.process.user).toEqual({ uid: 1000, gid: 1001, additionalGids: [29] });
    expect(c.process.capabilities.bounding).toContain('CAP_CHOWN');
    expect(c.process.capabilities.bounding).not.toContain('CAP_SYS_ADMIN');
    expect(c.linux.namespaces.map((n: { type: string }) => n.type).sort()).toEqual(['ipc', 'mount', 'pid', 'uts']);
    expect(c.linux.resources.devices).toEqual([{ allow: false, access: 'rwm' }]);
    expect(c.mounts.find((m: { destination: string }) => m.destination === '/dev/pts').options).toContain('gid=5');
    expect(c.mounts.find((m: { destination: string }) => m.destination === '/etc/hosts')).toMatchObject({ type: 'bind', source: '/pool/run/containers/c-1/hosts' });
    expect(c.hostname).toBe('c');
  });

  it('rootless: a user namespace mapping the caller to 0, /sys bound from the host, devpts without gid', () => {
    const c = runtimeConfig(spec({ uid: 4000, gid: 4001 })) as any;
    expect(c.linux.namespaces.map((n: { type: string }) => n.type)).toContain('user');
    expect(c.linux.uidMappings).toEqual([{ containerID: 0, hostID: 4000, size: 1 }]);
    expect(c.linux.gidMappings).toEqual([{ containerID: 0, hostID: 4001, size: 1 }]);
    expect(c.linux.resources).toBeUndefined();
    expect(c.mounts.find((m: { destination: string }) => m.destination === '/sys')).toMatchObject({ type: 'none', source: '/sys' });
    expect(c.mounts.find((m: { destination: string }) => m.destination === '/dev/pts').options).not.toContain('gid=5');
  });
});

describe('chooseRuntime', () => {
  it('takes chroot when asked, and names a missing runtime', () => {
    expect(chooseRuntime('chroot')).toEqual({ name: 'chroot' });
    const auto = chooseRuntime('auto');
    expect(['runc', 'crun', 'chroot']).toContain(auto.name);
    if (auto.name !== 'chroot') expect(path.isAbsolute(auto.path!)).toBe(true);
  });
});
