/**
 * Ordinary tools on a mounted container: one shell sequence (cp -a, tar c/x with
 * xattrs, mv of files and directories, ln, ln -s, rm -r, chmod, chown, touch -d,
 * setfattr, find, stat) runs in a plain directory and on a thinfs mount; the two trees
 * must list the same (type, mode, size, nlink, uid:gid, preserved mtimes, symlink
 * targets, content hashes, rdev, xattrs), and the tools must print the same. Then the
 * container is unmounted and mounted again: the tree is still the same.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuseSkipReason, shOk, TestPool, treeListing } from './helpers.js';

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/fuse/tools: skipped: ${skip}`);
const isRoot = process.getuid?.() === 0;

/** Builds the source tree in $SRC: every file type, odd modes, owners, hard links, xattrs, set times. */
const MAKE_SOURCE = String.raw`
mkdir -p "$SRC" && cd "$SRC"
mkdir -p a/b/c empty sticky setgid/sub doc
printf 'hello\n' > a/hello.txt
head -c 70000 /dev/urandom > a/b/rand70k
head -c 300000 /dev/urandom > a/b/c/rand300k
head -c 1048577 /dev/urandom > a/b/c/one-mib-plus-one
: > a/empty-file
dd if=/dev/zero of=a/sparse bs=1 count=1 seek=5M status=none
printf 'tail' >> a/sparse
ln a/hello.txt a/hello.hard
ln a/b/c/rand300k setgid/rand300k.hard
ln -s hello.txt a/hello.sym
ln -s ../../../a a/b/c/up.sym
ln -s /nonexistent/target dangling.sym
mkfifo a/fifo
chmod 0600 a/b/rand70k
chmod 4755 a/b/c/rand300k
chmod 1777 sticky
chmod 2775 setgid
for d in bash tar coreutils gzip; do [ -d /usr/share/doc/$d ] && cp -a /usr/share/doc/$d doc/ || true; done
setfattr -n user.note -v "some value" a/hello.txt
setfattr -n user.dir -v x a
setfattr -n user.bin -v 0x00ff10 a/b/rand70k
if [ "$(id -u)" = 0 ]; then
  mknod a/null c 1 3
  chown 1234:5678 a/b/rand70k
  chown -h 42:43 a/hello.sym
  chown 7:8 setgid/sub
  setfattr -n trusted.t -v 0xdeadbeef a/b
fi
find . -exec touch -h -d '2010-05-06 07:08:09.123456789' {} +
touch -h -d '2001-02-03 04:05:06.789' a/hello.sym
touch -d '1990-01-01 00:00:00' a/b/c
`;

/** The sequence under test, run with the target directory as cwd. */
const SEQUENCE = String.raw`
X='--xattrs --xattrs-include=*'
cp -a "$SRC"/. tree
mkdir tarx && tar -C "$SRC" $X -cf - . | tar -C tarx $X -xpf -
tar -C tree $X -cf tree.tar . && mkdir untar && tar -C untar $X -xpf tree.tar && rm tree.tar
mv tree/a/hello.txt tree/a/hello.moved
mv tree/a/b tree/b-moved
mv untar/a untar/sticky/a-moved
mv tarx/empty tarx/setgid/sub/
ln tree/b-moved/rand70k tree/rand70k.hard
ln -s b-moved/c tree/c.sym
rm -r untar/setgid tarx/a/b tree/doc
chmod 0640 tree/a/hello.moved
chmod -R g+w tree/b-moved
touch -d '2003-04-05 06:07:08.5' tree/a/hello.moved
touch -h -d '1999-12-31 23:59:59' tree/c.sym
touch -m -d '2004-01-01 00:00:00' tree/a/empty-file
setfattr -n user.added -v yes tree/a/hello.moved
setfattr -x user.note tree/a/hello.moved
if [ "$(id -u)" = 0 ]; then chown 77:88 tree/a/empty-file; fi
printf 'appended\n' >> tree/b-moved/c/rand300k
truncate -s 100 tree/b-moved/c/one-mib-plus-one
truncate -s 3M tree/a/sparse
echo new > tree/new-file && mv -f tree/new-file tree/a/hello.hard
echo '--- find'
find . -printf '%P %y %m %n %s\n' | grep -v ' d ' | sort
find . -type d -printf '%P %m %n\n' | sort
echo '--- stat'
stat -c '%n %a %h %u %g %s %F' tree/a/hello.moved tree/a/hello.hard tree/rand70k.hard tree/c.sym tarx/a/fifo
echo '--- getfattr'
getfattr -d -m user tree/a/hello.moved tree/rand70k.hard
echo '--- cmp'
cmp "$SRC"/a/b/c/rand300k untar/sticky/a-moved/b/c/rand300k && echo same
du -s --apparent-size tree/a/sparse
`;

