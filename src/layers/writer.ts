/**
 * Applying one layer's entries to a writable Filesystem, whatever they came from (a tar
 * stream, a directory walk). Paths given here are validated filesystem paths (names.ts).
 *
 * Rules, as `docker load` / containerd apply a layer:
 *  - An entry replaces what the layers below (or an earlier entry of this layer) show at
 *    its path, except that a directory over a directory is merged (its attributes set,
 *    its contents kept). Missing parents are made 0755 root:root, as tar does.
 *  - Attributes are set in the order that keeps them: data, chown (which clears setuid
 *    and security.capability, as Linux does), chmod, xattrs, times. Directory times are
 *    set at the end (finish), since every entry made inside a directory changes its mtime.
 *  - Whiteouts and opaque markers hide what the layers *below* show; entries this layer
 *    itself made stay (OCI image spec: "files that are present in the same layer as a
 *    whiteout file can only be hidden by whiteout files in subsequent layers"). So the
 *    writer remembers which paths this layer made (`fresh`), which lower directories it
 *    merged (`merged`) and which directories hold something of its own (`holders`).
 *    The common order (a directory, its marker, then its contents) costs one makeOpaque.
 *  - Removing a lower directory tree is O(1): makeOpaque (a fresh empty directory) then
 *    rmdir, which leaves one whiteout — never a walk of the lower tree.
 *  - File blocks that are all zeros are not written (holes), so sparse files stay sparse
 *    and zero-filled images cost no pool space; reads of holes return zeros.
 *  - xattrs outside user./trusted./security. (system.* ACLs) are not stored: counted in
 *    `skippedXattrs`. So are user.* on anything but files and directories (Linux refuses them).
 */
import { constants } from 'node:fs';
import { fail, isThinfsError } from '../errors.js';
import type { Attr, Caller, Fh, Filesystem } from '../fs/index.js';
import type { NameKind } from './names.js';

const { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFIFO, S_IFCHR, S_IFBLK } = constants;
const PERM_BITS = 0o7777;
/** Bytes gathered before a file's data goes to the filesystem (rounded to whole blocks). */
const FLUSH_BYTES = 1024 * 1024;

/** The attributes of one entry. */
export interface EntryMeta {
  /** Permission bits, setuid/setgid/sticky included (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  /** Extended attributes by full name (`security.capability`, `user.x`). */
  xattrs?: Map<string, Buffer>;
}

export type NodeType = 'fifo' | 'char' | 'block';

/** What a layer import did. */
export interface LayerCounts {
  directories: number;
  files: number;
  symlinks: number;
  hardlinks: number;
  /** fifos and device nodes. */
  nodes: number;
  whiteouts: number;
  opaques: number;
  /** Bytes of file data read (holes included). */
  dataBytes: number;
  skippedXattrs: number;
}

/** A regular file being written: `write` its bytes in order, then `end`. */
export interface FileSink {
  write(chunk: Uint8Array): void;
  end(): void;
}

const isDir = (mode: number) => (mode & S_IFMT) === S_IFDIR;
const isLnk = (mode: number) => (mode & S_IFMT) === S_IFLNK;
const isReg = (mode: number) => (mode & S_IFMT) === S_IFREG;

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** Applies the entries of one layer to a writable Filesystem (see the top of this file). */
export class LayerWriter {
  readonly counts: LayerCounts = {
    directories: 0,
    files: 0,
    symlinks: 0,
    hardlinks: 0,
    nodes: 0,
    whiteouts: 0,
    opaques: 0,
    dataBytes: 0,
    skippedXattrs: 0,
  };
  /** Paths this layer made: nothing of the layers below shows under them. */
  private readonly fresh = new Set<string>();
  /** Lower directories this layer merged a directory entry into. */
  private readonly merged = new Set<string>();
  /** Directories holding something this layer made or merged (ancestors of those). */
  private readonly holders = new Set<string>();
  private readonly dirTimes = new Map<string, { atimeNs: bigint; mtimeNs: bigint }>();
  private readonly zeroBlock: Buffer;

