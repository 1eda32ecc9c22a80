/**
 * What the namespace repair (fs/check.ts) may read and change of the pool's own tables:
 * the layer tree (views of layers no device has on top) and the file keys of each layer
 * (to free the blocks of files that are gone).
 */
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

/** Blocks a file of `key` spans through `layers` (last mapped file block + 1), for an inode made again from its blocks. */
export function keyExtentBlocks(pool: Pool, key: number, layers: LayerId[]): number {
  if (layers.length === 0) return 0;
  const last = pool
    .metadataDb()
    .prepare(`SELECT max(fblock) FROM mappings WHERE ino = ? AND pblock IS NOT NULL AND layer IN (${layers.map(() => '?').join(', ')})`)
    .pluck()
    .get(key, ...layers) as number | null;
  return last === null ? 0 : last + 1;
}
