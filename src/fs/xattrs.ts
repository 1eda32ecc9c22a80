/**
 * Extended attributes, per (inode, name, layer) with copy-up semantics: setting or
 * removing one writes a row in the top layer only; a NULL value hides a lower layer's
 * attribute. All attributes of one inode come back from one primary-key range scan and
 * are cached per inode (the kernel asks for security.capability on every write).
 * Names are byte strings (bytes.ts), stored as BLOBs of their bytes.
 */
import type { Db, LayerId } from '../pool/index.js';
import { byteString, bytesOf, type ByteString } from './bytes.js';
import type { Ino } from './types.js';
import { posOf, type View } from './view.js';

type Row = { name: Buffer; layer: LayerId; value: Buffer | null };

const CACHE_LIMIT = 65_536;

export class XattrTable {
  private readonly cache = new Map<Ino, Map<ByteString, Buffer>>();
  private readonly st;

  constructor(
    db: Db,
    private readonly view: View,
  ) {
    this.st = {
      rows: db.prepare('SELECT name, layer, value FROM fs_xattrs WHERE ino = ?'),
      upsert: db.prepare(
        `INSERT INTO fs_xattrs (ino, name, layer, value) VALUES (?, ?, ?, ?)
         ON CONFLICT (ino, name, layer) DO UPDATE SET value = excluded.value`,
      ),
      remove: db.prepare('DELETE FROM fs_xattrs WHERE ino = ? AND name = ? AND layer = ?'),
      removeAll: db.prepare('DELETE FROM fs_xattrs WHERE ino = ? AND layer = ?'),
    };
  }

  /** All attributes of `ino` the device sees. Do not modify the returned map. */
  all(ino: Ino): Map<ByteString, Buffer> {
    const hit = this.cache.get(ino);
    if (hit !== undefined) return hit;
    const best = new Map<ByteString, { pos: number; value: Buffer | null }>();
    for (const r of this.st.rows.all(ino) as Row[]) {
      const p = posOf(this.view, r.layer);
      if (p === undefined) continue;
      const name = byteString(r.name);
      const b = best.get(name);
      if (b === undefined || p < b.pos) best.set(name, { pos: p, value: r.value });
    }
    const out = new Map<ByteString, Buffer>();
    for (const [name, b] of best) if (b.value !== null) out.set(name, b.value);
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(ino, out);
    return out;
  }

  /** Set `name` of `ino` in the top layer. */
  set(ino: Ino, name: ByteString, value: Buffer): void {
    this.st.upsert.run(ino, bytesOf(name), this.view.chain.top, value);
    this.cache.delete(ino);
  }

  /** Remove `name` of `ino`: hide a lower layer's value, drop the top layer's own. */
  remove(ino: Ino, name: ByteString): void {
    const top = this.view.chain.top;
    const key = bytesOf(name);
    let lower = false;
    let own = false;
    let lowerPos = Number.MAX_SAFE_INTEGER;
    for (const r of this.st.rows.all(ino) as Row[]) {
      if (!r.name.equals(key)) continue;
      const p = posOf(this.view, r.layer);
      if (p === undefined) continue;
      if (p === 0) own = true;
      else if (p < lowerPos) {
        lowerPos = p;
        lower = r.value !== null;
      }
    }
    if (lower) this.st.upsert.run(ino, key, top, null);
    else if (own) this.st.remove.run(ino, key, top);
    this.cache.delete(ino);
  }

  /** Drop the top layer's attributes of an inode that is gone. */
  removeAll(ino: Ino): void {
    this.st.removeAll.run(ino, this.view.chain.top);
    this.cache.delete(ino);
  }

  /** Drop every cached attribute (abort, chain change). */
  drop(): void {
    this.cache.clear();
  }
}
