/**
 * A new image from a layer source: the device's life around one import.
 *
 *   1. check everything that can be checked first (name free, parent an image, source
 *      readable and of a known kind, not a whole image archive, which `load` takes) —
 *      bad input changes nothing;
 *   2. a writable device: a snapshot of the parent image, or an empty thin device;
 *   3. import the layer into its Filesystem;
 *   4. make it read-only (an image) and commit.
 * When 3 fails, the new device is closed, deleted and the deletion committed: nothing
 * half-imported remains, the parent and the rest of the pool are as they were. (In a
 * daemon, batched commits may make a partial import durable for a moment; should the
 * daemon die right then, the device stays behind as a writable image, which
 * `thinfs ls` shows as `incomplete` — an image is read-only once its import finished.)
 *
 * A daemon must never read a source through a FUSE mount it serves itself: the read
 * would wait for an answer from its own, blocked, event loop. `avoid` lists those
 * mountpoints; the source is resolved component by component (never stat'ing into
 * one of them) and the directory walk refuses to enter them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, type ErrnoCode } from '../errors.js';
import { Filesystem } from '../fs/index.js';
import { logger } from '../log.js';
import type { DevId, DeviceInfo, Pool } from '../pool/index.js';
import type { ImportOptions, ImportStats } from './common.js';
import { TarStore } from './archive.js';
import { importDirectory } from './directory.js';
import { resolveImageName } from './image-store.js';
import { importTar } from './tar.js';

const log = logger('layers');

export interface ImportImageOptions extends ImportOptions {
  /** Name of the new image. */
  name: string;
  /** A directory or a tar / tar.gz file. */
  source: string;
  /** Name of the image the new one is a layer on; none: a base image. */
  parent?: string;
  /** Mountpoints served by this process: never read through them. */
  avoid?: string[];
}

export interface ImportImageResult {
  id: DevId;
  name: string;
  parent: string | null;
  source: string;
  sourceKind: 'directory' | 'tar';
  stats: ImportStats;
}

/** Import `source` as a new read-only image `name` (on `parent` when given). See the top of this file. */
export async function importImage(pool: Pool, opts: ImportImageOptions): Promise<ImportImageResult> {
  const { name } = opts;
  if (pool.findDevice(name) !== undefined) throw fail('EEXIST', 'import', name, `an image or container named '${name}' exists`);
  const parent = opts.parent === undefined ? undefined : findImage(pool, opts.parent, 'import');
  const source = resolveSource(opts.source, opts.avoid ?? []);
  const st = statSource(source);
  const sourceKind = st.isDirectory() ? 'directory' : st.isFile() ? 'tar' : undefined;
  if (sourceKind === undefined) throw fail('EINVAL', 'import', source, 'the source must be a directory or a tar file (plain or gzip)');
  if (sourceKind === 'tar' ? TarStore.isImageArchive(source) : fs.existsSync(path.join(source, 'oci-layout'))) {
    throw fail('EINVAL', 'import', source, 'this is a whole image (an OCI layout or a docker archive), not a layer: load it with `thinfs load`');
  }

  const id =
    parent === undefined
      ? pool.createThin(name, { kind: 'image' })
      : pool.createSnapshot(parent.id, name, { kind: 'image', readOnly: false });
  let target: Filesystem | undefined;
  try {
    target = Filesystem.open(pool, id);
    const stats =
      sourceKind === 'directory'
        ? await importDirectory(target, source, pool.blockSizeBytes, opts)
        : await importTar(target, source, pool.blockSizeBytes, opts);
    target.close();
    target = undefined;
    pool.setReadOnly(id);
    pool.commit();
    log.info({ image: name, source, ...stats }, 'image imported');
    return { id, name, parent: parent?.name ?? null, source, sourceKind, stats };
  } catch (err) {
    discard(pool, id, target, name);
    throw err;
  }
}

/**
 * The active, read-only image `name` (a device name, or the reference of a loaded image);
 * errors say what it is instead (missing, a container, being deleted, incomplete).
 */
export function findImage(pool: Pool, name: string, syscall: string): DeviceInfo {
  const d = resolveImageName(pool, name);
  if (d === undefined) throw fail('ENOENT', syscall, name, `no image named '${name}' (see \`thinfs ls\`)`);
  if (d.state === 'deferred') throw fail('ENOENT', syscall, name, `image '${name}' is being deleted`);
  if (d.kind === 'container') {
    throw fail('EINVAL', syscall, name, `'${name}' is a container, not an image (make an image of it with \`thinfs commit ${name} NEW-IMAGE\`)`);
  }
  if (!d.readOnly) throw fail('EBUSY', syscall, name, `image '${name}' is incomplete: its import has not finished (or was interrupted; remove it with \`thinfs rm\`)`);
  return d;
}

/** Undo a failed import: close the view, delete the device, commit. Never throws (the import's error matters). */
function discard(pool: Pool, id: DevId, target: Filesystem | undefined, name: string): void {
  try {
    target?.close();
  } catch (err) {
    log.warn({ err, image: name }, 'closing the failed import');
  }
  try {
    const mode = pool.mode();
    if (mode === 'write' || mode === 'out-of-data-space') {
      pool.deleteDevice(id);
      pool.commit();
    }
  } catch (err) {
    log.error({ err, image: name }, 'could not delete the device of a failed import; remove it with `thinfs rm`');
  }
}

function statSource(source: string): fs.Stats {
  try {
    return fs.statSync(source);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw fail((e.code as ErrnoCode | undefined) ?? 'EIO', 'import', source, `cannot read the source (${e.code === 'ENOENT' ? 'no such file or directory' : e.message})`);
  }
}

/**
 * The absolute path of `source` with its symlinks resolved one component at a time,
 * refusing (EINVAL) a path that is or lies under one of `avoid` before anything there is touched.
 */
export function resolveSource(source: string, avoid: string[]): string {
  const abs = path.resolve(source);
  if (avoid.length === 0) return abs;
  const check = (p: string) => {
    for (const m of avoid) {
      if (p === m || p.startsWith(m.endsWith('/') ? m : `${m}/`)) {
        throw fail('EINVAL', 'import', source, `the source lies in the thinfs mount ${m}, which this daemon serves; copy it out first`);
      }
    }
  };
  let resolved = '/';
  const todo = abs.split('/').filter((c) => c !== '');
  for (let hops = 0; todo.length > 0; ) {
    const c = todo.shift()!;
    const next = path.join(resolved, c);
    check(next);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(next);
    } catch {
      return path.join(next, ...todo); // missing: statSource reports it
    }
    if (st.isSymbolicLink()) {
      if (++hops > 40) throw fail('ELOOP', 'import', source, 'too many levels of symbolic links');
      const target = fs.readlinkSync(next);
      todo.unshift(...target.split('/').filter((x) => x !== ''));
      if (target.startsWith('/')) resolved = '/';
      continue;
    }
    resolved = next;
  }
  return resolved;
}
