/**
 * What the repairs above the space map may read and change of the pool's own tables: the
 * layer tree (views of layers no device has on top) and the file keys of each layer (for
 * the namespace repair, fs/check.ts), and a copy of leaked blocks' bytes before the
 * space-map repair punches them (check --repair after a rebuild).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Pool } from './pool.js';
import type { LayerId } from './types.js';

/** Every layer with its parent, for views of layers that no device has on top. */
export function layerParents(pool: Pool): { id: LayerId; parentId: LayerId | null; depth: number }[] {
  return pool
    .metadataDb()
    .prepare('SELECT id, parent_id AS parentId, depth FROM layers ORDER BY depth, id')
    .all() as { id: LayerId; parentId: LayerId | null; depth: number }[];
}

/** The file keys that hold rows in each layer's mappings (blocks or hiding rows). */
export function keysByLayer(pool: Pool): Map<LayerId, Set<number>> {
  const out = new Map<LayerId, Set<number>>();
  for (const r of pool.metadataDb().prepare('SELECT DISTINCT layer, ino FROM mappings').iterate() as Iterable<{ layer: LayerId; ino: number }>) {
    let s = out.get(r.layer);
    if (s === undefined) out.set(r.layer, (s = new Set()));
    s.add(r.ino);
  }
  return out;
}

/**
 * Drop the mapping rows of `key` in `layer` (a file that is gone there, freed by the
 * namespace repair). Its blocks then belong to nobody: the space-map repair that must
 * follow (pool.check({ repair: true })) returns them to the free list and recounts.
 * Precondition: inside the pool's write transaction (pool.beginWrite).
 */
export function dropKeyRows(pool: Pool, layer: LayerId, key: number): number {
  return pool.metadataDb().prepare('DELETE FROM mappings WHERE layer = ? AND ino = ?').run(layer, key).changes;
}

/** Blocks a file of `key` spans through `layers` (last pool or inline block + 1), for an inode made again from its blocks. */
export function keyExtentBlocks(pool: Pool, key: number, layers: LayerId[]): number {
  if (layers.length === 0) return 0;
  const last = pool
    .metadataDb()
    .prepare(`SELECT max(fblock) FROM mappings WHERE ino = ? AND (pblock IS NOT NULL OR inline_id IS NOT NULL) AND layer IN (${layers.map(() => '?').join(', ')})`)
    .pluck()
    .get(key, ...layers) as number | null;
  return last === null ? 0 : last + 1;
}

/**
 * Copy the bytes of the blocks that are neither mapped nor free (a leak, which the
 * space-map repair punches out of the data file) to `file`, block after block, with
 * `file`.index listing their pool block numbers; blocks that read as zeros are left out.
 * After a rebuild that lost mapping rows these hold file data nobody can name any more:
 * this is their backup. Returns how many blocks were kept (no files when none).
 */
export function saveLeakedBlocks(pool: Pool, file: string): number {
  const db = pool.metadataDb();
  const hwm = db.prepare('SELECT hwm FROM superblock WHERE id = 1').pluck().get() as number;
  const used = new Uint8Array(hwm);
  for (const pb of db.prepare('SELECT pblock FROM mappings WHERE pblock IS NOT NULL').pluck().iterate() as Iterable<number>) if (pb >= 0 && pb < hwm) used[pb] = 1;
  for (const pb of db.prepare('SELECT pblock FROM free_blocks').pluck().iterate() as Iterable<number>) if (pb >= 0 && pb < hwm) used[pb] = 1;
  const bs = pool.blockSizeBytes;
  const buf = Buffer.alloc(bs);
  const src = fs.openSync(pool.dataFile, 'r');
  let out = -1;
  const index: number[] = [];
  try {
    for (let pb = 0; pb < hwm; pb++) {
      if (used[pb] === 1) continue;
      const n = fs.readSync(src, buf, 0, bs, pb * bs);
      if (n === 0 || buf.subarray(0, n).every((b) => b === 0)) continue;
      if (out < 0) out = fs.openSync(file, 'wx', 0o600);
      fs.writeSync(out, buf, 0, bs, index.length * bs);
      index.push(pb);
    }
    if (out >= 0) {
      fs.fsyncSync(out);
      fs.writeFileSync(`${file}.index`, `# pool block of each ${bs}-byte block of ${path.basename(file)}, in order\n${index.join('\n')}\n`, { mode: 0o600 });
    }
  } finally {
    fs.closeSync(src);
    if (out >= 0) fs.closeSync(out);
  }
  return index.length;
}
