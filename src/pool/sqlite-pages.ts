/**
 * Rows read straight from the pages of a damaged SQLite file, for the metadata rebuild
 * (integrity.ts). SQLite gives up on a b-tree at its first unreadable page; this reader
 * walks each tree itself (the file format: https://www.sqlite.org/fileformat2.html),
 * skips the pages and cells that do not parse, and can also read the pages a damaged
 * interior page cut off from their tree ("orphans": pages that no tree, no overflow
 * chain and no free-list page claims). It only reads.
 *
 * What counts as readable is strict, so that random bytes are not taken for rows: a page
 * must have a b-tree page type of the expected kind and a cell pointer array that fits;
 * a cell's payload (with its overflow chain) must lie inside the file, and its record
 * header must describe exactly the bytes of its body. The caller checks each value
 * against the column's declared type on top of that.
 *
 * Free-list pages are never read as rows (they hold rows SQLite deleted); when the free
 * list itself cannot be read, no orphan page is read either.
 */
import * as fs from 'node:fs';

/** A TEXT value, kept as its bytes (so it is copied byte-exact). */
export class TextValue {
  constructor(readonly bytes: Buffer) {}
  toString(): string {
    return this.bytes.toString('utf8');
  }
}

/** One value of a record: NULL, an integer, a real, a BLOB, or TEXT. */
export type RawValue = null | bigint | number | Buffer | TextValue;

/** One row of a b-tree: its rowid (table b-trees) and the values of its record. */
export interface RawRecord {
  rowid: bigint | undefined;
  values: RawValue[];
}

export type TreeKind = 'table' | 'index';

/** What walking one b-tree found. */
export interface TreeRead {
  records: RawRecord[];
  /** Pages of the tree that were read. */
  pages: number;
  /** Pages the tree points at that could not be read (bad header, out of range, claimed twice). */
  badPages: number[];
  /** Cells that did not parse, on pages that did. */
  badCells: number;
}

const PAGE_TYPES: Record<number, { kind: TreeKind; interior: boolean }> = {
  2: { kind: 'index', interior: true },
  5: { kind: 'table', interior: true },
  10: { kind: 'index', interior: false },
  13: { kind: 'table', interior: false },
};

const LOCK_BYTE_OFFSET = 1_073_741_824;

/** A SQLite database file opened for reading page by page. */
export class PageFile {
  readonly pageSize: number;
  /** Usable bytes per page (page size minus the reserved bytes at the end). */
  readonly usable: number;
  readonly pageCount: number;
  /** True when page 1 starts with SQLite's magic (else the geometry is a guess: 4096, no reserve). */
  readonly headerOk: boolean;
  /** Pages claimed so far: by a tree walk, an overflow chain or the free list. */
  readonly claimed = new Set<number>();
  private readonly fd: number;
  private freelistOk = false;

  private constructor(fd: number, sizeBytes: number) {
    this.fd = fd;
    const head = Buffer.alloc(100);
    fs.readSync(fd, head, 0, 100, 0);
    this.headerOk = head.toString('latin1', 0, 16) === 'SQLite format 3\u0000';
    let pageSize = head.readUInt16BE(16);
    if (pageSize === 1) pageSize = 65536;
    const sane = this.headerOk && pageSize >= 512 && (pageSize & (pageSize - 1)) === 0;
    this.pageSize = sane ? pageSize : 4096;
    this.usable = this.pageSize - (sane ? head[20]! : 0);
    this.pageCount = Math.floor(sizeBytes / this.pageSize);
    this.claimed.add(1);
    const lockPage = Math.floor(LOCK_BYTE_OFFSET / this.pageSize) + 1;
    if (lockPage <= this.pageCount) this.claimed.add(lockPage);
    // Auto-vacuum files have pointer-map pages we do not parse: no orphan scan then.
    const autoVacuum = sane && head.readUInt32BE(52) !== 0;
    if (sane && !autoVacuum) this.freelistOk = this.claimFreelist(head.readUInt32BE(32), head.readUInt32BE(36));
  }

