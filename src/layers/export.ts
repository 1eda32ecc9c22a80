/**
 * Exporting a device as an OCI layer tar: the whole view (a flattened rootfs), or only
 * what its top layer changes over its parent (`diff`: fs.changes()), with `.wh.NAME`
 * whiteouts for deleted names and `.wh..wh..opq` after a directory that replaced a lower
 * one. Importing that tar on the parent gives back the same tree (the round trip the
 * tests check).
 *
 * Format: POSIX pax, as GNU tar --format=pax and docker write it. A PAX record carries
 * what ustar can't: nanosecond mtime/atime, long names and link targets, ids and sizes
 * beyond the ustar fields, and xattrs (SCHILY.xattr.NAME, binary-safe). Names carry no
 * `./` prefix; the root is `./` (full exports only). Hard links: the second and later
 * names of an inode in this archive are Link entries to the first. A name that starts
 * with `.wh.` can't be carried as data (any reader would take it for a whiteout): refused.
 *
 * Names are bytes (fs/bytes.ts): names and link targets go into the ustar fields and the
 * PAX path/linkpath records as their raw bytes, never re-encoded, as GNU tar writes them
 * (without `hdrcharset=BINARY`: GNU tar 1.34 warns on every such record, and readers take
 * the bytes as they are anyway). xattr names likewise.
 */
import { once } from 'node:events';
import { constants } from 'node:fs';
import { Header } from 'tar';
import { fail } from '../errors.js';
import { bytesOf, toText, type Attr, type ByteString, type Change, type Filesystem } from '../fs/index.js';
import { isWhiteoutName, OPAQUE_MARKER, whiteoutName } from './names.js';

const { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFIFO, S_IFCHR, S_IFBLK } = constants;
const BLOCK = 512;
const READ_BYTES = 1024 * 1024;
const USTAR_ID_MAX = 0o7777777;
const USTAR_SIZE_MAX = 0o77777777777;

export interface ExportOptions {
  /** Only what the top layer changes over the layers below (default: the whole view). */
  diff?: boolean;
  /** With `diff`: start with the root directory's entry (`./`), as image layers do, so its attributes travel too. */
  withRoot?: boolean;
}

export interface ExportStats {
  entries: number;
  whiteouts: number;
  opaques: number;
  dataBytes: number;
  elapsedMs: number;
}

/** Write the view `view` (or its top layer's changes) to `out` as an OCI layer tar. Does not end `out`. */
export async function exportLayer(view: Filesystem, out: NodeJS.WritableStream, opts: ExportOptions = {}): Promise<ExportStats> {
  const started = Date.now();
  const w = new TarWriter(out);
  const stats: ExportStats = { entries: 0, whiteouts: 0, opaques: 0, dataBytes: 0, elapsedMs: 0 };
  const firstName = new Map<number, string>();

  const entry = async (path: string, attr: Attr) => {
    const name = nameOf(path, attr);
    const type = attr.mode & S_IFMT;
    if (path !== '/' && isWhiteoutName(path.slice(path.lastIndexOf('/') + 1))) {
      throw fail('EINVAL', 'export', toText(path), 'a name starting with .wh. would be read back as an OCI whiteout; rename it first');
    }
    stats.entries++;
    if (type !== S_IFDIR && attr.nlink > 1) {
      const first = firstName.get(attr.ino);
      if (first !== undefined) {
        await w.entry({ name, type: 'Link', attr, linkpath: first, size: 0 });
        return;
      }
      firstName.set(attr.ino, name);
    }
    const xattrs = new Map(view.listxattr(path).map((n) => [n, view.getxattr(path, n)] as const));
    if (type === S_IFREG) {
      await w.entry({ name, type: 'File', attr, size: attr.size, xattrs });
      stats.dataBytes += await w.body(attr.size, (buf, off) => readAt(view, path, buf, off));
    } else if (type === S_IFLNK) {
      await w.entry({ name, type: 'SymbolicLink', attr, linkpath: view.readlink(path), size: 0, xattrs });
    } else if (type === S_IFDIR) {
      await w.entry({ name, type: 'Directory', attr, size: 0, xattrs });
    } else if (type === S_IFCHR || type === S_IFBLK) {
      await w.entry({ name, type: type === S_IFCHR ? 'CharacterDevice' : 'BlockDevice', attr, size: 0, xattrs });
    } else if (type === S_IFIFO) {
      await w.entry({ name, type: 'FIFO', attr, size: 0, xattrs });
    } else {
      stats.entries--; // sockets: tar has no type for them
    }
  };

  if (opts.diff === true) {
    if (opts.withRoot === true) await entry('/', view.getattr('/'));
    for (const c of view.changes()) await exportChange(view, w, c, entry, stats);
  } else {
    const walk = async (dir: string) => {
      await entry(dir, view.getattr(dir));
      for (const e of view.readdir(dir)) {
        if (e.name === '.' || e.name === '..') continue;
        const p = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
        if ((e.type & S_IFMT) === S_IFDIR) await walk(p);
        else await entry(p, view.getattr(p));
      }
    };
    await walk('/');
  }
  await w.end();
  stats.elapsedMs = Date.now() - started;
  return stats;
}

