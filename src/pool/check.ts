/**
 * The space-map check (thin_check's job): recompute every block's references from the
 * mappings and compare them with the free list and the layer counters.
 *
 * Severities, as thin_check: a leak (a block neither mapped nor free) or a wrong counter
 * only wastes space and is repairable; a block mapped twice, or both mapped and free, or
 * a mapping past the high-water mark, means data can be overwritten or lost: fatal.
 * Inline blocks (thin.ts) are accounted too: a row holding both a pool block and inline
 * bytes is fatal (which of the two is the block is unknown), and so are bytes two rows
 * point at (a write through one would change the other; repair gives each a copy); an
 * inline block whose bytes are missing is repairable (they are lost already: repair makes
 * it a hole, which reads as zeros, as it does); bytes no row points at are a leak (repair
 * drops them); the inline byte
 * counters are recounted like the block counters; an inline block longer than the pool's
 * threshold (thinfs never writes one) is repairable: its bytes move into a pool block.
 * Every message says how to fix it, and the advice can be followed in the state the
 * finding leaves the pool in (a pool that needs a check is read-only except for repair).
 *
 * Repair (only what is safe): drop mappings of layers that do not exist, return leaked
 * blocks to the free list, drop free rows past the high-water mark and inline bytes no
 * row points at, make inline blocks whose bytes are missing holes, copy shared inline
 * bytes for each row, move oversized inline
 * rows into pool blocks (data written before the row changes, as every write; not while
 * the space map itself is damaged), recount the layers, and grow a data file that is shorter than the blocks handed out back to its size (the
 * lost tail reads as zeros: that is said in the report). Repair runs as one transaction:
 * if it fails, nothing of it is kept.
 */
import type { Db } from './metadata.js';
import type { SnapshotTree } from './snapshots.js';
import type { CheckIssue, CheckReport, LayerId, PBlock } from './types.js';

/** A mappings row's contribution to its layer's counters. */
interface RowCounts {
  pblock: number | null;
  /** length of the inline bytes (0 when they are missing; NULL for a pool block or a hiding row). */
  dlen: number | null;
}
const poolOf = (r: RowCounts | undefined) => (r !== undefined && r.pblock !== null ? 1 : 0);
const inlineOf = (r: RowCounts | undefined) => (r !== undefined && r.pblock === null && r.dlen !== null ? r.dlen : 0);

