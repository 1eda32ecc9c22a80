/**
 * The POSIX behaviour suite, written against FsUnderTest so it runs on thinfs and on a
 * real directory through node:fs (which proves the expectations). Run as root: the
 * suite has no permission checks (the kernel makes those before FUSE calls us).
 */
import { constants } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fromText } from '../../src/fs/index.js';
import { errnoOf, type FsUnderTest } from './model.js';

export interface Subject {
  fs: FsUnderTest;
  cleanup(): void;
}

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND } = constants;

export function behaviourSuite(label: string, setup: () => Subject): void {
  describe(`POSIX behaviour: ${label}`, () => {
    let s: Subject;
    let fs: FsUnderTest;
    beforeEach(() => {
      s = setup();
      fs = s.fs;
    });
    afterEach(() => s.cleanup());

    const write = (p: string, data: string | Buffer, off = 0) => fs.writeAt(p, off, Buffer.from(data));
    const mkfile = (p: string, data = '') => {
      fs.createFile(p, 0o644, true);
      if (data !== '') write(p, data);
    };

    it('mkdir: EEXIST, ENOENT below a missing directory, ENOTDIR below a file', () => {
      fs.mkdir('/a', 0o755);
      expect(errnoOf(() => fs.mkdir('/a', 0o755))).toBe('EEXIST');
      expect(errnoOf(() => fs.mkdir('/x/y', 0o755))).toBe('ENOENT');
      mkfile('/f');
      expect(errnoOf(() => fs.mkdir('/f/y', 0o755))).toBe('ENOTDIR');
      expect(errnoOf(() => fs.lstat('/f/y'))).toBe('ENOTDIR');
      expect(fs.lstat('/a').mode).toBe(constants.S_IFDIR | 0o755);
    });

    it('mkdir keeps the sticky bit and drops setuid; setgid directories pass group and setgid on', () => {
      fs.mkdir('/t', 0o1777);
      expect(fs.lstat('/t').mode & 0o7777).toBe(0o1777);
      fs.mkdir('/u', 0o4755);
      expect(fs.lstat('/u').mode & 0o7777).toBe(0o755);
      fs.mkdir('/g', 0o755);
      fs.chown('/g', 0, 1234);
      fs.chmod('/g', 0o2775);
      fs.mkdir('/g/sub', 0o755);
      mkfile('/g/file');
      expect(fs.lstat('/g/sub').mode & 0o7777).toBe(0o2755);
      expect(fs.lstat('/g/sub').gid).toBe(1234);
      expect(fs.lstat('/g/file').gid).toBe(1234);
    });

    it('directory link counts are 2 + subdirectories', () => {
      const root0 = fs.lstat('/').nlink;
      fs.mkdir('/a', 0o755);
      expect(fs.lstat('/').nlink).toBe(root0 + 1);
      fs.mkdir('/a/b', 0o755);
      fs.mkdir('/a/c', 0o755);
      mkfile('/a/f');
      expect(fs.lstat('/a').nlink).toBe(4);
      fs.rmdir('/a/b');
      expect(fs.lstat('/a').nlink).toBe(3);
      fs.rename('/a/c', '/c');
      expect(fs.lstat('/a').nlink).toBe(2);
      expect(fs.lstat('/').nlink).toBe(root0 + 2);
    });

    it('rmdir and unlink errnos', () => {
      fs.mkdir('/d', 0o755);
      mkfile('/d/f');
      expect(errnoOf(() => fs.rmdir('/d'))).toBe('ENOTEMPTY');
      expect(errnoOf(() => fs.rmdir('/d/f'))).toBe('ENOTDIR');
      expect(errnoOf(() => fs.unlink('/d'))).toBe('EISDIR');
      expect(errnoOf(() => fs.unlink('/d/nope'))).toBe('ENOENT');
      expect(errnoOf(() => fs.rmdir('/nope'))).toBe('ENOENT');
      fs.unlink('/d/f');
      fs.rmdir('/d');
      expect(fs.readdir('/')).toEqual([]);
    });

    it('hard links: one inode, nlink from every name; no links to directories', () => {
      mkfile('/f', 'data');
      fs.link('/f', '/g');
      const a = fs.lstat('/f');
      const b = fs.lstat('/g');
      expect(a.ino).toBe(b.ino);
      expect(a.nlink).toBe(2);
      expect(errnoOf(() => fs.link('/f', '/g'))).toBe('EEXIST');
      expect(errnoOf(() => fs.link('/nope', '/h'))).toBe('ENOENT');
      fs.mkdir('/d', 0o755);
      expect(errnoOf(() => fs.link('/d', '/e'))).toBe('EPERM');
      write('/g', 'DATA');
      expect(fs.readAll('/f').toString()).toBe('DATA');
      fs.unlink('/f');
      expect(fs.lstat('/g').nlink).toBe(1);
      expect(fs.readAll('/g').toString()).toBe('DATA');
    });

    it('rename replaces a file with a file and keeps the moved inode', () => {
      mkfile('/a', 'A');
      mkfile('/b', 'B');
      fs.link('/b', '/b2');
      const ino = fs.lstat('/a').ino;
      fs.rename('/a', '/b');
      expect(fs.readdir('/')).toEqual(['b', 'b2']);
      expect(fs.lstat('/b').ino).toBe(ino);
      expect(fs.readAll('/b').toString()).toBe('A');
      expect(fs.lstat('/b2').nlink).toBe(1);
    });

    it('rename of directories: over empty dirs, ENOTEMPTY, ENOTDIR, EISDIR, EINVAL into itself', () => {
      fs.mkdir('/a', 0o755);
      fs.mkdir('/a/sub', 0o755);
      mkfile('/a/sub/f', 'x');
      fs.mkdir('/empty', 0o755);
      fs.mkdir('/full', 0o755);
      mkfile('/full/g');
      mkfile('/file');
      expect(errnoOf(() => fs.rename('/a', '/full'))).toBe('ENOTEMPTY');
      expect(errnoOf(() => fs.rename('/a', '/file'))).toBe('ENOTDIR');
      expect(errnoOf(() => fs.rename('/file', '/empty'))).toBe('EISDIR');
      expect(errnoOf(() => fs.rename('/a', '/a/sub/x'))).toBe('EINVAL');
      expect(errnoOf(() => fs.rename('/a/sub', '/a'))).toBe('ENOTEMPTY');
      expect(errnoOf(() => fs.rename('/nope', '/x'))).toBe('ENOENT');
      expect(errnoOf(() => fs.rename('/file', '/nope/x'))).toBe('ENOENT');
      const ino = fs.lstat('/a').ino;
      fs.rename('/a', '/empty');
      expect(fs.lstat('/empty').ino).toBe(ino);
      expect(fs.readAll('/empty/sub/f').toString()).toBe('x');
      expect(fs.readdir('/')).toEqual(['empty', 'file', 'full']);
      fs.rename('/empty', '/full/moved');
      expect(fs.readAll('/full/moved/sub/f').toString()).toBe('x');
      expect(fs.lstat('/full').nlink).toBe(3);
    });

    it('rename between two names of one inode does nothing', () => {
      mkfile('/a', 'x');
      fs.link('/a', '/b');
      fs.rename('/a', '/b');
      expect(fs.readdir('/')).toEqual(['a', 'b']);
      expect(fs.lstat('/a').nlink).toBe(2);
      fs.rename('/a', '/a');
      expect(fs.readdir('/')).toEqual(['a', 'b']);
    });

    it('names longer than 255 bytes: ENAMETOOLONG', () => {
      expect(errnoOf(() => fs.mkdir(`/${'n'.repeat(256)}`, 0o755))).toBe('ENAMETOOLONG');
      expect(errnoOf(() => fs.createFile(`/${fromText('é').repeat(128)}`, 0o644, true))).toBe('ENAMETOOLONG');
      expect(errnoOf(() => fs.createFile(`/${'\xe9'.repeat(256)}`, 0o644, true))).toBe('ENAMETOOLONG');
      fs.mkdir(`/${'n'.repeat(255)}`, 0o755);
      expect(fs.readdir('/')).toEqual(['n'.repeat(255)]);
      fs.mkdir(`/${fromText('é').repeat(127)}`, 0o755); // 254 bytes
      fs.mkdir(`/${'\xe9'.repeat(255)}`, 0o755);
      expect(fs.readdir('/')).toEqual(['n'.repeat(255), fromText('é').repeat(127), '\xe9'.repeat(255)]);
    });

    // Names are bytes: 'x\xe9' and 'x\xe8' are no UTF-8 at all, and each is its own file.
    it('names that differ only in a byte that is not UTF-8 are two entries', () => {
      const [e9, e8, utf8] = ['/x\xe9', '/x\xe8', `/x${fromText('é')}`];
      mkfile(e9, 'e9');
      mkfile(e8, 'e8');
      mkfile(utf8, 'utf8');
      expect(fs.readdir('/')).toEqual(['x\xc3\xa9', 'x\xe8', 'x\xe9']);
      expect(fs.readAll(e9).toString()).toBe('e9');
      expect(fs.readAll(e8).toString()).toBe('e8');
      expect(fs.readAll(utf8).toString()).toBe('utf8');
      expect(errnoOf(() => fs.createFile(e9, 0o644, true))).toBe('EEXIST');
      fs.mkdir('/d\xff', 0o755);
      fs.rename(e9, '/d\xff/\x80\x81');
      expect(fs.readdir('/d\xff')).toEqual(['\x80\x81']);
      expect(errnoOf(() => fs.lstat(e9))).toBe('ENOENT');
      fs.symlink('t\xe9/\xfe', '/d\xff/l\xe8');
      expect(fs.readlink('/d\xff/l\xe8')).toBe('t\xe9/\xfe');
      expect(fs.lstat('/d\xff/l\xe8').size).toBe(4);
      fs.link(e8, '/d\xff/h\xe9');
      expect(fs.lstat(e8).nlink).toBe(2);
      fs.unlink(e8);
      expect(fs.readAll('/d\xff/h\xe9').toString()).toBe('e8');
      expect(fs.readdir('/')).toEqual(['d\xff', 'x\xc3\xa9']);
    });

    it('sparse files read zeros in holes; writes past the end extend', () => {
      mkfile('/s');
      write('/s', 'end', 200_000);
      expect(fs.lstat('/s').size).toBe(200_003);
      const all = fs.readAll('/s');
      expect(all.subarray(0, 200_000).equals(Buffer.alloc(200_000))).toBe(true);
      expect(all.subarray(200_000).toString()).toBe('end');
    });

    it('truncate shrinks and grows; the regrown part reads zeros', () => {
      mkfile('/t', 'x'.repeat(70_000));
      fs.truncate('/t', 10);
      fs.truncate('/t', 70_000);
      const all = fs.readAll('/t');
      expect(all.subarray(0, 10).toString()).toBe('x'.repeat(10));
      expect(all.subarray(10).equals(Buffer.alloc(69_990))).toBe(true);
      fs.mkdir('/d', 0o755);
      expect(errnoOf(() => fs.truncate('/d', 0))).toBe('EISDIR');
      expect(errnoOf(() => fs.truncate('/nope', 0))).toBe('ENOENT');
    });

    it('open flags: O_EXCL, O_TRUNC, O_APPEND, access modes', () => {
      mkfile('/f', 'hello');
      expect(errnoOf(() => fs.createFile('/f', 0o644, true))).toBe('EEXIST');
      fs.createFile('/f', 0o644, false);
      expect(fs.readAll('/f').toString()).toBe('hello');
      fs.writeAt('/f', 0, Buffer.from('!'), true);
      expect(fs.readAll('/f').toString()).toBe('hello!');
      const ro = fs.open('/f', O_RDONLY);
      expect(errnoOf(() => fs.pwrite(ro, 0, Buffer.from('x')))).toBe('EBADF');
      fs.close(ro);
      const wo = fs.open('/f', O_WRONLY);
      expect(errnoOf(() => fs.pread(wo, 0, 1))).toBe('EBADF');
      fs.close(wo);
      fs.close(fs.open('/f', O_WRONLY | O_TRUNC));
      expect(fs.lstat('/f').size).toBe(0);
      const c = fs.open('/new', O_RDWR | O_CREAT | O_EXCL);
      fs.pwrite(c, 0, Buffer.from('abc'));
      expect(fs.pread(c, 1, 10).toString()).toBe('bc');
      fs.close(c);
      fs.mkdir('/d', 0o755);
      expect(errnoOf(() => fs.open('/d', O_WRONLY))).toBe('EISDIR');
      fs.close(fs.open('/d', O_RDONLY));
      expect(errnoOf(() => fs.open('/nope', O_RDONLY))).toBe('ENOENT');
    });

    it('an open file survives unlink until it is closed', () => {
      mkfile('/f', 'before');
      const h = fs.open('/f', O_RDWR);
      fs.unlink('/f');
      expect(errnoOf(() => fs.lstat('/f'))).toBe('ENOENT');
      fs.pwrite(h, 6, Buffer.from(' and after'));
      expect(fs.pread(h, 0, 100).toString()).toBe('before and after');
      expect(fs.fstat(h).nlink).toBe(0);
      fs.close(h);
      expect(fs.readdir('/')).toEqual([]);
    });

    it('symlinks store their target; lstat shows the link itself', () => {
      fs.symlink('../some/where', '/l');
      const st = fs.lstat('/l');
      expect(st.mode).toBe(constants.S_IFLNK | 0o777);
      expect(st.size).toBe('../some/where'.length);
      expect(fs.readlink('/l')).toBe('../some/where');
      expect(errnoOf(() => fs.symlink('x', '/l'))).toBe('EEXIST');
      mkfile('/f');
      expect(errnoOf(() => fs.readlink('/f'))).toBe('EINVAL');
      fs.chown('/l', 7, 8);
      expect(fs.lstat('/l').uid).toBe(7);
      fs.unlink('/l');
      expect(fs.readdir('/')).toEqual(['f']);
    });

    it('chmod keeps special bits; chown clears setuid on files (and setgid when group-executable), not on directories', () => {
      mkfile('/f');
      fs.chmod('/f', 0o6755);
      expect(fs.lstat('/f').mode & 0o7777).toBe(0o6755);
      fs.chown('/f', 1, 2);
      expect(fs.lstat('/f').mode & 0o7777).toBe(0o755);
      expect(fs.lstat('/f').uid).toBe(1);
      expect(fs.lstat('/f').gid).toBe(2);
      fs.chmod('/f', 0o6745);
      fs.chown('/f', -1, -1);
      expect(fs.lstat('/f').mode & 0o7777).toBe(0o2745);
      fs.mkdir('/d', 0o755);
      fs.chmod('/d', 0o7755);
      fs.chown('/d', 3, 4);
      expect(fs.lstat('/d').mode & 0o7777).toBe(0o7755);
    });

    it('readdir lists each name once', () => {
      for (const n of ['c', 'a', 'b']) mkfile(`/${n}`);
      fs.mkdir('/z', 0o755);
      expect(fs.readdir('/')).toEqual(['a', 'b', 'c', 'z']);
      expect(errnoOf(() => fs.readdir('/a'))).toBe('ENOTDIR');
    });
  });
}