async function exportChange(
  view: Filesystem,
  w: TarWriter,
  c: Change,
  entry: (path: string, attr: Attr) => Promise<void>,
  stats: ExportStats,
): Promise<void> {
  const slash = c.path.lastIndexOf('/');
  const dir = c.path.slice(0, slash);
  if (c.kind === 'deleted') {
    stats.whiteouts++;
    await w.marker(`${dir === '' ? '' : `${dir.slice(1)}/`}${whiteoutName(c.path.slice(slash + 1))}`);
    return;
  }
  const attr = view.getattr(c.path);
  await entry(c.path, attr);
  if (c.opaque === true) {
    stats.opaques++;
    await w.marker(`${c.path.slice(1)}/${OPAQUE_MARKER}`);
  }
}

function nameOf(path: string, attr: Attr): string {
  if (path === '/') return './';
  return (attr.mode & S_IFMT) === S_IFDIR ? `${path.slice(1)}/` : path.slice(1);
}

function readAt(view: Filesystem, path: string, buf: Buffer, offsetBytes: number): number {
  const fh = view.open(path, constants.O_RDONLY);
  try {
    const data = view.read(fh, offsetBytes, buf.length);
    data.copy(buf);
    return data.length;
  } finally {
    view.release(fh);
  }
}

interface Entry {
  name: ByteString;
  type: 'File' | 'Link' | 'SymbolicLink' | 'Directory' | 'CharacterDevice' | 'BlockDevice' | 'FIFO';
  attr: Attr;
  size: number;
  linkpath?: ByteString;
  xattrs?: Map<ByteString, Buffer>;
}

/** Longest name or link name the ustar fields carry here (100 bytes, one kept for a NUL); longer ones go in PAX records. */
const USTAR_NAME_MAX = 99;

/** pax-format tar blocks to a stream, with backpressure. */
class TarWriter {
  constructor(private readonly out: NodeJS.WritableStream) {}

  async entry(e: Entry): Promise<void> {
    const a = e.attr;
    const records: [ByteString, Buffer][] = [];
    const rec = (k: ByteString, v: string | Buffer) => records.push([k, Buffer.isBuffer(v) ? v : Buffer.from(v)]);
    const longName = e.name.length > USTAR_NAME_MAX;
    const longLink = e.linkpath !== undefined && e.linkpath.length > USTAR_NAME_MAX;
    if (longName) rec('path', bytesOf(e.name));
    if (longLink) rec('linkpath', bytesOf(e.linkpath!));
    if (a.uid > USTAR_ID_MAX) rec('uid', String(a.uid));
    if (a.gid > USTAR_ID_MAX) rec('gid', String(a.gid));
    if (e.size > USTAR_SIZE_MAX) rec('size', String(e.size));
    if (a.mtimeNs % 1_000_000_000n !== 0n || a.mtimeNs < 0n) rec('mtime', paxTime(a.mtimeNs));
    for (const [k, v] of e.xattrs ?? []) rec(`SCHILY.xattr.${k}`, v);
    if (records.length > 0) {
      rec('atime', paxTime(a.atimeNs)); // only along with other records: a header per entry for it alone would double small layers
      await this.paxHeader(e.name, records);
    }
    const rdev = a.rdev;
    await this.put(
      header({
        type: e.type,
        size: e.type === 'File' ? Math.min(e.size, USTAR_SIZE_MAX) : 0,
        mode: a.mode & 0o7777,
        uid: Math.min(a.uid, USTAR_ID_MAX),
        gid: Math.min(a.gid, USTAR_ID_MAX),
        mtime: new Date(Number(a.mtimeNs / 1_000_000_000n) * 1000),
        uname: '',
        gname: '',
        devmaj: e.type === 'CharacterDevice' || e.type === 'BlockDevice' ? (rdev >>> 8) & 0xfff : 0,
        devmin: e.type === 'CharacterDevice' || e.type === 'BlockDevice' ? (rdev & 0xff) | ((rdev >>> 12) & 0xfff00) : 0,
      }, longName ? truncateName(e.name) : e.name, e.linkpath === undefined ? '' : longLink ? truncateName(e.linkpath) : e.linkpath),
    );
  }