  constructor(
    private readonly fs: Filesystem,
    blockSizeBytes: number,
  ) {
    this.zeroBlock = Buffer.alloc(blockSizeBytes);
  }

  /** A whiteout, an opaque marker or a name to ignore (from names.classify). */
  special(k: Exclude<NameKind, { kind: 'entry' }>): void {
    if (k.kind === 'whiteout') this.whiteout(k.path);
    else if (k.kind === 'opaque') this.opaque(k.dir);
  }

  /** A directory entry: made, or merged into the directory already there. */
  directory(path: string, meta: EntryMeta): void {
    this.counts.directories++;
    let attr = path === '/' ? this.fs.getattr('/') : this.prepare(path, true);
    if (attr === undefined) {
      attr = this.fs.mkdir(path, meta.mode & PERM_BITS, caller(meta));
      this.made(path);
    } else if (path !== '/' && !this.fresh.has(path)) {
      this.merged.add(path);
      this.markHolders(path);
    }
    this.setAttrs(path, attr, meta);
    this.dirTimes.set(path, { atimeNs: meta.atimeNs, mtimeNs: meta.mtimeNs });
  }

  /** A regular file; its data follows through the returned sink. */
  file(path: string, meta: EntryMeta): FileSink {
    this.counts.files++;
    this.prepare(path, false);
    const fh = this.fs.create(path, meta.mode & PERM_BITS, caller(meta), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL);
    this.made(path);
    return new HoleSkippingSink(this.fs, fh, this.zeroBlock, () => {
      this.setAttrs(path, this.fs.getattr(path), meta);
      this.fs.utimens(path, meta.atimeNs, meta.mtimeNs);
    }, (n) => {
      this.counts.dataBytes += n;
    });
  }

  /** A symbolic link holding `target` (never resolved). */
  symlink(path: string, target: string, meta: EntryMeta): void {
    this.counts.symlinks++;
    this.prepare(path, false);
    const attr = this.fs.symlink(target, path, caller(meta));
    this.made(path);
    this.setAttrs(path, attr, meta);
    this.fs.utimens(path, meta.atimeNs, meta.mtimeNs);
  }

  /** A hard link: a second name of the non-directory at `target`. */
  hardlink(path: string, target: string): void {
    this.counts.hardlinks++;
    if (path === target) throw fail('EINVAL', 'link', path, 'a hard link to itself');
    this.prepare(path, false);
    this.fs.link(target, path);
    this.made(path);
  }

  /** A fifo or a character/block device node (`rdev` as Linux's st_rdev encodes it). */
  node(path: string, type: NodeType, rdev: number, meta: EntryMeta): void {
    this.counts.nodes++;
    this.prepare(path, false);
    const fmt = type === 'fifo' ? S_IFIFO : type === 'char' ? S_IFCHR : S_IFBLK;
    const attr = this.fs.mknod(path, fmt | (meta.mode & PERM_BITS), type === 'fifo' ? 0 : rdev, caller(meta));
    this.made(path);
    this.setAttrs(path, attr, meta);
    this.fs.utimens(path, meta.atimeNs, meta.mtimeNs);
  }

  /** Set the directory times recorded along the way; call once after the last entry. */
  finish(): void {
    for (const [path, t] of this.dirTimes) {
      const a = this.tryAttr(path);
      if (a !== undefined && isDir(a.mode)) this.fs.utimens(path, t.atimeNs, t.mtimeNs);
    }
    this.dirTimes.clear();
  }

  // ---------------------------------------------------------------- whiteouts

  /** `.wh.NAME`: hide what the layers below show at `path`. */
  private whiteout(path: string): void {
    this.counts.whiteouts++;
    if (this.fresh.has(path)) return; // made by this layer: not hidden (OCI)
    const dir = this.tryAttr(parentOf(path));
    if (dir === undefined || !isDir(dir.mode)) return;
    const cur = this.tryAttr(path);
    if (cur === undefined) return; // nothing below to hide
    if (isDir(cur.mode) && (this.holders.has(path) || this.merged.has(path))) this.hideLower(path);
    else this.removeTree(path, cur);
  }

