/**
 * The inode-based API (what FUSE's low level calls): hard links as one inode, inodes the
 * kernel still holds after their last name went (lookup counts, forget, crash), rename
 * over a held victim, renameat2 flags, readdir offsets under concurrent changes, SETATTR
 * as one atomic operation under injected faults, and inode numbers never handed out twice.
 * The behaviour suite and the model test also run through this API (adapters.ts).
 */
import { constants } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isThinfsError } from '../../src/errors.js';
import {
  Filesystem,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  ROOT_INO,
  type Attr,
  type DirEntryPlus,
  type EntryAttr,
  type Ino,
} from '../../src/fs/index.js';
import { KiB, MiB, Pool, type DevId, type IoOp } from '../../src/pool/index.js';
import { pattern } from '../helpers/data.js';
import { FaultPlan } from '../helpers/faults.js';
import { scratchPool } from '../helpers/scratch-pool.js';
import { errnoOf } from './model.js';

const ROOT = { uid: 0, gid: 0 };
const { O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_WRONLY } = constants;
const BS = 4 * KiB;

const s = scratchPool('thinfs-inodes-');
const fsOf = s.fsOf;

function newPool(faults?: FaultPlan): { fs: Filesystem; id: DevId } {
  // Pool blocks only: these tests count blocks freed and data writes failed (inline blocks: test/pool/inline.test.ts).
  Pool.create(s.root, { blockSizeBytes: BS, dataSizeBytes: 64 * MiB, minFreePercent: 0, inlineMaxBytes: 0 }).close();
  s.pool = Pool.open(s.root, faults === undefined ? {} : { faults });
  const id = s.pool.createThin('base');
  return { fs: fsOf(id), id };
}
/** createAt + write + release; the entry is returned (the kernel's lookup of it is taken with ref). */
function mkfile(fs: Filesystem, parent: Ino, name: string, data: Buffer): EntryAttr {
  const { entry, fh } = fs.createAt(parent, name, 0o644, ROOT, O_CREAT | O_EXCL | O_RDWR);
  fs.ref(entry.ino);
  if (data.length > 0) fs.write(fh, 0, data);
  fs.release(fh);
  return entry;
}
function readIno(fs: Filesystem, ino: Ino): Buffer {
  const fh = fs.openIno(ino, O_RDONLY);
  try {
    return fs.read(fh, 0, fs.fgetattr(fh).size);
  } finally {
    fs.release(fh);
  }
}
const mapped = (id: DevId) => s.pool!.getDevice(id)!.mappedBlocks;
const noGen = ({ generation, ...a }: EntryAttr): Attr => (void generation, a);

