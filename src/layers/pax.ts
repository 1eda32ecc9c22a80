/**
 * PAX extended header records as raw bytes, for the entries node-tar's Parser emits.
 *
 * Why: node-tar decodes PAX bodies as UTF-8 text and keeps only the fields it knows, so
 * `SCHILY.xattr.*` records (GNU tar's, Go's archive/tar's) are dropped, binary values
 * such as `security.capability` would not survive UTF-8, and times keep only
 * milliseconds. This tracker watches the same uncompressed bytes the Parser gets,
 * frames the archive (512-byte headers and bodies), and queues the raw records of each
 * non-meta entry in archive order; the importer takes one record map per entry the
 * Parser emits. The Parser remains the authority on what the archive holds (checksums,
 * paths, types): anything it refuses stops the import before the queues disagree.
 */
import { Header } from 'tar';

export type PaxRecords = Map<string, Buffer>;

const BLOCK = 512;
const META_TYPES = new Set(['ExtendedHeader', 'OldExtendedHeader', 'GlobalExtendedHeader', 'NextFileHasLongPath', 'NextFileHasLongLinkpath', 'OldGnuLongPath']);
/** As node-tar's own limit on meta entries. */
const MAX_META_BYTES = 1024 * 1024;

/** Frames a tar byte stream and collects the PAX records that apply to each entry. */
export class PaxTracker {
  private readonly queue: PaxRecords[] = [];
  private header = Buffer.alloc(0);
  /** Bytes of the current body (and its padding) still to pass. */
  private skipBytes = 0;
  /** The body of a PAX header being collected, if any. */
  private meta: { global: boolean; parts: Buffer[]; need: number; padding: number } | undefined;
  private local: PaxRecords | undefined;
  private global: PaxRecords = new Map();
  private done = false;

  /** Feed the next uncompressed bytes (the same ones, in order, that the Parser gets). */
  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.done) {
      if (this.meta !== undefined) {
        const m = this.meta;
        const n = Math.min(m.need, chunk.length - at);
        m.parts.push(chunk.subarray(at, at + n));
        m.need -= n;
        at += n;
        if (m.need === 0) {
          const records = parseRecords(Buffer.concat(m.parts));
          if (m.global) for (const [k, v] of records) this.global.set(k, v);
          else this.local = new Map([...(this.local ?? []), ...records]);
          this.skipBytes = m.padding;
          this.meta = undefined;
        }
        continue;
      }
      if (this.skipBytes > 0) {
        const n = Math.min(this.skipBytes, chunk.length - at);
        this.skipBytes -= n;
        at += n;
        continue;
      }
      const n = Math.min(BLOCK - this.header.length, chunk.length - at);
      this.header = Buffer.concat([this.header, chunk.subarray(at, at + n)]);
      at += n;
      if (this.header.length === BLOCK) {
        const block = this.header;
        this.header = Buffer.alloc(0);
        this.onHeader(block);
      }
    }
  }

  /** The records of the next entry the Parser emits (global ones merged under local ones). */
  shift(): PaxRecords {
    return this.queue.shift() ?? new Map(this.global);
  }

  private onHeader(block: Buffer): void {
    if (block.every((b) => b === 0)) return; // end-of-archive blocks (the Parser decides when it ends)
    let h: Header;
    try {
      h = new Header(block);
    } catch {
      this.done = true; // the Parser reports it
      return;
    }
    const type = h.type ?? '';
    const headerSize = h.size ?? 0;
    if (META_TYPES.has(type)) {
      const padding = pad(headerSize) - headerSize;
      const pax = type === 'ExtendedHeader' || type === 'OldExtendedHeader' || type === 'GlobalExtendedHeader';
      if (pax && headerSize > 0 && headerSize <= MAX_META_BYTES) {
        this.meta = { global: type === 'GlobalExtendedHeader', parts: [], need: headerSize, padding };
      } else {
        this.skipBytes = pad(headerSize);
      }
      return;
    }
    const records = new Map([...this.global, ...(this.local ?? [])]);
    this.local = undefined;
    this.queue.push(records);
    const size = paxSize(records) ?? headerSize;
    this.skipBytes = pad(size);
  }
}

function pad(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

function paxSize(r: PaxRecords): number | undefined {
  const v = r.get('size');
  if (v === undefined) return undefined;
  const n = Number(v.toString('latin1'));
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** `LEN KEY=VALUE\n` records; values stay raw bytes (binary xattrs survive). */
export function parseRecords(body: Buffer): PaxRecords {
  const out: PaxRecords = new Map();
  let at = 0;
  while (at < body.length) {
    const space = body.indexOf(0x20, at);
    if (space < 0) break;
    const len = Number(body.toString('latin1', at, space));
    if (!Number.isSafeInteger(len) || len <= space - at + 1 || at + len > body.length) break;
    const rec = body.subarray(space + 1, at + len - 1); // without the trailing newline
    const eq = rec.indexOf(0x3d);
    if (eq > 0) out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    at += len;
  }
  return out;
}

/** A PAX time (`1700000000.123456789`, maybe negative) in nanoseconds; undefined when it does not parse. */
export function paxTimeNs(v: Buffer | undefined): bigint | undefined {
  if (v === undefined) return undefined;
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(v.toString('latin1'));
  if (m === null) return undefined;
  const frac = (m[3] ?? '').slice(0, 9).padEnd(9, '0');
  const ns = BigInt(m[2]!) * 1_000_000_000n + BigInt(frac);
  return m[1] === '-' ? -ns : ns;
}

/**
 * The xattrs of an entry: `SCHILY.xattr.NAME=raw bytes` (GNU tar, Go, libarchive), else
 * `LIBARCHIVE.xattr.URLENCODED-NAME=base64`.
 */
export function paxXattrs(r: PaxRecords): Map<string, Buffer> | undefined {
  let out: Map<string, Buffer> | undefined;
  for (const [k, v] of r) {
    let name: string | undefined;
    let value = v;
    if (k.startsWith('SCHILY.xattr.')) name = k.slice('SCHILY.xattr.'.length);
    else if (k.startsWith('LIBARCHIVE.xattr.')) {
      name = decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length));
      if (r.has(`SCHILY.xattr.${name}`)) continue;
      value = Buffer.from(v.toString('latin1'), 'base64');
    }
    if (name === undefined || name === '') continue;
    (out ??= new Map()).set(name, value);
  }
  return out;
}
