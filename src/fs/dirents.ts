/**
 * Directory entries and whiteouts — the only module that knows how they are stored.
 *
 * An entry is a row (parent inode, name, layer) -> child inode and its file type. A
 * device sees, per (parent, name), the row of the nearest layer in its chain. A row whose
 * child is NULL is a WHITEOUT: the name is gone in that layer and everything below is
 * hidden. A whiteout is written only when a lower layer still shows the name; otherwise
 * the top layer's row is simply deleted.
 *
 * Opaque directories need no marker: a directory's entries are keyed by its inode number,
 * so a fresh directory inode (makeOpaque, or rmdir + mkdir) has no lower entries at all.
 * A directory rename rewrites two rows and moves the whole subtree in O(1).
 *
 * Names are byte strings (bytes.ts), stored as BLOBs of their raw bytes: two names that
 * differ in any byte are two entries, whatever UTF-8 would make of them.
 */
import type { Db, LayerId } from '../pool/index.js';
import { byteString, bytesOf, type ByteString } from './bytes.js';
import type { Ino } from './types.js';
import { posOf, type View } from './view.js';

/** A visible directory entry. */
export interface Entry {
  ino: Ino;
  /** File type bits (S_IFDIR, ...). */
  type: number;
}

/** A change the top layer makes to one name, for changes(). */
export interface NameChange {
  parent: Ino;
  name: ByteString;
  /** What the layers below show (undefined: nothing). */
  before: Entry | undefined;
  /** What the device shows now (undefined: deleted). */
  after: Entry | undefined;
}

type Row = { layer: LayerId; child: Ino | null; type: number };
/** Every name sorts after the empty BLOB. */
const NO_NAME = Buffer.alloc(0);
/** A row with its name as SQLite returns a BLOB. */
type NamedRow = Row & { name: Buffer };

export class DirentTable {
  private readonly st;

  constructor(
    db: Db,
    private readonly view: View,
  ) {
    this.st = {
      rows: db.prepare('SELECT layer, child, type FROM fs_dirents WHERE parent = ? AND name = ?'),
      // Names are BLOBs compared with memcmp: the byte order of byte strings (bytes.ts).
      dirFrom: db.prepare('SELECT name, layer, child, type FROM fs_dirents WHERE parent = ? AND name > ? ORDER BY name'),
      upsert: db.prepare(
        `INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (parent, name, layer) DO UPDATE SET child = excluded.child, type = excluded.type`,
      ),
      remove: db.prepare('DELETE FROM fs_dirents WHERE parent = ? AND name = ? AND layer = ?'),
      removeDir: db.prepare('DELETE FROM fs_dirents WHERE parent = ? AND layer = ?'),
      top: db.prepare('SELECT parent, name, child, type FROM fs_dirents WHERE layer = ?'),
      topOfDir: db.prepare('SELECT child AS ino, type FROM fs_dirents WHERE parent = ? AND layer = ? AND child IS NOT NULL'),
      byChild: db.prepare('SELECT parent, name, layer FROM fs_dirents WHERE child = ?'),
    };
  }

  /** The entry `name` of directory `parent`, or undefined. */
  lookup(parent: Ino, name: ByteString): Entry | undefined {
    return this.nearest(this.st.rows.all(parent, bytesOf(name)) as Row[], 0);
  }

  /** All visible entries of directory `parent`, in byte order of their names (one query, merged over the chain). */
  list(parent: Ino): Map<ByteString, Entry> {
    return new Map(this.listAfter(parent, undefined, Infinity));
  }

