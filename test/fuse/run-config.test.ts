/**
 * `thinfs run IMAGE` with no command runs the image by its config: a busybox image built
 * at test time with umoci (Entrypoint, Cmd, Env, WorkingDir that the rootfs lacks, and a
 * User that is a name in the image's /etc/passwd), loaded with `thinfs load` — as root
 * from the OCI layout through runc and through the chroot fallback, and as an
 * unprivileged user from skopeo's docker-archive copy (rootless, so `-u 0`). -e, -w, -u,
 * a command and --entrypoint override the config as in podman. Needs root, /dev/fuse,
 * busybox-static, umoci and skopeo (Debian packages); the runc half needs runc.
 */
import { checkoutUnreadableBy, thinfsAs } from '../helpers/unprivileged.js';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountTable } from '../../src/fuse/kernel.js';
import { findProgram } from '../../src/run/index.js';
import { alive, fuseSkipReason, sleep, TestPool, type Run } from './helpers.js';

const USER = 65534;
const SETPRIV = findProgram('setpriv');

function missing(): string | undefined {
  const fuse = fuseSkipReason();
  if (fuse !== undefined) return fuse;
  if (process.getuid?.() !== 0) return 'building the image with root-owned files and switching to uid 65534 need root';
  if (!fs.existsSync('/bin/busybox')) return 'busybox-static is not installed';
  for (const p of ['umoci', 'skopeo', 'setpriv', 'unshare']) if (findProgram(p) === undefined) return `${p} is not installed (Debian packages umoci, skopeo, util-linux)`;
  return undefined;
}
const why = missing();
const rootlessWhy = checkoutUnreadableBy(65534);
if (why === undefined && rootlessWhy !== undefined) console.warn(`skipping the rootless config-driven run tests: ${rootlessWhy}`);
if (why !== undefined) console.warn(`skipping config-driven run tests: ${why}`);
const RUNTIMES = ['runc', 'chroot'] as const;
if (findProgram('runc') === undefined) console.warn('skipping the runc half of the config-driven run tests: runc is not installed (apt-get install runc)');

/** What the image's Cmd prints: who, where and with what environment it runs. */
const REPORT = 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd) greeting=$GREETING path=$PATH home=$HOME host=$(hostname)"';

