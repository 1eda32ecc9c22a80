/**
 * The namespace check and its repair: e2fsck's passes over thinfs's per-layer rows.
 *
 * Views. Rows belong to pool layers; a device sees the rows of its chain, nearest layer
 * first. The check looks at the view of EVERY layer that holds rows (the layer on top,
 * its ancestors below): that is each device's view, and also the view of a frozen layer
 * no device has on top any more (an origin's old layer, shared by its snapshots). A view
 * only answers for what its own top layer holds, and repairs only by writing into it, as
 * the filesystem itself does (a name shown from below is hidden by a whiteout in the top
 * layer). Views are taken lowest first, so a repair in an image is in place before its
 * containers are looked at, and a finding in a shared row is reported once.
 *
 * What is checked, and how bad it is (thin_check's rule: what loses or misleads data is
 * fatal — the pool becomes read-only until `check --repair` — and what only wastes space
 * or rows is a repairable leak):
 *  - the root directory exists and is a directory                          fatal
 *  - every entry points at an inode the view has (else ls gives EIO)        fatal
 *    (when the inode is lost but its directory entries or its blocks are left, the
 *    repair makes it again: nothing that can still be read is thrown away)
 *  - an entry's file type is its inode's                                    fatal
 *  - a directory has one name (two names, or a loop: rename and rmdir break) fatal
 *  - a file's nlink is not below its number of names (an unlink would free
 *    data that another name still shows)                                    fatal
 *  - other wrong link counts (a file never freed, a directory's 2 + subdirs) leak
 *  - unlinked inodes (nlink 0) that no open handle holds: freed              leak
 *  - inodes with links that no path reaches: linked into /lost+found/#INO    leak
 *  - entries in directories the view does not show                         leak
 *  - file keys whose blocks no inode uses: made files in /lost+found        leak
 *  - namespace rows of layers that no longer exist                          leak
 *  - fs_super.next_ino above every inode and key number in use (else the next
 *    new file would share a number with an old one)                         fatal
 *  - whiteouts with nothing below to hide                                   info (harmless)
 *
 * Inside a running daemon the devices being served are not repaired (their kernel caches
 * would go stale), and their unlinked inodes may be held open: those are only reported.
 *
 * Names are read and written back as SQLite gives them (TEXT or BLOB), so the check is
 * byte-exact whichever way the name columns are declared.
 *
 * This file is the check's entry (checkNamespace: the order of views, the transaction) and
 * the pool-wide rows; the rest is split by concern, each file private to src/fs:
 *   check-rows.ts      the tables as loaded, and one layer's view of them
 *   check-walk.ts      the analysis of one view: the walk from /, link counts -> a Plan
 *   check-lostfound.ts what no path reaches: planned into /lost+found, and linked there
 *   check-report.ts    a Plan in words: issues with severity and fix
 *   check-repair.ts    a Plan written into the view's top layer
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { DevId, LayerId, SchemaEntry } from '../pool/index.js';
import { keysByLayer, Pool } from '../pool/index.js';
import { repairView } from './check-repair.js';
import { describePlan } from './check-report.js';
import { Namespace, View } from './check-rows.js';
import { analyze, needsRepair } from './check-walk.js';
import { deviceSlot, fsSuper } from './schema.js';

/** One finding of the namespace check. */
export interface NamespaceIssue {
  severity: 'fatal' | 'leak' | 'info';
  message: string;
  /** How to fix it, one sentence that can be followed in the state the finding leaves the pool in. */
  fix: string;
}

/** What checkNamespace found and, with `repair`, changed. */
export interface NamespaceReport {
  /** False when the pool has no filesystem tables yet (nothing to check). */
  checked: boolean;
  /** Layer views looked at (one per device that has rows, and per shared frozen layer). */
  views: number;
  inodes: number;
  entries: number;
  issues: NamespaceIssue[];
  /** What --repair changed, one line each. */
  repaired: string[];
}

/** How checkNamespace runs. */
export interface NamespaceCheckOptions {
  /** Fix what is found, in one write transaction of the pool. */
  repair?: boolean;
  /**
   * Devices a running daemon serves right now: the layers of their chains are not
   * repaired, and their unlinked inodes may be held open (reported, not freed).
   */
  mounted?: DevId[];
  /** Other Filesystems of the pool may be open (a daemon): make them drop caches of repaired devices. */
  live?: boolean;
}

/**
 * Check (and with `repair`, fix) the namespace of every layer of `pool`. When it throws,
 * the repair's write transaction has been aborted: nothing it wrote stays, and the pool
 * is as before the call.
 */
