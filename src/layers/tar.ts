/**
 * Importing a tar layer (plain, gzip or zstd, told apart by the magic bytes) into a writable
 * Filesystem, streamed through node-tar's Parser: nothing is extracted to disk.
 *
 * What is kept: numeric uid/gid (names are ignored, as docker does), permission bits
 * with setuid/setgid/sticky, mtime and atime (nanoseconds from PAX records), xattrs
 * (PAX SCHILY.xattr.* and LIBARCHIVE.xattr.*, binary-safe: pax.ts), hard links,
 * symlinks, fifos and device nodes. OCI whiteouts apply (names.ts, writer.ts).
 *
 * What is refused, naming the entry: names escaping the root (names.ts), entry types
 * thinfs can't represent (GNU sparse files, multi-volume parts), a body that ends early,
 * a bad header checksum, bytes that are not a tar at all, a gzip or zstd stream that is
 * truncated or corrupt, and a tar without its end-of-archive blocks (a stream cut at an
 * entry boundary would otherwise import half a layer without a word). An archive holding
 * only its end-of-archive blocks is an empty layer (docker writes those for ENV/LABEL steps).
 *
 * Names are bytes: entry names and link targets come from pax.ts's raw reading of the
 * headers (node-tar's `entry.path` is UTF-8-decoded, lossy); messages decode them only
 * for display (toText).
 */
import * as fs from 'node:fs';
import { Parser, type ReadEntry } from 'tar';
import { fail, isThinfsError, ThinfsError, type ErrnoCode } from '../errors.js';
import { entryError, progressThrottle, type ImportOptions, type ImportStats } from './common.js';
import { toText, type Filesystem } from '../fs/index.js';
import { archivePath, classify } from './names.js';
import { PaxTracker, paxTimeNs, paxXattrs, type EntryHeader, type PaxRecords } from './pax.js';
import { decompressed, tapped } from './streams.js';
import { LayerWriter, type EntryMeta, type FileSink } from './writer.js';

/** The import is synchronous per chunk; it gives the event loop a turn this often. */
const YIELD_EVERY_MS = 20;
/** The tar parser is fed this much at a time, so a yield is never far away. */
const SLICE_BYTES = 64 * 1024;

/** Import the tar (plain, gzip or zstd) file `file` as one layer into `target` (a writable Filesystem). */
export async function importTar(target: Filesystem, file: string, blockSizeBytes: number, opts: ImportOptions = {}): Promise<ImportStats> {
  const totalBytes = sizeOf(file);
  const input = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
  const read = { bytes: 0 };
  try {
    const plain = decompressed(tapped(input, undefined, read), 'auto', file);
    return await importTarStream(target, plain, file, blockSizeBytes, { ...opts, totalBytes, doneBytes: () => read.bytes });
  } finally {
    input.destroy();
  }
}

/** How progress of a stream import is measured: bytes of the source read so far, of `totalBytes`. */
export interface StreamImportOptions extends ImportOptions {
  totalBytes: number;
  doneBytes: () => number;
}

/**
 * Import an uncompressed tar stream `plain` as one layer into `target`; `source` names it
 * in errors. Reads `plain` to its very end (the bytes after the end-of-archive blocks
 * too), unless an entry is refused: a caller hashing the stream sees all of it.
 * Gives the event loop a turn every YIELD_EVERY_MS, so a daemon keeps serving its mounts.
 */
