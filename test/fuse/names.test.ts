/**
 * Names are bytes on a real mount: names made with printf that are not UTF-8 (`x\xe9`
 * beside `x\xe8`) are two files with their own data, readdir returns their exact bytes,
 * symlink targets, xattr names, rename, unlink, link and 255-byte names keep them, and so
 * does a remount; `thinfs import` of a tar with such names mounts with the same bytes and
 * `thinfs export` writes them back. Byte strings as in src/fs/bytes.ts ('\xe9' = 0xe9).
 *
 * The mount is served by the CLI's daemon (another process), so this file may use
 * synchronous fs calls on the mountpoint; shell steps go through the async `sh`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuseSkipReason, sh, shOk, TestPool } from './helpers.js';

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/fuse/names: skipped: ${skip}`);
const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

/** A path below `dir` (a host string) whose tail is a byte string, as node:fs takes it. */
const at = (dir: string, tail: string): Buffer => Buffer.concat([Buffer.from(dir), Buffer.from(`/${tail}`, 'latin1')]);
/** Names in `dir`, as byte strings, sorted by their bytes. */
const names = (dir: string, tail = ''): string[] =>
  fs
    .readdirSync(tail === '' ? Buffer.from(dir) : at(dir, tail), { encoding: 'buffer' })
    .map((b) => b.toString('latin1'))
    .sort();
const read = (dir: string, tail: string): string => fs.readFileSync(at(dir, tail)).toString();

const LONG = '\xe9'.repeat(255);