export function checkNamespace(pool: Pool, opts: NamespaceCheckOptions = {}): NamespaceReport {
  const db = pool.metadataDb();
  const report: NamespaceReport = { checked: false, views: 0, inodes: 0, entries: 0, issues: [], repaired: [] };
  const tables = new Set(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'fs_%'").pluck().all() as string[]);
  if (!tables.has('fs_inodes') || !tables.has('fs_dirents')) return report;
  report.checked = true;
  const repair = opts.repair ?? false;
  const busy = busyLayers(pool, opts.mounted ?? []);
  const labels = layerLabels(pool);

  // The write transaction opens with the first repair: a clean namespace is not written at all.
  let writing = false;
  const write = () => {
    if (!repair) throw new Error('checkNamespace: write without repair');
    if (!writing) pool.beginWrite();
    writing = true;
  };
  try {
    checkGlobal(pool, tables, report, repair ? write : undefined);
    const ns = new Namespace(pool);
    const keys = keysByLayer(pool);
    const reported = new Set<string>();
    const order = [...ns.layers.keys()].filter((l) => ns.parents.has(l)).sort((a, b) => (ns.depth.get(a)! - ns.depth.get(b)!) || a - b);
    const changed: LayerId[] = [];
    for (const layer of order) {
      if (ns.rows(layer).empty) continue;
      const view = new View(ns, layer);
      const plan = analyze(view, ns, keys, labels.get(layer) ?? `layer ${layer}`);
      report.views++;
      report.inodes += plan.inodes;
      report.entries += ns.rows(layer).entries;
      const isBusy = busy.layers.has(layer);
      describePlan(plan, report, reported, isBusy, busy.byLayer.get(layer));
      if (repair && !isBusy && needsRepair(plan)) {
        write();
        const done = repairView(pool, ns, plan);
        report.repaired.push(...done.map((d) => `${plan.label}: ${d}`));
        ns.reload(layer);
        changed.push(layer);
      }
    }
    if (writing) pool.commit();
    if (changed.length > 0 && opts.live === true) dropFsCaches(pool, changed);
  } catch (err) {
    if (writing) pool.abort();
    throw err;
  }
  return report;
}

// ---------------------------------------------------------------- pool-wide rows

/** Rows of deleted layers, and the inode counter. */
function checkGlobal(pool: Pool, tables: Set<string>, report: NamespaceReport, write: (() => void) | undefined): void {
  const repair = write !== undefined;
  const db = pool.metadataDb();
  let stray = 0;
  for (const t of ['fs_inodes', 'fs_dirents', 'fs_xattrs']) {
    if (!tables.has(t)) continue;
    const n = db.prepare(`SELECT count(*) FROM ${t} WHERE layer NOT IN (SELECT id FROM layers)`).pluck().get() as number;
    stray += n;
    if (n > 0 && write !== undefined) {
      write();
      db.prepare(`DELETE FROM ${t} WHERE layer NOT IN (SELECT id FROM layers)`).run();
    }
  }
  if (stray > 0) {
    report.issues.push({ severity: 'leak', message: `${stray} namespace row(s) belong to layers that no longer exist`, fix: 'run `thinfs check --repair` to delete them' });
    if (repair) report.repaired.push(`deleted ${stray} namespace row(s) of layers that no longer exist`);
  }
  if (!tables.has('fs_super')) return;
  const maxUsed = Math.max(
    0,
    (db.prepare('SELECT max(max(ino), max(data_key)) FROM fs_inodes').pluck().get() as number | null) ?? 0,
    (db.prepare('SELECT max(ino) FROM mappings WHERE layer IN (SELECT layer FROM fs_inodes)').pluck().get() as number | null) ?? 0,
  );
  const next = db.prepare('SELECT next_ino FROM fs_super WHERE id = 1').pluck().get() as number | undefined;
  if (next === undefined || next <= maxUsed) {
    report.issues.push({
      severity: 'fatal',
      message:
        next === undefined
          ? 'the inode counter (fs_super) is missing: new files would get numbers already in use'
          : `the inode counter (fs_super.next_ino = ${next}) is not above the largest inode or key number in use (${maxUsed}): the next new file would share a number with an existing one`,
      fix: 'run `thinfs check --repair` to raise the counter above every number in use',
    });
    if (write !== undefined) {
      write();
      db.prepare('INSERT INTO fs_super (id, next_ino) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET next_ino = excluded.next_ino').run(maxUsed + 1);
      report.repaired.push(`raised the inode counter to ${maxUsed + 1}`);
    }
  }
}

// ---------------------------------------------------------------- devices

/** Labels of layers for messages: the device on top, else the devices that share it. */
function layerLabels(pool: Pool): Map<LayerId, string> {
  const out = new Map<LayerId, string>();
  const sharers = new Map<LayerId, string[]>();
  for (const d of pool.listDevices()) {
    out.set(d.layerId, `${d.kind} ${d.name}`);
    for (const l of pool.chainOf(d.id).layers) {
      if (l === d.layerId) continue;
      const s = sharers.get(l) ?? [];
      s.push(d.name);
      sharers.set(l, s);
    }
  }
  for (const [l, names] of sharers) if (!out.has(l)) out.set(l, `layer ${l} (shared by ${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''})`);
  return out;
}

/** The layers of mounted devices' chains, and which mounted devices each one serves. */
function busyLayers(pool: Pool, mounted: DevId[]): { layers: Set<LayerId>; byLayer: Map<LayerId, string[]> } {
  const layers = new Set<LayerId>();
  const byLayer = new Map<LayerId, string[]>();
  for (const id of mounted) {
    const d = pool.getDevice(id);
    if (d === undefined) continue;
    for (const l of pool.chainOf(id).layers) {
      layers.add(l);
      const s = byLayer.get(l) ?? [];
      s.push(d.name);
      byLayer.set(l, s);
    }
  }
  return { layers, byLayer };
}

/** Filesystems open on devices whose chain holds a repaired layer drop their caches (per-device generation). */
function dropFsCaches(pool: Pool, layers: LayerId[]): void {
  const sup = fsSuper(pool);
  const set = new Set(layers);
  for (const d of pool.listDevices()) {
    if (pool.chainOf(d.id).layers.some((l) => set.has(l))) deviceSlot(sup, d.id).gen++;
  }
}

/**
 * The schema this thinfs writes (pool and filesystem tables, indexes), for rebuilding a
 * metadata file whose own schema rows are damaged: read from a scratch pool made for it.
 */
export function currentSchema(): SchemaEntry[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-schema-'));
  try {
    const pool = Pool.create(dir, { blockSizeBytes: 4096, dataSizeBytes: 4096, baseSizeBytes: 4096 });
    try {
      fsSuper(pool);
      return pool
        .metadataDb()
        .prepare("SELECT type, name, tbl_name AS tblName, 0 AS rootpage, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'")
        .all() as SchemaEntry[];
    } finally {
      pool.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