  /** `DIR/.wh..wh..opq`: hide everything the layers below show in `dir`. */
  private opaque(dir: string): void {
    this.counts.opaques++;
    const cur = this.tryAttr(dir);
    if (cur === undefined || !isDir(cur.mode)) return;
    this.hideLower(dir);
  }

  /** Hide the lower contents of directory `dir`, keeping what this layer made in it. */
  private hideLower(dir: string): void {
    if (this.fresh.has(dir)) return;
    if (!this.holders.has(dir)) {
      this.makeOpaqueKeepingAttrs(dir);
      return;
    }
    for (const e of this.fs.readdir(dir)) {
      if (e.name === '.' || e.name === '..') continue;
      const p = join(dir, e.name);
      if (this.fresh.has(p)) continue;
      if (isDir(e.type) && (this.holders.has(p) || this.merged.has(p))) this.hideLower(p);
      else this.removeTree(p, this.fs.getattr(p));
    }
  }

  /** fs.makeOpaque gives a fresh inode with mode and owner; keep the xattrs and times too. */
  private makeOpaqueKeepingAttrs(dir: string): void {
    const before = this.fs.getattr(dir);
    const xattrs = this.fs.listxattr(dir).map((n) => [n, this.fs.getxattr(dir, n)] as const);
    this.fs.makeOpaque(dir);
    for (const [n, v] of xattrs) this.fs.setxattr(dir, n, v, 0);
    if (!this.dirTimes.has(dir)) this.fs.utimens(dir, before.atimeNs, before.mtimeNs);
    this.merged.delete(dir);
    if (dir !== '/') this.fresh.add(dir);
    this.markHolders(dir);
  }

  // ---------------------------------------------------------------- private helpers

  /**
   * Make room for an entry at `path`: its parents exist; what is there is removed, except
   * a directory when `keepDir` (returned, to merge into). Undefined when the path is free.
   */
  private prepare(path: string, keepDir: boolean): Attr | undefined {
    if (path === '/') throw fail('EEXIST', 'extract', '/', 'only a directory can stand at the image root');
    this.ensureDir(parentOf(path));
    const cur = this.tryAttr(path);
    if (cur === undefined) return undefined;
    if (keepDir && isDir(cur.mode)) return cur;
    this.removeTree(path, cur);
    return undefined;
  }

  /** Directory `dir` exists: missing ones are made 0755 root:root; a non-directory is ENOTDIR. */
  private ensureDir(dir: string): void {
    if (dir === '/') return;
    let a: Attr | undefined;
    try {
      a = this.tryAttr(dir);
    } catch (err) {
      if (!isThinfsError(err, 'ENOTDIR')) throw err;
      this.ensureDir(parentOf(dir)); // throws naming the component that is not a directory
      throw err;
    }
    if (a === undefined) {
      this.ensureDir(parentOf(dir));
      this.fs.mkdir(dir, 0o755, { uid: 0, gid: 0 });
      this.made(dir);
      return;
    }
    if (!isDir(a.mode)) {
      throw fail(
        'ENOTDIR',
        'extract',
        dir,
        isLnk(a.mode) ? 'a parent is a symbolic link; entries are never extracted through symlinks' : 'a parent is not a directory',
      );
    }
  }

  /** Remove what `path` shows (a directory with its whole subtree, in O(1)). */
  private removeTree(path: string, cur: Attr): void {
    if (isDir(cur.mode)) {
      const ours = this.fresh.has(path) || this.holders.has(path) || this.merged.has(path);
      this.fs.makeOpaque(path);
      this.fs.rmdir(path);
      if (ours) this.forgetBelow(path);
    } else {
      this.fs.unlink(path);
    }
    this.fresh.delete(path);
    this.merged.delete(path);
    this.holders.delete(path);
    this.dirTimes.delete(path);
  }

  private forgetBelow(path: string): void {
    const prefix = `${path}/`;
    for (const set of [this.fresh, this.merged, this.holders]) for (const p of set) if (p.startsWith(prefix)) set.delete(p);
    for (const p of this.dirTimes.keys()) if (p.startsWith(prefix)) this.dirTimes.delete(p);
  }