/** What the check needs of its pool. */
export interface CheckTarget {
  readonly db: Db;
  readonly tree: SnapshotTree;
  hwm(): number;
  dataBlocks(): number;
  dataFileBlocks(): number;
  blockSizeBytes: number;
  /** The pool's inline threshold (bytes; 0: inline off). */
  inlineMaxBytes: number;
  /** Hand out `n` pool blocks in the repair transaction (ENOSPC when there are none). */
  allocate(n: number): PBlock[];
  /** Write whole blocks to the data file (before the rows that map them change). */
  writeBlocks(writes: { pb: PBlock; buf: Uint8Array }[]): void;
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
  const both = db.prepare('SELECT count(*) FROM mappings WHERE pblock IS NOT NULL AND inline_id IS NOT NULL').pluck().get() as number;
  if (both > 0) {
    fatal(
      `${both} mapping row(s) hold both a pool block and inline bytes`,
      'copy the affected files out (views still mount and read, showing the pool block), then restore the pool from a backup; `check --repair` cannot tell which of the two is the block',
    );
  }
  const referenced = new Map<number, number>();
  for (const id of db.prepare('SELECT inline_id FROM mappings WHERE inline_id IS NOT NULL').pluck().iterate() as Iterable<number>) {
    referenced.set(id, (referenced.get(id) ?? 0) + 1);
  }
  const inlineRows = [...referenced.values()].reduce((n, c) => n + c, 0);
  const shared = [...referenced].filter(([, c]) => c > 1).map(([id]) => id);
  if (shared.length > 0) {
    fatal(
      `${shared.length} inline block(s) are pointed at by more than one mapping row (a write through one would change the others)`,
      'run `thinfs check --repair`: it gives each row a copy of its own (what every file reads stays the same)',
    );
  }
  const stored = new Set(db.prepare('SELECT id FROM inline_blocks').pluck().all() as number[]);
  const missingIds = [...referenced.keys()].filter((id) => !stored.has(id));
  const missing = missingIds.length;
  if (missing > 0) {
    // The bytes are gone already (lost with a damaged page); what repair can do is make the
    // pool consistent again: those blocks become holes (they read as zeros, as they do now;
    // a hiding row, so that a lower layer's older bytes do not show instead). So:
    // repairable, and the message says so.
    leak(
      `${missing} inline block(s) point at bytes that are missing: their data is lost and reads as zeros`,
      'run `thinfs check --repair` to unmap them (restore the pool from a backup to get the bytes back)',
    );
  }
  const unreferenced: number[] = [];
  for (const id of stored) if (!referenced.has(id)) unreferenced.push(id);
  if (unreferenced.length > 0) leak(`${unreferenced.length} inline block(s) are held but no mapping points at them`, 'run `thinfs check --repair` to drop them');
  const oversized = db
    .prepare('SELECT count(*) FROM mappings m JOIN inline_blocks i ON i.id = m.inline_id WHERE m.pblock IS NULL AND length(i.data) > ?')
    .pluck()
    .get(t.inlineMaxBytes) as number;
  const spaceMapSound = beyond === 0 && twice === 0 && freeMapped === 0;
  if (oversized > 0) {
    leak(
      `${oversized} inline block(s) are longer than the pool's inline threshold of ${t.inlineMaxBytes} bytes`,
      spaceMapSound
        ? 'run `thinfs check --repair` to move them into pool blocks'
        : 'restore the pool from a backup (the space map is damaged too, so `check --repair` does not move them)',
    );
  }
  const owned = ownedCounts(t);
  let badCounts = 0;
  let badInline = 0;
  for (const l of t.tree.layers.values()) {
    const o = owned.get(l.id) ?? { blocks: 0, inlineBytes: 0 };
    if (o.blocks !== l.owned) badCounts++;
    if (o.inlineBytes !== l.inlineOwned) badInline++;
  }
  if (badCounts > 0) leak(`${badCounts} layer(s) have a wrong block count`, 'run `thinfs check --repair` to recount');
  if (badInline > 0) leak(`${badInline} layer(s) have a wrong count of inline bytes`, 'run `thinfs check --repair` to recount');
  const visible = expectedMapped(t);
  let badMapped = 0;
  let badInlineMapped = 0;
  for (const l of t.tree.layers.values()) {
    const v = visible.get(l.id);
    if (v === undefined) continue;
    if (v.blocks !== l.mapped) badMapped++;
    if (v.inlineBytes !== l.inlineMapped) badInlineMapped++;
  }
  if (badMapped > 0) leak(`${badMapped} layer(s) have a wrong count of visible blocks`, 'run `thinfs check --repair` to recount');
  if (badInlineMapped > 0) leak(`${badInlineMapped} layer(s) have a wrong count of visible inline bytes`, 'run `thinfs check --repair` to recount');
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
    const move = oversized > 0 && spaceMapSound;
    const wanted =
      orphanRows > 0 ||
      leaked.length > 0 ||
      freeBeyond > 0 ||
      unreferenced.length > 0 ||
      shared.length > 0 ||
      missing > 0 ||
      badCounts > 0 ||
      badMapped > 0 ||
      badInline > 0 ||
      badInlineMapped > 0 ||
      move ||
      shortFile;
    if (wanted) {
      t.repairTransaction(() => {
        if (shortFile) t.growDataFile(Math.max(t.dataBlocks(), hwm));
        if (orphanRows > 0) db.prepare('DELETE FROM mappings WHERE layer NOT IN (SELECT id FROM layers)').run();
        const ins = db.prepare('INSERT OR IGNORE INTO free_blocks (pblock, freed_txn) VALUES (?, ?)');
        for (const b of leaked) ins.run(b, t.transactionId());
        db.prepare('DELETE FROM free_blocks WHERE pblock >= ? OR pblock < 0').run(hwm);
        const dropInline = db.prepare('DELETE FROM inline_blocks WHERE id = ?');
        for (const id of unreferenced) dropInline.run(id);
        const hole = db.prepare('UPDATE mappings SET inline_id = NULL WHERE inline_id = ?');
        for (const id of missingIds) hole.run(id);
        if (shared.length > 0) unshareInline(db, shared);
        if (move) moveOversized(t);
        // Recounted after the moves above changed what the rows hold.
        const ownedNow = ownedCounts(t);
        const visibleNow = expectedMapped(t);
        const upd = db.prepare('UPDATE layers SET owned = ?, mapped = ?, inline_owned = ?, inline_mapped = ? WHERE id = ?');
        for (const l of t.tree.layers.values()) {
          const o = ownedNow.get(l.id) ?? { blocks: 0, inlineBytes: 0 };
          const v = visibleNow.get(l.id) ?? { blocks: l.mapped, inlineBytes: l.inlineMapped };
          upd.run(o.blocks, v.blocks, o.inlineBytes, v.inlineBytes, l.id);
        }
      });
      t.punch(leaked);
      repaired = true;
    }
  }
  const nFatal = issues.filter((i) => i.severity === 'fatal').length;
  return { clean: issues.length === 0, fatal: nFatal, leaks: issues.length - nFatal, issues, repaired, blocksChecked: hwm, inlineBlocksChecked: inlineRows };
}

/**
 * Give every row that points at one of `ids` a copy of those bytes of its own. (Each row
 * is pointed at its copy; the trigger then drops the shared original, read beforehand.)
 */