  /** Open `file` for reading. */
  static open(file: string): PageFile {
    const fd = fs.openSync(file, 'r');
    try {
      return new PageFile(fd, fs.fstatSync(fd).size);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  /** Page `n` (1-based), or undefined when it lies outside the file. */
  page(n: number): Buffer | undefined {
    if (!Number.isInteger(n) || n < 1 || n > this.pageCount) return undefined;
    const buf = Buffer.alloc(this.pageSize);
    const got = fs.readSync(this.fd, buf, 0, this.pageSize, (n - 1) * this.pageSize);
    return got === this.pageSize ? buf : undefined;
  }

  /** Walk the b-tree rooted at `root`, claiming its pages; records of interior index pages included. */
  readTree(root: number, kind: TreeKind): TreeRead {
    const out: TreeRead = { records: [], pages: 0, badPages: [], badCells: 0 };
    const stack = [root];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (this.claimed.has(n) && !(n === 1 && root === 1 && out.pages === 0)) {
        out.badPages.push(n);
        continue;
      }
      const p = this.page(n);
      const parsed = p === undefined ? undefined : this.parsePage(p, n, kind);
      if (parsed === undefined) {
        out.badPages.push(n);
        continue;
      }
      this.claimed.add(n);
      out.pages++;
      out.badCells += parsed.badCells;
      for (const r of parsed.records) out.records.push(r);
      for (let i = parsed.children.length - 1; i >= 0; i--) stack.push(parsed.children[i]!);
    }
    return out;
  }

  /**
   * The b-tree pages nobody claimed (call after walking every tree of the schema): the
   * pages cut off by a damaged interior page. Empty when the free list could not be read,
   * since a free page would then pass for one.
   */
  orphanPages(): { page: number; kind: TreeKind }[] {
    if (!this.freelistOk) return [];
    const out: { page: number; kind: TreeKind }[] = [];
    for (let n = 2; n <= this.pageCount; n++) {
      if (this.claimed.has(n)) continue;
      const p = this.page(n);
      const t = p === undefined ? undefined : PAGE_TYPES[p[0]!];
      if (t !== undefined) out.push({ page: n, kind: t.kind });
    }
    return out;
  }

  /** Parse one b-tree page: its records and child pages; undefined when it is no page of `kind`. */
  private parsePage(p: Buffer, n: number, kind: TreeKind): { records: RawRecord[]; children: number[]; badCells: number } | undefined {
    const base = n === 1 ? 100 : 0;
    const t = PAGE_TYPES[p[base]!];
    if (t === undefined || t.kind !== kind) return undefined;
    const hdr = base + (t.interior ? 12 : 8);
    const nCells = p.readUInt16BE(base + 3);
    const contentStart = p.readUInt16BE(base + 5) || 65536;
    const ptrEnd = hdr + 2 * nCells;
    if (ptrEnd > this.usable || contentStart > this.usable || contentStart < ptrEnd) return undefined;
    const children: number[] = [];
    const records: RawRecord[] = [];
    let badCells = 0;
    for (let i = 0; i < nCells; i++) {
      const ptr = p.readUInt16BE(hdr + 2 * i);
      if (ptr < ptrEnd || ptr >= this.usable) {
        badCells++;
        continue;
      }
      const cell = this.parseCell(p, ptr, p[base]!);
      if (cell === undefined) {
        badCells++;
        continue;
      }
      if (cell.child !== undefined) children.push(cell.child);
      if (cell.record !== undefined) records.push(cell.record);
    }
    if (t.interior) children.push(p.readUInt32BE(base + 8));
    for (const c of children) if (c < 2 || c > this.pageCount) return undefined;
    return { records, children, badCells };
  }

  private parseCell(p: Buffer, ptr: number, type: number): { child?: number; record?: RawRecord } | undefined {
    const end = this.usable;
    let off = ptr;
    let child: number | undefined;
    if (type === 2 || type === 5) {
      if (off + 4 > end) return undefined;
      child = p.readUInt32BE(off);
      off += 4;
    }
    if (type === 5) return { child };
    const len = varint(p, off, end);
    if (len === undefined) return undefined;
    off += len[1];
    const payloadBytes = Number(len[0]);
    let rowid: bigint | undefined;
    if (type === 13) {
      const r = varint(p, off, end);
      if (r === undefined) return undefined;
      rowid = BigInt.asIntN(64, r[0]);
      off += r[1];
    }
    const payload = this.payload(p, off, payloadBytes, type === 13);
    if (payload === undefined) return undefined;
    const values = decodeRecord(payload);
    if (values === undefined) return undefined;
    return { child, record: { rowid, values } };
  }

  /** The whole payload of a cell: its local bytes at `off`, then its overflow chain. */
  private payload(p: Buffer, off: number, total: number, tableLeaf: boolean): Buffer | undefined {
    const u = this.usable;
    if (total < 0 || total > 1_000_000_000) return undefined;
    const maxLocal = tableLeaf ? u - 35 : Math.floor(((u - 12) * 64) / 255) - 23;
    let local = total;
    if (total > maxLocal) {
      const minLocal = Math.floor(((u - 12) * 32) / 255) - 23;
      const k = minLocal + ((total - minLocal) % (u - 4));
      local = k <= maxLocal ? k : minLocal;
    }
    if (off + local + (local < total ? 4 : 0) > u) return undefined;
    if (local === total) return p.subarray(off, off + total);
    const out = Buffer.alloc(total);
    p.copy(out, 0, off, off + local);
    let done = local;
    let next = p.readUInt32BE(off + local);
    const chain: number[] = [];
    while (done < total) {
      if (this.claimed.has(next) || chain.includes(next)) return undefined;
      const o = this.page(next);
      if (o === undefined) return undefined;
      chain.push(next);
      const take = Math.min(u - 4, total - done);
      o.copy(out, done, 4, 4 + take);
      done += take;
      next = o.readUInt32BE(0);
    }
    if (next !== 0) return undefined;
    for (const c of chain) this.claimed.add(c);
    return out;
  }

  /** Claim the free list's trunk and leaf pages; false when it does not read back consistently. */
  private claimFreelist(firstTrunk: number, total: number): boolean {
    let seen = 0;
    let trunk = firstTrunk;
    const perTrunk = this.usable / 4 - 2;
    while (trunk !== 0) {
      if (this.claimed.has(trunk)) return false;
      const p = this.page(trunk);
      if (p === undefined) return false;
      this.claimed.add(trunk);
      seen++;
      const leaves = p.readUInt32BE(4);
      if (leaves > perTrunk) return false;
      for (let i = 0; i < leaves; i++) {
        const leaf = p.readUInt32BE(8 + 4 * i);
        if (leaf < 2 || leaf > this.pageCount || this.claimed.has(leaf)) return false;
        this.claimed.add(leaf);
        seen++;
      }
      trunk = p.readUInt32BE(0);
    }
    return seen === total;
  }
}

/** A SQLite varint at `off` (before `end`): [value, bytes used]. */
function varint(b: Buffer, off: number, end: number): [bigint, number] | undefined {
  let v = 0n;
  for (let i = 0; i < 9; i++) {
    if (off + i >= end) return undefined;
    const byte = b[off + i]!;
    if (i === 8) return [(v << 8n) | BigInt(byte), 9];
    v = (v << 7n) | BigInt(byte & 0x7f);
    if ((byte & 0x80) === 0) return [v, i + 1];
  }
  return undefined;
}

const INT_BYTES = [0, 1, 2, 3, 4, 6, 8];

/** The values of a record, or undefined unless its header describes exactly its bytes. */
export function decodeRecord(payload: Buffer): RawValue[] | undefined {
  const h = varint(payload, 0, payload.length);
  if (h === undefined) return undefined;
  const hdrLen = Number(h[0]);
  if (hdrLen < 1 || hdrLen > payload.length) return undefined;
  const types: number[] = [];
  let off = h[1];
  while (off < hdrLen) {
    const t = varint(payload, off, hdrLen);
    if (t === undefined || t[0] > 0xffffffffn) return undefined;
    types.push(Number(t[0]));
    off += t[1];
  }
  if (off !== hdrLen) return undefined;
  let body = hdrLen;
  const values: RawValue[] = [];
  for (const t of types) {
    if (t === 0) values.push(null);
    else if (t >= 1 && t <= 6) {
      const n = INT_BYTES[t]!;
      if (body + n > payload.length) return undefined;
      let v = 0n;
      for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(payload[body + i]!);
      values.push(BigInt.asIntN(n * 8, v));
      body += n;
    } else if (t === 7) {
      if (body + 8 > payload.length) return undefined;
      values.push(payload.readDoubleBE(body));
      body += 8;
    } else if (t === 8 || t === 9) values.push(BigInt(t - 8));
    else if (t === 10 || t === 11) return undefined;
    else {
      const n = t % 2 === 0 ? (t - 12) / 2 : (t - 13) / 2;
      if (body + n > payload.length) return undefined;
      const bytes = Buffer.from(payload.subarray(body, body + n));
      values.push(t % 2 === 0 ? bytes : new TextValue(bytes));
      body += n;
    }
  }
  return body === payload.length ? values : undefined;
}
