/**
 * The daemon's mount table: device name -> (Filesystem, FuseMount, record).
 *
 * Invariants:
 *  - a device is mounted at most once, and a mountpoint holds at most one view: so the
 *    one writable Filesystem of a device is behind exactly one mount, which is what
 *    makes kernel_cache safe (fuse/options.ts);
 *  - mount and umount run one at a time (a promise chain), so the table, the kernel's
 *    mounts and ROOT/run/mounts.json agree whenever no change is in flight;
 *  - mounts.json is rewritten after every change: after a kill -9 it lists exactly the
 *    mounts that were left dead.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fail } from '../errors.js';
import { Filesystem } from '../fs/index.js';
import { FuseMount, lazyUnmount, probeMount, thinfsMountpoints } from '../fuse/index.js';
import { logger } from '../log.js';
import type { Pool } from '../pool/index.js';
import { noSuchDevice, type MountRequest, type MountResult, type UmountResult } from './ops/mount-ops.js';
import { writeMountRecords, type MountRecord } from './runfiles.js';

const log = logger('daemon');

interface Entry {
  record: MountRecord;
  fs: Filesystem;
  fuse: FuseMount;
}

export class MountTable {
  private readonly entries = new Map<string, Entry>();
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly root: string,
    private readonly pool: Pool,
    /** Called after a change leaves the table empty: an unmount, or a mount that failed. */
    private readonly onEmpty: (why: 'unmounted' | 'failed') => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  list(): MountRecord[] {
    return [...this.entries.values()].map((e) => ({ ...e.record }));
  }

  /** Mount a device (see MountRequest); resolves once the kernel serves the mount. */
  mount(req: MountRequest): Promise<MountResult> {
    return this.serialize(() => this.doMount(req));
  }

  /** Unmount by device name, else by mountpoint; commits what the view changed. */
  umount(name: string, mountpoint: string | undefined): Promise<UmountResult> {
    return this.serialize(async () => {
      const e = this.entries.get(name) ?? [...this.entries.values()].find((x) => x.record.mountpoint === mountpoint);
      if (e === undefined) {
        // Not ours: maybe a dead mount an earlier daemon left there.
        if (mountpoint !== undefined && (await probeMount(mountpoint)) === 'dead') {
          await lazyUnmount(mountpoint);
          return { name, mountpoint, stale: true };
        }
        throw fail('EINVAL', 'umount', name === '' ? mountpoint : name, 'not mounted');
      }
      await e.fuse.unmount();
      this.drop(e);
      return { name: e.record.name, mountpoint: e.record.mountpoint, stale: false };
    });
  }

  /** Forget mounts the kernel no longer has (someone ran umount(8) on them). */
  prune(): void {
    if (this.entries.size === 0) return;
    void this.serialize(async () => {
      const mounted = thinfsMountpoints();
      for (const e of [...this.entries.values()]) {
        if (!e.fuse.stillMounted(mounted)) {
          log.warn({ mount: e.record.name, mountpoint: e.record.mountpoint }, 'the mount went away (unmounted from outside thinfs)');
          this.drop(e);
        }
      }
    });
  }

  /** Unmount everything (shutdown); errors are logged, not thrown. */
  async unmountAll(): Promise<void> {
    await this.serialize(async () => {
      for (const e of [...this.entries.values()]) {
        try {
          await e.fuse.unmount();
        } catch (err) {
          log.error({ err, mount: e.record.name }, 'unmount failed');
        }
        this.drop(e, false);
      }
    });
  }

  private async doMount(req: MountRequest): Promise<MountResult> {
    const info = this.pool.findDevice(req.name);
    if (info === undefined || info.state !== 'active') throw noSuchDevice(req.name);
    const taken = this.entries.get(info.name);
    if (taken !== undefined) throw fail('EBUSY', 'mount', req.name, `already mounted at ${taken.record.mountpoint}`);
    const mountpoint = req.mountpoint ?? path.join(this.root, 'mnt', info.name);
    for (const e of this.entries.values()) {
      const mp = e.record.mountpoint;
      if (mp === mountpoint) throw fail('EBUSY', 'mount', mountpoint, `'${e.record.name}' is mounted there`);
      if (mountpoint.startsWith(`${mp}/`)) throw fail('EINVAL', 'mount', mountpoint, `the mountpoint is inside the mount of '${e.record.name}'`);
    }
    if (req.mountpoint === undefined) await fsp.mkdir(mountpoint, { recursive: true });
    const readOnly = req.readOnly || info.readOnly;
    const fs = Filesystem.open(this.pool, info.id, { readOnly });
    let fuse: FuseMount;
    try {
      fuse = await FuseMount.mount({ name: info.name, mountpoint, fs, readOnly, uids: req.uids, gids: req.gids });
    } catch (err) {
      closeQuietly(fs, info.name);
      if (this.entries.size === 0) this.onEmpty('failed');
      throw err;
    }
    const record: MountRecord = {
      name: info.name,
      devId: info.id,
      mountpoint,
      readOnly,
      allowOther: fuse.allowOther,
      uidMap: req.uids.toStrings(),
      gidMap: req.gids.toStrings(),
      mountedAt: new Date().toISOString(),
    };
    this.entries.set(info.name, { record, fs, fuse });
    this.persist();
    return { ...record, warnings: [...fuse.warnings] };
  }

  /** Close the view (commit) and forget it. */
  private drop(e: Entry, notify = true): void {
    closeQuietly(e.fs, e.record.name);
    this.entries.delete(e.record.name);
    this.persist();
    if (notify && this.entries.size === 0) this.onEmpty('unmounted');
  }

  private persist(): void {
    try {
      writeMountRecords(this.root, this.list());
    } catch (err) {
      log.error({ err }, 'cannot record the mounts in run/mounts.json');
    }
  }

  private serialize<R>(fn: () => Promise<R>): Promise<R> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }
}

function closeQuietly(fs: Filesystem, name: string): void {
  try {
    fs.close();
  } catch (err) {
    log.error({ err, mount: name }, 'closing the filesystem failed');
  }
}
