/**
 * The reference model of one filesystem tree (POSIX semantics as Linux shows them to
 * root, and as thinfs promises), the interface both implementations are driven through,
 * and the comparison of a tree against the model.
 */
import { expect } from 'vitest';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;

// ------------------------------------------------------------------ the interface under test

export interface Stat {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
}

/**
 * What the behaviour suite and the model test drive: thinfs, or a real directory via
 * node:fs. Paths, names and symlink targets are byte strings (src/fs/bytes.ts).
 */
export interface FsUnderTest {
  readonly kind: 'thinfs' | 'node';
  mkdir(p: string, mode: number): void;
  /** open(O_CREAT|O_WRONLY[|O_EXCL]) + close. */
  createFile(p: string, mode: number, excl: boolean): void;
  /** open(O_WRONLY[|O_APPEND]) + pwrite + close. */
  writeAt(p: string, offsetBytes: number, data: Buffer, append?: boolean): void;
  readAll(p: string): Buffer;
  truncate(p: string, size: number): void;
  link(existing: string, newPath: string): void;
  symlink(target: string, p: string): void;
  readlink(p: string): string;
  rename(from: string, to: string): void;
  unlink(p: string): void;
  rmdir(p: string): void;
  chmod(p: string, mode: number): void;
  /** lchown. */
  chown(p: string, uid: number, gid: number): void;
  lstat(p: string): Stat;
  /** Names, sorted, without '.' and '..'. */
  readdir(p: string): string[];
  open(p: string, flags: number): number;
  pread(h: number, offsetBytes: number, length: number): Buffer;
  pwrite(h: number, offsetBytes: number, data: Buffer): number;
  fstat(h: number): Stat;
  close(h: number): void;
}

/** The errno code a call throws, or undefined when it succeeds. */
export function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code !== 'string') throw err;
    return code;
  }
}

// ------------------------------------------------------------------ the model

export interface MBase {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  /** The inode number the implementation showed first (stable across rename, copy-up, snapshot). */
  ino?: number;
  xattrs: Map<string, Buffer>;
}
export interface MFile extends MBase {
  kind: 'file';
  data: Buffer;
}
export interface MDir extends MBase {
  kind: 'dir';
  entries: Map<string, MNode>;
}
export interface MLink extends MBase {
  kind: 'symlink';
  target: string;
}
export type MNode = MFile | MDir | MLink;

export function newRoot(): MDir {
  return { kind: 'dir', mode: S_IFDIR | 0o755, uid: 0, gid: 0, nlink: 2, entries: new Map(), xattrs: new Map() };
}

/** Deep copy keeping hard links shared (a snapshot of the tree). */
export function cloneTree(root: MDir): MDir {
  const memo = new Map<MNode, MNode>();
  const copy = (n: MNode): MNode => {
    const hit = memo.get(n);
    if (hit !== undefined) return hit;
    let c: MNode;
    if (n.kind === 'file') c = { ...n, data: Buffer.from(n.data), xattrs: new Map(n.xattrs) };
    else if (n.kind === 'symlink') c = { ...n, xattrs: new Map(n.xattrs) };
    else {
      const d: MDir = { ...n, entries: new Map(), xattrs: new Map(n.xattrs) };
      memo.set(n, d);
      for (const [k, v] of n.entries) d.entries.set(k, copy(v));
      c = d;
    }
    memo.set(n, c);
    return c;
  };
  return copy(root) as MDir;
}

type R<T> = { err: string } | { ok: T };
const err = (e: string): { err: string } => ({ err: e });

function split(p: string): string[] {
  return p.split('/').filter((c) => c !== '');
}

/** A tree and POSIX operations on it, each returning the errno Linux gives. */
export class Model {
  constructor(public root: MDir = newRoot()) {}

  find(p: string): R<MNode> {
    let n: MNode = this.root;
    for (const c of split(p)) {
      if (n.kind !== 'dir') return err('ENOTDIR');
      const next: MNode | undefined = n.entries.get(c);
      if (next === undefined) return err('ENOENT');
      n = next;
    }
    return { ok: n };
  }

  parent(p: string): R<{ dir: MDir; name: string }> {
    const parts = split(p);
    const name = parts.pop()!;
    const r = this.find(`/${parts.join('/')}`);
    if ('err' in r) return r;
    if (r.ok.kind !== 'dir') return err('ENOTDIR');
    return { ok: { dir: r.ok, name } };
  }

  /** The node at p if it exists (no error), for the executor's skip decisions. */
  peek(p: string): MNode | undefined {
    const r = this.find(p);
    return 'ok' in r ? r.ok : undefined;
  }

