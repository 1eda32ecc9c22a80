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
  if (twice > 0) fatal(`${twice} data block(s) are mapped more than once`, 'copy the affected files out, then delete and re-create the devices that share them');
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
  if (freeMapped > 0) fatal(`${freeMapped} block(s) are both mapped and on the free list`, 'copy the affected files out and delete their devices, then run `thinfs check --repair`');
  if (freeBeyond > 0) leak(`${freeBeyond} free-list entr(ies) lie beyond the high-water mark`, 'run `thinfs check --repair` to drop them');
  const leaked: PBlock[] = [];
  for (let b = 0; b < hwm; b++) if (refs[b] === 0 && free[b] === 0) leaked.push(b as PBlock);
  if (leaked.length > 0) leak(`${leaked.length} data block(s) leaked (neither mapped nor free)`, 'run `thinfs check --repair` to return them to the free list');
  const badDevices = db.prepare('SELECT count(*) FROM devices WHERE layer_id NOT IN (SELECT id FROM layers)').pluck().get() as number;
  if (badDevices > 0) fatal(`${badDevices} device(s) point at missing layers`, 'delete those devices with `thinfs rm --force`');
  const badParents = db.prepare('SELECT count(*) FROM layers WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM layers)').pluck().get() as number;
  if (badParents > 0) fatal(`${badParents} layer(s) have a missing parent`, 'restore the pool from a backup');
  const counts = db.prepare('SELECT layer, count(*) AS n FROM mappings WHERE pblock IS NOT NULL GROUP BY layer').all() as { layer: number; n: number }[];
  const ownedByLayer = new Map(counts.map((c) => [c.layer as LayerId, c.n]));
  let badCounts = 0;
  for (const l of t.tree.layers.values()) if ((ownedByLayer.get(l.id) ?? 0) !== l.owned) badCounts++;
  if (badCounts > 0) leak(`${badCounts} layer(s) have a wrong block count`, 'run `thinfs check --repair` to recount');
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
    const wanted = orphanRows > 0 || leaked.length > 0 || freeBeyond > 0 || badCounts > 0 || shortFile;
    if (wanted) {
      t.repairTransaction(() => {
        if (shortFile) t.growDataFile(Math.max(t.dataBlocks(), hwm));
        if (orphanRows > 0) db.prepare('DELETE FROM mappings WHERE layer NOT IN (SELECT id FROM layers)').run();
        const ins = db.prepare('INSERT OR IGNORE INTO free_blocks (pblock, freed_txn) VALUES (?, ?)');
        for (const b of leaked) ins.run(b, t.transactionId());
        db.prepare('DELETE FROM free_blocks WHERE pblock >= ? OR pblock < 0').run(hwm);
        const upd = db.prepare('UPDATE layers SET owned = ? WHERE id = ?');
        for (const l of t.tree.layers.values()) upd.run(ownedByLayer.get(l.id) ?? 0, l.id);
      });
      t.punch(leaked);
      repaired = true;
    }
  }
  const nFatal = issues.filter((i) => i.severity === 'fatal').length;
  return { clean: issues.length === 0, fatal: nFatal, leaks: issues.length - nFatal, issues, repaired, blocksChecked: hwm };
}
