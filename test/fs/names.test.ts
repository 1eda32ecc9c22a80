/**
 * Names are bytes, at the fs level: names, symlink targets and xattr names that are not
 * UTF-8 are kept byte-exact in the metadata (across close/reopen and snapshots), the
 * stored form is the raw bytes, pools written by the TEXT schema (fs version 1) migrate,
 * and the byte-string representation (src/fs/bytes.ts) is guarded and displayable.
 */
import * as path from 'node:path';
import { constants } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Filesystem, byteString, bytesOf, fromText, isByteString, toText } from '../../src/fs/index.js';
import { MiB, Pool } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';
import { namesIn, readFile } from '../helpers/tree.js';
import { errnoOf } from './model.js';

const ROOT = { uid: 0, gid: 0 };

let t: { dir: string; cleanup: () => void };
let root: string;
let pool: Pool;
beforeEach(() => {
  t = tmpDir('thinfs-names-');
  root = path.join(t.dir, 'pool');
  pool = Pool.create(root, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
});
afterEach(() => {
  pool.close();
  t.cleanup();
});

function put(fs: Filesystem, p: string, data: string): void {
  const fh = fs.create(p, 0o644, ROOT, constants.O_CREAT | constants.O_WRONLY);
  fs.write(fh, 0, Buffer.from(data));
  fs.release(fh);
}

function reopen(): void {
  pool.close();
  pool = Pool.open(root);
}

describe('names are bytes (fs level)', () => {
  it('x\\xe9 and x\\xe8 are two files, each with its own data, after reopen and in a snapshot', () => {
    const id = pool.createThin('base');
    let fs = Filesystem.open(pool, id);
    put(fs, '/x\xe9', 'e9');
    put(fs, '/x\xe8', 'e8');
    fs.mkdir('/d\xff', 0o755, ROOT);
    fs.symlink('/t\xe9\x80', '/d\xff/l', ROOT);
    fs.setxattr('/x\xe9', 'user.n\xe9', Buffer.from('v'), 0);
    expect(namesIn(fs, '/')).toEqual(['d\xff', 'x\xe8', 'x\xe9']);
    fs.close();
    reopen();

    fs = Filesystem.open(pool, id, { readOnly: true });
    expect(namesIn(fs, '/')).toEqual(['d\xff', 'x\xe8', 'x\xe9']);
    expect(readFile(fs, '/x\xe9').toString()).toBe('e9');
    expect(readFile(fs, '/x\xe8').toString()).toBe('e8');
    expect(readFile(fs, '/x\xe9')).not.toEqual(readFile(fs, '/x\xe8'));
    expect(fs.readlink('/d\xff/l')).toBe('/t\xe9\x80');
    expect(fs.getattr('/d\xff/l').size).toBe(4);
    expect(fs.listxattr('/x\xe9')).toEqual(['user.n\xe9']);
    expect(errnoOf(() => fs.getattr('/x\ufffd'))).toBe('EINVAL');
    fs.close();

    // A container over it: a whiteout of one byte name hides only that name.
    const c = pool.createSnapshot(id, 'c', { kind: 'container' });
    fs = Filesystem.open(pool, c);
    fs.unlink('/x\xe9');
    put(fs, '/x\xe8', 'E8!');
    expect(namesIn(fs, '/')).toEqual(['d\xff', 'x\xe8']);
    expect(fs.changes().map((ch) => [ch.path, ch.kind])).toEqual([
      ['/x\xe8', 'changed'],
      ['/x\xe9', 'deleted'],
    ]);
    fs.close();
  });

  it('stores the raw bytes: BLOB names, targets and xattr names', () => {
    const id = pool.createThin('base');
    const fs = Filesystem.open(pool, id);
    put(fs, `/caf\xe9`, '');
    put(fs, `/${fromText('café')}`, '');
    fs.symlink('t\xe8', '/l', ROOT);
    fs.setxattr('/l', 'trusted.\xff', Buffer.from('v'), 0);
    fs.commit();
    const db = pool.metadataDb();
    const names = (db.prepare('SELECT name FROM fs_dirents WHERE parent = 1 ORDER BY name').pluck().all() as Buffer[]).map((b) => b.toString('hex'));
    expect(names).toEqual(['636166c3a9', '636166e9', '6c']);
    const target = db.prepare("SELECT target FROM fs_inodes WHERE target IS NOT NULL").pluck().get() as Buffer;
    expect(Buffer.isBuffer(target) && target.toString('hex')).toBe('74e8');
    const xname = db.prepare('SELECT name FROM fs_xattrs').pluck().get() as Buffer;
    expect(xname.toString('hex')).toBe(Buffer.from('trusted.\xff', 'latin1').toString('hex'));
    fs.close();
  });

  it('migrates a pool whose fs tables are version 1 (TEXT names, UTF-8)', () => {
    const id = pool.createThin('base');
    let fs = Filesystem.open(pool, id);
    put(fs, `/${fromText('café')}`, 'utf8 name');
    fs.mkdir('/dir', 0o755, ROOT);
    fs.symlink(fromText('/ünï'), '/dir/link', ROOT);
    fs.setxattr('/dir', fromText('user.ü'), Buffer.from('x'), 0);
    fs.close();
    pool.commit();
    toVersion1(pool.metadataDb());
    pool.close();
    pool = Pool.open(root, { readOnly: true });
    expect(errnoOf(() => Filesystem.open(pool, id, { readOnly: true }))).toBe('EROFS'); // can't upgrade; says so
    reopen();

    fs = Filesystem.open(pool, id);
    expect(namesIn(fs, '/')).toEqual(['caf\xc3\xa9', 'dir']);
    expect(readFile(fs, '/caf\xc3\xa9').toString()).toBe('utf8 name');
    expect(fs.readlink('/dir/link')).toBe(fromText('/ünï'));
    expect(fs.listxattr('/dir')).toEqual([fromText('user.ü')]);
    put(fs, '/caf\xe9', 'byte name');
    expect(namesIn(fs, '/')).toEqual(['caf\xc3\xa9', 'caf\xe9', 'dir']);
    fs.close();
    expect(pool.metadataDb().prepare("SELECT version FROM schema_versions WHERE component = 'fs'").pluck().get()).toBe(2);
    const report = pool.check();
    expect(report.clean).toBe(true);
  });

  it('refuses what is not a byte string, with EINVAL (a boundary that forgot to convert)', () => {
    const fs = Filesystem.open(pool, pool.createThin('base'));
    expect(errnoOf(() => fs.mkdir('/\u20ac', 0o755, ROOT))).toBe('EINVAL');
    expect(errnoOf(() => fs.symlink('\u20ac', '/l', ROOT))).toBe('EINVAL');
    expect(errnoOf(() => fs.setxattr('/', 'user.\u20ac', Buffer.alloc(1), 0))).toBe('ERANGE');
    expect(namesIn(fs, '/')).toEqual([]);
    fs.close();
  });
});

describe('bytes.ts', () => {
  it('converts at the edges and back', () => {
    expect(fromText('café')).toBe('caf\xc3\xa9');
    expect(fromText('abc')).toBe('abc');
    expect(bytesOf('caf\xe9')).toEqual(Buffer.from([0x63, 0x61, 0x66, 0xe9]));
    expect(byteString(Buffer.from([0x78, 0xe8, 0x00, 0xff]))).toBe('x\xe8\x00\xff');
    expect(byteString(new Uint8Array([1, 2, 3, 4]).subarray(1, 3))).toBe('\x02\x03');
    expect(isByteString('\xff')).toBe(true);
    expect(isByteString('\u0100')).toBe(false);
  });

  it('toText shows UTF-8 as text and every other byte as \\xNN', () => {
    expect(toText('plain')).toBe('plain');
    expect(toText(fromText('café ✓ 😀'))).toBe('café ✓ 😀');
    expect(toText('caf\xe9')).toBe('caf\\xe9');
    expect(toText(`${fromText('é')}\xe8${fromText('ü')}`)).toBe('é\\xe8ü');
    expect(toText('\xc0\xaf')).toBe('\\xc0\\xaf'); // overlong '/'
    expect(toText('\xed\xa0\x80')).toBe('\\xed\\xa0\\x80'); // a surrogate
    expect(toText(fromText('\ufffd') + '\xff')).toBe('\ufffd\\xff'); // a real U+FFFD stays
  });
});

/** Rewrite the fs tables as fs schema version 1 stored them: TEXT names and targets. */
function toVersion1(db: ReturnType<Pool['metadataDb']>): void {
  db.exec(`
    BEGIN;
    CREATE TABLE d1 AS SELECT parent, CAST(name AS TEXT) AS name, layer, child, type FROM fs_dirents;
    DELETE FROM fs_dirents;
    INSERT INTO fs_dirents SELECT * FROM d1;
    DROP TABLE d1;
    UPDATE fs_inodes SET target = CAST(target AS TEXT) WHERE target IS NOT NULL;
    CREATE TABLE x1 AS SELECT ino, CAST(name AS TEXT) AS name, layer, value FROM fs_xattrs;
    DELETE FROM fs_xattrs;
    INSERT INTO fs_xattrs SELECT * FROM x1;
    DROP TABLE x1;
    UPDATE schema_versions SET version = 1 WHERE component = 'fs';
    COMMIT;
  `);
  const types = db.prepare('SELECT DISTINCT typeof(name) FROM fs_dirents').pluck().all();
  expect(types).toEqual(['text']);
}
