/**
 * thinfs as containerd's storage, for real: Debian's containerd started by this test with
 * a private config (root, state, sockets under a temp dir, the proxy plugin `thinfs`
 * pointing at `thinfs snapshotter`'s socket), images built at test time (busybox base from
 * fixtures/build-busybox-rootfs.sh with umoci, archives by skopeo), run by runc through the
 * runc v2 shim. Root only (containerd, runc, device nodes and trusted.* xattrs in the image).
 *
 * Shows: `ctr images import --snapshotter thinfs` unpacks every layer through the views
 * (ctr's snapshot list is exactly the images' chain IDs, and the snapshotter's records and
 * devices agree); `ctr run --snapshotter thinfs` prints what the image config's Cmd prints
 * (the shell evaluates it inside the thinfs rootfs); a container's writes show in Usage;
 * restarts of containerd and of the snapshotter keep every snapshot, and an active snapshot's
 * view and data survive a restart of the snapshotter and of the pool daemon (Mounts mounts
 * it again, in a daemon the snapshotter starts); two images on one base
 * unpacked at the same time (in a namespace that has neither) both run; removing the
 * containers and images removes every snapshot device and leaves `thinfs check` clean.
 *
 * Cleanup always runs: containerd, the shims it left (by the pids in its state), the
 * snapshotter and the pool daemon it started (by pid) are stopped, mounts under the temp dir
 * detached, the directory removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lazyUnmount, mountTable } from '../../src/fuse/kernel.js';
import { chainIds } from '../../src/layers/index.js';
import { isSnapshotDeviceName } from '../../src/snapshotter/snapshots/index.js';
import { CLI, thinfs } from '../cli/helpers.js';
import { alive, fuseSkipReason, sh, sleep } from '../fuse/helpers.js';
import { have, run } from '../helpers/oci-images.js';
import { Snapshots } from './helpers.js';

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'containerd, runc and an image with device nodes and trusted.* xattrs need root';
  const fuse = fuseSkipReason();
  if (fuse !== undefined) return fuse;
  for (const c of ['containerd', 'ctr', 'containerd-shim-runc-v2', 'runc', 'umoci', 'skopeo']) {
    if (!have(c)) return `${c} is not installed (Debian packages containerd, runc, umoci, skopeo)`;
  }
  if (!fs.existsSync('/bin/busybox')) return 'busybox-static is not installed';
  return undefined;
}
const why = missing();
if (why !== undefined) console.warn(`skipping the containerd snapshotter tests: ${why}`);

const PROJECT = path.resolve(path.dirname(CLI), '..', '..', '..');

interface Image {
  ref: string;
  archive: string;
  chain: string[];
}

/** A process this test started, by pid, with its output in a file. */
function start(cmd: string, args: string[], log: string): ChildProcess {
  const out = fs.openSync(log, 'a');
  try {
    return spawn(cmd, args, { stdio: ['ignore', out, out] });
  } finally {
    fs.closeSync(out);
  }
}

