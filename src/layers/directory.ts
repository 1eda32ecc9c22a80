/**
 * Importing a directory tree (an unpacked rootfs) as one layer, like `tar -C DIR -c .`
 * piped into a tar import: the directory itself gives the attributes of the image root.
 *
 * The walk uses lstat and never follows symlinks. Kept: uid/gid, permission bits with
 * setuid/setgid/sticky, atime/mtime in nanoseconds, hard links (same dev+ino → one
 * inode with several names), symlinks, fifos, character and block device nodes (rdev),
 * and xattrs. Sockets are skipped, as tar skips them. OCI `.wh.` names apply as in a tar
 * (an unpacked OCI layer keeps its whiteouts as files).
 *
 * xattrs: Node has no xattr API, so one `getfattr -R -P -h -d -m - -e base64` child
 * process reads those of the whole tree before the walk (the `attr` package). Without
 * getfattr the import goes on without xattrs and logs a warning. Names the caller may
 * not read (trusted.* as non-root) are simply not listed by getfattr.
 * Names are bytes: the walk reads names, symlink targets and xattr names as raw bytes
 * (Buffer paths, `{ encoding: 'buffer' }`, getfattr's escapes) and hands them on as
 * byte strings (fs/bytes.ts), so a name that is not UTF-8 arrives exactly as it is.
 * The copy runs in short synchronous steps with a turn of the event loop every 20 ms,
 * so a daemon keeps answering its mounts during a long import.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, type ErrnoCode } from '../errors.js';
import { byteString, bytesOf, fromText, toText, type ByteString, type Filesystem } from '../fs/index.js';
import { logger } from '../log.js';
import { entryError, progressThrottle, type ImportOptions, type ImportStats } from './common.js';
import { archivePath, classify } from './names.js';
import { LayerWriter, type EntryMeta } from './writer.js';

const log = logger('layers');
const READ_BYTES = 1024 * 1024;
/** The walk is synchronous; it gives the event loop a turn this often. */
const YIELD_EVERY_MS = 20;

interface Found {
  /** Path relative to the source directory ('' for the directory itself), a byte string. */
  rel: ByteString;
  st: fs.BigIntStats;
}

/** Import directory `dir` as one layer into `target` (a writable Filesystem). */
export async function importDirectory(
  target: Filesystem,
  dir: string,
  blockSizeBytes: number,
  opts: ImportOptions & { avoid?: string[] } = {},
): Promise<ImportStats> {
  const started = Date.now();
  dir = path.resolve(dir);
  const dirBytes = fromText(dir);
  const found = walk(dir, opts.avoid ?? []);
  const xattrs = await readXattrs(dir);
  const writer = new LayerWriter(target, blockSizeBytes);
  const firstName = new Map<string, string>();
  const progress = progressThrottle(opts, found.length, 'entries');
  const buf = Buffer.allocUnsafe(READ_BYTES);
  let entries = 0;
  let lastYield = Date.now();
  for (const { rel, st } of found) {
    if (Date.now() - lastYield >= YIELD_EVERY_MS) {
      // In the daemon this loop shares the event loop with every mount: let FUSE requests through.
      await new Promise((resolve) => setImmediate(resolve));
      lastYield = Date.now();
    }
    const name = rel === '' ? '.' : rel;
    const abs = hostPath(dirBytes, rel);
    try {
      const p = archivePath(rel === '' ? '.' : rel, dir);
      const k = classify(p);
      entries++;
      if (k.kind !== 'entry') {
        writer.special(k);
        continue;
      }
      const meta: EntryMeta = {
        mode: Number(st.mode) & 0o7777,
        uid: Number(st.uid),
        gid: Number(st.gid),
        atimeNs: st.atimeNs,
        mtimeNs: st.mtimeNs,
        xattrs: xattrs.get(absOf(dirBytes, rel)),
      };
      if (st.isDirectory()) {
        writer.directory(p, meta);
        continue;
      }
      if (st.isSocket()) {
        entries--;
        continue;
      }
      if (st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        const first = firstName.get(key);
        if (first !== undefined) {
          writer.hardlink(p, first);
          continue;
        }
        firstName.set(key, p);
      }
      if (st.isSymbolicLink()) writer.symlink(p, byteString(fs.readlinkSync(abs, { encoding: 'buffer' })), meta);
      else if (st.isFIFO()) writer.node(p, 'fifo', 0, meta);
      else if (st.isCharacterDevice()) writer.node(p, 'char', Number(st.rdev), meta);
      else if (st.isBlockDevice()) writer.node(p, 'block', Number(st.rdev), meta);
      else await copyFile(writer.file(p, meta), abs, buf);
    } catch (err) {
      throw entryError(err, dir, toText(name));
    } finally {
      progress(entries, entries, false);
    }
  }
  writer.finish();
  progress(entries, entries, true);
  return { ...writer.counts, entries, elapsedMs: Date.now() - started };
}

/** The absolute path (a byte string) of `rel` below the directory `dirBytes` (a byte string). */
function absOf(dirBytes: ByteString, rel: ByteString): ByteString {
  if (rel === '') return dirBytes;
  return dirBytes.endsWith('/') ? `${dirBytes}${rel}` : `${dirBytes}/${rel}`;
}

