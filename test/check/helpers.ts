/**
 * Pools with a known namespace for the check tests, ways to damage them (raw pages of
 * metadata.db, rows changed behind thinfs's back), and the whole tree of a device read
 * back through the filesystem API.
 */
import { constants } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { Filesystem, type DirEntry } from '../../src/fs/index.js';
import { MiB, Pool, type DevId } from '../../src/pool/index.js';

export const ROOT_CALLER = { uid: 0, gid: 0 };
const S_IFMT = constants.S_IFMT;
const S_IFDIR = constants.S_IFDIR;
const S_IFREG = constants.S_IFREG;

export function metadataOf(root: string): string {
  return path.join(root, 'pool', 'metadata.db');
}

/** Files to put in an image: path -> content (directories are made as needed). */
export type Tree = Record<string, string>;

/** `n` files in each of `dirs` directories, content naming the file (a few blocks long for some). */
export function sampleTree(dirs = ['a', 'b', 'c'], n = 60): Tree {
  const t: Tree = {};
  for (const d of dirs) for (let i = 0; i < n; i++) t[`/${d}/f${i}`] = `${d}/f${i} `.repeat(i % 7 === 0 ? 9000 : 3);
  return t;
}

/** A pool at `root` with one image `img` holding `tree`; returns the image's id. */
export function makeImage(root: string, tree: Tree, name = 'img', opts: { inlineMaxBytes?: number } = {}): DevId {
  const pool = Pool.create(root, { dataSizeBytes: 256 * MiB, minFreePercent: 0, ...opts });
  try {
    const id = pool.createThin(name, { kind: 'base' });
    const fsys = Filesystem.open(pool, id);
    writeTree(fsys, tree);
    fsys.close();
    pool.setReadOnly(id);
    return id;
  } finally {
    pool.close();
  }
}

/** Write `tree` into a filesystem (directories made as needed). */
export function writeTree(fsys: Filesystem, tree: Tree): void {
  const made = new Set<string>(['/']);
  for (const [p, content] of Object.entries(tree)) {
    const parts = p.split('/').filter((x) => x !== '');
    for (let i = 1; i < parts.length; i++) {
      const dir = `/${parts.slice(0, i).join('/')}`;
      if (!made.has(dir)) {
        fsys.mkdir(dir, 0o755, ROOT_CALLER);
        made.add(dir);
      }
    }
    const fh = fsys.create(p, 0o644, ROOT_CALLER, constants.O_WRONLY | constants.O_CREAT);
    fsys.write(fh, 0, Buffer.from(content));
    fsys.release(fh);
  }
}

/** Run `fn` on the pool (read-write unless told). */
export function withPool<T>(root: string, fn: (pool: Pool) => T, opts: { readOnly?: boolean } = {}): T {
  const pool = Pool.open(root, opts);
  try {
    return fn(pool);
  } finally {
    pool.close();
  }
}

/** Run `fn` on metadata.db with a plain SQLite connection (the pool closed), as damage from outside. */
export function withSql<T>(root: string, fn: (db: Database.Database) => T): T {
  const db = new Database(metadataOf(root));
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/** What a device shows: every path with its content (files), 'dir', or another type; stat and read errors as 'ERR:<errno>'. */
export function readBack(root: string, device: string): Map<string, string> {
  return withPool(
    root,
    (pool) => {
      const dev = pool.findDevice(device);
      if (dev === undefined) throw new Error(`no device ${device}`);
      const fsys = Filesystem.open(pool, dev.id, { readOnly: true });
      try {
        const out = new Map<string, string>();
        const walk = (dir: string) => {
          for (const e of fsys.readdir(dir) as DirEntry[]) {
            if (e.name === '.' || e.name === '..') continue;
            const p = `${dir === '/' ? '' : dir}/${e.name}`;
            out.set(p, describe(fsys, p));
            if ((e.type & S_IFMT) === S_IFDIR && out.get(p) === 'dir') walk(p);
          }
        };
        walk('/');
        return out;
      } finally {
        fsys.close();
      }
    },
    { readOnly: true },
  );
}

function describe(fsys: Filesystem, p: string): string {
  try {
    const st = fsys.getattr(p);
    if ((st.mode & S_IFMT) === S_IFDIR) return 'dir';
    if ((st.mode & S_IFMT) !== S_IFREG) return `type:${st.mode & S_IFMT}`;
    const fh = fsys.open(p, constants.O_RDONLY);
    try {
      return fsys.read(fh, 0, st.size).toString();
    } finally {
      fsys.release(fh);
    }
  } catch (err) {
    return `ERR:${(err as { code?: string }).code ?? (err as Error).message}`;
  }
}

/** The pages of b-tree `name` (a table or an index) of `pagetype`, from SQLite's dbstat. */
export function pagesOf(root: string, name: string, pagetype: 'leaf' | 'internal' = 'leaf'): { pageno: number; ncell: number }[] {
  const db = new Database(metadataOf(root), { readonly: true });
  try {
    return db.prepare('SELECT pageno, ncell FROM dbstat WHERE name = ? AND pagetype = ? ORDER BY pageno').all(name, pagetype) as {
      pageno: number;
      ncell: number;
    }[];
  } finally {
    db.close();
  }
}

/** Overwrite `bytes.length` bytes of page `pageno` (1-based, 4 KiB pages) at `offset`, and fsync. */
export function damagePage(root: string, pageno: number, bytes: Buffer, offset = 0): void {
  const fd = fs.openSync(metadataOf(root), 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, (pageno - 1) * 4096 + offset);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Deterministic pseudo-random bytes (a small LCG): the same damage on every run. */
export function noise(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

/** Number of 4 KiB pages of metadata.db. */
export function pageCount(root: string): number {
  return Math.floor(fs.statSync(metadataOf(root)).size / 4096);
}
