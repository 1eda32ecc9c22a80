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
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { logger } from '../log.js';
import type { DevId, LayerId, SchemaEntry } from '../pool/index.js';
import { dropKeyRows, keyExtentBlocks, keysByLayer, layerParents, Pool } from '../pool/index.js';
import { S_IFDIR, S_IFMT, S_IFREG, isDir, nowNs } from './mode.js';
import { deviceSlot, fsSuper } from './schema.js';

const log = logger('fs');

const ROOT = 1;
const LOST_FOUND = 'lost+found';
const MAX_EXAMPLES = 3;

/** One finding of the namespace check. */
export interface NamespaceIssue {
  severity: 'fatal' | 'leak' | 'info';
  message: string;
  /** How to fix it, one sentence that can be followed in the state the finding leaves the pool in. */
  fix: string;
}

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

export interface NamespaceCheckOptions {
  repair?: boolean;
  /**
   * Devices a running daemon serves right now: the layers of their chains are not
   * repaired, and their unlinked inodes may be held open (reported, not freed).
   */
  mounted?: DevId[];
  /** Other Filesystems of the pool may be open (a daemon): make them drop caches of repaired devices. */
  live?: boolean;
}

type Name = string | Buffer;

interface InodeRow {
  ino: number;
  mode: number;
  nlink: number;
  dataKey: number;
}

interface DirentRow {
  parent: number;
  /** The name as stored (TEXT or BLOB), bound back unchanged. */
  name: Name;
  key: string;
  layer: LayerId;
  child: number | null;
  type: number;
}

/** The rows of one layer. */
class LayerRows {
  readonly inodes = new Map<number, InodeRow>();
  /** parent -> name key -> row */
  readonly dirs = new Map<number, Map<string, DirentRow>>();
  entries = 0;

  get empty(): boolean {
    return this.inodes.size === 0 && this.dirs.size === 0;
  }
}

function nameKey(n: Name): string {
  return typeof n === 'string' ? `t${n}` : `b${n.toString('latin1')}`;
}

/** A name for a person to read: UTF-8 where valid, \xNN for other bytes. */
function display(n: Name): string {
  if (typeof n === 'string') return n;
  const s = n.toString('utf8');
  if (Buffer.from(s, 'utf8').equals(n)) return s;
  return [...n].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}

/** The namespace tables of one pool, loaded for the check. */
class Namespace {
  readonly layers = new Map<LayerId, LayerRows>();
  readonly parents = new Map<LayerId, LayerId | null>();
  readonly depth = new Map<LayerId, number>();
  /** Every data key some inode row uses, in any layer. */
  readonly dataKeys = new Set<number>();
  readonly blobNames: boolean;
  private readonly db;

  constructor(private readonly pool: Pool) {
    this.db = pool.metadataDb();
    for (const l of layerParents(pool)) {
      this.parents.set(l.id, l.parentId);
      this.depth.set(l.id, l.depth);
    }
    const nameType = (this.db.prepare("SELECT type FROM pragma_table_info('fs_dirents') WHERE name = 'name'").pluck().get() as string | undefined) ?? '';
    this.blobNames = nameType.toUpperCase() === 'BLOB';
    this.loadAll();
  }

  loadAll(): void {
    this.layers.clear();
    this.dataKeys.clear();
    for (const r of this.db.prepare('SELECT ino, layer, mode, nlink, data_key AS dataKey FROM fs_inodes').iterate() as Iterable<InodeRow & { layer: LayerId }>) {
      this.rows(r.layer).inodes.set(r.ino, { ino: r.ino, mode: r.mode, nlink: r.nlink, dataKey: r.dataKey });
      this.dataKeys.add(r.dataKey);
    }
    for (const r of this.db.prepare('SELECT parent, name, layer, child, type FROM fs_dirents').iterate() as Iterable<Omit<DirentRow, 'key'>>) {
      this.addDirent(r);
    }
  }

  /** Read one layer's rows again (after repairing it). */
  reload(layer: LayerId): void {
    const rows = new LayerRows();
    this.layers.set(layer, rows);
    for (const r of this.db.prepare('SELECT ino, mode, nlink, data_key AS dataKey FROM fs_inodes WHERE layer = ?').iterate(layer) as Iterable<InodeRow>) {
      rows.inodes.set(r.ino, r);
      this.dataKeys.add(r.dataKey);
    }
    for (const r of this.db.prepare('SELECT parent, name, layer, child, type FROM fs_dirents WHERE layer = ?').iterate(layer) as Iterable<Omit<DirentRow, 'key'>>) {
      this.addDirent(r);
    }
  }

