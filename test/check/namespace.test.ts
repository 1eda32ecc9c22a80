/**
 * The namespace part of `check [--repair]`, run as the command runs it without a daemon
 * (the check operation in this process): rows changed behind thinfs's back — a dangling
 * entry, wrong link counts, an orphan, an unreachable file, a directory loop, the inode
 * counter, a whiteout over nothing — are found with the right severity, a fatal one makes
 * the pool read-only, and --repair leaves a namespace every name of which reads back.
 */
import { constants } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { check, type CheckResult } from '../../src/daemon/ops/check-ops.js';
import { Filesystem, type Attr } from '../../src/fs/index.js';
import type { DevId, LayerId } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';
import { makeImage, readBack, ROOT_CALLER, withPool, withSql, writeTree, type Tree } from './helpers.js';

let t: { dir: string; cleanup: () => void };
let root: string;
beforeEach(() => {
  t = tmpDir('thinfs-check-ns-');
  root = path.join(t.dir, 'root');
});
afterEach(() => t.cleanup());

const S_IFREG = constants.S_IFREG;
const S_IFDIR = constants.S_IFDIR;
const TREE: Tree = { '/a/one': 'one', '/a/sub/two': 'two', '/b/three': 'three '.repeat(30000), '/top': 'top' };

const run = (repair = false): Promise<CheckResult> => check({ root }, { repair });

function layerOf(name: string): LayerId {
  return withPool(root, (pool) => pool.findDevice(name)!.layerId, { readOnly: true });
}

/** The attributes of `p` as device `device` shows it. */
function attrOf(device: string, p: string): Attr {
  return withPool(
    root,
    (pool) => {
      const f = Filesystem.open(pool, pool.findDevice(device)!.id, { readOnly: true });
      try {
        return f.getattr(p);
      } finally {
        f.close();
      }
    },
    { readOnly: true },
  );
}

const inoOf = (device: string, p: string): number => attrOf(device, p).ino;
const nlinkOf = (device: string, p: string): number => attrOf(device, p).nlink;

/** The name as the fs_dirents column stores it (BLOB bytes, or TEXT in an older schema). */
function nameValue(s: string): Buffer | string {
  const type = withSql(root, (db) => db.prepare("SELECT type FROM pragma_table_info('fs_dirents') WHERE name = 'name'").pluck().get() as string);
  return type.toUpperCase() === 'BLOB' ? Buffer.from(s) : s;
}

/** A container of the image (snapshot); returns its id. */
function container(name = 'c1'): DevId {
  return withPool(root, (pool) => pool.createSnapshot(pool.findDevice('img')!.id, name));
}

function expectWritable(): void {
  withPool(root, (pool) => {
    expect(pool.status().needsCheck).toBe(false);
    pool.createSnapshot(pool.findDevice('img')!.id, `probe${Date.now()}`);
  });
}

function expectReadOnly(): void {
  withPool(root, (pool) => {
    expect(pool.status().needsCheck).toBe(true);
    expect(() => pool.createSnapshot(pool.findDevice('img')!.id, 'refused')).toThrow(/EROFS: pool needs a check; run `thinfs check --repair`/);
  });
}

function messages(r: CheckResult, severity: string): string[] {
  return r.report.issues.filter((i) => i.area === 'namespace' && i.severity === severity).map((i) => i.message);
}