describe('names and inodes', () => {
  it('hard links are one inode: every name shows the same attributes, and a change through one shows through all', () => {
    const { fs } = newPool();
    const d = fs.mkdirAt(ROOT_INO, 'd', 0o755, ROOT);
    const f = mkfile(fs, ROOT_INO, 'f', Buffer.from('hello'));
    const g = fs.linkAt(f.ino, d.ino, 'g');
    expect(g.ino).toBe(f.ino);
    expect(g.nlink).toBe(2);
    expect(g.generation).toBe(0);
    expect(noGen(fs.lookup(ROOT_INO, 'f'))).toEqual(noGen(fs.lookup(d.ino, 'g')));
    expect(fs.getattr('/d/g')).toEqual(fs.getattrIno(f.ino));

    const after = fs.setattrIno(f.ino, { mode: 0o600, uid: 5, gid: 6 });
    expect(after.mode).toBe(constants.S_IFREG | 0o600);
    for (const e of [fs.lookup(ROOT_INO, 'f'), fs.lookup(d.ino, 'g')]) expect(noGen(e)).toEqual(after);
    const fh = fs.openIno(g.ino, O_WRONLY);
    fs.write(fh, 5, Buffer.from(' world'));
    fs.release(fh);
    expect(readIno(fs, fs.lookup(ROOT_INO, 'f').ino).toString()).toBe('hello world');

    const dh = fs.opendirIno(d.ino);
    const listed = fs.readdirplusIno(d.ino, dh, 0).find((e) => e.name === 'g')!;
    fs.release(dh);
    expect(listed.ino).toBe(f.ino);
    expect(noGen(listed.attr)).toEqual(fs.getattrIno(f.ino));

    fs.unlinkAt(ROOT_INO, 'f');
    expect(errnoOf(() => fs.lookup(ROOT_INO, 'f'))).toBe('ENOENT');
    expect(fs.lookup(d.ino, 'g').nlink).toBe(1);
    expect(errnoOf(() => fs.linkAt(d.ino, ROOT_INO, 'dlink'))).toBe('EPERM');
  });

  it("lookup of '.' and '..', names that are not one component, unknown inodes, and a directory that was removed", () => {
    const { fs } = newPool();
    const a = fs.mkdirAt(ROOT_INO, 'a', 0o755, ROOT);
    const b = fs.mkdirAt(a.ino, 'b', 0o755, ROOT);
    expect(fs.lookup(b.ino, '..').ino).toBe(a.ino);
    expect(fs.lookup(b.ino, '.').ino).toBe(b.ino);
    expect(fs.lookup(ROOT_INO, '..').ino).toBe(ROOT_INO);
    fs.dropCaches(); // '..' of a directory the dentry cache has not seen: found through its name
    expect(fs.lookup(b.ino, '..').ino).toBe(a.ino);
    expect(errnoOf(() => fs.lookup(ROOT_INO, 'x/y'))).toBe('EINVAL');
    expect(errnoOf(() => fs.lookup(ROOT_INO, ''))).toBe('ENOENT');
    expect(errnoOf(() => fs.lookup(ROOT_INO, 'n'.repeat(256)))).toBe('ENAMETOOLONG');
    expect(errnoOf(() => fs.mkdirAt(ROOT_INO, '.', 0o755, ROOT))).toBe('EEXIST');
    expect(errnoOf(() => fs.rmdirAt(a.ino, '.'))).toBe('EINVAL');
    expect(errnoOf(() => fs.rmdirAt(b.ino, '..'))).toBe('ENOTEMPTY');
    expect(errnoOf(() => fs.getattrIno(99_999 as Ino))).toBe('ENOENT');
    const f = mkfile(fs, ROOT_INO, 'f', Buffer.alloc(0));
    expect(errnoOf(() => fs.lookup(f.ino, 'x'))).toBe('ENOTDIR');
    expect(errnoOf(() => fs.mkdirAt(f.ino, 'x', 0o755, ROOT))).toBe('ENOTDIR');

    fs.ref(b.ino); // the kernel holds b (a process's cwd)
    fs.rmdirAt(a.ino, 'b');
    expect(fs.getattrIno(b.ino).nlink).toBe(0);
    expect(errnoOf(() => fs.mkdirAt(b.ino, 'x', 0o755, ROOT))).toBe('ENOENT');
    expect(errnoOf(() => fs.lookup(b.ino, 'x'))).toBe('ENOENT');
    const dh = fs.opendirIno(b.ino);
    expect(errnoOf(() => fs.readdirplusIno(b.ino, dh, 0))).toBe('ENOENT');
    fs.release(dh);
    fs.forget(b.ino, 1);
    expect(errnoOf(() => fs.getattrIno(b.ino))).toBe('ENOENT');
    expect(s.pool!.check().issues).toEqual([]);
  });

  it('new entries take the caller umask when one is given, and a setgid directory passes its group to a member of it', () => {
    const { fs } = newPool();
    const g = fs.mkdirAt(ROOT_INO, 'g', 0o2777, ROOT);
    fs.setattrIno(g.ino, { gid: 50, mode: 0o2777 }); // mkdir drops setgid from its mode; chmod sets it
    const caller = { uid: 1000, gid: 1000, groups: [50], umask: 0o027 };
    const { entry, fh } = fs.createAt(g.ino, 'f', 0o2777, caller, O_CREAT | O_RDWR);
    fs.release(fh);
    expect(entry.mode & 0o7777).toBe(0o2750); // umask applied; setgid kept: the caller is in group 50
    expect(entry.gid).toBe(50);
    expect(fs.mkdirAt(g.ino, 'sub', 0o777, caller).mode & 0o7777).toBe(0o2750);
    expect(fs.symlinkAt(g.ino, 'l', 'f', caller).mode & 0o777).toBe(0o777);
    expect(fs.createAt(g.ino, 'h', 0o2777, { uid: 1000, gid: 1000 }, O_CREAT | O_RDWR).entry.mode & 0o7777).toBe(0o777);
    fs.setattrIno(entry.ino, { mode: 0o640 });
    expect(() => fs.accessIno(entry.ino, constants.R_OK, { uid: 7, gid: 7, groups: [50] })).not.toThrow();
    expect(errnoOf(() => fs.accessIno(entry.ino, constants.R_OK, { uid: 7, gid: 7 }))).toBe('EACCES');
  });
});