  /**
   * Up to `limit` visible entries of directory `parent` whose names come after `after`
   * (from the first when undefined), in byte order: one range scan of the primary key,
   * each name's rows merged over the chain as they come, stopped once `limit` are found.
   */
  listAfter(parent: Ino, after: ByteString | undefined, limit: number): [ByteString, Entry][] {
    const out: [ByteString, Entry][] = [];
    if (!(limit > 0)) return out;
    let name: ByteString | undefined;
    let best: NamedRow | undefined;
    let bestPos = Number.MAX_SAFE_INTEGER;
    const take = (): void => {
      if (name !== undefined && best !== undefined && best.child !== null) out.push([name, { ino: best.child, type: best.type }]);
    };
    for (const r of this.st.dirFrom.iterate(parent, after === undefined ? NO_NAME : bytesOf(after)) as Iterable<NamedRow>) {
      const n = byteString(r.name);
      if (n !== name) {
        take();
        if (out.length >= limit) return out; // leaving the loop ends the statement's iteration
        name = n;
        best = undefined;
        bestPos = Number.MAX_SAFE_INTEGER;
      }
      const p = posOf(this.view, r.layer);
      if (p !== undefined && p < bestPos) {
        best = r;
        bestPos = p;
      }
    }
    take();
    return out;
  }

  /** True when directory `parent` shows no entries in any layer. */
  isEmpty(parent: Ino): boolean {
    return this.listAfter(parent, undefined, 1).length === 0;
  }

  /** Make `name` in `parent` point at `child` (in the top layer, replacing any whiteout). */
  insert(parent: Ino, name: ByteString, child: Entry): void {
    this.st.upsert.run(parent, bytesOf(name), this.view.chain.top, child.ino, child.type);
  }

  /** Remove `name` from `parent`: a whiteout when a lower layer shows it, else no row at all. */
  remove(parent: Ino, name: ByteString): void {
    const key = bytesOf(name);
    const rows = this.st.rows.all(parent, key) as Row[];
    const top = this.view.chain.top;
    if (this.nearest(rows, 1) !== undefined) this.st.upsert.run(parent, key, top, null, 0);
    else if (rows.some((r) => r.layer === top)) this.st.remove.run(parent, key, top);
  }

  /** Drop the top layer's rows of a directory that no longer exists (its whiteouts). */
  removeAll(dir: Ino): void {
    this.st.removeDir.run(dir, this.view.chain.top);
  }

  /** The entries directory `dir` holds in the top layer itself (whiteouts excluded). */
  topEntries(dir: Ino): Entry[] {
    return this.st.topOfDir.all(dir, this.view.chain.top) as Entry[];
  }

  /** Every name the top layer changes, with what lies below and what shows now. */
  topChanges(): NameChange[] {
    const out: NameChange[] = [];
    const rows = this.st.top.all(this.view.chain.top) as { parent: Ino; name: Buffer; child: Ino | null; type: number }[];
    for (const r of rows) {
      const before = this.nearest(this.st.rows.all(r.parent, r.name) as Row[], 1);
      const after = r.child === null ? undefined : { ino: r.child, type: r.type };
      if (before === undefined && after === undefined) continue;
      out.push({ parent: r.parent, name: byteString(r.name), before, after });
    }
    return out;
  }

  /** The visible (parent, name) pairs that point at `ino` (several for hard links). */
  namesOf(ino: Ino): { parent: Ino; name: ByteString }[] {
    const out: { parent: Ino; name: ByteString }[] = [];
    const seen = new Set<string>();
    for (const r of this.st.byChild.all(ino) as { parent: Ino; name: Buffer; layer: LayerId }[]) {
      if (posOf(this.view, r.layer) === undefined) continue;
      const name = byteString(r.name);
      const key = `${r.parent}/${name}`;
      if (seen.has(key)) continue;
      seen.add(key);
      if (this.lookup(r.parent, name)?.ino === ino) out.push({ parent: r.parent, name });
    }
    return out;
  }

  /** The nearest row at position >= fromPos; undefined when none or when it is a whiteout. */
  private nearest(rows: Row[], fromPos: number): Entry | undefined {
    let best: Row | undefined;
    let bestPos = Number.MAX_SAFE_INTEGER;
    for (const r of rows) {
      const p = posOf(this.view, r.layer);
      if (p !== undefined && p >= fromPos && p < bestPos) {
        best = r;
        bestPos = p;
      }
    }
    return best === undefined || best.child === null ? undefined : { ino: best.child, type: best.type };
  }
}