function unshareInline(db: Db, ids: number[]): void {
  const bytesOf = db.prepare('SELECT data FROM inline_blocks WHERE id = ?').pluck();
  const rowsOf = db.prepare('SELECT ino, fblock, layer FROM mappings WHERE inline_id = ?');
  const insert = db.prepare('INSERT INTO inline_blocks (data) VALUES (?)');
  const point = db.prepare('UPDATE mappings SET inline_id = ? WHERE ino = ? AND fblock = ? AND layer = ?');
  for (const id of ids) {
    const data = bytesOf.get(id) as Buffer;
    for (const r of rowsOf.all(id) as { ino: number; fblock: number; layer: number }[]) {
      point.run(Number(insert.run(data).lastInsertRowid), r.ino, r.fblock, r.layer);
    }
  }
}

/** Pool blocks and inline bytes of each layer's own rows. */
function ownedCounts(t: CheckTarget): Map<LayerId, { blocks: number; inlineBytes: number }> {
  const rows = t.db
    .prepare(
      'SELECT m.layer, count(m.pblock) AS blocks, coalesce(sum(CASE WHEN m.pblock IS NULL THEN length(i.data) END), 0) AS inlineBytes FROM mappings m LEFT JOIN inline_blocks i ON i.id = m.inline_id GROUP BY m.layer',
    )
    .all() as { layer: LayerId; blocks: number; inlineBytes: number }[];
  return new Map(rows.map((r) => [r.layer, { blocks: r.blocks, inlineBytes: r.inlineBytes }]));
}

/**
 * Move the inline rows longer than the threshold into pool blocks: allocate, write the
 * bytes (the first block's worth; what lies past a block cannot belong to it), then point
 * the rows at the blocks. Precondition: inside the repair transaction, the space map sound.
 */
function moveOversized(t: CheckTarget): void {
  const rows = t.db
    .prepare('SELECT m.ino, m.fblock, m.layer, i.data FROM mappings m JOIN inline_blocks i ON i.id = m.inline_id WHERE m.pblock IS NULL AND length(i.data) > ?')
    .all(t.inlineMaxBytes) as {
    ino: number;
    fblock: number;
    layer: number;
    data: Buffer;
  }[];
  const bs = t.blockSizeBytes;
  const blocks = t.allocate(rows.length);
  t.writeBlocks(
    rows.map((r, i) => {
      const buf = Buffer.alloc(bs);
      r.data.copy(buf, 0, 0, Math.min(bs, r.data.byteLength));
      return { pb: blocks[i]!, buf };
    }),
  );
  // (The trigger drops the inline bytes of each row pointed at its block, metadata.ts.)
  const point = t.db.prepare('UPDATE mappings SET pblock = ?, inline_id = NULL WHERE ino = ? AND fblock = ? AND layer = ?');
  rows.forEach((r, i) => point.run(blocks[i]!, r.ino, r.fblock, r.layer));
}

/**
 * The pool blocks and inline bytes visible through each layer's chain, recomputed from
 * the mappings: a layer sees its parent's, changed by each of its own rows by what that
 * row holds minus what the nearest row below it held (a hiding row holds nothing).
 * Layers whose ancestry is broken are left out (that is reported as fatal elsewhere).
 */
function expectedMapped(t: CheckTarget): Map<LayerId, { blocks: number; inlineBytes: number }> {
  const layers = [...t.tree.layers.values()].sort((a, b) => a.depth - b.depth);
  const rowsOf = t.db.prepare(
    'SELECT m.ino, m.fblock, m.pblock, CASE WHEN m.inline_id IS NULL THEN NULL ELSE coalesce(length(i.data), 0) END AS dlen FROM mappings m LEFT JOIN inline_blocks i ON i.id = m.inline_id WHERE m.layer = ?',
  );
  const rowsAt = t.db.prepare(
    'SELECT m.layer, m.pblock, CASE WHEN m.inline_id IS NULL THEN NULL ELSE coalesce(length(i.data), 0) END AS dlen FROM mappings m LEFT JOIN inline_blocks i ON i.id = m.inline_id WHERE m.ino = ? AND m.fblock = ?',
  );
  const out = new Map<LayerId, { blocks: number; inlineBytes: number }>();
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
    const base = l.parentId === null ? { blocks: 0, inlineBytes: 0 } : out.get(l.parentId);
    if (!ok || base === undefined) continue;
    let n = base.blocks;
    let m = base.inlineBytes;
    for (const r of rowsOf.iterate(l.id) as Iterable<RowCounts & { ino: number; fblock: number }>) {
      let nearest = Number.MAX_SAFE_INTEGER;
      let under: RowCounts | undefined;
      for (const o of rowsAt.iterate(r.ino, r.fblock) as Iterable<RowCounts & { layer: LayerId }>) {
        const pos = below.get(o.layer);
        if (pos !== undefined && pos < nearest) {
          nearest = pos;
          under = o;
        }
      }
      n += poolOf(r) - poolOf(under);
      m += inlineOf(r) - inlineOf(under);
    }
    out.set(l.id, { blocks: n, inlineBytes: m });
  }
  return out;
}