export async function importTarStream(
  target: Filesystem,
  plain: AsyncIterable<Buffer>,
  file: string,
  blockSizeBytes: number,
  opts: StreamImportOptions,
): Promise<ImportStats> {
  const started = Date.now();
  const writer = new LayerWriter(target, blockSizeBytes);
  const pax = new PaxTracker();
  const parser = new Parser({ strict: false });
  let entries = 0;
  let failed: unknown;
  let sawEnd = false;
  let unrecognized = false;
  let sink: FileSink | undefined;
  let current = '';

  const stop = (err: unknown) => {
    if (failed === undefined) failed = err;
  };
  parser.on('entry', (entry: ReadEntry) => {
    if (failed !== undefined) {
      entry.resume();
      return;
    }
    entries++;
    const h = pax.shift();
    if (h === undefined || h.cksum !== entry.header.cksum) {
      stop(fail('EINVAL', 'import', file, `corrupt tar: the headers after entry '${current}' can be read two ways; refused`));
      entry.resume();
      return;
    }
    current = toText(h.path);
    try {
      sink = applyEntry(writer, entry, h, file);
    } catch (err) {
      stop(entryError(err, file, current));
      entry.resume();
      return;
    }
    if (sink === undefined) {
      entry.resume();
      return;
    }
    const s = sink;
    const shownName = current;
    entry.on('data', (chunk: Buffer) => {
      if (failed !== undefined) return;
      try {
        s.write(chunk);
      } catch (err) {
        stop(entryError(err, file, shownName));
      }
    });
    entry.on('end', () => {
      sink = undefined;
      if (failed !== undefined) return;
      try {
        s.end();
      } catch (err) {
        stop(entryError(err, file, shownName));
      }
    });
  });
  parser.on('ignoredEntry', (entry: ReadEntry) => {
    stop(fail('ENOTSUP', 'import', file, `entry '${entry.path}' has a type thinfs can't import (${entry.type})`));
  });
  parser.on('nullBlock', () => {
    sawEnd = true;
  });
  parser.on('eof', () => {
    sawEnd = true;
  });
  parser.on('warn', (code: string, message: string) => {
    if (code === 'TAR_BAD_ARCHIVE' && /Unrecognized archive format/.test(message)) unrecognized = true;
    else stop(tarError(file, code, message, current));
  });
  parser.on('error', (err: Error & { tarCode?: string }) => stop(tarError(file, err.tarCode ?? 'TAR_ERROR', err.message, current)));
  const ended = new Promise<void>((resolve) => parser.on('end', () => resolve()));

  const progress = progressThrottle(opts, opts.totalBytes, 'bytes');
  let lastYield = Date.now();
  try {
    for await (const big of plain) {
      // Small slices: a slice of small files is many metadata operations, all synchronous.
      for (let at = 0; at < big.length && failed === undefined; at += SLICE_BYTES) {
        const chunk = at === 0 && big.length <= SLICE_BYTES ? big : big.subarray(at, at + SLICE_BYTES);
        pax.push(chunk);
        parser.write(chunk);
        if (Date.now() - lastYield >= YIELD_EVERY_MS) {
          // In the daemon this loop shares the event loop with every mount: let FUSE requests through.
          await new Promise((resolve) => setImmediate(resolve));
          lastYield = Date.now();
        }
      }
      if (failed !== undefined) break;
      progress(opts.doneBytes(), entries, false);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (isThinfsError(err)) stop(err);
    else stop(fail(((e.code as ErrnoCode | undefined) ?? 'EIO'), 'import', file, `cannot read the source (${e.message})`));
  }
  if (failed === undefined) {
    parser.end();
    await ended;
  }
  if (failed === undefined && sink !== undefined) stop(fail('EINVAL', 'import', file, `the tar is truncated inside entry '${current}'`));
  if (failed === undefined && unrecognized && !(sawEnd && entries === 0)) stop(fail('EINVAL', 'import', file, 'not a tar archive (no valid tar header found)'));
  if (failed === undefined && !sawEnd) {
    stop(fail('EINVAL', 'import', file, entries === 0 ? 'not a tar archive (empty or too short)' : `the tar is truncated: it ends after entry '${current}' without its end-of-archive blocks`));
  }
  if (failed !== undefined) throw failed;
  writer.finish();
  progress(opts.doneBytes(), entries, true);
  return { ...writer.counts, entries, elapsedMs: Date.now() - started };
}

/** Apply one entry (its raw names and records in `h`); returns the sink its data goes to (regular files), else undefined. */
function applyEntry(writer: LayerWriter, entry: ReadEntry, h: EntryHeader, file: string): FileSink | undefined {
  const path = archivePath(h.path, file);
  const k = classify(path);
  if (k.kind !== 'entry') {
    writer.special(k);
    return undefined;
  }
  const meta = metaOf(entry, h.records);
  switch (entry.type) {
    case 'Directory':
    case 'GNUDumpDir':
      writer.directory(path, meta);
      return undefined;
    case 'File':
    case 'OldFile':
    case 'ContiguousFile':
      return writer.file(path, meta);
    case 'SymbolicLink':
      writer.symlink(path, h.linkpath, meta);
      return undefined;
    case 'Link':
      writer.hardlink(path, archivePath(h.linkpath, file, `entry '${toText(h.path)}': hard link target`));
      return undefined;
    case 'CharacterDevice':
    case 'BlockDevice':
      writer.node(path, entry.type === 'CharacterDevice' ? 'char' : 'block', makedev(entry.header.devmaj, entry.header.devmin), meta);
      return undefined;
    case 'FIFO':
      writer.node(path, 'fifo', 0, meta);
      return undefined;
    default:
      throw fail('ENOTSUP', 'import', file, `entry '${toText(h.path)}' has a type thinfs can't import (${entry.type})`);
  }
}

function metaOf(entry: ReadEntry, records: PaxRecords): EntryMeta {
  const mtimeNs = paxTimeNs(records.get('mtime')) ?? dateNs(entry.mtime) ?? 0n;
  const atimeNs = paxTimeNs(records.get('atime')) ?? dateNs(entry.atime) ?? mtimeNs;
  return {
    mode: (entry.mode ?? 0o644) & 0o7777,
    uid: entry.uid ?? 0,
    gid: entry.gid ?? 0,
    mtimeNs,
    atimeNs,
    xattrs: paxXattrs(records),
  };
}

/** Linux's st_rdev encoding of (major, minor), as glibc's makedev and the kernel's new_encode_dev. */
export function makedev(major: number, minor: number): number {
  return (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12);
}

function dateNs(d: Date | undefined): bigint | undefined {
  if (d === undefined || Number.isNaN(d.getTime())) return undefined;
  return BigInt(d.getTime()) * 1_000_000n;
}

function sizeOf(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch (err) {
    throw fail(((err as NodeJS.ErrnoException).code as ErrnoCode | undefined) ?? 'EIO', 'import', file, `cannot read the source (${(err as Error).message})`);
  }
}

function tarError(file: string, code: string, message: string, current: string): ThinfsError {
  const msg = message.replace(/^TAR_[A-Z_]+: /, '');
  if (/Truncated input/.test(msg)) return fail('EINVAL', 'import', file, `the tar is truncated inside entry '${current}' (${msg})`);
  if (/checksum/.test(msg) && current === '') return fail('EINVAL', 'import', file, 'not a tar archive (the first header fails its checksum)');
  if (/checksum/.test(msg)) return fail('EINVAL', 'import', file, `corrupt tar: a header after entry '${current}' fails its checksum`);
  return fail('EINVAL', 'import', file, `corrupt tar (${code}: ${msg})`);
}

