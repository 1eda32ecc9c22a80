/**
 * `diff`: what a container or image changes over its parent, as `docker diff` lists it —
 * computed from the device's own layer (fs changes(): its entries, whiteouts and copied-up
 * inodes), never by walking two trees, so its cost follows the size of the change, not
 * of the image.
 *
 * As docker does, the directories above a change are listed as changed too (a file added
 * in /etc makes `C /etc`), except the root and directories that are themselves added.
 * A device's parent is the device its data sits on (the owner of the nearest layer below
 * its own); a base image has none, and all it holds is added. A loaded image's device
 * holds nothing of its own (its layers are layer devices, `thinfs ls --all`): its diff is
 * empty, and `thinfs diff LAYER-DEVICE` shows a layer's. A mounted container may be
 * diffed while it runs: its mount is flushed first (what the kernel's writeback cache
 * still holds reaches the daemon), then its device is read as the daemon has it.
 *
 * Paths are byte strings in the pool (fs/bytes.ts); the result carries them as text for
 * a person (toText: UTF-8, other bytes as \xNN) and, when that text is not the exact
 * name, as the raw bytes in base64 too.
 */
import { fail } from '../../errors.js';
import { Filesystem, bytesOf, fromText, toText, type Change } from '../../fs/index.js';
import { resolveImageName } from '../../layers/index.js';
import type { DeviceInfo, Pool } from '../../pool/index.js';
import { argsObject, reqString, withPool, type OpContext, type OpFn } from './context.js';

/** One changed path. */
export interface DiffEntry {
  /** A (added), C (changed: contents, attributes or what the name points to), D (deleted), as docker diff. */
  kind: 'A' | 'C' | 'D';
  /** The path for a person (UTF-8; bytes that are not as \xNN). */
  path: string;
  /** The path's raw bytes, base64 — only when `path` is not exactly the name. */
  pathBase64?: string;
  /** A directory that replaced a lower one: nothing below it is inherited (OCI opaque). */
  opaque?: true;
}

export interface DiffResult {
  /** The device compared (its name, also when it was given by image reference). */
  name: string;
  kind: DeviceInfo['kind'];
  /** The device it is compared with; null for a base image. */
  parent: string | null;
  changes: DiffEntry[];
}

const KIND: Record<Change['kind'], DiffEntry['kind']> = { added: 'A', changed: 'C', deleted: 'D' };

/** The changes of device `name` (a device name or an image reference) over its parent. */
export async function diff(ctx: OpContext, raw: unknown): Promise<DiffResult> {
  const name = reqString('diff', argsObject('diff', raw), 'name');
  // Writes to files still open in a mounted view may sit in the kernel's writeback cache.
  await ctx.mounts?.flush(name);
  return withPool(ctx, 'read', (pool) => {
    const d = resolveImageName(pool, name);
    if (d === undefined) throw fail('ENOENT', 'diff', name, `no image or container named '${name}' (see \`thinfs ls\`)`);
    if (d.state === 'deferred') throw fail('ENOENT', 'diff', name, `'${name}' is being deleted`);
    const view = Filesystem.open(pool, d.id, { readOnly: true });
    let changes: Change[];
    try {
      changes = view.changes();
    } finally {
      view.close();
    }
    return { name: d.name, kind: d.kind, parent: parentOf(pool, d)?.name ?? null, changes: withAncestors(changes).map(entry) };
  });
}

export const DIFF_OPS: Record<string, OpFn> = { diff };

/** The changes plus each changed path's directories as changed (docker's rule), sorted by bytes. */
function withAncestors(changes: Change[]): Change[] {
  const byPath = new Map(changes.map((c) => [c.path, c]));
  for (const c of changes) {
    for (let i = c.path.lastIndexOf('/'); i > 0; i = c.path.lastIndexOf('/', i - 1)) {
      const dir = c.path.slice(0, i);
      if (byPath.has(dir)) break; // listed already, and so are its own directories
      byPath.set(dir, { path: dir, kind: 'changed' });
    }
  }
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function entry(c: Change): DiffEntry {
  const text = toText(c.path);
  const e: DiffEntry = { kind: KIND[c.kind], path: text };
  if (fromText(text) !== c.path) e.pathBase64 = bytesOf(c.path).toString('base64');
  if (c.opaque === true) e.opaque = true;
  return e;
}

/** The device whose layer is the nearest one below `d`'s own: what its data sits on. */
function parentOf(pool: Pool, d: DeviceInfo): DeviceInfo | undefined {
  const owners = new Map(pool.listDevices().map((x) => [x.layerId, x]));
  for (const l of pool.chainOf(d.id).layers.slice(1)) {
    const o = owners.get(l);
    if (o !== undefined) return o;
  }
  return undefined;
}