  mkdir(p: string, mode: number): string | undefined {
    const r = this.parent(p);
    if ('err' in r) return r.err;
    const { dir, name } = r.ok;
    if (dir.entries.has(name)) return 'EEXIST';
    const sgid = (dir.mode & S_ISGID) !== 0;
    dir.entries.set(name, {
      kind: 'dir',
      mode: S_IFDIR | (mode & 0o1777) | (sgid ? S_ISGID : 0),
      uid: 0,
      gid: sgid ? dir.gid : 0,
      nlink: 2,
      entries: new Map(),
      xattrs: new Map(),
    });
    dir.nlink++;
    return undefined;
  }

  createFile(p: string, mode: number, excl: boolean): string | undefined {
    const r = this.parent(p);
    if ('err' in r) return r.err;
    const { dir, name } = r.ok;
    const existing = dir.entries.get(name);
    if (existing !== undefined) {
      if (excl) return 'EEXIST';
      if (existing.kind === 'dir') return 'EISDIR';
      return undefined;
    }
    const sgid = (dir.mode & S_ISGID) !== 0;
    dir.entries.set(name, { kind: 'file', mode: S_IFREG | (mode & 0o7777), uid: 0, gid: sgid ? dir.gid : 0, nlink: 1, data: Buffer.alloc(0), xattrs: new Map() });
    return undefined;
  }

  writeAt(p: string, off: number, data: Buffer, append = false): string | undefined {
    const r = this.find(p);
    if ('err' in r) return r.err;
    const f = r.ok;
    if (f.kind === 'dir') return 'EISDIR';
    if (f.kind !== 'file') throw new Error('model: write to a symlink');
    if (data.length === 0) return undefined;
    const at = append ? f.data.length : off;
    const end = Math.max(f.data.length, at + data.length);
    const next = Buffer.alloc(end);
    f.data.copy(next);
    data.copy(next, at);
    f.data = next;
    return undefined;
  }

  truncate(p: string, size: number): string | undefined {
    const r = this.find(p);
    if ('err' in r) return r.err;
    const f = r.ok;
    if (f.kind === 'dir') return 'EISDIR';
    if (f.kind !== 'file') throw new Error('model: truncate a symlink');
    const next = Buffer.alloc(size);
    f.data.copy(next, 0, 0, Math.min(size, f.data.length));
    f.data = next;
    return undefined;
  }

  link(a: string, b: string): string | undefined {
    const src = this.find(a);
    if ('err' in src) return src.err;
    const r = this.parent(b);
    if ('err' in r) return r.err;
    if (r.ok.dir.entries.has(r.ok.name)) return 'EEXIST';
    if (src.ok.kind === 'dir') return 'EPERM';
    r.ok.dir.entries.set(r.ok.name, src.ok);
    src.ok.nlink++;
    return undefined;
  }

  symlink(target: string, p: string): string | undefined {
    const r = this.parent(p);
    if ('err' in r) return r.err;
    if (r.ok.dir.entries.has(r.ok.name)) return 'EEXIST';
    const sgid = (r.ok.dir.mode & S_ISGID) !== 0;
    r.ok.dir.entries.set(r.ok.name, { kind: 'symlink', mode: S_IFLNK | 0o777, uid: 0, gid: sgid ? r.ok.dir.gid : 0, nlink: 1, target, xattrs: new Map() });
    return undefined;
  }

  rename(a: string, b: string): string | undefined {
    const rf = this.parent(a);
    if ('err' in rf) return rf.err;
    const rt = this.parent(b);
    if ('err' in rt) return rt.err;
    const src = rf.ok.dir.entries.get(rf.ok.name);
    if (src === undefined) return 'ENOENT';
    const na = `/${split(a).join('/')}`;
    const nb = `/${split(b).join('/')}`;
    if (src.kind === 'dir' && nb.startsWith(`${na}/`)) return 'EINVAL';
    const dst = rt.ok.dir.entries.get(rt.ok.name);
    if (dst !== undefined && na.startsWith(`${nb}/`)) return 'ENOTEMPTY';
    if (dst === src) return undefined;
    if (dst !== undefined) {
      if (src.kind === 'dir' && dst.kind !== 'dir') return 'ENOTDIR';
      if (src.kind !== 'dir' && dst.kind === 'dir') return 'EISDIR';
      if (dst.kind === 'dir' && dst.entries.size > 0) return 'ENOTEMPTY';
    }
    rf.ok.dir.entries.delete(rf.ok.name);
    if (dst !== undefined) {
      if (dst.kind === 'dir') {
        rt.ok.dir.nlink--;
        dst.nlink = 0;
      } else dst.nlink--;
    }
    rt.ok.dir.entries.set(rt.ok.name, src);
    if (src.kind === 'dir' && rf.ok.dir !== rt.ok.dir) {
      rf.ok.dir.nlink--;
      rt.ok.dir.nlink++;
    }
    return undefined;
  }