describe('inodes the kernel holds', () => {
  it('an unlinked file stays readable and writable by inode and handle until its last handle and its last lookup are gone; then its blocks are freed', () => {
    const { fs, id } = newPool();
    const data = pattern(64 * BS, 3);
    const before = mapped(id);
    const f = mkfile(fs, ROOT_INO, 'f', data); // one lookup, taken in mkfile
    expect(mapped(id) - before).toBe(64);
    fs.ref(f.ino); // and a second one (a LOOKUP after the CREATE)

    const fh = fs.openIno(f.ino, O_RDWR);
    fs.unlinkAt(ROOT_INO, 'f');
    expect(errnoOf(() => fs.lookup(ROOT_INO, 'f'))).toBe('ENOENT');
    expect(fs.getattrIno(f.ino).nlink).toBe(0);
    expect(fs.fgetattr(fh).nlink).toBe(0);
    fs.write(fh, data.length, Buffer.from('tail'));
    expect(fs.getattrIno(f.ino).size).toBe(data.length + 4);
    expect(fs.setattrIno(f.ino, { mode: 0o600 }).nlink).toBe(0); // fchmod of an unlinked file
    expect(errnoOf(() => fs.linkAt(f.ino, ROOT_INO, 'again'))).toBe('ENOENT'); // linkat of an unlinked file

    fs.release(fh); // the kernel still holds it
    expect(readIno(fs, f.ino).subarray(0, data.length).equals(data)).toBe(true);
    expect(mapped(id) - before).toBe(65);
    fs.forget(f.ino, 1); // one lookup left
    expect(fs.getattrIno(f.ino).nlink).toBe(0);
    expect(mapped(id) - before).toBe(65);
    expect(s.pool!.check().issues).toEqual([]);

    fs.forget(f.ino, 1);
    expect(errnoOf(() => fs.getattrIno(f.ino))).toBe('ENOENT');
    expect(mapped(id)).toBe(before);
    fs.commit();
    expect(s.pool!.check().issues).toEqual([]);
  });

  it('the last hold may be a handle: forget first, release frees', () => {
    const { fs, id } = newPool();
    const before = mapped(id);
    const f = mkfile(fs, ROOT_INO, 'f', pattern(8 * BS, 1));
    const fh = fs.openIno(f.ino, O_RDONLY);
    fs.unlinkAt(ROOT_INO, 'f');
    fs.forget(f.ino, 1);
    expect(fs.fgetattr(fh).size).toBe(8 * BS);
    expect(mapped(id) - before).toBe(8);
    fs.release(fh);
    expect(errnoOf(() => fs.getattrIno(f.ino))).toBe('ENOENT');
    expect(mapped(id)).toBe(before);
  });

  it('a file unlinked while looked up in a container of an image: the image keeps its bytes, the container frees its own', () => {
    const { fs, id } = newPool();
    const f = mkfile(fs, ROOT_INO, 'f', pattern(4 * BS, 9));
    fs.close();
    s.open = [];
    s.pool!.setReadOnly(id);
    const c = s.pool!.createSnapshot(id, 'c');
    const cfs = fsOf(c);
    cfs.ref(f.ino);
    const fh = cfs.openIno(f.ino, O_RDWR);
    cfs.write(fh, 0, Buffer.from('own')); // one block copied into the container
    cfs.release(fh);
    cfs.unlinkAt(ROOT_INO, 'f');
    expect(cfs.getattrIno(f.ino).nlink).toBe(0);
    expect(readIno(cfs, f.ino).subarray(0, 3).toString()).toBe('own');
    expect(s.pool!.getDevice(c)!.exclusiveBlocks).toBe(1);
    cfs.forget(f.ino, 1);
    expect(s.pool!.getDevice(c)!.exclusiveBlocks).toBe(0);
    expect(errnoOf(() => cfs.lookup(ROOT_INO, 'f'))).toBe('ENOENT');
    const img = fsOf(id, { readOnly: true });
    expect(readIno(img, img.lookup(ROOT_INO, 'f').ino).equals(pattern(4 * BS, 9))).toBe(true);
    expect(s.pool!.check().issues).toEqual([]);
  });

  it('a crash while the kernel holds an unlinked file: the orphan survives in the commit, and the next writable open frees it', () => {
    const { fs, id } = newPool();
    const before = mapped(id);
    const f = mkfile(fs, ROOT_INO, 'f', pattern(16 * BS, 5));
    fs.unlinkAt(ROOT_INO, 'f');
    fs.commit(); // the unlinked inode (nlink 0) is in the commit
    s.pool!.close({ commit: false }); // kill -9: the Filesystem and its lookups are abandoned
    s.pool = Pool.open(s.root);
    s.open = [];
    expect(mapped(id) - before).toBe(16);
    const ro = fsOf(id, { readOnly: true }); // a read-only view frees nothing
    expect(ro.getattrIno(f.ino).nlink).toBe(0);
    expect(mapped(id) - before).toBe(16);
    const rw = fsOf(id);
    expect(errnoOf(() => rw.getattrIno(f.ino))).toBe('ENOENT');
    expect(mapped(id)).toBe(before);
    expect(s.pool.check().issues).toEqual([]);
  });

  it('close forgets every lookup: what they kept of unlinked files is freed', () => {
    const { fs, id } = newPool();
    const before = mapped(id);
    const f = mkfile(fs, ROOT_INO, 'f', pattern(4 * BS, 2));
    fs.ref(f.ino, 3);
    fs.unlinkAt(ROOT_INO, 'f');
    fs.close();
    s.open = [];
    expect(mapped(id)).toBe(before);
    expect(fsOf(id, { readOnly: true }).readdir('/').map((e) => e.name)).toEqual(['.', '..']);
    expect(s.pool!.check().issues).toEqual([]);
    expect(errnoOf(() => fs.ref(f.ino))).toBe('EBADF');
  });
});

