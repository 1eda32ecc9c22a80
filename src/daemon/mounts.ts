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
 *    mounts that were left dead;
 *  - a default mountpoint ROOT/mnt/NAME exists only while NAME is mounted (mountpoints.ts).
 *
 * A busy view (a process has its cwd, root, an open or mapped file in it) is not
 * unmounted: `umount` answers EBUSY naming the holders, and the view keeps being served
 * and committed as before. `force` detaches it lazily instead, and says so. Shutdown
 * (SIGTERM) cannot wait for holders that may never let go: it commits everything the
 * view got, detaches a busy one lazily and logs a warning naming its holders, whose
 * later requests fail (ENOTCONN once the daemon is gone).
 */
import * as path from 'node:path';
import { fail } from '../errors.js';
import { Filesystem } from '../fs/index.js';
import { describeBusy, FuseMount, lazyUnmount, MountCounters, probeMount, thinfsMountpoints, type BusyReport } from '../fuse/index.js';
import { resolveImageName } from '../layers/index.js';
import { logger } from '../log.js';
import type { DevId, Pool } from '../pool/index.js';
import { createDefaultMountpoint, defaultMountpoint, removeDefaultMountpoint } from './mountpoints.js';
import { noSuchDevice, type MountRequest, type MountResult, type MountStats, type UmountResult } from './ops/mount-ops.js';
import { writeMountRecords, type MountRecord } from './runfiles.js';

const log = logger('daemon');

interface Entry {
  record: MountRecord;
  fs: Filesystem;
  fuse: FuseMount;
  /** What the adapter counts for `thinfs stats`, and the device and pool as they were at the mount. */
  counters: MountCounters;
  atMount: { exclusiveBlocks: number; transactionId: number };
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

  /** The counters of every mount (or of the mount of device `name`: ENOENT/EINVAL when there is none). */
  stats(name?: string): MountStats[] {
    let entries = [...this.entries.values()];
    if (name !== undefined) {
      const e = this.findEntry(name, undefined);
      if (e === undefined) {
        if (resolveImageName(this.pool, name) === undefined) throw noSuchDevice(name, 'stats');
        throw fail('EINVAL', 'stats', name, 'not mounted');
      }
      entries = [e];
    }
    const bs = this.pool.blockSizeBytes;
    const txid = this.pool.status().transactionId;
    return entries.map((e) => {
      const d = this.pool.getDevice(e.record.devId as DevId);
      const exclusive = d?.exclusiveBlocks ?? 0;
      return {
        name: e.record.name,
        mountpoint: e.record.mountpoint,
        readOnly: e.record.readOnly,
        mountedAt: e.record.mountedAt,
        counters: e.counters.snapshot(),
        device: {
          mappedBytes: d?.mappedBytes ?? 0,
          exclusiveBytes: d?.exclusiveBytes ?? 0,
          inlineBytes: d?.inlineMappedBytes ?? 0,
          ownBlocksSinceMount: exclusive - e.atMount.exclusiveBlocks,
          blockSize: bs,
        },
        commits: txid - e.atMount.transactionId,
        blocksAllocated: null,
        cowCopies: null,
      };
    });
  }

  /** Mount a device (see MountRequest); resolves once the kernel serves the mount. */
  mount(req: MountRequest): Promise<MountResult> {
    return this.serialize(() => this.doMount(req));
  }

  /**
   * Unmount by device name (or image reference), else by mountpoint; commits what the view changed. A busy
   * view: EBUSY naming its holders (nothing changes), or with `force` a lazy detach
   * with a warning in the result.
   */
  umount(name: string, mountpoint: string | undefined, force = false): Promise<UmountResult> {
    return this.serialize(async () => {
      const e = this.findEntry(name, mountpoint);
      if (e === undefined) {
        // Not ours: maybe a dead mount an earlier daemon left there.
        if (mountpoint !== undefined && (await probeMount(mountpoint)) === 'dead') {
          await lazyUnmount(mountpoint);
          await removeDefaultMountpoint(this.root, path.basename(mountpoint), mountpoint);
          return { name, mountpoint, stale: true, warnings: [] };
        }
        throw fail('EINVAL', 'umount', name === '' ? mountpoint : name, 'not mounted');
      }
      const mp = e.record.mountpoint;
      const warnings: string[] = [];
      const busy = await e.fuse.unmount();
      if (busy !== undefined) {
        if (!force) {
          throw fail('EBUSY', 'umount', mp, `target is busy (${describeBusy(busy)}); \`thinfs umount --force\` detaches it anyway, and their unsynced writes may be lost`);
        }
        await e.fuse.detach();
        warnings.push(`${mp} was busy (${describeBusy(busy)}) and is detached lazily: unsynced writes of these processes may be lost, and their next access to it fails`);
        log.warn({ mount: e.record.name, mountpoint: mp, holders: describeBusy(busy) }, 'umount --force: detached a busy view lazily');
      }
      await this.drop(e);
      return { name: e.record.name, mountpoint: mp, stale: false, warnings };
    });
  }