describe.skipIf(skip !== undefined)('ordinary tools on a mounted container', () => {
  let pool: TestPool;
  let src: string;
  let plain: string;
  let mnt: string;
  const started = Date.now();
  const preserved = (ms: number) => ms < started - 60_000;

  beforeAll(async () => {
    pool = await TestPool.create({ c1: 'container' });
    src = path.join(pool.dir, 'src');
    plain = path.join(pool.dir, 'plain');
    fs.mkdirSync(plain);
    await shOk(MAKE_SOURCE, { env: { SRC: src } });
    mnt = await pool.mount('c1');
  });
  afterAll(async () => {
    await pool?.cleanup();
  });

  it('gives the same trees and tool output as a plain directory, before and after a remount', async () => {
    const outPlain = await shOk(SEQUENCE, { cwd: plain, env: { SRC: src } });
    const outMount = await shOk(SEQUENCE, { cwd: mnt, env: { SRC: src } });
    expect(outMount).toBe(outPlain);
    const want = await treeListing(plain, preserved);
    expect(want.length).toBeGreaterThan(40);
    if (isRoot) expect(want.some((l) => l.includes(' 1234:5678 '))).toBe(true);
    expect(await treeListing(mnt, preserved)).toEqual(want);

    await pool.umount('c1');
    expect(fs.existsSync(mnt)).toBe(false); // the default mountpoint exists only while mounted
    mnt = await pool.mount('c1');
    expect(await treeListing(mnt, preserved)).toEqual(want);
    const check = await pool.cli('check');
    expect(check.stdout).toContain('clean');
  });

  it('shows exact nanosecond times', async () => {
    const out = await shOk(`touch -d '2020-01-02 03:04:05.123456789' ns && stat -c %y ns`, { cwd: mnt });
    expect(out.trim()).toBe('2020-01-02 03:04:05.123456789 +0000');
    expect(fs.statSync(path.join(mnt, 'ns'), { bigint: true }).mtimeNs).toBe(1577934245123456789n);
  });

  it('keeps an open file usable after its last name is gone, and both names of a hard link coherent', async () => {
    const out = await shOk(
      String.raw`
      echo data > tmpfile
      exec 3<>tmpfile
      rm tmpfile
      printf 'new' >&3
      python3 -c 'import os; print(os.pread(3, 16, 0)); os.ftruncate(3, 2); os.fsync(3); print(os.lseek(3, 0, 2))'
      exec 3>&-
      ls tmpfile 2>/dev/null || echo gone
      echo AAAA > f && ln f h && cat h && echo BBBB > f && cat h && stat -c %h h
      `,
      { cwd: mnt },
    );
    expect(out.split('\n')).toEqual(["b'newa\\n'", '2', 'gone', 'AAAA', 'BBBB', '2', '']);
  });

  it('answers POSIX errnos', async () => {
    const r = await shOk(
      String.raw`
      mkdir -p e/full && touch e/full/x e/file
      rmdir e/full 2>&1 || true
      mkdir e/file 2>&1 || true
      ls e/missing 2>&1 || true
      cat e 2>&1 || true
      ln e e2 2>&1 || true
      touch e/file/x 2>&1 || true
      `,
      { cwd: mnt },
    );
    expect(r).toMatch(/Directory not empty/);
    expect(r).toMatch(/File exists/);
    expect(r).toMatch(/No such file or directory/);
    expect(r).toMatch(/Is a directory/);
    expect(r).toMatch(/Operation not permitted|hard link not allowed/);
    expect(r).toMatch(/Not a directory/);
  });
});