describe('renameAt', () => {
  it('rename over an existing file keeps the victim alive while the kernel holds it', () => {
    const { fs, id } = newPool();
    const before = mapped(id);
    const a = mkfile(fs, ROOT_INO, 'a', pattern(2 * BS, 1));
    const b = mkfile(fs, ROOT_INO, 'b', pattern(3 * BS, 2));
    fs.renameAt(ROOT_INO, 'a', ROOT_INO, 'b');
    expect(fs.lookup(ROOT_INO, 'b').ino).toBe(a.ino);
    expect(errnoOf(() => fs.lookup(ROOT_INO, 'a'))).toBe('ENOENT');
    expect(fs.getattrIno(b.ino).nlink).toBe(0);
    expect(readIno(fs, b.ino).equals(pattern(3 * BS, 2))).toBe(true);
    expect(mapped(id) - before).toBe(5);
    fs.forget(b.ino, 1);
    expect(errnoOf(() => fs.getattrIno(b.ino))).toBe('ENOENT');
    expect(mapped(id) - before).toBe(2);
    expect(readIno(fs, a.ino).equals(pattern(2 * BS, 1))).toBe(true);
    expect(s.pool!.check().issues).toEqual([]);
  });

  it('RENAME_NOREPLACE refuses an existing target; RENAME_EXCHANGE swaps a file and a directory across directories', () => {
    const { fs } = newPool();
    const p = fs.mkdirAt(ROOT_INO, 'p', 0o755, ROOT);
    const q = fs.mkdirAt(ROOT_INO, 'q', 0o755, ROOT);
    const f = mkfile(fs, p.ino, 'f', Buffer.from('file'));
    const d = fs.mkdirAt(q.ino, 'd', 0o755, ROOT);
    const inner = mkfile(fs, d.ino, 'inner', Buffer.from('in'));
    expect(errnoOf(() => fs.renameAt(p.ino, 'f', q.ino, 'd', RENAME_NOREPLACE))).toBe('EEXIST');
    expect(errnoOf(() => fs.renameAt(p.ino, 'f', q.ino, 'none', RENAME_EXCHANGE))).toBe('ENOENT');
    expect(errnoOf(() => fs.renameAt(p.ino, 'f', q.ino, 'd', RENAME_EXCHANGE | RENAME_NOREPLACE))).toBe('EINVAL');
    expect(errnoOf(() => fs.renameAt(p.ino, 'f', q.ino, 'd', 4 /* RENAME_WHITEOUT */))).toBe('EINVAL');
    expect(errnoOf(() => fs.renameAt(ROOT_INO, 'q', d.ino, 'inner', RENAME_EXCHANGE))).toBe('EINVAL'); // q into its own subtree
    expect(fs.getattrIno(p.ino).nlink).toBe(2);
    expect(fs.getattrIno(q.ino).nlink).toBe(3);

    fs.renameAt(p.ino, 'f', q.ino, 'd', RENAME_EXCHANGE);
    expect(fs.lookup(p.ino, 'f').ino).toBe(d.ino);
    expect(fs.lookup(q.ino, 'd').ino).toBe(f.ino);
    expect(fs.lookup(fs.lookup(p.ino, 'f').ino, 'inner').ino).toBe(inner.ino);
    expect(fs.lookup(d.ino, '..').ino).toBe(p.ino);
    expect(fs.getattrIno(p.ino).nlink).toBe(3); // the directory moved in
    expect(fs.getattrIno(q.ino).nlink).toBe(2);
    expect(fs.getattr('/p/f/inner').ino).toBe(inner.ino); // the path view agrees
    expect(readIno(fs, fs.lookup(q.ino, 'd').ino).toString()).toBe('file');

    fs.renameAt(p.ino, 'f', q.ino, 'new', RENAME_NOREPLACE);
    expect(fs.lookup(q.ino, 'new').ino).toBe(d.ino);
    expect(fs.getattrIno(p.ino).nlink).toBe(2);
    expect(fs.getattrIno(q.ino).nlink).toBe(3);
    expect(s.pool!.check().issues).toEqual([]);
  });

  it('a directory is not moved into itself, nor over an ancestor of its source', () => {
    const { fs } = newPool();
    const a = fs.mkdirAt(ROOT_INO, 'a', 0o755, ROOT);
    const b = fs.mkdirAt(a.ino, 'b', 0o755, ROOT);
    const c = fs.mkdirAt(b.ino, 'c', 0o755, ROOT);
    fs.dropCaches(); // ancestry found through the names, not the warm cache
    expect(errnoOf(() => fs.renameAt(ROOT_INO, 'a', c.ino, 'x'))).toBe('EINVAL');
    expect(errnoOf(() => fs.renameAt(ROOT_INO, 'a', a.ino, 'x'))).toBe('EINVAL');
    expect(errnoOf(() => fs.renameAt(b.ino, 'c', ROOT_INO, 'a'))).toBe('ENOTEMPTY');
    fs.renameAt(b.ino, 'c', ROOT_INO, 'c');
    expect(fs.lookup(c.ino, '..').ino).toBe(ROOT_INO);
    expect(fs.getattr('/c').ino).toBe(c.ino);
  });
});