  /**
   * Resolves once what was written to the mount of device `name` (if it is mounted) has
   * reached its Filesystem (FuseMount.flush: the kernel's writeback cache). Commit, export
   * and diff of a mounted container should call it first, to see the writes of files still
   * open (closing a file writes its pages back: fuse_flush).
   */
  async flush(name: string): Promise<void> {
    await this.findEntry(name, undefined)?.fuse.flush();
  }

  /** The mount of device `name` (a device name or an image reference), else the one at `mountpoint`. */
  private findEntry(name: string, mountpoint: string | undefined): Entry | undefined {
    if (name !== '') {
      const e = this.entries.get(name) ?? this.entries.get(resolveImageName(this.pool, name)?.name ?? '');
      if (e !== undefined) return e;
    }
    return [...this.entries.values()].find((x) => x.record.mountpoint === mountpoint);
  }

  /** Forget mounts the kernel no longer has (someone ran umount(8) on them). */
  prune(): void {
    if (this.entries.size === 0) return;
    void this.serialize(async () => {
      const mounted = thinfsMountpoints();
      for (const e of [...this.entries.values()]) {
        if (!e.fuse.stillMounted(mounted)) {
          log.warn({ mount: e.record.name, mountpoint: e.record.mountpoint }, 'the mount went away (unmounted from outside thinfs)');
          await this.drop(e);
        }
      }
    });
  }

  /** Unmount everything (shutdown): a busy view is detached lazily and logged; errors are logged, not thrown. */
  async unmountAll(): Promise<void> {
    await this.serialize(async () => {
      for (const e of [...this.entries.values()]) {
        try {
          const busy = await e.fuse.unmount();
          if (busy !== undefined) {
            logBusyShutdown(e, busy);
            await e.fuse.detach();
          }
        } catch (err) {
          log.error({ err, mount: e.record.name }, 'unmount failed; detaching lazily');
          await e.fuse.detach().catch((err2: unknown) => log.error({ err: err2, mount: e.record.name }, 'detaching failed too'));
        }
        await this.drop(e, false);
      }
    });
  }

  private async doMount(req: MountRequest): Promise<MountResult> {
    // A device name, or the reference of a loaded image (example.org/test/img:t).
    const info = resolveImageName(this.pool, req.name);
    if (info === undefined || info.state !== 'active') throw noSuchDevice(req.name);
    const taken = this.entries.get(info.name);
    if (taken !== undefined) throw fail('EBUSY', 'mount', req.name, `already mounted at ${taken.record.mountpoint}`);
    const mountpoint = req.mountpoint ?? defaultMountpoint(this.root, info.name);
    for (const e of this.entries.values()) {
      const mp = e.record.mountpoint;
      if (mp === mountpoint) throw fail('EBUSY', 'mount', mountpoint, `'${e.record.name}' is mounted there`);
      if (mountpoint.startsWith(`${mp}/`)) throw fail('EINVAL', 'mount', mountpoint, `the mountpoint is inside the mount of '${e.record.name}'`);
    }
    if (req.mountpoint === undefined) await createDefaultMountpoint(this.root, info.name);
    const readOnly = req.readOnly || info.readOnly;
    const fs = Filesystem.open(this.pool, info.id, { readOnly });
    const counters = new MountCounters();
    const atMount = { exclusiveBlocks: info.exclusiveBlocks, transactionId: this.pool.status().transactionId };
    let fuse: FuseMount;
    try {
      fuse = await FuseMount.mount({ name: info.name, mountpoint, fs, readOnly, nosuid: req.nosuid, uids: req.uids, gids: req.gids, counters });
    } catch (err) {
      closeQuietly(fs, info.name);
      // An empty default mountpoint goes again; one with files in it (refused) stays for the user to see.
      await removeDefaultMountpoint(this.root, info.name, mountpoint);
      if (this.entries.size === 0) this.onEmpty('failed');
      throw err;
    }
    const record: MountRecord = {
      name: info.name,
      devId: info.id,
      mountpoint,
      readOnly,
      allowOther: fuse.allowOther,
      setuid: fuse.setuid,
      uidMap: req.uids.toStrings(),
      gidMap: req.gids.toStrings(),
      mountedAt: new Date().toISOString(),
    };
    this.entries.set(info.name, { record, fs, fuse, counters, atMount });
    // The libfuse3 session ends as soon as anyone unmounts the view: forget it then, so a
    // mount of the same device right after does not find it "already mounted".
    fuse.onGone(() => this.prune());
    this.persist();
    return { ...record, warnings: [...fuse.warnings] };
  }

  /** Close the view (commit), forget it, and remove its default mountpoint. */
  private async drop(e: Entry, notify = true): Promise<void> {
    closeQuietly(e.fs, e.record.name);
    this.entries.delete(e.record.name);
    this.persist();
    await removeDefaultMountpoint(this.root, e.record.name, e.record.mountpoint);
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

function logBusyShutdown(e: Entry, busy: BusyReport): void {
  log.warn(
    { mount: e.record.name, mountpoint: e.record.mountpoint, holders: describeBusy(busy) },
    'shutting down with a busy view: everything it received is committed, and it is detached lazily; its holders lose access (ENOTCONN) and any unsynced writes',
  );
}

function closeQuietly(fs: Filesystem, name: string): void {
  try {
    fs.close();
  } catch (err) {
    log.error({ err, mount: name }, 'closing the filesystem failed');
  }
}