/** The host path (raw bytes, for node:fs) of `rel` below the directory `dirBytes`. */
function hostPath(dirBytes: ByteString, rel: ByteString): Buffer {
  return bytesOf(absOf(dirBytes, rel));
}

/**
 * Every entry below `dir` (itself first), parents before children, names sorted by
 * their bytes; never entering a path of `avoid`.
 */
function walk(dir: string, avoid: string[]): Found[] {
  const dirBytes = fromText(dir);
  const avoided = new Set(avoid.map((m) => fromText(path.resolve(m))));
  const out: Found[] = [];
  const st = lstat(hostPath(dirBytes, ''), dir);
  if (!st.isDirectory()) throw fail('ENOTDIR', 'import', dir, 'not a directory');
  out.push({ rel: '', st });
  const visit = (rel: ByteString) => {
    let names: ByteString[];
    try {
      names = fs.readdirSync(hostPath(dirBytes, rel), { encoding: 'buffer' }).map(byteString);
    } catch (err) {
      throw sourceError(err, dir, rel);
    }
    names.sort();
    for (const n of names) {
      const r = rel === '' ? n : `${rel}/${n}`;
      if (avoided.has(absOf(dirBytes, r))) {
        throw fail('EINVAL', 'import', dir, `entry '${toText(r)}' is a thinfs mount this daemon serves; it can't be read from here`);
      }
      const s = lstat(hostPath(dirBytes, r), dir, r);
      out.push({ rel: r, st: s });
      if (s.isDirectory()) visit(r);
    }
  };
  visit('');
  return out;
}

function lstat(abs: Buffer, dir: string, rel: ByteString = ''): fs.BigIntStats {
  try {
    return fs.lstatSync(abs, { bigint: true });
  } catch (err) {
    throw sourceError(err, dir, rel);
  }
}

function sourceError(err: unknown, dir: string, rel: ByteString) {
  const e = err as NodeJS.ErrnoException;
  const code = (e.code ?? 'EIO') as ErrnoCode;
  return fail(code, 'import', dir, rel === '' ? `cannot read the source (${e.message})` : `entry '${toText(rel)}': cannot read it (${e.message})`);
}

async function copyFile(sink: ReturnType<LayerWriter['file']>, abs: Buffer, buf: Buffer): Promise<void> {
  const fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    let lastYield = Date.now();
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      sink.write(buf.subarray(0, n));
      if (Date.now() - lastYield >= YIELD_EVERY_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        lastYield = Date.now();
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  sink.end();
}

/** The xattrs of every entry under `dir` that has any, by absolute path (byte strings, as the names); empty without getfattr. */
async function readXattrs(dir: string): Promise<Map<ByteString, Map<ByteString, Buffer>>> {
  const out = new Map<ByteString, Map<ByteString, Buffer>>();
  const args = ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', dir];
  const text = await new Promise<string | undefined>((resolve) => {
    const child = spawn('getfattr', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.on('error', (err) => {
      log.warn({ err: err.message }, 'getfattr is not available (install the attr package): importing without xattrs');
      resolve(undefined);
    });
    child.on('close', (code) => {
      if (code !== 0 && stderr !== '') log.warn({ stderr: stderr.trim().slice(0, 500) }, 'getfattr could not read every xattr');
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
  });
  if (text === undefined) return out;
  let current: Map<ByteString, Buffer> | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const file = unescapeGetfattr(line.slice('# file: '.length));
      current = new Map();
      out.set(path.posix.normalize(file).replace(/(.)\/$/, '$1'), current); // as absOf spells it
      continue;
    }
    if (current === undefined || line === '') continue;
    const eq = line.indexOf('=');
    const name = unescapeGetfattr(eq < 0 ? line : line.slice(0, eq));
    const raw = eq < 0 ? '' : line.slice(eq + 1);
    current.set(name, decodeValue(raw));
  }
  return out;
}

/** getfattr writes names with octal escapes (`\012`) for special bytes and `\\` for a backslash; the raw bytes, as a byte string. */
function unescapeGetfattr(s: string): ByteString {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && /^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) {
      bytes.push(parseInt(s.slice(i + 1, i + 4), 8));
      i += 3;
    } else if (s[i] === '\\' && s[i + 1] === '\\') {
      bytes.push(0x5c);
      i += 1;
    } else bytes.push(s.charCodeAt(i) & 0xff);
  }
  return byteString(Buffer.from(bytes));
}

/** `0sBASE64`, `0xHEX` or a quoted string, as getfattr -e prints values. */
function decodeValue(raw: string): Buffer {
  if (raw.startsWith('0s')) return Buffer.from(raw.slice(2), 'base64');
  if (raw.startsWith('0x')) return Buffer.from(raw.slice(2), 'hex');
  if (raw.startsWith('"') && raw.endsWith('"')) return Buffer.from(raw.slice(1, -1), 'latin1');
  return Buffer.from(raw, 'latin1');
}
