/**
 * Entry names and PAX extended header records as raw bytes, for the entries node-tar's
 * Parser emits.
 *
 * Why: node-tar decodes PAX bodies as UTF-8 text and keeps only the fields it knows, so
 * `SCHILY.xattr.*` records (GNU tar's, Go's archive/tar's) are dropped, binary values
 * such as `security.capability` would not survive UTF-8, and times keep only
 * milliseconds. It also decodes every name field as UTF-8: a name that is not UTF-8
 * (`caf\xe9`) becomes `caf\uFFFD`, and a PAX record holding one (GNU tar writes raw
 * bytes there) throws its record lengths off, so the whole record set is lost and the
 * entry gets its truncated ustar name. Names are bytes (fs/bytes.ts), so this tracker
 * watches the same uncompressed bytes the Parser gets, frames the archive (512-byte
 * headers and bodies), and queues for each non-meta entry, in archive order, its raw
 * records and its name and link name as byte strings:
 *  - name: a local PAX `path` record, else a GNU long name (`L`/`N` entry), else the
 *    ustar prefix + '/' + name fields (each cut at its first NUL);
 *  - link name: a local PAX `linkpath` record, else a GNU long link (`K`), else the
 *    ustar linkname field.
 * The bytes are kept whatever `hdrcharset` says: POSIX wants UTF-8 in path records,
 * which is exactly the name's bytes when the name is UTF-8, and GNU tar writes the raw
 * bytes otherwise (with or without hdrcharset=BINARY). Global records never name an
 * entry (as node-tar and GNU tar: a global `path` is meaningless).
 *
 * The importer takes one queued header per entry the Parser emits, and checks that it is
 * the same header (its checksum field): the Parser remains the authority on what the
 * archive holds (checksums, types, sizes, bodies); anything it refuses stops the import,
 * and a framing the two disagree on (a tar built to be read two ways) is refused.
 */
import { Header } from 'tar';
import { byteString, type ByteString } from '../fs/index.js';

/** PAX records: key (a byte string) -> raw value. */
export type PaxRecords = Map<ByteString, Buffer>;

/** What the tracker read of one entry's headers. */
export interface EntryHeader {
  /** The entry's name, raw (before names.ts validates it). */
  path: ByteString;
  /** Hard or symbolic link target, raw; '' when the entry has none. */
  linkpath: ByteString;
  /** PAX records in effect (global ones under local ones). */
  records: PaxRecords;
  /** The header's checksum field, to check it is the header the Parser emitted. */
  cksum: number | undefined;
}

type MetaKind = 'pax' | 'global' | 'longPath' | 'longLink';

const BLOCK = 512;
const META_KINDS = new Map<string, MetaKind>([
  ['ExtendedHeader', 'pax'],
  ['OldExtendedHeader', 'pax'],
  ['GlobalExtendedHeader', 'global'],
  ['NextFileHasLongPath', 'longPath'],
  ['OldGnuLongPath', 'longPath'],
  ['NextFileHasLongLinkpath', 'longLink'],
]);
/** As node-tar's own limit on meta entries. */
const MAX_META_BYTES = 1024 * 1024;

/** Frames a tar byte stream and collects the raw names and PAX records of each entry. */
export class PaxTracker {
  private readonly queue: EntryHeader[] = [];
  private header = Buffer.alloc(0);
  /** Bytes of the current body (and its padding) still to pass. */
  private skipBytes = 0;
  /** The body of a PAX header being collected, if any. */
  private meta: { kind: MetaKind; parts: Buffer[]; need: number; padding: number } | undefined;
  private local: PaxRecords | undefined;
  private longPath: ByteString | undefined;
  private longLink: ByteString | undefined;
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
          const body = Buffer.concat(m.parts);
          if (m.kind === 'longPath') this.longPath = cString(body);
          else if (m.kind === 'longLink') this.longLink = cString(body);
          else if (m.kind === 'global') for (const [k, v] of parseRecords(body)) this.global.set(k, v);
          else this.local = new Map([...(this.local ?? []), ...parseRecords(body)]);
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

  /** The headers of the next entry the Parser emits; undefined when none was framed (the two disagree). */
  shift(): EntryHeader | undefined {
    return this.queue.shift();
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
    const kind = META_KINDS.get(type);
    if (kind !== undefined) {
      const padding = pad(headerSize) - headerSize;
      if (headerSize > 0 && headerSize <= MAX_META_BYTES) {
        this.meta = { kind, parts: [], need: headerSize, padding };
      } else {
        this.skipBytes = pad(headerSize);
      }
      return;
    }
    const local = this.local ?? new Map<ByteString, Buffer>();
    const records = new Map([...this.global, ...local]);
    const paxPath = local.get('path');
    const paxLink = local.get('linkpath');
    this.queue.push({
      path: paxPath !== undefined ? byteString(paxPath) : (this.longPath ?? ustarName(block)),
      linkpath: paxLink !== undefined ? byteString(paxLink) : (this.longLink ?? cString(block.subarray(157, 257))),
      records,
      cksum: h.cksum,
    });
    this.local = undefined;
    this.longPath = undefined;
    this.longLink = undefined;
    const size = paxSize(records) ?? headerSize;
    this.skipBytes = pad(size);
  }
}

/** The bytes of `b` up to its first NUL, as a byte string. */
function cString(b: Buffer): ByteString {
  const nul = b.indexOf(0);
  return byteString(nul < 0 ? b : b.subarray(0, nul));
}

/**
 * The name of a ustar header: prefix + '/' + name when it has a prefix (155 bytes, or
 * 130 when star's atime/ctime follow it, as node-tar reads it), else the name field.
 */
function ustarName(block: Buffer): ByteString {
  const name = cString(block.subarray(0, 100));
  if (block.toString('latin1', 257, 265) !== 'ustar\u000000') return name;
  const prefix = cString(block.subarray(345, block[475] !== 0 ? 500 : 475));
  return prefix === '' ? name : `${prefix}/${name}`;
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

/** `LEN KEY=VALUE\n` records; keys are byte strings, values raw bytes (binary xattrs, names that are not UTF-8). */
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
    if (eq > 0) out.set(rec.toString('latin1', 0, eq), Buffer.from(rec.subarray(eq + 1)));
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
 * The xattrs of an entry, names as byte strings: `SCHILY.xattr.NAME=raw bytes` (GNU tar,
 * Go, libarchive), else `LIBARCHIVE.xattr.URLENCODED-NAME=base64`.
 */
export function paxXattrs(r: PaxRecords): Map<ByteString, Buffer> | undefined {
  let out: Map<ByteString, Buffer> | undefined;
  for (const [k, v] of r) {
    let name: ByteString | undefined;
    let value = v;
    if (k.startsWith('SCHILY.xattr.')) name = k.slice('SCHILY.xattr.'.length);
    else if (k.startsWith('LIBARCHIVE.xattr.')) {
      name = percentDecode(k.slice('LIBARCHIVE.xattr.'.length));
      if (r.has(`SCHILY.xattr.${name}`)) continue;
      value = Buffer.from(v.toString('latin1'), 'base64');
    }
    if (name === undefined || name === '') continue;
    (out ??= new Map()).set(name, value);
  }
  return out;
}

/** `%XX` escapes to the bytes they stand for (byte string in, byte string out; no UTF-8 decoding). */
function percentDecode(s: ByteString): ByteString {
  return s.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}