describe('a dangling directory entry', () => {
  it('is fatal (ls gives EIO), makes the pool read-only; --repair removes it and every name reads', async () => {
    makeImage(root, TREE);
    const layer = layerOf('img');
    withSql(root, (db) => db.prepare('INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (1, ?, ?, 99999, ?)').run(nameValue('ghost'), layer, S_IFREG));
    expect(readBack(root, 'img').get('/ghost')).toBe('ERR:EIO');

    const r = await run();
    expect(r.clean).toBe(false);
    expect(messages(r, 'fatal')).toEqual(['base img: 1 entry points at inodes that do not exist (ls shows EIO): /ghost -> inode 99999']);
    expect(r.report.issues.find((i) => i.severity === 'fatal')!.fix).toMatch(/^run `thinfs check --repair` to remove these entries/);
    expect(r.needsCheck).toBe(true);
    expect(fs.existsSync(path.join(root, 'pool', 'needs_check'))).toBe(true);
    expectReadOnly();

    const repaired = await run(true);
    expect(repaired).toMatchObject({ clean: true, needsCheck: false });
    expect(repaired.actions).toContain('base img: removed 1 entry that pointed at missing inodes');
    expect(fs.existsSync(repaired.backup!)).toBe(true);
    const shown = readBack(root, 'img');
    expect([...shown.keys()].sort()).toEqual(['/a', '/a/one', '/a/sub', '/a/sub/two', '/b', '/b/three', '/top']);
    for (const [p, content] of Object.entries(TREE)) expect(shown.get(p)).toBe(content);
    expect((await run()).clean).toBe(true);
    expectWritable();
  });

  it('in an image is reported once and repaired in the image, for its container too', async () => {
    makeImage(root, TREE);
    container('c1');
    withSql(root, (db) => db.prepare('INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (1, ?, ?, 99999, ?)').run(nameValue('ghost'), layerOf('img'), S_IFREG));
    // The container has a namespace of its own (its root copied up by a write).
    withPool(root, (pool) => {
      const f = Filesystem.open(pool, pool.findDevice('c1')!.id);
      writeTree(f, { '/mine': 'mine' });
      f.close();
    });
    const r = await run();
    expect(messages(r, 'fatal')).toHaveLength(1);
    expect((await run(true)).clean).toBe(true);
    const shown = readBack(root, 'c1');
    expect(shown.has('/ghost')).toBe(false);
    expect(shown.get('/mine')).toBe('mine');
    expect(shown.get('/b/three')).toBe(TREE['/b/three']);
  });
});

describe('inodes lost, their contents left', () => {
  const BS = 65536;
  const rounded = (c: string) => c + '\0'.repeat(Math.ceil(c.length / BS) * BS - c.length);

  it('an entry whose file inode is lost but whose blocks are there: fatal; --repair makes the file again at its path', async () => {
    makeImage(root, TREE);
    const three = inoOf('img', '/b/three');
    withSql(root, (db) => db.prepare('DELETE FROM fs_inodes WHERE ino = ?').run(three));
    const r = await run();
    expect(messages(r, 'fatal')).toEqual([`base img: 1 entry points at inodes that are lost, though their blocks are still there (ls shows EIO): /b/three -> inode ${three}`]);
    const repaired = await run(true);
    expect(repaired.clean).toBe(true);
    expect(repaired.actions).toContain('base img: made 1 lost inode again from the entries or blocks left of them');
    expect(readBack(root, 'img').get('/b/three')).toBe(rounded(TREE['/b/three']!));
  });

  it('a directory whose inode is lost but whose entries are there: made again with its subtree', async () => {
    makeImage(root, TREE);
    const a = inoOf('img', '/a');
    withSql(root, (db) => db.prepare('DELETE FROM fs_inodes WHERE ino = ?').run(a));
    expect(messages(await run(), 'fatal')).toHaveLength(1);
    expect((await run(true)).clean).toBe(true);
    const shown = readBack(root, 'img');
    expect(shown.get('/a/one')).toBe('one');
    expect(shown.get('/a/sub/two')).toBe('two');
    expect(nlinkOf('img', '/a')).toBe(3);
  });

  it('blocks that no inode uses any more (inode and name lost): a leak; --repair makes them a file in /lost+found', async () => {
    makeImage(root, TREE);
    const three = inoOf('img', '/b/three');
    withSql(root, (db) => {
      db.prepare('DELETE FROM fs_inodes WHERE ino = ?').run(three);
      db.prepare('DELETE FROM fs_dirents WHERE child = ?').run(three);
    });
    const r = await run();
    expect(messages(r, 'leak')).toEqual([expect.stringMatching(/^base img: 1 file key holds blocks that no inode uses: key \d+$/)]);
    const repaired = await run(true);
    expect(repaired.clean).toBe(true);
    const found = [...readBack(root, 'img')].filter(([p]) => p.startsWith('/lost+found/#'));
    expect(found.map(([, c]) => c)).toEqual([rounded(TREE['/b/three']!)]);
  });
});