describe('readdirplusIno', () => {
  const names = Array.from({ length: 40 }, (_, i) => `f${String(i).padStart(2, '0')}`);

  function listAll(fs: Filesystem, dir: Ino, fh: number, from: number, page: number): DirEntryPlus[] {
    const out: DirEntryPlus[] = [];
    let offset = from;
    for (;;) {
      const got = fs.readdirplusIno(dir, fh, offset, page);
      if (got.length === 0) return out;
      out.push(...got);
      offset = got[got.length - 1]!.offset;
    }
  }

  it('offsets survive unlinks and creates between two calls: every entry that stayed is listed exactly once', () => {
    const { fs } = newPool();
    const d = fs.mkdirAt(ROOT_INO, 'd', 0o755, ROOT);
    for (const n of names) mkfile(fs, d.ino, n, Buffer.from(n));
    const fh = fs.opendirIno(d.ino);
    const first = fs.readdirplusIno(d.ino, fh, 0, 12);
    expect(first.map((e) => e.name)).toEqual(['.', '..', ...names.slice(0, 10)]);
    expect(first[0]!.ino).toBe(d.ino);
    expect(first[1]!.ino).toBe(ROOT_INO);
    const resumeAt = first[first.length - 1]!.offset;

    fs.unlinkAt(d.ino, 'f03'); // already listed
    fs.unlinkAt(d.ino, 'f04'); // already listed
    fs.unlinkAt(d.ino, 'f20'); // not yet listed: must not show
    fs.unlinkAt(d.ino, 'f10'); // the next one: must not show
    mkfile(fs, d.ino, 'f25a', Buffer.alloc(0)); // after the cursor: shows
    mkfile(fs, d.ino, 'a-new', Buffer.alloc(0)); // before the cursor: not in this pass
    const rest = listAll(fs, d.ino, fh, resumeAt, 5);
    const seen = [...first, ...rest].map((e) => e.name).filter((n) => n !== '.' && n !== '..');
    const stayed = names.filter((n) => !['f03', 'f04', 'f20', 'f10'].includes(n));
    for (const n of stayed) expect(seen.filter((x) => x === n), n).toHaveLength(1);
    expect(seen).toContain('f25a');
    expect(seen).not.toContain('f20');
    expect(seen).not.toContain('f10');
    expect(seen).not.toContain('a-new');
    expect(new Set(seen).size).toBe(seen.length);
    for (const e of rest) expect(noGen(e.attr)).toEqual(fs.getattrIno(e.ino));

    // seekdir to an offset handed out earlier continues from the same place, in today's directory.
    const again = listAll(fs, d.ino, fh, resumeAt, 100).map((e) => e.name);
    expect(again).toEqual(rest.map((e) => e.name));
    // readdir (no plus) on the same handle understands the same offsets.
    expect(fs.readdirIno(d.ino, fh, resumeAt, 3).map((e) => e.name)).toEqual(again.slice(0, 3));
    // An offset never handed out is the end; offset 0 starts over and sees everything there is now.
    expect(fs.readdirplusIno(d.ino, fh, 1e9, 10)).toEqual([]);
    const fresh = listAll(fs, d.ino, fh, 0, 7).map((e) => e.name);
    expect(fresh).toEqual(['.', '..', 'a-new', ...[...stayed, 'f25a'].sort()]);
    fs.release(fh);
    expect(errnoOf(() => fs.readdirplusIno(d.ino, fh, 0, 1))).toBe('EBADF');
  });

  it('a handle that is not a directory handle of that inode is EBADF; opendir of a file is ENOTDIR', () => {
    const { fs } = newPool();
    const d = fs.mkdirAt(ROOT_INO, 'd', 0o755, ROOT);
    const f = mkfile(fs, ROOT_INO, 'f', Buffer.alloc(0));
    expect(errnoOf(() => fs.opendirIno(f.ino))).toBe('ENOTDIR');
    const fh = fs.opendirIno(ROOT_INO);
    expect(errnoOf(() => fs.readdirplusIno(d.ino, fh, 0))).toBe('EBADF');
    const ffh = fs.openIno(f.ino, O_RDONLY);
    expect(errnoOf(() => fs.readdirIno(f.ino, ffh, 0))).toBe('EBADF');
    fs.release(ffh);
    fs.release(fh);
  });
});