  /** A whiteout or opaque marker: an empty regular file. */
  async marker(name: ByteString): Promise<void> {
    const long = name.length > USTAR_NAME_MAX;
    if (long) await this.paxHeader(name, [['path', bytesOf(name)]]);
    await this.put(header({ type: 'File', size: 0, mode: 0, uid: 0, gid: 0, mtime: new Date(0), uname: '', gname: '' }, long ? truncateName(name) : name));
  }

  /** A PAX extended header carrying `records` for the entry `name` that follows it. */
  private async paxHeader(name: ByteString, records: [ByteString, Buffer][]): Promise<void> {
    const body = Buffer.concat(records.map(([k, v]) => paxRecord(k, v)));
    const paxName = `PaxHeader/${name.replace(/\/$/, '').split('/').pop() ?? ''}`.slice(0, USTAR_NAME_MAX);
    await this.put(header({ type: 'ExtendedHeader', size: body.length, mode: 0o644, uid: 0, gid: 0, mtime: new Date(0) }, paxName));
    await this.put(body);
    await this.pad(body.length);
  }

  /** `size` bytes of file data read through `read(buf, offset) → bytes`, then padding; returns the bytes written. */
  async body(size: number, read: (buf: Buffer, offsetBytes: number) => number): Promise<number> {
    let done = 0;
    while (done < size) {
      const buf = Buffer.alloc(Math.min(READ_BYTES, size - done));
      const n = read(buf, done);
      if (n <= 0) throw fail('EIO', 'export', undefined, 'a file ended before its size');
      await this.put(n === buf.length ? buf : buf.subarray(0, n));
      done += n;
    }
    await this.pad(size);
    return size;
  }

  async end(): Promise<void> {
    await this.put(Buffer.alloc(2 * BLOCK));
  }

  private async pad(n: number): Promise<void> {
    const rest = (BLOCK - (n % BLOCK)) % BLOCK;
    if (rest > 0) await this.put(Buffer.alloc(rest));
  }

  private async put(buf: Buffer): Promise<void> {
    if (!this.out.write(buf)) await once(this.out as NodeJS.EventEmitter, 'drain');
  }
}

/**
 * One ustar header block: node-tar encodes the numeric fields; the name and link name
 * (byte strings of at most USTAR_NAME_MAX bytes) are written as raw bytes, since
 * node-tar would write them as UTF-8, and the checksum is computed again over the result.
 */
function header(h: Omit<NonNullable<ConstructorParameters<typeof Header>[0]>, 'path' | 'linkpath'>, name: ByteString, linkpath: ByteString = ''): Buffer {
  const buf = Buffer.alloc(BLOCK);
  new Header({ ...h, path: '', linkpath: '' }).encode(buf, 0);
  buf.write(name, 0, 100, 'latin1');
  buf.write(linkpath, 157, 100, 'latin1');
  buf.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  let sum = 0;
  for (const b of buf) sum += b;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return buf;
}

function paxTime(ns: bigint): string {
  const neg = ns < 0n;
  const abs = neg ? -ns : ns;
  return `${neg ? '-' : ''}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`;
}

/** `LEN KEY=VALUE\n`, LEN counting its own digits. */
function paxRecord(key: ByteString, value: Buffer): Buffer {
  const rest = Buffer.concat([Buffer.from(` ${key}=`, 'latin1'), value, Buffer.from('\n')]);
  let len = rest.length + 1;
  while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
  return Buffer.concat([Buffer.from(String(len)), rest]);
}

/** The ustar name field of a name carried in a PAX record: its first bytes (readers use the record). */
function truncateName(s: ByteString): ByteString {
  return s.slice(0, USTAR_NAME_MAX);
}