describe('link counts', () => {
  it('a file counting fewer links than names is fatal, one counting more is a leak; --repair recounts both', async () => {
    makeImage(root, TREE);
    withPool(root, (pool) => {
      const f = Filesystem.open(pool, pool.createSnapshot(pool.findDevice('img')!.id, 'c1'));
      f.link('/top', '/top2');
      f.close();
    });
    const layer = layerOf('c1');
    const top = inoOf('c1', '/top');
    const one = inoOf('c1', '/a/one');
    const a = inoOf('c1', '/a');
    withSql(root, (db) => {
      db.prepare('UPDATE fs_inodes SET nlink = 1 WHERE ino = ? AND layer = ?').run(top, layer);
      // Rows of the image: the container sees them through its chain.
      db.prepare('UPDATE fs_inodes SET nlink = 5 WHERE ino = ?').run(one);
      db.prepare('UPDATE fs_inodes SET nlink = 7 WHERE ino = ?').run(a);
    });
    const r = await run();
    expect(messages(r, 'fatal')).toEqual([`container c1: 1 file counts fewer links than names (removing one name would free data another name still shows): inode ${top} nlink 1, 2 name(s)`]);
    expect(messages(r, 'leak')).toEqual([`base img: 2 inodes have a wrong link count: inode ${a} nlink 7, should be 3, inode ${one} nlink 5, should be 1`]);
    expectReadOnly();

    expect((await run(true)).clean).toBe(true);
    expect(nlinkOf('c1', '/top')).toBe(2);
    expect(nlinkOf('c1', '/top2')).toBe(2);
    expect(nlinkOf('img', '/a/one')).toBe(1);
    expect(nlinkOf('img', '/a')).toBe(3);
    expectWritable();
  });
});

describe('orphans and unreachable inodes', () => {
  it('an unlinked inode nothing holds (a crash with the file open) is a leak; --repair frees its rows and blocks', async () => {
    makeImage(root, TREE);
    const c1 = container('c1');
    let orphan = 0;
    withPool(root, (pool) => {
      const f = Filesystem.open(pool, c1);
      writeTree(f, { '/big': 'x'.repeat(5 * 65536) });
      const fh = f.open('/big', constants.O_RDONLY);
      orphan = f.getattr('/big').ino;
      f.unlink('/big');
      pool.commit();
      void fh; // the process dies with the file open: the handle is never released
      pool.close({ commit: false });
    });
    const usedBefore = withPool(root, (pool) => pool.status().dataUsedBytes, { readOnly: true });
    const r = await run();
    expect(r.clean).toBe(false);
    expect(r.needsCheck).toBe(false);
    expect(messages(r, 'leak')).toEqual([`container c1: 1 unlinked inode (nlink 0, no open handle) still holds rows and blocks: inode ${orphan}`]);

    const repaired = await run(true);
    expect(repaired.clean).toBe(true);
    expect(repaired.actions).toContain('container c1: freed 1 unlinked inode');
    expect(withSql(root, (db) => db.prepare('SELECT count(*) FROM fs_inodes WHERE ino = ?').pluck().get(orphan))).toBe(0);
    const usedAfter = withPool(root, (pool) => pool.status().dataUsedBytes, { readOnly: true });
    expect(usedBefore - usedAfter).toBe(5 * 65536);
    expect((await run()).clean).toBe(true);
  });

  it('an inode with links but no name is linked into /lost+found with its data', async () => {
    makeImage(root, TREE);
    const three = inoOf('img', '/b/three');
    withSql(root, (db) => db.prepare('DELETE FROM fs_dirents WHERE child = ?').run(three));
    const r = await run();
    expect(messages(r, 'leak')).toEqual([`base img: 1 inode with links cannot be reached from /: inode ${three}`]);
    const repaired = await run(true);
    expect(repaired.clean).toBe(true);
    expect(repaired.actions).toEqual(expect.arrayContaining(['base img: made /lost+found', 'base img: linked 1 unreachable inode into /lost+found']));
    const shown = readBack(root, 'img');
    expect(shown.get('/lost+found')).toBe('dir');
    expect(shown.get(`/lost+found/#${three}`)).toBe(TREE['/b/three']);
    expect(nlinkOf('img', '/')).toBe(5);
  });

  it('a directory whose entry is lost comes back in /lost+found with its subtree', async () => {
    makeImage(root, TREE);
    const a = inoOf('img', '/a');
    withSql(root, (db) => db.prepare('DELETE FROM fs_dirents WHERE child = ?').run(a));
    expect((await run(true)).clean).toBe(true);
    const shown = readBack(root, 'img');
    expect(shown.get(`/lost+found/#${a}/one`)).toBe('one');
    expect(shown.get(`/lost+found/#${a}/sub/two`)).toBe('two');
    expect((await run()).clean).toBe(true);
  });
});