describe('setattrIno', () => {
  /** Fail the setattr at its 1st, 2nd, ... call of `kind`; after each failure nothing about the file has changed. */
  function failEveryStep(plan: FaultPlan, kind: IoOp, op: () => unknown, same: (what: string) => void): number {
    for (let nth = 1; ; nth++) {
      plan.arm(kind, nth, 'EIO');
      let err: unknown;
      try {
        op();
      } catch (e) {
        err = e;
      }
      if (plan.disarm() === undefined) {
        expect(err, `no ${kind} fault left to fire, yet setattr failed`).toBeUndefined();
        return nth - 1;
      }
      const what = `${kind} #${nth} failed`;
      expect(isThinfsError(err), `${what}: threw ${String(err)}`).toBe(true);
      expect(s.pool!.mode(), what).not.toBe('fail');
      same(what);
    }
  }

  for (const { name, size } of [
    { name: 'owner, mode, a growing size and mtime', size: 70_000 },
    { name: 'owner, mode, a shrinking size and mtime', size: 100 },
  ]) {
    it(`is atomic: ${name} — an I/O error at any SQLite statement or data write leaves every attribute and byte as before`, () => {
      const plan = new FaultPlan();
      const { fs } = newPool(plan);
      const data = pattern(5000, 4);
      const set = { mode: 0o4711, uid: 7, gid: 8, size, mtime: 1_000_000_000n };
      for (const kind of ['sql', 'pwrite'] as const) {
        const f = mkfile(fs, ROOT_INO, `f-${kind}`, data);
        fs.setxattrIno(f.ino, 'security.capability', Buffer.from([1, 2]), 0);
        fs.commit(); // the data blocks are committed: the size change must move or zero them, never lose them
        const before = fs.getattrIno(f.ino);
        const failures = failEveryStep(plan, kind, () => fs.setattrIno(f.ino, set), (what) => {
          expect(fs.getattrIno(f.ino), what).toEqual(before);
          expect(readIno(fs, f.ino).equals(data), `${what}: data`).toBe(true);
          expect(fs.listxattrIno(f.ino), `${what}: xattrs`).toEqual(['security.capability']);
        });
        expect(failures, `${kind} failure points tried`).toBeGreaterThan(kind === 'sql' ? 3 : 0);
        const after = fs.getattrIno(f.ino);
        expect(after.mode).toBe(constants.S_IFREG | 0o4711); // chown cleared nothing that the mode did not set again
        expect([after.uid, after.gid, after.size, after.mtimeNs]).toEqual([7, 8, size, 1_000_000_000n]);
        expect(fs.listxattrIno(f.ino)).toEqual([]); // chown dropped the capability
        const got = readIno(fs, f.ino);
        const kept = Math.min(size, 5000);
        expect(got.subarray(0, kept).equals(data.subarray(0, kept))).toBe(true);
        expect(got.subarray(kept).equals(Buffer.alloc(size - kept))).toBe(true);
      }
      expect(s.pool!.check().issues).toEqual([]);
    });
  }

  it('a part that is refused changes nothing: EISDIR for a directory size, EINVAL for a size through a read-only handle, EBADF for another inode s handle', () => {
    const { fs } = newPool();
    const d = fs.mkdirAt(ROOT_INO, 'd', 0o755, ROOT);
    const f = mkfile(fs, ROOT_INO, 'f', Buffer.from('abc'));
    const g = mkfile(fs, ROOT_INO, 'g', Buffer.from('xyz'));
    const dBefore = fs.getattrIno(d.ino);
    expect(errnoOf(() => fs.setattrIno(d.ino, { mode: 0o700, uid: 3, size: 0 }))).toBe('EISDIR');
    expect(fs.getattrIno(d.ino)).toEqual(dBefore);
    const fBefore = fs.getattrIno(f.ino);
    const ro = fs.openIno(f.ino, O_RDONLY);
    expect(errnoOf(() => fs.setattrIno(f.ino, { mode: 0o600, size: 1, fh: ro }))).toBe('EINVAL');
    expect(errnoOf(() => fs.setattrIno(g.ino, { mode: 0o600, fh: ro }))).toBe('EBADF');
    expect(errnoOf(() => fs.setattrIno(f.ino, { mode: 0o600, size: -1 }))).toBe('EINVAL');
    expect(fs.getattrIno(f.ino)).toEqual(fBefore);
    fs.release(ro);
    const rw = fs.openIno(f.ino, O_RDWR);
    expect(fs.setattrIno(f.ino, { size: 1, fh: rw, ctime: 42n })).toMatchObject({ size: 1, ctimeNs: 42n });
    fs.release(rw);
    expect(errnoOf(() => fs.setattrIno(99_999 as Ino, { mode: 0o600 }))).toBe('ENOENT');
  });
});

describe('inode numbers', () => {
  it('are never handed out twice, even when the transaction that made one is lost after the kernel saw it', () => {
    const { fs } = newPool();
    const kept = fs.mkdirAt(ROOT_INO, 'kept', 0o755, ROOT).ino;
    fs.commit();
    const seen = fs.mkdirAt(ROOT_INO, 'lost', 0o755, ROOT).ino; // answered to the kernel ...
    s.pool!.abort(); // ... then the transaction goes (as when SQLite rolls it back after an I/O error)
    expect(errnoOf(() => fs.lookup(ROOT_INO, 'lost'))).toBe('ENOENT');
    const next = fs.mkdirAt(ROOT_INO, 'next', 0o755, ROOT).ino;
    expect(next).toBeGreaterThan(seen);
    expect(kept).toBeLessThan(seen);
    expect(fs.statfs().ffree).toBeLessThanOrEqual(2 ** 32 - next);
  });
});
