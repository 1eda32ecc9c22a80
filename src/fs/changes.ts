/**
 * What the top layer adds, changes and deletes relative to the layers below, computed
 * from the top layer's own rows (its directory entries, whiteouts and inode rows), never
 * by walking both trees. Paths of the touched inodes come from reverse lookups of their
 * entries (an index on the child inode), up to the root.
 *
 * A name whose entry the top layer adds is 'added'; one it hides is 'deleted'; one that
 * now names a different inode is 'changed' (a directory that replaced a lower directory
 * is also `opaque`). An inode the top layer copied up (data or attributes changed) is
 * 'changed' under each of its names. A directory moved here from elsewhere (an O(1)
 * rename keeps its lower entries) is 'added' with its whole subtree, since an export
 * must carry everything below it. The root itself is never listed.
 */
import type { Change, Ino } from './types.js';
import { ROOT_INO } from './types.js';
import type { DirentTable } from './dirents.js';
import type { InodeTable } from './inodes.js';
import { isDir, joinPath } from './mode.js';

export function computeChanges(dirents: DirentTable, inodes: InodeTable): Change[] {
  const memo = new Map<Ino, string[]>();
  const pathsOf = (ino: Ino): string[] => {
    if (ino === ROOT_INO) return ['/'];
    const hit = memo.get(ino);
    if (hit !== undefined) return hit;
    memo.set(ino, []); // cycle guard
    const out: string[] = [];
    for (const { parent, name } of dirents.namesOf(ino)) for (const pp of pathsOf(parent)) out.push(joinPath(pp, name));
    memo.set(ino, out);
    return out;
  };

  const result = new Map<string, Change>();
  const expanded: string[] = [];
  const addSubtree = (dir: Ino, path: string, depth: number): void => {
    if (depth > 4096) return;
    if (depth === 0) expanded.push(path);
    for (const [name, e] of dirents.list(dir)) {
      const p = joinPath(path, name);
      result.set(p, { path: p, kind: 'added' });
      if (isDir(e.type)) addSubtree(e.ino, p, depth + 1);
    }
  };

  for (const nc of dirents.topChanges()) {
    for (const pp of pathsOf(nc.parent)) {
      const path = joinPath(pp, nc.name);
      const { before, after } = nc;
      if (after === undefined) {
        result.set(path, { path, kind: 'deleted' });
        continue;
      }
      if (before !== undefined && before.ino === after.ino) continue;
      const change: Change = { path, kind: before === undefined ? 'added' : 'changed' };
      if (before !== undefined && isDir(before.type) && isDir(after.type)) change.opaque = true;
      result.set(path, change);
      if (isDir(after.type) && inodes.find(after.ino)?.hasLower === true) addSubtree(after.ino, path, 0);
    }
  }

  for (const ino of inodes.topInodes()) {
    const inode = inodes.find(ino);
    if (inode === undefined || !inode.hasLower || inode.nlink === 0) continue;
    for (const path of pathsOf(ino)) if (!result.has(path)) result.set(path, { path, kind: 'changed' });
  }

  result.delete('/');
  // Below a directory listed with its whole subtree, hidden names need no whiteout.
  for (const dir of expanded) {
    for (const [p, c] of result) if (c.kind === 'deleted' && p.startsWith(`${dir}/`)) result.delete(p);
  }
  return [...result.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