  rows(layer: LayerId): LayerRows {
    let r = this.layers.get(layer);
    if (r === undefined) this.layers.set(layer, (r = new LayerRows()));
    return r;
  }

  /** Layer `top` and its ancestors, top first. */
  chain(top: LayerId): LayerId[] {
    const out: LayerId[] = [];
    for (let l: LayerId | null | undefined = top; l !== null && l !== undefined && !out.includes(l); l = this.parents.get(l)) out.push(l);
    return out;
  }

  /** A name to store, in the column's storage class. */
  name(text: string): Name {
    return this.blobNames ? Buffer.from(text, 'latin1') : text;
  }

  private addDirent(r: Omit<DirentRow, 'key'>): void {
    const rows = this.rows(r.layer);
    let dir = rows.dirs.get(r.parent);
    if (dir === undefined) rows.dirs.set(r.parent, (dir = new Map()));
    const key = nameKey(r.name);
    dir.set(key, { ...r, key });
    rows.entries++;
  }
}

/** What one layer's chain shows: nearest layer wins. */
class View {
  readonly chain: LayerId[];
  private readonly rows: LayerRows[];

  constructor(ns: Namespace, readonly top: LayerId) {
    this.chain = ns.chain(top);
    this.rows = this.chain.map((l) => ns.rows(l));
  }

  get topRows(): LayerRows {
    return this.rows[0]!;
  }

  /** True when a layer below the top holds any row. */
  get lowerHasRows(): boolean {
    return this.rows.slice(1).some((r) => !r.empty);
  }

  inode(ino: number): { row: InodeRow; layer: LayerId } | undefined {
    for (let i = 0; i < this.rows.length; i++) {
      const r = this.rows[i]!.inodes.get(ino);
      if (r !== undefined) return { row: r, layer: this.chain[i]! };
    }
    return undefined;
  }

  /** The nearest row of (parent, key) at chain position >= fromPos (whiteouts included). */
  entry(parent: number, key: string, fromPos = 0): DirentRow | undefined {
    for (let i = fromPos; i < this.rows.length; i++) {
      const r = this.rows[i]!.dirs.get(parent)?.get(key);
      if (r !== undefined) return r;
    }
    return undefined;
  }

  /** Every name of directory `parent` with its nearest row (whiteouts included). */
  list(parent: number): Map<string, DirentRow> {
    const out = new Map<string, DirentRow>();
    for (const r of this.rows) {
      const dir = r.dirs.get(parent);
      if (dir === undefined) continue;
      for (const [k, row] of dir) if (!out.has(k)) out.set(k, row);
    }
    return out;
  }
}

/** What the analysis of one view found, and what repairing it would do. */
interface Plan {
  view: View;
  label: string;
  rootMissing: boolean;
  rootNotDir: boolean;
  /** The root's link count once repaired (2 + its subdirectories). */
  rootNlink: number;
  dangling: DirentRow[];
  /**
   * Entries whose inode is lost but whose contents are still there (a directory's entries,
   * a file's blocks): the repair makes the inode again. `nlink` once made.
   */
  revive: { row: DirentRow; dir: boolean; nlink: number }[];
  wrongType: { row: DirentRow; type: number }[];
  extraDirNames: DirentRow[];
  /** Link counts to set; `reported` is false where only the repair itself changes the count (a new /lost+found). */
  nlink: { ino: number; layer: LayerId; have: number; want: number; isDir: boolean; reported: boolean }[];
  orphans: InodeRow[];
  unreachable: InodeRow[];
  /** The existing /lost+found, or undefined (one is made when something must go there). */
  lostFound: number | undefined;
  stale: DirentRow[];
  emptyWhiteouts: DirentRow[];
  /** File keys of the top layer whose blocks no inode uses: made files again, in /lost+found. */
  lostKeys: number[];
  /** Paths of reached directories, for messages. */
  path: (dir: number) => string;
  inodes: number;
}