describe.skipIf(why !== undefined)('thinfs run by the image config', () => {
  let t: TestPool;
  let layout: string;
  let archive: string;

  beforeAll(async () => {
    t = await TestPool.create({}, 'thinfs-run-config-');
    fs.chmodSync(t.dir, 0o755);
    layout = path.join(t.dir, 'layout');
    ok('umoci', ['init', '--layout', layout]);
    ok('umoci', ['new', '--image', `${layout}:t`]);
    const bundle = path.join(t.dir, 'bundle');
    ok('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
    ok('sh', ['fixtures/build-busybox-rootfs.sh', path.join(bundle, 'rootfs')]);
    fs.appendFileSync(path.join(bundle, 'rootfs/etc/passwd'), 'app:x:1000:1000:app:/home/app:/bin/sh\n');
    fs.appendFileSync(path.join(bundle, 'rootfs/etc/group'), 'app:x:1000:\naudio:x:29:app\n');
    ok('umoci', ['repack', '--image', `${layout}:t`, bundle]);
    ok('umoci', [
      'config', '--image', `${layout}:t`,
      '--config.entrypoint', '/bin/sh', '--config.entrypoint', '-c',
      '--config.cmd', REPORT,
      '--config.env', 'GREETING=from-config', '--config.env', 'PATH=/usr/bin:/bin',
      '--config.workingdir', '/srv/app',
      '--config.user', 'app',
    ]);
    archive = path.join(t.dir, 'image.docker.tar');
    ok('skopeo', ['copy', '--quiet', `oci:${layout}:t`, `docker-archive:${archive}:cfg:latest`]);
    fs.chmodSync(archive, 0o644);
    const load = await t.cli('load', '--name', 'cfg:1', `oci:${layout}:t`);
    expect(load.code, load.stderr).toBe(0);
  });

  afterAll(async () => {
    await t?.cleanup();
  });

  const thinfsMounts = () => mountTable().filter((m) => m.fstype === 'fuse.thinfs' && m.mountpoint.startsWith(`${t.dir}/`));

  describe.each(RUNTIMES)('as root, --runtime %s', (runtime) => {
    const skip = runtime === 'runc' && findProgram('runc') === undefined;
    const run = (...args: string[]) => t.cli('run', '--runtime', runtime, 'cfg:1', '--rm', '--name', `cfg-${runtime}`, ...args);

    it.skipIf(skip)('runs Entrypoint + Cmd as the config\'s user (a name in the image), in its WorkingDir, with its Env', async () => {
      const r = await run();
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`uid=1000 gid=1000 groups=1000 29 cwd=/srv/app greeting=from-config path=/usr/bin:/bin home=/home/app host=cfg-${runtime}\n`);
      expect(thinfsMounts()).toEqual([]);
    });

    it.skipIf(skip)('lets -e, -w, -u, a command and --entrypoint override the config', async () => {
      const o = await run('-e', 'GREETING=from-cli', '-w', '/tmp', '-u', '0');
      expect(o.code, o.stderr).toBe(0);
      expect(o.stdout).toBe(`uid=0 gid=0 groups=0 cwd=/tmp greeting=from-cli path=/usr/bin:/bin home=/root host=cfg-${runtime}\n`);
      const cmd = await run('--', 'echo "cmd replaced, entrypoint kept: $GREETING"; exit 5');
      expect(cmd.code, cmd.stderr).toBe(5);
      expect(cmd.stdout).toBe('cmd replaced, entrypoint kept: from-config\n');
      const ep = await run('--entrypoint', '/bin/pwd');
      expect(ep.code, ep.stderr).toBe(0);
      expect(ep.stdout).toBe('/srv/app\n');
      expect(thinfsMounts()).toEqual([]);
      const ls = JSON.parse((await t.cli('ls', '--json', '--all')).stdout) as { name: string; kind: string }[];
      expect(ls.filter((d) => d.kind === 'container')).toEqual([]);
    });
  });

  describe.skipIf(rootlessWhy !== undefined)('rootless', () => {
    let home: string;
    let root: string;
    const asUser = (argv: string[]): Promise<Run> => thinfsAs(USER, SETPRIV!, { root, home, path: '/usr/local/bin:/usr/bin:/bin' }, argv);

    beforeAll(async () => {
      home = path.join(t.dir, 'home');
      fs.mkdirSync(home);
      fs.chownSync(home, USER, USER);
      root = path.join(home, 'pool');
      expect((await asUser(['init', '--data-size', '4G'])).code).toBe(0);
      const load = await asUser(['load', archive]);
      expect(load.code, load.stderr).toBe(0);
    });

    afterAll(async () => {
      // The daemon exits after its last mount; if a failure left one behind, end it by its pid.
      let pid = 0;
      try {
        pid = Number(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8'));
      } catch {
        /* no daemon left */
      }
      if (pid > 0 && alive(pid)) {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      }
    });

    it.each(RUNTIMES.filter((r) => r !== 'runc' || findProgram('runc') !== undefined))('runs the docker-archive copy by its config as uid 65534 (--runtime %s, -u 0: only the caller is mapped)', async (runtime) => {
      const r = await asUser(['run', '--runtime', runtime, 'cfg:latest', '--rm', '--name', `rl-${runtime}`, '-u', '0']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`uid=0 gid=0 groups=0 cwd=/srv/app greeting=from-config path=/usr/bin:/bin home=/root host=rl-${runtime}\n`);
      const refused = await asUser(['run', '--runtime', runtime, 'cfg:latest', '--rm']);
      expect(refused.code).toBe(1);
      expect(refused.errLines).toEqual([expect.stringMatching(/^thinfs: EINVAL: a rootless run maps only your own uid/)]);
      expect(mountTable().filter((m) => m.fstype === 'fuse.thinfs' && m.mountpoint.startsWith(`${root}/`))).toEqual([]);
    });
  });
});

function ok(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
}
