/** Whole-tree fingerprints of a Filesystem view, to compare images before and after. */
import { createHash } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import type { Filesystem } from '../../src/fs/index.js';


export interface NodeInfo {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: number;
  size: number;
  mtimeNs: string;
  ino: number;
  target?: string;
  sha256?: string;
  xattrs?: Record<string, string>;
}

/** Read a regular file of a Filesystem view. */
export function readFile(fs: Filesystem, p: string): Buffer {
  const fh = fs.open(p, fsc.O_RDONLY);
  try {
    return fs.read(fh, 0, fs.fgetattr(fh).size);
  } finally {
    fs.release(fh);
  }
}

/** Every path of the view with its attributes, content hash and xattrs. */
export function treeOf(fs: Filesystem): Record<string, NodeInfo> {
  const out: Record<string, NodeInfo> = {};
  const visit = (p: string) => {
    const a = fs.getattr(p);
    const info: NodeInfo = {
      mode: a.mode,
      uid: a.uid,
      gid: a.gid,
      nlink: a.nlink,
      rdev: a.rdev,
      size: a.size,
      mtimeNs: a.mtimeNs.toString(),
      ino: a.ino,
    };
    const type = a.mode & fsc.S_IFMT;
    if (type === fsc.S_IFLNK) info.target = fs.readlink(p);
    if (type === fsc.S_IFREG) info.sha256 = createHash('sha256').update(readFile(fs, p)).digest('hex');
    const names = fs.listxattr(p);
    if (names.length > 0) info.xattrs = Object.fromEntries(names.map((n) => [n, fs.getxattr(p, n).toString('base64')]));
    out[p] = info;
    if (type === fsc.S_IFDIR) {
      for (const e of fs.readdir(p)) {
        if (e.name === '.' || e.name === '..') continue;
        visit(p === '/' ? `/${e.name}` : `${p}/${e.name}`);
      }
    }
  };
  visit('/');
  return out;
}

/** The names in directory `p`, sorted, without '.' and '..'. */
export function namesIn(fs: Filesystem, p: string): string[] {
  return fs
    .readdir(p)
    .map((e) => e.name)
    .filter((n) => n !== '.' && n !== '..')
    .sort();
}