describe('structure', () => {
  it('a directory loop is fatal; --repair removes the second name', async () => {
    makeImage(root, TREE);
    const a = inoOf('img', '/a');
    const sub = inoOf('img', '/a/sub');
    withSql(root, (db) => db.prepare('INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (?, ?, ?, ?, ?)').run(sub, nameValue('up'), layerOf('img'), a, S_IFDIR));
    const r = await run();
    expect(messages(r, 'fatal')).toEqual(['base img: 1 directory has a second name (a loop or a hard-linked directory): /a/sub/up -> /a']);
    expect((await run(true)).clean).toBe(true);
    expect(readBack(root, 'img').has('/a/sub/up')).toBe(false);
  });

  it('an inode counter below numbers in use is fatal; --repair raises it and new files get fresh numbers', async () => {
    makeImage(root, TREE);
    withSql(root, (db) => db.prepare('UPDATE fs_super SET next_ino = 3').run());
    const r = await run();
    expect(r.report.issues.find((i) => i.severity === 'fatal')!.message).toMatch(/^the inode counter \(fs_super\.next_ino = 3\) is not above the largest inode or key number in use/);
    expect((await run(true)).clean).toBe(true);
    withPool(root, (pool) => {
      const f = Filesystem.open(pool, pool.createSnapshot(pool.findDevice('img')!.id, 'c1'));
      const ino = f.create('/new', 0o644, ROOT_CALLER, constants.O_WRONLY | constants.O_CREAT);
      f.release(ino);
      expect(f.getattr('/new').ino).toBeGreaterThan(inoOf('img', '/b/three'));
      f.close();
    });
  });

  it('a whiteout that hides nothing is harmless (info, still clean); --repair drops it', async () => {
    makeImage(root, TREE);
    container('c1');
    withPool(root, (pool) => {
      const f = Filesystem.open(pool, pool.findDevice('c1')!.id);
      writeTree(f, { '/mine': 'mine' });
      f.close();
    });
    withSql(root, (db) => db.prepare('INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (1, ?, ?, NULL, 0)').run(nameValue('nothing'), layerOf('c1')));
    const r = await run();
    expect(r.clean).toBe(true);
    expect(r.report.issues.map((i) => [i.severity, i.message])).toEqual([['info', 'container c1: 1 whiteout hides nothing (harmless)']]);
    const repaired = await run(true);
    expect(repaired.actions).toEqual(['container c1: dropped 1 whiteout that hid nothing']);
    expect((await run()).report.issues).toEqual([]);
  });
});
