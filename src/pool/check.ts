/**
 * The space-map check (thin_check's job): recompute every block's references from the
 * mappings and compare them with the free list and the layer counters.
 *
 * Severities, as thin_check: a leak (a block neither mapped nor free) or a wrong counter
 * only wastes space and is repairable; a block mapped twice, or both mapped and free, or
 * a mapping past the high-water mark, means data can be overwritten or lost: fatal.
 * Every message says how to fix it, and the advice can be followed in the state the
 * finding leaves the pool in (a pool that needs a check is read-only except for repair).
 *
 * Repair (only what is safe): drop mappings of layers that do not exist, return leaked
 * blocks to the free list, drop free rows past the high-water mark, recount the layers,
 * and grow a data file that is shorter than the blocks handed out back to its size (the
 * lost tail reads as zeros: that is said in the report). Repair runs as one transaction:
 * if it fails, nothing of it is kept.
 */
import type { Db } from './metadata.js';
import type { SnapshotTree } from './snapshots.js';
import type { CheckIssue, CheckReport, LayerId, PBlock } from './types.js';

/** What the check needs of its pool. */
export interface CheckTarget {
  readonly db: Db;
  readonly tree: SnapshotTree;
  hwm(): number;
  dataBlocks(): number;
  dataFileBlocks(): number;
  /** Run the repair writes as one transaction, committed (or nothing on failure). */
  repairTransaction(fn: () => void): void;
  /** Give leaked blocks' bytes back to the host (after the repair committed). */
  punch(blocks: PBlock[]): void;
  /** Grow the data file to `blocks`. */
  growDataFile(blocks: number): void;
  transactionId(): number;
}

export function checkSpaceMap(t: CheckTarget, repair: boolean): CheckReport {
  const db = t.db;
  const hwm = t.hwm();
  const issues: CheckIssue[] = [];
  const refs = new Uint8Array(hwm);
  const fatal = (message: string, fix: string) => issues.push({ severity: 'fatal', message, fix });
  const leak = (message: string, fix: string) => issues.push({ severity: 'leak', message, fix });
  let beyond = 0;
  let twice = 0;
  let orphanRows = 0;
  const layerIds = new Set(db.prepare('SELECT id FROM layers').pluck().all() as number[]);
  for (const row of db.prepare('SELECT layer, pblock FROM mappings WHERE pblock IS NOT NULL').iterate() as Iterable<{ layer: number; pblock: number }>) {
    if (!layerIds.has(row.layer)) orphanRows++;
    if (row.pblock < 0 || row.pblock >= hwm) {
      beyond++;
      continue;
    }
    if (refs[row.pblock]! >= 1) twice++;
    if (refs[row.pblock]! < 255) refs[row.pblock]! += 1;
  }
  if (beyond > 0) fatal(`${beyond} mapping(s) point beyond the allocated data blocks`, 'restore the pool from a backup; thinfs cannot recover this data');
  if (twice > 0) fatal(`${twice} data block(s) are mapped more than once`, 'copy the affected files out (views still mount and read while the pool needs a check), then restore the pool from a backup; `check --repair` cannot decide which file owns a shared block');
  if (orphanRows > 0) leak(`${orphanRows} mapping(s) belong to layers that do not exist`, 'run `thinfs check --repair` to drop them');
  let freeMapped = 0;
  let freeBeyond = 0;
  const free = new Uint8Array(hwm);
  for (const pb of db.prepare('SELECT pblock FROM free_blocks').pluck().iterate() as Iterable<number>) {
    if (pb < 0 || pb >= hwm) {
      freeBeyond++;
      continue;
    }
    free[pb] = 1;
    if (refs[pb]! > 0) freeMapped++;
  }
  if (freeMapped > 0) fatal(`${freeMapped} block(s) are both mapped and on the free list`, 'copy the affected files out (views still mount and read while the pool needs a check), then restore the pool from a backup; `check --repair` cannot tell whether the block is still in use');
  if (freeBeyond > 0) leak(`${freeBeyond} free-list entr(ies) lie beyond the high-water mark`, 'run `thinfs check --repair` to drop them');
  const leaked: PBlock[] = [];
  for (let b = 0; b < hwm; b++) if (refs[b] === 0 && free[b] === 0) leaked.push(b as PBlock);
  if (leaked.length > 0) leak(`${leaked.length} data block(s) leaked (neither mapped nor free)`, 'run `thinfs check --repair` to return them to the free list');
  const badDevices = db.prepare('SELECT count(*) FROM devices WHERE layer_id NOT IN (SELECT id FROM layers)').pluck().get() as number;
  if (badDevices > 0) fatal(`${badDevices} device(s) point at missing layers`, 'restore the pool from a backup; the devices\' data cannot be found without their layers');
  const badParents = db.prepare('SELECT count(*) FROM layers WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM layers)').pluck().get() as number;
  if (badParents > 0) fatal(`${badParents} layer(s) have a missing parent`, 'restore the pool from a backup');
  const counts = db.prepare('SELECT layer, count(*) AS n FROM mappings WHERE pblock IS NOT NULL GROUP BY layer').all() as { layer: number; n: number }[];
  const ownedByLayer = new Map(counts.map((c) => [c.layer as LayerId, c.n]));
  let badCounts = 0;
  for (const l of t.tree.layers.values()) if ((ownedByLayer.get(l.id) ?? 0) !== l.owned) badCounts++;
  if (badCounts > 0) leak(`${badCounts} layer(s) have a wrong block count`, 'run `thinfs check --repair` to recount');
  const mappedByLayer = expectedMapped(t);
  let badMapped = 0;
  for (const l of t.tree.layers.values()) if ((mappedByLayer.get(l.id) ?? l.mapped) !== l.mapped) badMapped++;
  if (badMapped > 0) leak(`${badMapped} layer(s) have a wrong count of visible blocks`, 'run `thinfs check --repair` to recount');
  const fileBlocks = t.dataFileBlocks();
  const shortFile = fileBlocks < hwm;
  if (shortFile) {
    // Repairable in the sense that the pool becomes usable again; the bytes are gone.
    fatal(
      `the data file holds ${fileBlocks} blocks but ${hwm} are handed out: the data of blocks ${fileBlocks}..${hwm - 1} is lost`,
      'restore pool/data from a backup, or run `thinfs check --repair` to grow it back to its size (the lost blocks then read as zeros)',
    );
  }

  let repaired = false;
  if (repair) {
    const wanted = orphanRows > 0 || leaked.length > 0 || freeBeyond > 0 || badCounts > 0 || badMapped > 0 || shortFile;
    if (wanted) {
      t.repairTransaction(() => {
        if (shortFile) t.growDataFile(Math.max(t.dataBlocks(), hwm));
        if (orphanRows > 0) db.prepare('DELETE FROM mappings WHERE layer NOT IN (SELECT id FROM layers)').run();
        const ins = db.prepare('INSERT OR IGNORE INTO free_blocks (pblock, freed_txn) VALUES (?, ?)');
        for (const b of leaked) ins.run(b, t.transactionId());
        db.prepare('DELETE FROM free_blocks WHERE pblock >= ? OR pblock < 0').run(hwm);
        const upd = db.prepare('UPDATE layers SET owned = ?, mapped = ? WHERE id = ?');
        for (const l of t.tree.layers.values()) upd.run(ownedByLayer.get(l.id) ?? 0, mappedByLayer.get(l.id) ?? l.mapped, l.id);
      });
      t.punch(leaked);
      repaired = true;
    }
  }
  const nFatal = issues.filter((i) => i.severity === 'fatal').length;
  return { clean: issues.length === 0, fatal: nFatal, leaks: issues.length - nFatal, issues, repaired, blocksChecked: hwm };
}

