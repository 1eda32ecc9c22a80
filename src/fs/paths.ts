/**
 * The dentry cache: resolved names, shared by the path-based API (FUSE high level hands us
 * paths) and the inode-based one (FUSE low level hands us a directory inode and a name).
 * Resolved components are kept as a tree of dentries (so a directory rename or rmdir can
 * drop exactly its subtree), plus a flat map from full path to dentry (a warm lookup of a
 * 20-deep path is one map hit), plus a map from directory inode to its dentry (a warm
 * lookup of (directory inode, name) is two map hits). A directory has exactly one name
 * (no hard links to directories), so its inode number finds its one dentry; one the cache
 * has not seen is located by walking its names up to a cached ancestor (`nameOf`).
 *
 * Invariant: a cached dentry always names the entry the directory tables show at that
 * path. Every namespace change drops the dentry of the (directory, name) it touches,
 * subtree included; abort and chain changes clear all. Misses are not cached (no negative
 * dentries). Paths and names are byte strings (bytes.ts), so two names that differ in any
 * byte are two dentries.
 */
import { fail } from '../errors.js';
import type { Entry } from './dirents.js';
import { ROOT_INO, type Ino } from './types.js';
import { S_IFDIR, S_IFMT, isDir, joinPath } from './mode.js';

export interface Dentry {
  path: string;
  ino: Ino;
  /** File type bits. */
  type: number;
  children: Map<string, Dentry> | undefined;
  parent: Dentry | undefined;
  name: string;
}

/** Where a directory inode has its name: its parent directory and the name there; undefined when it has none. */
export type NameOf = (dir: Ino) => { parent: Ino; name: string } | undefined;

const CACHE_LIMIT = 524_288;
/** Deeper than any real tree (and than PATH_MAX allows): a longer walk up means a cycle. */
const MAX_DEPTH = 4096;

export class PathCache {
  private readonly byPath = new Map<string, Dentry>();
  private readonly byDir = new Map<Ino, Dentry>();
  private readonly root: Dentry = { path: '/', ino: ROOT_INO, type: S_IFDIR, children: undefined, parent: undefined, name: '' };

  constructor(
    private readonly lookupEntry: (parent: Ino, name: string) => Entry | undefined,
    private readonly nameOf: NameOf,
  ) {
    this.clear();
  }

  /** The cached dentry of an exact (normalised) path, if any. */
  cached(path: string): Dentry | undefined {
    return this.byPath.get(path);
  }

  /** Resolve components `parts` from the root. ENOENT when one is missing, ENOTDIR when a non-final one is no directory. */
  resolve(parts: string[], path: string, syscall: string): Dentry {
    let d = this.root;
    for (let i = 0; i < parts.length; i++) {
      if ((d.type & S_IFMT) !== S_IFDIR) throw fail('ENOTDIR', syscall, path);
      const child = this.child(d, parts[i]!);
      if (child === undefined) throw fail('ENOENT', syscall, path);
      d = child;
    }
    return d;
  }

  /**
   * The dentry of directory inode `dir`: cached, or located through its names up to a
   * cached ancestor. Undefined when it has no name (removed, or no directory of this view).
   */
  dir(dir: Ino): Dentry | undefined {
    const hit = this.byDir.get(dir);
    if (hit !== undefined) return hit;
    const names: string[] = [];
    let at = dir;
    let d: Dentry | undefined;
    while ((d = this.byDir.get(at)) === undefined) {
      const up = this.nameOf(at);
      if (up === undefined || names.length >= MAX_DEPTH) return undefined;
      names.push(up.name);
      at = up.parent;
    }
    for (let i = names.length - 1; i >= 0 && d !== undefined; i--) {
      d = this.child(d, names[i]!);
      if (d !== undefined && !isDir(d.type)) return undefined;
    }
    return d?.ino === dir ? d : undefined;
  }

  /** The dentry `name` below directory dentry `dir`, looked up and cached on a miss. */
  child(dir: Dentry, name: string): Dentry | undefined {
    const hit = dir.children?.get(name);
    if (hit !== undefined) return hit;
    const e = this.lookupEntry(dir.ino, name);
    if (e === undefined) return undefined;
    return this.add(dir, name, e);
  }

  /** Record that `name` in `dir` is `entry` (after creating it). */
  add(dir: Dentry, name: string, entry: Entry): Dentry {
    if (this.byPath.size >= CACHE_LIMIT) this.clear();
    const d: Dentry = { path: joinPath(dir.path, name), ino: entry.ino, type: entry.type, children: undefined, parent: dir, name };
    // After a clear only the root is live: a dentry below a dropped one is handed out, not kept.
    if (dir !== this.root && this.byPath.get(dir.path) !== dir) return d;
    (dir.children ??= new Map()).set(name, d);
    this.byPath.set(d.path, d);
    if (isDir(entry.type)) this.byDir.set(entry.ino, d);
    return d;
  }

  /** Record that `name` in directory inode `dir` is `entry`, when that directory is cached. */
  addChild(dir: Ino, name: string, entry: Entry): void {
    const d = this.byDir.get(dir);
    if (d !== undefined) this.add(d, name, entry);
  }

  /** Forget `name` in directory inode `dir` and everything cached below it. */
  dropChild(dir: Ino, name: string): void {
    const c = this.byDir.get(dir)?.children?.get(name);
    if (c === undefined) return;
    c.parent!.children!.delete(name);
    this.forget(c);
  }

  /** Forget `path` and everything cached below it. */
  invalidate(path: string): void {
    const d = this.byPath.get(path);
    if (d === undefined || d === this.root) return;
    d.parent?.children?.delete(d.name);
    this.forget(d);
  }

  /** Forget everything but the root. */
  clear(): void {
    this.byPath.clear();
    this.byDir.clear();
    this.root.children = undefined;
    this.byPath.set('/', this.root);
    this.byDir.set(ROOT_INO, this.root);
  }

  private forget(d: Dentry): void {
    this.byPath.delete(d.path);
    if (this.byDir.get(d.ino) === d) this.byDir.delete(d.ino);
    if (d.children !== undefined) for (const c of d.children.values()) this.forget(c);
    d.children = undefined;
  }
}