  private made(path: string): void {
    this.fresh.add(path);
    this.markHolders(path);
  }

  private markHolders(path: string): void {
    for (let d = parentOf(path); !this.holders.has(d); d = parentOf(d)) {
      this.holders.add(d);
      if (d === '/') break;
    }
  }

  /** Owner, permission bits and xattrs of `meta` on the entry at `path` (whose attributes are `attr`). */
  private setAttrs(path: string, attr: Attr, meta: EntryMeta): void {
    let perm = attr.mode & PERM_BITS;
    if (attr.uid !== meta.uid || attr.gid !== meta.gid) {
      this.fs.chown(path, meta.uid, meta.gid);
      if (!isDir(attr.mode)) perm = -1; // chown may have cleared setuid/setgid
    }
    if (!isLnk(attr.mode) && perm !== (meta.mode & PERM_BITS)) this.fs.chmod(path, meta.mode & PERM_BITS);
    if (meta.xattrs === undefined) return;
    for (const [name, value] of meta.xattrs) {
      if (!storable(name, attr.mode)) {
        this.counts.skippedXattrs++;
        continue;
      }
      this.fs.setxattr(path, name, value, 0);
    }
  }

  private tryAttr(path: string): Attr | undefined {
    try {
      return this.fs.getattr(path);
    } catch (err) {
      if (isThinfsError(err, 'ENOENT')) return undefined;
      throw err;
    }
  }
}

/** xattr namespaces the filesystem stores; user.* only on files and directories (as Linux). */
function storable(name: string, mode: number): boolean {
  if (name.startsWith('user.')) return isReg(mode) || isDir(mode);
  return name.startsWith('trusted.') || name.startsWith('security.');
}

function caller(meta: EntryMeta): Caller {
  return { uid: meta.uid, gid: meta.gid };
}

/** File data in block-sized steps; whole blocks of zeros become holes. */
class HoleSkippingSink implements FileSink {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** File offset of the first pending byte. */
  private offsetBytes = 0;
  /** End of the last byte written to the filesystem. */
  private writtenEnd = 0;
  private ended = false;

  constructor(
    private readonly fs: Filesystem,
    private readonly fh: Fh,
    private readonly zeroBlock: Buffer,
    private readonly onEnd: () => void,
    private readonly onBytes: (n: number) => void,
  ) {}

  write(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.pending.push(Buffer.from(chunk)); // a copy: callers reuse their read buffers
    this.pendingBytes += chunk.byteLength;
    this.onBytes(chunk.byteLength);
    if (this.pendingBytes >= FLUSH_BYTES) this.flush(false);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    try {
      this.flush(true);
      if (this.offsetBytes > this.writtenEnd) this.fs.ftruncate(this.fh, this.offsetBytes);
    } finally {
      this.fs.release(this.fh);
    }
    this.onEnd();
  }

  /** Write the pending whole blocks (all of it when `final`), skipping blocks of zeros. */
  private flush(final: boolean): void {
    const bs = this.zeroBlock.length;
    const buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    // Pending data starts block-aligned: every flush but the last takes whole blocks.
    const take = final ? buf.length : buf.length - (buf.length % bs);
    let runStart = -1;
    for (let at = 0; at < take; at += bs) {
      const end = Math.min(at + bs, take);
      const zero = buf.subarray(at, end).equals(end - at === bs ? this.zeroBlock : this.zeroBlock.subarray(0, end - at));
      if (!zero && runStart < 0) runStart = at;
      if (zero && runStart >= 0) {
        this.writeRun(buf, runStart, at);
        runStart = -1;
      }
    }
    if (runStart >= 0) this.writeRun(buf, runStart, take);
    this.offsetBytes += take;
    const rest = buf.subarray(take);
    this.pending = rest.length > 0 ? [Buffer.from(rest)] : [];
    this.pendingBytes = rest.length;
  }

  private writeRun(buf: Buffer, from: number, to: number): void {
    this.fs.write(this.fh, this.offsetBytes + from, buf.subarray(from, to));
    this.writtenEnd = this.offsetBytes + to;
  }
}