  unlink(p: string): string | undefined {
    const r = this.parent(p);
    if ('err' in r) return r.err;
    const n = r.ok.dir.entries.get(r.ok.name);
    if (n === undefined) return 'ENOENT';
    if (n.kind === 'dir') return 'EISDIR';
    r.ok.dir.entries.delete(r.ok.name);
    n.nlink--;
    return undefined;
  }

  rmdir(p: string): string | undefined {
    const r = this.parent(p);
    if ('err' in r) return r.err;
    const n = r.ok.dir.entries.get(r.ok.name);
    if (n === undefined) return 'ENOENT';
    if (n.kind !== 'dir') return 'ENOTDIR';
    if (n.entries.size > 0) return 'ENOTEMPTY';
    r.ok.dir.entries.delete(r.ok.name);
    r.ok.dir.nlink--;
    n.nlink = 0;
    return undefined;
  }

  chmod(p: string, mode: number): string | undefined {
    const r = this.find(p);
    if ('err' in r) return r.err;
    r.ok.mode = (r.ok.mode & S_IFMT) | (mode & 0o7777);
    return undefined;
  }

  chown(p: string, uid: number, gid: number): string | undefined {
    const r = this.find(p);
    if ('err' in r) return r.err;
    const n = r.ok;
    if (uid !== -1) n.uid = uid;
    if (gid !== -1) n.gid = gid;
    if (n.kind === 'file') {
      n.mode &= ~S_ISUID;
      if ((n.mode & 0o010) !== 0) n.mode &= ~S_ISGID;
      n.xattrs.delete('security.capability');
    }
    return undefined;
  }

  setxattr(p: string, name: string, value: Buffer): string | undefined {
    const r = this.find(p);
    if ('err' in r) return r.err;
    if (name.startsWith('user.') && r.ok.kind === 'symlink') return 'EPERM';
    r.ok.xattrs.set(name, Buffer.from(value));
    return undefined;
  }

  removexattr(p: string, name: string): string | undefined {
    const r = this.find(p);
    if ('err' in r) return r.err;
    if (name.startsWith('user.') && r.ok.kind === 'symlink') return 'EPERM';
    if (!r.ok.xattrs.has(name)) return 'ENODATA';
    r.ok.xattrs.delete(name);
    return undefined;
  }
}

// ------------------------------------------------------------------ comparison

export interface CompareOptions {
  /** Also compare xattrs through this reader (thinfs only). */
  xattrs?: (p: string) => Map<string, Buffer>;
  /** Check inode numbers against the ones recorded in the model (and record new ones). */
  inos?: boolean;
}

/** Assert that `fs` shows exactly the model's tree: names, types, attributes, contents. */
export function compareTree(fs: FsUnderTest, root: MDir, opts: CompareOptions = {}): void {
  const seen = new Map<number, MNode>();
  const walk = (p: string, n: MNode): void => {
    const st = fs.lstat(p);
    const where = `${fs.kind} ${p}`;
    expect(st.mode, `${where} mode`).toBe(n.mode);
    expect(st.uid, `${where} uid`).toBe(n.uid);
    expect(st.gid, `${where} gid`).toBe(n.gid);
    expect(st.nlink, `${where} nlink`).toBe(n.nlink);
    if (opts.inos ?? true) {
      if (n.ino === undefined) n.ino = st.ino;
      expect(st.ino, `${where} ino is stable`).toBe(n.ino);
      const other = seen.get(st.ino);
      if (other !== undefined) expect(other === n, `${where} ino ${st.ino} is shared by two different inodes`).toBe(true);
      seen.set(st.ino, n);
    }
    if (opts.xattrs !== undefined) {
      const got = opts.xattrs(p);
      expect([...got.keys()].sort(), `${where} xattr names`).toEqual([...n.xattrs.keys()].sort());
      for (const [k, v] of n.xattrs) expect(got.get(k)!.equals(v), `${where} xattr ${k}`).toBe(true);
    }
    if (n.kind === 'file') {
      expect(st.size, `${where} size`).toBe(n.data.length);
      const data = fs.readAll(p);
      expect(data.equals(n.data), `${where} contents`).toBe(true);
    } else if (n.kind === 'symlink') {
      expect(st.size, `${where} size`).toBe(n.target.length) // a byte string: one char per byte;
      expect(fs.readlink(p), `${where} target`).toBe(n.target);
    } else {
      expect(fs.readdir(p), `${where} entries`).toEqual([...n.entries.keys()].sort());
      for (const [name, c] of n.entries) walk(p === '/' ? `/${name}` : `${p}/${name}`, c);
    }
  };
  walk('/', root);
}
