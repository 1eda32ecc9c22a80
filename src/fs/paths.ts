/**
 * The path resolver and its dentry cache. FUSE (high level) hands us paths, so every
 * operation starts by turning a path into an inode. Resolved components are kept as a
 * tree of dentries (so a directory rename or rmdir can drop exactly its subtree) plus a
 * flat map from full path to dentry (so a warm lookup of a 20-deep path is one map hit).
 *
 * Invariant: a cached dentry always names the entry the directory tables show at that
 * path. Every namespace change (unlink, rmdir, rename, makeOpaque) invalidates the
 * dentries of the paths it touches, subtree included; abort and chain changes clear all.
 * Misses are not cached (no negative dentries). Paths and names are byte strings
 * (bytes.ts), so two names that differ in any byte are two dentries.
 */
import { fail } from '../errors.js';
import type { Entry } from './dirents.js';
import { ROOT_INO, type Ino } from './types.js';
import { S_IFDIR, S_IFMT, joinPath } from './mode.js';

export interface Dentry {
  path: string;
  ino: Ino;
  /** File type bits. */
  type: number;
  children: Map<string, Dentry> | undefined;
  parent: Dentry | undefined;
  name: string;
}

const CACHE_LIMIT = 524_288;

export class PathCache {
  private readonly byPath = new Map<string, Dentry>();
  private readonly root: Dentry = { path: '/', ino: ROOT_INO, type: S_IFDIR, children: undefined, parent: undefined, name: '' };

  constructor(private readonly lookupEntry: (parent: Ino, name: string) => Entry | undefined) {
    this.byPath.set('/', this.root);
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
    (dir.children ??= new Map()).set(name, d);
    this.byPath.set(d.path, d);
    return d;
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
    this.root.children = undefined;
    this.byPath.set('/', this.root);
  }

  private forget(d: Dentry): void {
    this.byPath.delete(d.path);
    if (d.children !== undefined) for (const c of d.children.values()) this.forget(c);
    d.children = undefined;
  }
}