describe.skipIf(skip !== undefined)('names are bytes on a mount', () => {
  let pool: TestPool;
  beforeAll(async () => {
    pool = await TestPool.create({ c: 'container' }, 'thinfs-fuse-names-');
  });
  afterAll(async () => {
    await pool?.cleanup();
  });

  /** What the container must show, before and after a remount. */
  async function expectTree(m: string): Promise<void> {
    expect(names(m)).toEqual(['d\xff', 'l\xe8', LONG, 'x\xc3\xa9', 'x\xe8', 'y\xfe'].sort());
    expect(read(m, 'x\xe8')).toBe('e8');
    expect(read(m, 'y\xfe')).toBe('e9'); // x\xe9, renamed
    expect(read(m, 'x\xc3\xa9')).toBe('utf8');
    expect(read(m, LONG)).toBe('long');
    expect(names(m, 'd\xff')).toEqual(['caf\xe9', 'hard\xe8']);
    expect(fs.statSync(at(m, 'd\xff/hard\xe8')).ino).toBe(fs.statSync(at(m, 'x\xe8')).ino);
    expect(fs.readlinkSync(at(m, 'l\xe8'), { encoding: 'buffer' })).toEqual(Buffer.from('t\xe9/\x80', 'latin1'));
    expect(fs.lstatSync(at(m, 'l\xe8')).size).toBe(4);
    // What ls prints, byte for byte (no quoting), one name a line (the test process is no server of the mount).
    const ls = spawnSync('ls', ['-1', '--quoting-style=literal', m], { env: { ...process.env, LC_ALL: 'C' } });
    expect(ls.stdout.toString('latin1').split('\n').filter((l) => l !== '').sort()).toEqual(names(m));
    if (have('getfattr') && have('setfattr')) {
      const r = await sh(String.raw`getfattr --only-values -n "$(printf 'user.n\xe9')" "$(printf 'y\xfe')"; getfattr -d . "$(printf 'y\xfe')" | od -An -tx1`, { cwd: m });
      expect(r.stdout.startsWith('v'), r.stderr).toBe(true);
      expect(r.stdout).not.toContain('ef bf bd');
    }
  }

  it('x\\xe9 and x\\xe8 are two files; bytes survive readdir, readlink, xattrs, rename, unlink, link and a remount', async () => {
    const m = await pool.mount('c');
    try {
      await shOk(
        String.raw`
        touch "$(printf 'x\xe9')" "$(printf 'x\xe8')"
        printf e9 > "$(printf 'x\xe9')"
        printf e8 > "$(printf 'x\xe8')"
        printf utf8 > "$(printf 'x\xc3\xa9')"
        test "$(ls | wc -l)" = 3
        test "$(cat "$(printf 'x\xe9')")" = e9
        test "$(cat "$(printf 'x\xe8')")" = e8
        mkdir "$(printf 'd\xff')"
        printf cafe > "$(printf 'd\xff/caf\xe9')"
        ln "$(printf 'x\xe8')" "$(printf 'd\xff/hard\xe8')"
        ln -s "$(printf 't\xe9/\x80')" "$(printf 'l\xe8')"
        printf long > "$(printf '\xe9%.0s' $(seq 1 255))"
        ! touch "$(printf '\xe9%.0s' $(seq 1 256))" 2>/dev/null
        printf gone > "$(printf 'rm\xe9')" && rm "$(printf 'rm\xe9')"
        mv "$(printf 'x\xe9')" "$(printf 'y\xfe')"
        test ! -e "$(printf 'x\xe9')"
        if command -v setfattr >/dev/null; then setfattr -n "$(printf 'user.n\xe9')" -v v "$(printf 'y\xfe')"; fi
        `,
        { cwd: m },
      );
      // readdir in the kernel's bytes: od of ls shows the raw 0xe9/0xe8, never U+FFFD (357 277 275).
      const od = await shOk('ls | od -An -tx1 | tr -d " \\n"', { cwd: m });
      expect(od).toContain(Buffer.from('x\xe8\n', 'latin1').toString('hex'));
      expect(od).toContain(Buffer.from('y\xfe\n', 'latin1').toString('hex'));
      expect(od).not.toContain('efbfbd');
      await expectTree(m);
    } finally {
      await pool.umount(m);
    }
    const again = await pool.mount('c');
    try {
      await expectTree(again);
    } finally {
      await pool.umount(again);
    }
  });

  it.skipIf(!have('tar'))('thinfs import of a tar with byte names mounts them byte-exact; thinfs export writes them back', async () => {
    const work = path.join(pool.dir, 'tarwork');
    fs.mkdirSync(work);
    await shOk(
      String.raw`
      mkdir src && cd src
      printf 1 > "$(printf 'caf\xe9')"
      printf 2 > "$(printf 'caf\xe8')"
      mkdir "$(printf 'dir\xff')" && ln -s "$(printf '../caf\xe9')" "$(printf 'dir\xff/to\xe9')"
      cd .. && tar --format=pax -C src -cf layer.tar .
      `,
      { cwd: work },
    );
    const imp = await pool.cli('import', 'img', path.join(work, 'layer.tar'));
    expect(imp.code, imp.stderr).toBe(0);
    const m = await pool.mount('img');
    try {
      expect(names(m)).toEqual(['caf\xe8', 'caf\xe9', 'dir\xff']);
      expect(read(m, 'caf\xe9')).toBe('1');
      expect(read(m, 'caf\xe8')).toBe('2');
      expect(fs.readlinkSync(at(m, 'dir\xff/to\xe9'), { encoding: 'buffer' }).toString('latin1')).toBe('../caf\xe9');
      expect(read(m, 'dir\xff/to\xe9')).toBe('1'); // the kernel follows the raw target
    } finally {
      await pool.umount(m);
    }
    const out = path.join(work, 'export.tar');
    const exp = await pool.cli('export', 'img', out);
    expect(exp.code, exp.stderr).toBe(0);
    const listed = spawnSync('tar', ['--quoting-style=literal', '-tf', out]).stdout.toString('latin1').split('\n').filter((l) => l !== '').sort();
    expect(listed).toEqual(['./', 'caf\xe8', 'caf\xe9', 'dir\xff/', 'dir\xff/to\xe9']);
  });
});