/** Check (and with `repair`, fix) the namespace of every layer of `pool`. */
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
      describe(plan, report, reported, isBusy, busy.byLayer.get(layer));
      if (repair && !isBusy && needsRepair(plan)) {
        write();
        const done = apply(pool, ns, plan);
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

// ---------------------------------------------------------------- one view

function analyze(view: View, ns: Namespace, keys: Map<LayerId, Set<number>>, label: string): Plan {
  const keyInView = (k: number) => view.chain.some((l) => keys.get(l)?.has(k) === true);
  const top = view.topRows;
  const reachedDir = new Set<number>([ROOT]);
  const reached = new Set<number>([ROOT]);
  const names = new Map<number, number>();
  const subdirs = new Map<number, number>();
  const firstName = new Map<number, { parent: number; name: Name }>();
  const plan: Plan = {
    view,
    label,
    rootMissing: false,
    rootNotDir: false,
    rootNlink: 2,
    dangling: [],
    revive: [],
    wrongType: [],
    extraDirNames: [],
    nlink: [],
    orphans: [],
    unreachable: [],
    lostFound: undefined,
    stale: [],
    emptyWhiteouts: [],
    lostKeys: [],
    path: (dir) => pathOf(dir, firstName),
    inodes: top.inodes.size,
  };
  const root = view.inode(ROOT);
  // Without a root nothing is reachable; the lowest layer with rows answers for it, and the
  // repair makes one there (entries of directory 1 then show again).
  if (root === undefined) plan.rootMissing = !view.lowerHasRows;
  else if (!isDir(root.row.mode) && root.layer === view.top) plan.rootNotDir = true;

  const walk = (start: number): void => {
    const queue = [start];
    while (queue.length > 0) {
      const d = queue.shift()!;
      for (const row of view.list(d).values()) {
        if (row.child === null) continue;
        const child = view.inode(row.child);
        if (child === undefined) {
          if (row.type === S_IFDIR && !reachedDir.has(row.child) && view.list(row.child).size > 0) {
            // A directory whose inode is lost but whose entries are there: made again.
            plan.revive.push({ row, dir: true, nlink: 0 });
            reachedDir.add(row.child);
            firstName.set(row.child, { parent: d, name: row.name });
            subdirs.set(d, (subdirs.get(d) ?? 0) + 1);
            reached.add(row.child);
            queue.push(row.child);
          } else if (row.type === S_IFREG && keyInView(row.child)) {
            // A file whose inode is lost but whose blocks are still mapped under its number.
            plan.revive.push({ row, dir: false, nlink: 0 });
            names.set(row.child, (names.get(row.child) ?? 0) + 1);
          } else {
            plan.dangling.push(row);
          }
          continue;
        }
        const type = child.row.mode & S_IFMT;
        if (type !== row.type) plan.wrongType.push({ row, type });
        if (isDir(child.row.mode)) {
          if (reachedDir.has(row.child)) {
            plan.extraDirNames.push(row);
            continue;
          }
          reachedDir.add(row.child);
          firstName.set(row.child, { parent: d, name: row.name });
          subdirs.set(d, (subdirs.get(d) ?? 0) + 1);
          names.set(row.child, 1);
          queue.push(row.child);
        } else {
          names.set(row.child, (names.get(row.child) ?? 0) + 1);
        }
        reached.add(row.child);
      }
    }
  };
  walk(ROOT);

  const lf = view.list(ROOT).get(nameKey(ns.name(LOST_FOUND)));
  if (lf?.child != null && reachedDir.has(lf.child) && firstName.get(lf.child)?.parent === ROOT) plan.lostFound = lf.child;
  const lfIno = plan.lostFound ?? -1;

  // Inodes of the top layer with links that no path reaches go to /lost+found: directories
  // first (a directory that another lost directory holds comes along with it), then files.
  const lostDirs = [...top.inodes.values()].filter((r) => !reached.has(r.ino) && r.nlink > 0 && isDir(r.mode)).sort((a, b) => a.ino - b.ino);
  /** Links the repair itself adds (a new /lost+found in /, directories linked into it). */
  const planned = new Map<number, number>();
  const held = new Set<number>();
  for (const d of lostDirs) for (const row of view.list(d.ino).values()) if (row.child !== null) held.add(row.child);
  for (const pass of [0, 1]) {
    for (const d of lostDirs) {
      if (reached.has(d.ino) || (pass === 0 && held.has(d.ino))) continue;
      plan.unreachable.push(d);
      reached.add(d.ino);
      reachedDir.add(d.ino);
      firstName.set(d.ino, { parent: lfIno, name: `#${d.ino}` });
      names.set(d.ino, 1);
      subdirs.set(lfIno, (subdirs.get(lfIno) ?? 0) + 1);
      planned.set(lfIno, (planned.get(lfIno) ?? 0) + 1);
      walk(d.ino);
    }
  }
  for (const r of top.inodes.values()) {
    if (reached.has(r.ino) || r.nlink === 0 || isDir(r.mode)) continue;
    plan.unreachable.push(r);
    reached.add(r.ino);
    names.set(r.ino, 1);
  }
  const revivedKeys = new Set(plan.revive.filter((r) => !r.dir).map((r) => r.row.child!));
  for (const k of keys.get(view.top) ?? []) if (!ns.dataKeys.has(k) && !revivedKeys.has(k)) plan.lostKeys.push(k);
  if (plan.unreachable.length + plan.lostKeys.length > 0 && plan.lostFound === undefined) {
    subdirs.set(ROOT, (subdirs.get(ROOT) ?? 0) + 1);
    planned.set(ROOT, (planned.get(ROOT) ?? 0) + 1);
  }
  plan.rootNlink = 2 + (subdirs.get(ROOT) ?? 0);
  for (const r of plan.revive) r.nlink = r.dir ? 2 + (subdirs.get(r.row.child!) ?? 0) : names.get(r.row.child!) ?? 1;

  // Link counts of every inode the view reaches (a row from below is copied up to fix it).
  for (const ino of reached) {
    const found = view.inode(ino);
    if (found === undefined) continue;
    if (ino === ROOT && plan.rootNotDir) continue;
    const dir = isDir(found.row.mode);
    const want = dir ? 2 + (subdirs.get(ino) ?? 0) : names.get(ino) ?? 0;
    const reported = found.row.nlink !== want - (planned.get(ino) ?? 0);
    if (found.row.nlink !== want) plan.nlink.push({ ino, layer: found.layer, have: found.row.nlink, want, isDir: dir, reported });
  }
  for (const r of top.inodes.values()) if (!reached.has(r.ino) && r.nlink === 0) plan.orphans.push(r);
  const orphanIno = new Set(plan.orphans.map((o) => o.ino));

  for (const [parent, rows] of top.dirs) {
    if (!reachedDir.has(parent)) {
      if (!orphanIno.has(parent)) plan.stale.push(...rows.values());
      continue;
    }
    for (const row of rows.values()) {
      if (row.child !== null) continue;
      const below = view.entry(parent, row.key, 1);
      if (below === undefined || below.child === null) plan.emptyWhiteouts.push(row);
    }
  }
  return plan;
}

function pathOf(dir: number, firstName: Map<number, { parent: number; name: Name }>): string {
  const parts: string[] = [];
  for (let d = dir, n = 0; d !== ROOT; n++) {
    const f = firstName.get(d);
    if (f === undefined || n > 64) return `${parts.length > 0 ? '…/' : ''}<directory ${dir}>`;
    parts.unshift(f.parent === -1 ? `${LOST_FOUND}/${display(f.name)}` : display(f.name));
    d = f.parent === -1 ? ROOT : f.parent;
  }
  return `/${parts.join('/')}`;
}

function entryPath(plan: Plan, row: DirentRow): string {
  const dir = plan.path(row.parent);
  return `${dir === '/' ? '' : dir}/${display(row.name)}`;
}

function needsRepair(p: Plan): boolean {
  return (
    p.rootMissing ||
    p.rootNotDir ||
    p.dangling.length + p.wrongType.length + p.extraDirNames.length + p.nlink.length + p.orphans.length + p.unreachable.length > 0 ||
    p.stale.length + p.emptyWhiteouts.length + p.lostKeys.length + p.revive.length > 0
  );
}

/** Turn a plan into issues (each shared row reported once, by the lowest view that sees it). */
function describe(p: Plan, report: NamespaceReport, reported: Set<string>, busy: boolean, mountedBy: string[] | undefined): void {
  const add = (severity: NamespaceIssue['severity'], message: string, fix: string) => {
    const held = busy && severity !== 'info' ? ` (not while ${mountedBy?.join(', ') ?? 'a view'} is mounted: unmount it, then run \`thinfs check --repair\` again)` : '';
    report.issues.push({ severity, message: `${p.label}: ${message}`, fix: `${fix}${held}` });
  };
  const fresh = <T>(items: T[], key: (t: T) => string): T[] =>
    items.filter((t) => {
      const k = key(t);
      if (reported.has(k)) return false;
      reported.add(k);
      return true;
    });
  const examples = (items: string[]) => items.slice(0, MAX_EXAMPLES).join(', ') + (items.length > MAX_EXAMPLES ? ', …' : '');
  const rowKey = (kind: string) => (r: DirentRow) => `${kind}:${r.layer}:${r.parent}:${r.key}`;

  if (p.rootMissing) add('fatal', 'the root directory is missing', 'run `thinfs check --repair` to make an empty root directory (entries found below it show again)');
  if (p.rootNotDir) add('fatal', 'the root inode is not a directory', 'run `thinfs check --repair` to make it a directory again');
  const dangling = fresh(p.dangling, rowKey('dangling'));
  if (dangling.length > 0) {
    add(
      'fatal',
      `${count(dangling.length, 'entry points', 'entries point')} at inodes that do not exist (ls shows EIO): ${examples(dangling.map((r) => `${entryPath(p, r)} -> inode ${r.child}`))}`,
      'run `thinfs check --repair` to remove these entries (the files they named are lost; restore them from a backup)',
    );
  }
  const revive = fresh(p.revive, (r) => rowKey('dangling')(r.row));
  if (revive.length > 0) {
    add(
      'fatal',
      `${count(revive.length, 'entry points', 'entries point')} at inodes that are lost, though their ${revive.every((r) => r.dir) ? 'entries' : revive.every((r) => !r.dir) ? 'blocks' : 'entries or blocks'} are still there (ls shows EIO): ${examples(revive.map((r) => `${entryPath(p, r.row)} -> inode ${r.row.child}`))}`,
      'run `thinfs check --repair` to make these inodes again from what is left (owner root, mode 0755 for directories and 0644 for files, a file\'s size rounded up to whole blocks)',
    );
  }
  const wrongType = fresh(p.wrongType, (w) => rowKey('type')(w.row));
  if (wrongType.length > 0) {
    add('fatal', `${count(wrongType.length, 'entry shows', 'entries show')} another file type than their inode has: ${examples(wrongType.map((w) => entryPath(p, w.row)))}`, 'run `thinfs check --repair` to set the entries\' type from their inodes');
  }
  const extra = fresh(p.extraDirNames, rowKey('extra'));
  if (extra.length > 0) {
    add(
      'fatal',
      `${count(extra.length, 'directory has', 'directories have')} a second name (a loop or a hard-linked directory): ${examples(extra.map((r) => `${entryPath(p, r)} -> ${p.path(r.child!)}`))}`,
      'run `thinfs check --repair` to remove the second names (the first name and the contents stay)',
    );
  }
  const nlink = fresh(
    p.nlink.filter((n) => n.reported),
    (n) => `nlink:${n.layer}:${n.ino}`,
  );
  const low = nlink.filter((n) => !n.isDir && n.have < n.want);
  const other = nlink.filter((n) => n.isDir || n.have >= n.want);
  if (low.length > 0) {
    add(
      'fatal',
      `${count(low.length, 'file counts', 'files count')} fewer links than names (removing one name would free data another name still shows): ${examples(low.map((n) => `inode ${n.ino} nlink ${n.have}, ${n.want} name(s)`))}`,
      'run `thinfs check --repair` to recount the links',
    );
  }
  if (other.length > 0) {
    add('leak', `${count(other.length, 'inode has', 'inodes have')} a wrong link count: ${examples(other.map((n) => `inode ${n.ino} nlink ${n.have}, should be ${n.want}`))}`, 'run `thinfs check --repair` to recount the links');
  }
  if (p.orphans.length > 0) {
    if (busy) {
      add('info', `${count(p.orphans.length, 'unlinked inode', 'unlinked inodes')} may be held open by ${mountedBy?.join(', ') ?? 'a mounted view'}`, 'nothing to do: they are freed when their last handle closes, or at the next mount');
    } else {
      add(
        'leak',
        `${count(p.orphans.length, 'unlinked inode (nlink 0, no open handle) still holds', 'unlinked inodes (nlink 0, no open handle) still hold')} rows and blocks: ${examples(p.orphans.map((o) => `inode ${o.ino}`))}`,
        'run `thinfs check --repair` to free them',
      );
    }
  }
  if (p.unreachable.length > 0) {
    const dirs = p.unreachable.filter((u) => isDir(u.mode)).length;
    add(
      'leak',
      `${count(p.unreachable.length, 'inode', 'inodes')}${dirs > 0 ? ` (${dirs} director${dirs === 1 ? 'y' : 'ies'})` : ''} with links cannot be reached from /: ${examples(p.unreachable.map((u) => `inode ${u.ino}`))}`,
      `run \`thinfs check --repair\` to link them into /${LOST_FOUND} (named #INODE)`,
    );
  }
  if (p.stale.length > 0) add('leak', `${count(p.stale.length, 'entry lies', 'entries lie')} in directories this view does not show`, 'run `thinfs check --repair` to delete them');
  if (p.lostKeys.length > 0) {
    add('leak', `${count(p.lostKeys.length, 'file key holds', 'file keys hold')} blocks that no inode uses: ${examples(p.lostKeys.map((k) => `key ${k}`))}`, `run \`thinfs check --repair\` to make them files again in /${LOST_FOUND}`);
  }
  if (p.emptyWhiteouts.length > 0) add('info', `${count(p.emptyWhiteouts.length, 'whiteout hides', 'whiteouts hide')} nothing (harmless)`, 'nothing needed; `thinfs check --repair` drops them');
}

function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

// ---------------------------------------------------------------- repair of one view

/** Write the plan's fixes into the view's top layer. Precondition: inside the pool's write transaction. */
function apply(pool: Pool, ns: Namespace, p: Plan): string[] {
  const db = pool.metadataDb();
  const top = p.view.top;
  const done: string[] = [];
  const now = nowNs();
  const st = {
    upsertEntry: db.prepare(
      `INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (parent, name, layer) DO UPDATE SET child = excluded.child, type = excluded.type`,
    ),
    deleteEntry: db.prepare('DELETE FROM fs_dirents WHERE parent = ? AND name = ? AND layer = ?'),
    deleteDir: db.prepare('DELETE FROM fs_dirents WHERE parent = ? AND layer = ?'),
    insertDir: db.prepare(
      `INSERT INTO fs_inodes (ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key)
       VALUES (?, ?, ?, 0, 0, 0, ?, 0, ?, ?, ?, NULL, ?)`,
    ),
    insertFile: db.prepare(
      `INSERT INTO fs_inodes (ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key)
       VALUES (?, ?, ?, 0, 0, ?, ?, 0, ?, ?, ?, NULL, ?)`,
    ),
    setMode: db.prepare('UPDATE fs_inodes SET mode = ? WHERE ino = ? AND layer = ?'),
    setNlink: db.prepare('UPDATE fs_inodes SET nlink = ? WHERE ino = ? AND layer = ?'),
    copyUp: db.prepare(
      `INSERT INTO fs_inodes (ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key)
       SELECT ino, ?, mode, uid, gid, size, ?, rdev, atime, mtime, ?, target, data_key FROM fs_inodes WHERE ino = ? AND layer = ?`,
    ),
    deleteInode: db.prepare('DELETE FROM fs_inodes WHERE ino = ? AND layer = ?'),
    deleteXattrs: db.prepare('DELETE FROM fs_xattrs WHERE ino = ? AND layer = ?'),
    allocIno: db.prepare('UPDATE fs_super SET next_ino = next_ino + 1 WHERE id = 1 RETURNING next_ino - 1').pluck(),
  };
  /** Make (parent, name) show nothing in this view: as unlink does (whiteout only when something below shows it). */
  const hide = (row: DirentRow) => {
    const below = p.view.entry(row.parent, row.key, 1);
    if (row.layer === top && (below === undefined || below.child === null)) st.deleteEntry.run(row.parent, row.name, top);
    else st.upsertEntry.run(row.parent, row.name, top, null, 0);
  };

  if (p.rootMissing) {
    st.insertDir.run(ROOT, top, S_IFDIR | 0o755, p.rootNlink, now, now, now, ROOT);
    done.push('made an empty root directory');
  } else if (p.rootNotDir) {
    st.setMode.run(S_IFDIR | 0o755, ROOT, top);
    st.setNlink.run(p.rootNlink, ROOT, top);
    done.push('made the root inode a directory again');
  }
  for (const row of p.dangling) hide(row);
  if (p.dangling.length > 0) done.push(`removed ${count(p.dangling.length, 'entry', 'entries')} that pointed at missing inodes`);
  for (const w of p.wrongType) st.upsertEntry.run(w.row.parent, w.row.name, top, w.row.child, w.type);
  if (p.wrongType.length > 0) done.push(`set the file type of ${count(p.wrongType.length, 'entry', 'entries')} from their inodes`);
  for (const row of p.extraDirNames) hide(row);
  if (p.extraDirNames.length > 0) done.push(`removed ${count(p.extraDirNames.length, 'second directory name', 'second directory names')}`);
  const fileBytes = (key: number) => keyExtentBlocks(pool, key, p.view.chain) * pool.blockSizeBytes;
  const revived = new Set<number>();
  for (const r of p.revive) {
    const ino = r.row.child!;
    if (revived.has(ino)) continue;
    revived.add(ino);
    if (r.dir) st.insertDir.run(ino, top, S_IFDIR | 0o755, r.nlink, now, now, now, ino);
    else st.insertFile.run(ino, top, S_IFREG | 0o644, fileBytes(ino), r.nlink, now, now, now, ino);
  }
  if (revived.size > 0) done.push(`made ${count(revived.size, 'lost inode', 'lost inodes')} again from the entries or blocks left of them`);

  for (const o of p.orphans) {
    if (isDir(o.mode)) st.deleteDir.run(o.ino, top);
    st.deleteXattrs.run(o.ino, top);
    st.deleteInode.run(o.ino, top);
    dropKeyRows(pool, top, o.dataKey);
  }
  if (p.orphans.length > 0) done.push(`freed ${count(p.orphans.length, 'unlinked inode', 'unlinked inodes')}`);

  if (p.unreachable.length + p.lostKeys.length > 0) {
    let lf = p.lostFound;
    const dirs = p.unreachable.filter((u) => isDir(u.mode)).length;
    if (lf === undefined) {
      lf = Number(st.allocIno.get());
      let name = LOST_FOUND;
      for (let i = 1; p.view.entry(ROOT, nameKey(ns.name(name)))?.child != null; i++) name = `${LOST_FOUND}.${i}`;
      st.insertDir.run(lf, top, S_IFDIR | 0o700, 2 + dirs, now, now, now, lf);
      st.upsertEntry.run(ROOT, ns.name(name), top, lf, S_IFDIR);
      done.push(`made /${name}`);
    }
    for (const u of p.unreachable) st.upsertEntry.run(lf, ns.name(`#${u.ino}`), top, u.ino, u.mode & S_IFMT);
    if (p.unreachable.length > 0) done.push(`linked ${count(p.unreachable.length, 'unreachable inode', 'unreachable inodes')} into /${LOST_FOUND}`);
    // Blocks with no inode left: a file again (a new inode on the old key), named by its inode.
    for (const key of p.lostKeys) {
      const ino = Number(st.allocIno.get());
      st.insertFile.run(ino, top, S_IFREG | 0o644, fileBytes(key), 1, now, now, now, key);
      st.upsertEntry.run(lf, ns.name(`#${ino}`), top, ino, S_IFREG);
    }
    if (p.lostKeys.length > 0) done.push(`made ${count(p.lostKeys.length, 'file', 'files')} in /${LOST_FOUND} of blocks no inode used`);
  }
  for (const n of p.nlink) {
    if (n.layer === top) st.setNlink.run(n.want, n.ino, top);
    else st.copyUp.run(top, n.want, now, n.ino, n.layer);
  }
  if (p.nlink.length > 0) done.push(`recounted the links of ${count(p.nlink.length, 'inode', 'inodes')}`);
  for (const row of [...p.stale, ...p.emptyWhiteouts]) st.deleteEntry.run(row.parent, row.name, top);
  if (p.stale.length > 0) done.push(`deleted ${count(p.stale.length, 'entry', 'entries')} of directories the view does not show`);
  if (p.emptyWhiteouts.length > 0) done.push(`dropped ${count(p.emptyWhiteouts.length, 'whiteout', 'whiteouts')} that hid nothing`);
  log.info({ layer: top, repairs: done }, 'namespace repaired');
  return done;
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
