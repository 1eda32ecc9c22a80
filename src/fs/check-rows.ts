/**
 * The namespace tables as the check loads them (every layer's inode and entry rows, in
 * memory once per check), and one layer's VIEW of them: its chain, nearest layer first,
 * as the filesystem resolves names. Kept apart from the analysis (check-walk.ts) so that
 * what a row is and how a view answers is read in one place; nothing here judges a row.
 *
 * Names are kept as SQLite gives them (TEXT or BLOB) and keyed by `nameKey`, so the check
 * is byte-exact whichever way the name columns are declared.
 */
import type { LayerId } from '../pool/index.js';
import { layerParents, type Pool } from '../pool/index.js';

/** The root directory's inode number. */
export const ROOT = 1;
/** The directory in / that inodes no path reaches are linked into (as e2fsck's pass 3). */
export const LOST_FOUND = 'lost+found';

/** A directory entry's name as SQLite gives it: TEXT (string) or BLOB (Buffer). */
export type Name = string | Buffer;

/** The columns of an fs_inodes row that the check reads. */
export interface InodeRow {
  ino: number;
  mode: number;
  nlink: number;
  dataKey: number;
}

/** One fs_dirents row (`child` null: a whiteout). */
export interface DirentRow {
  parent: number;
  /** The name as stored (TEXT or BLOB), bound back unchanged. */
  name: Name;
  /** `nameKey(name)`: the name as a map key. */
  key: string;
  layer: LayerId;
  child: number | null;
  type: number;
}

/** The rows of one layer. */
export class LayerRows {
  readonly inodes = new Map<number, InodeRow>();
  /** parent -> name key -> row */
  readonly dirs = new Map<number, Map<string, DirentRow>>();
  entries = 0;

  get empty(): boolean {
    return this.inodes.size === 0 && this.dirs.size === 0;
  }
}

/** A map key for a name that keeps TEXT and BLOB names apart, byte for byte. */
export function nameKey(n: Name): string {
  return typeof n === 'string' ? `t${n}` : `b${n.toString('latin1')}`;
}

/** A name for a person to read: UTF-8 where valid, \xNN for other bytes. */
export function display(n: Name): string {
  if (typeof n === 'string') return n;
  const s = n.toString('utf8');
  if (Buffer.from(s, 'utf8').equals(n)) return s;
  return [...n].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}

/** The namespace tables of one pool, loaded for the check. */
export class Namespace {
  readonly layers = new Map<LayerId, LayerRows>();
  readonly parents = new Map<LayerId, LayerId | null>();
  readonly depth = new Map<LayerId, number>();
  /** Every data key some inode row uses, in any layer. */
  readonly dataKeys = new Set<number>();
  readonly blobNames: boolean;
  private readonly db;

  constructor(pool: Pool) {
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
export class View {
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