/**
 * The number of blocks visible through each layer's chain, recomputed from the mappings:
 * a layer sees its parent's blocks, plus each of its own rows that maps a block where
 * nothing below is visible, minus each hiding row over a visible block. Layers whose
 * ancestry is broken are left out (that is reported as fatal elsewhere).
 */
function expectedMapped(t: CheckTarget): Map<LayerId, number> {
  const layers = [...t.tree.layers.values()].sort((a, b) => a.depth - b.depth);
  const rowsOf = t.db.prepare('SELECT ino, fblock, pblock FROM mappings WHERE layer = ?');
  const rowsAt = t.db.prepare('SELECT layer, pblock FROM mappings WHERE ino = ? AND fblock = ?');
  const out = new Map<LayerId, number>();
  for (const l of layers) {
    const below = new Map<LayerId, number>();
    let ok = true;
    for (let p = l.parentId, i = 0; p !== null; i++) {
      const pl = t.tree.layers.get(p);
      if (pl === undefined) {
        ok = false;
        break;
      }
      below.set(p, i);
      p = pl.parentId;
    }
    const base = l.parentId === null ? 0 : out.get(l.parentId);
    if (!ok || base === undefined) continue;
    let n = base;
    for (const r of rowsOf.iterate(l.id) as Iterable<{ ino: number; fblock: number; pblock: number | null }>) {
      let nearest = Number.MAX_SAFE_INTEGER;
      let visibleBelow = false;
      for (const o of rowsAt.iterate(r.ino, r.fblock) as Iterable<{ layer: LayerId; pblock: number | null }>) {
        const pos = below.get(o.layer);
        if (pos !== undefined && pos < nearest) {
          nearest = pos;
          visibleBelow = o.pblock !== null;
        }
      }
      if (r.pblock !== null && !visibleBelow) n++;
      else if (r.pblock === null && visibleBelow) n--;
    }
    out.set(l.id, n);
  }
  return out;
}