/** SIGTERM `pid`, SIGKILL after `ms`; resolves once it is gone. */
async function stop(pid: number | undefined, ms = 10_000): Promise<void> {
  if (pid === undefined || !alive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + ms;
  while (alive(pid) && Date.now() < deadline) await sleep(50);
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  while (alive(pid)) await sleep(20);
}

async function waitFor(what: string, fn: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe.skipIf(why !== undefined)('thinfs as a containerd snapshotter', () => {
  let dir: string;
  let root: string;
  let sock: string;
  let ctdSock: string;
  let config: string;
  let ctd: ChildProcess | undefined;
  let snapshotter: ChildProcess | undefined;
  let client: Snapshots;
  const images: Record<'a' | 'b' | 'c', Image> = {} as never;

  const ctr = (args: string, ns = 'default') => sh(`ctr -a ${ctdSock} -n ${ns} ${args}`, { timeoutMs: 120_000 });
  const ctrOk = async (args: string, ns = 'default') => {
    const r = await ctr(args, ns);
    if (r.code !== 0) throw new Error(`ctr ${args} failed (${r.code}):\n${r.stderr}${r.stdout}\n--- snapshotter log:\n${tail(path.join(dir, 'snapshotter.log'))}`);
    return r.stdout;
  };
  /** `ctr snapshots ls`: key -> [parent, kind]. */
  const ctrSnapshots = async (ns = 'default') => {
    const lines = (await ctrOk('snapshots --snapshotter thinfs ls', ns)).trim().split('\n').slice(1);
    return Object.fromEntries(lines.filter((l) => l.trim() !== '').map((l) => {
      const f = l.trim().split(/\s+/);
      return f.length === 3 ? [f[0]!, [f[1]!, f[2]!]] : [f[0]!, ['', f[1]!]];
    })) as Record<string, [string, string]>;
  };
  const devices = async () => {
    const r = await thinfs(['--root', root, 'ls', '--json']);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { name: string; readOnly: boolean; kind: string }[]).filter((d) => isSnapshotDeviceName(d.name));
  };

  async function startSnapshotter(): Promise<void> {
    snapshotter = start(process.execPath, [CLI, '--root', root, 'snapshotter'], path.join(dir, 'snapshotter.log'));
    await waitFor('the snapshotter socket', async () => {
      if (!fs.existsSync(sock)) return false;
      return (await client.list().then(() => true, () => false));
    });
    // containerd's gRPC client to the proxy plugin backs off after the old snapshotter went
    // away and answers "connection refused" until its next try: wait until it is through.
    if (ctd !== undefined) {
      await waitFor('containerd to reach the snapshotter again', async () => (await ctr('snapshots --snapshotter thinfs ls')).code === 0);
    }
  }

  async function startContainerd(): Promise<void> {
    ctd = start('containerd', ['--config', config], path.join(dir, 'containerd.log'));
    await waitFor('containerd', async () => (await sh(`ctr -a ${ctdSock} version`)).code === 0);
  }

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-ctd-'));
    fs.chmodSync(dir, 0o755);
    root = path.join(dir, 'pool');
    sock = path.join(root, 'run', 'snapshotter.sock');
    ctdSock = path.join(dir, 'ctd', 'containerd.sock');
    const r = await thinfs(['--root', root, 'init', '--data-size', '4G']);
    if (r.code !== 0) throw new Error(r.stderr);
    buildImages();
    config = path.join(dir, 'config.toml');
    fs.writeFileSync(
      config,
      [
        'version = 2',
        `root = "${dir}/ctd/root"`,
        `state = "${dir}/ctd/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]',
        `  address = "${ctdSock}"`,
        '[ttrpc]',
        `  address = "${ctdSock}.ttrpc"`,
        '[metrics]',
        '  address = ""',
        '[proxy_plugins]',
        '  [proxy_plugins.thinfs]',
        '    type = "snapshot"',
        `    address = "${sock}"`,
        '',
      ].join('\n'),
    );
    client = new Snapshots(sock);
    await startSnapshotter();
    await startContainerd();
  }, 120_000);

  afterAll(async () => {
    client?.close();
    await stop(ctd?.pid);
    // The shims containerd started (ctr run --rm lets them go; a failed test may not).
    for (const f of fs.existsSync(`${dir}/ctd/state`) ? fs.readdirSync(`${dir}/ctd/state`, { recursive: true, encoding: 'utf8' }) : []) {
      if (path.basename(f) !== 'shim.pid') continue;
      const pid = Number(fs.readFileSync(path.join(dir, 'ctd', 'state', f), 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0) await stop(pid, 3000);
    }
    await stop(snapshotter?.pid);
    const pidFile = path.join(root, 'run', 'daemon.pid');
    const daemonPid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8').trim()) : NaN;
    if (Number.isInteger(daemonPid) && daemonPid > 0) await stop(daemonPid);
    for (const m of mountTable().filter((x) => x.mountpoint.startsWith(`${dir}/`)).reverse()) {
      await lazyUnmount(m.mountpoint).catch(() => sh(`umount -l '${m.mountpoint}'`));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  /** Three images: a (the busybox base, Cmd evaluated by the shell), b and c (one more layer each on a's). */
  function buildImages(): void {
    const layout = path.join(dir, 'layout');
    const bundle = path.join(dir, 'bundle');
    run('umoci', ['init', '--layout', layout]);
    run('umoci', ['new', '--image', `${layout}:a`]);
    run('umoci', ['unpack', '--image', `${layout}:a`, bundle]);
    run('sh', [path.join(PROJECT, 'fixtures', 'build-busybox-rootfs.sh'), path.join(bundle, 'rootfs')]);
    run('umoci', ['repack', '--image', `${layout}:a`, bundle]);
    fs.rmSync(bundle, { recursive: true });
    run('umoci', ['config', '--image', `${layout}:a`, '--config.cmd=/bin/sh', '--config.cmd=-c', '--config.cmd=echo "marker-$((6 * 7)) uid=$(id -u)"']);
    for (const t of ['b', 'c'] as const) {
      run('umoci', ['tag', '--image', `${layout}:a`, t]);
      run('umoci', ['unpack', '--image', `${layout}:${t}`, bundle]);
      fs.writeFileSync(path.join(bundle, 'rootfs', `${t}.txt`), `layer of image ${t}\n`);
      fs.rmSync(path.join(bundle, 'rootfs', 'etc', 'motd'));
      run('umoci', ['repack', '--image', `${layout}:${t}`, bundle]);
      fs.rmSync(bundle, { recursive: true });
      run('umoci', ['config', '--image', `${layout}:${t}`, '--config.cmd=/bin/sh', '--config.cmd=-c', `--config.cmd=cat /${t}.txt; test -e /etc/motd || echo motd-whited-out`]);
    }
    for (const t of ['a', 'b', 'c'] as const) {
      const ref = `example.org/thinfs/${t}:1`;
      const archive = path.join(dir, `${t}.tar`);
      run('skopeo', ['copy', '-q', `oci:${layout}:${t}`, `oci-archive:${archive}:${ref}`]);
      images[t] = { ref, archive, chain: chainOf(layout, t) };
    }
  }

  /** The chain IDs of tag `t` in the layout (what containerd names its committed snapshots). */
  function chainOf(layout: string, t: string): string[] {
    const blob = (d: string) => JSON.parse(fs.readFileSync(path.join(layout, 'blobs', ...d.split(':')), 'utf8')) as Record<string, unknown>;
    const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8')) as {
      manifests: { digest: string; annotations?: Record<string, string> }[];
    };
    const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === t)!;
    const manifest = blob(desc.digest) as { config: { digest: string } };
    const cfg = blob(manifest.config.digest) as { rootfs: { diff_ids: string[] } };
    return chainIds(cfg.rootfs.diff_ids);
  }

  it('imports an OCI archive: every layer unpacked through a view and committed, as the chain IDs of the image', async () => {
    await ctrOk(`images import --snapshotter thinfs ${images.a.archive}`);
    await ctrOk(`images import --snapshotter thinfs ${images.b.archive}`);
    expect(images.a.chain).toHaveLength(1);
    expect(images.b.chain.slice(0, 1)).toEqual(images.a.chain);
    const snaps = await ctrSnapshots();
    expect(Object.keys(snaps).sort()).toEqual([...images.b.chain].sort());
    expect(snaps[images.b.chain[1]!]).toEqual([images.b.chain[0]!, 'Committed']);
    expect(snaps[images.b.chain[0]!]).toEqual(['', 'Committed']);
    // The snapshotter's own records: containerd's backend keys end with the chain IDs.
    const infos = (await client.list()).infos;
    expect(infos.map((i) => i.kind)).toEqual(['COMMITTED', 'COMMITTED']);
    expect(infos.map((i) => i.name.split('/').at(-1)).sort()).toEqual([...images.b.chain].sort());
    // One read-only thinfs device per layer, no view left mounted.
    const devs = await devices();
    expect(devs).toHaveLength(2);
    expect(devs.every((d) => d.readOnly && d.kind === 'image')).toBe(true);
    expect(mountTable().filter((m) => m.mountpoint.startsWith(`${root}/mnt/`))).toEqual([]);
  });

  it('ctr run prints what the image config says, from a thinfs rootfs (whiteouts of the upper layer included)', async () => {
    expect((await ctrOk('run --snapshotter thinfs --rm example.org/thinfs/a:1 run-a')).trim()).toBe('marker-42 uid=0');
    expect((await ctrOk('run --snapshotter thinfs --rm example.org/thinfs/b:1 run-b')).trim().split('\n')).toEqual(['layer of image b', 'motd-whited-out']);
    // Files the fixture made with special bits came through the view intact.
    const ls = await ctrOk(`run --snapshotter thinfs --rm example.org/thinfs/a:1 run-ls /bin/sh -c 'stat -c "%a %U %n" /usr/bin/setuid-demo /etc/secret /tmp'`);
    expect(ls.trim().split('\n')).toEqual(['4755 root /usr/bin/setuid-demo', '600 root /etc/secret', '1777 root /tmp']);
    // --rm removed each container's snapshot again.
    expect(Object.keys(await ctrSnapshots())).toHaveLength(2);
  });

  it("a container's writes land in its own snapshot: Usage counts them, the image's layers are untouched", async () => {
    await ctrOk(`run --snapshotter thinfs example.org/thinfs/a:1 writer /bin/sh -c 'head -c 3000000 /dev/urandom > /written; echo done'`);
    const usage = (await ctrOk('snapshots --snapshotter thinfs usage writer')).trim().split('\n').slice(1);
    expect(usage).toHaveLength(1);
    // KEY SIZE INODES, the size as ctr formats it ("2.9 MiB").
    expect(usage[0]!.trim()).toMatch(/^writer\s+(2\.[89]|3\.0) MiB\s+[1-9][0-9]*$/);
    const layer = (await client.list([`name~=${images.a.chain[0]!}$`])).infos[0]!;
    expect((await client.usage(layer.name)).size).toBeLessThan(3_000_000);
    // ctr run (not detached) deleted the task when it ended; the container and its snapshot stay until removed.
    await ctrOk('containers rm writer');
    expect(Object.keys(await ctrSnapshots())).toHaveLength(2);
  });

  it('a restart of containerd keeps the snapshots', async () => {
    const before = await ctrSnapshots();
    await stop(ctd!.pid);
    await startContainerd();
    expect(await ctrSnapshots()).toEqual(before);
    expect((await ctrOk('run --snapshotter thinfs --rm example.org/thinfs/a:1 again-a')).trim()).toBe('marker-42 uid=0');
  });

  it('a restart of the snapshotter keeps the snapshots (and the daemon with its views)', async () => {
    // Committed ones: containerd's garbage collection may remove the --rm containers' snapshots at any time.
    const committed = async () => (await client.list(['kind==committed'])).infos;
    const before = await committed();
    const daemonPid = fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8').trim();
    await stop(snapshotter!.pid);
    expect(fs.existsSync(sock)).toBe(false);
    await startSnapshotter();
    expect(await committed()).toEqual(before);
    expect(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8').trim()).toBe(daemonPid);
    expect((await ctrOk('run --snapshotter thinfs --rm example.org/thinfs/b:1 again-b')).trim().split('\n')[0]).toBe('layer of image b');
  });

  it('an active snapshot keeps its view and data across restarts of the snapshotter and of the pool daemon', async () => {
    const base = images.a.chain[0]!;
    await ctrOk(`snapshots --snapshotter thinfs prepare keep-me ${base}`);
    // `ctr snapshots mounts TARGET KEY` prints the mount command containerd would run.
    const source = async () => {
      const cmd = (await ctrOk('snapshots --snapshotter thinfs mounts /target keep-me')).trim();
      const m = /^mount -t bind (\S+) \/target -o (\S+)$/.exec(cmd);
      expect(m, cmd).not.toBeNull();
      expect(m![2]!.split(',').sort()).toEqual(['rbind', 'rw']);
      return m![1]!;
    };
    const src = await source();
    fs.writeFileSync(path.join(src, 'kept'), 'written through the view\n');
    expect(fs.readFileSync(path.join(src, 'etc', 'motd'), 'utf8').length).toBeGreaterThan(0);

    await stop(snapshotter!.pid);
    await startSnapshotter();
    expect(await source()).toBe(src);
    expect(fs.readFileSync(path.join(src, 'kept'), 'utf8')).toBe('written through the view\n');

    // The daemon goes (its views with it); the next call starts one that stays, and Mounts mounts the view again.
    const pidFile = path.join(root, 'run', 'daemon.pid');
    const dpid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    await stop(dpid);
    expect(fs.existsSync(path.join(src, 'kept'))).toBe(false);
    expect(await source()).toBe(src);
    expect(fs.readFileSync(path.join(src, 'kept'), 'utf8')).toBe('written through the view\n');
    // containerd forgets it now; its garbage collection removes it from the snapshotter later (the last test waits for that).
    await ctrOk('snapshots --snapshotter thinfs rm keep-me');
    expect(Object.keys(await ctrSnapshots())).not.toContain('keep-me');
  });

  it('two images on one base unpack at the same time, and both run', async () => {
    // A namespace of its own: neither the base nor the tops are there, so both imports unpack the base at once.
    const [rb, rc] = await Promise.all([
      ctr(`images import --snapshotter thinfs ${images.b.archive}`, 'other'),
      ctr(`images import --snapshotter thinfs ${images.c.archive}`, 'other'),
    ]);
    expect(rb.code, rb.stderr).toBe(0);
    expect(rc.code, rc.stderr).toBe(0);
    const snaps = await ctrSnapshots('other');
    expect(Object.keys(snaps).sort()).toEqual([...new Set([...images.b.chain, ...images.c.chain])].sort());
    expect(snaps[images.c.chain[1]!]).toEqual([images.c.chain[0]!, 'Committed']);
    expect((await ctrOk('run --snapshotter thinfs --rm example.org/thinfs/b:1 other-b', 'other')).trim().split('\n')[0]).toBe('layer of image b');
    expect((await ctrOk('run --snapshotter thinfs --rm example.org/thinfs/c:1 other-c', 'other')).trim().split('\n')[0]).toBe('layer of image c');
  });

  it('removing the containers and images removes every snapshot device and leaves thinfs check clean', async () => {
    await ctrOk(`images rm --sync ${images.a.ref} ${images.b.ref}`);
    await ctrOk(`images rm --sync ${images.b.ref} ${images.c.ref}`, 'other');
    expect(await ctrSnapshots()).toEqual({});
    expect(await ctrSnapshots('other')).toEqual({});
    // The garbage collection --sync waits for removes every snapshot at the backend too: the containers'
    // (ctr run --rm), and the active one of the unpack that lost the race above.
    expect((await client.list()).infos).toEqual([]);
    expect(await devices()).toEqual([]);
    const check = await thinfs(['--root', root, 'check']);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/clean/);
  });
});

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '';
  }
}

