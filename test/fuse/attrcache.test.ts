/**
 * GETATTR answered in C from the attributes the daemon last replied (the attribute cache,
 * native-deps/fuse-native/fuse-lowlevel-attrcache.c), on real mounts. Every READ that
 * reaches the daemon makes the kernel forget the file's atime, so the next stat is a
 * GETATTR; statx(AT_STATX_FORCE_SYNC) always is one.
 *  - a tree read again: the stats after the reads are answered in C, none reaches JS;
 *  - never stale: a seeded script of attribute-changing operations (write, truncate,
 *    chmod, hard links, unlink, rename, xattrs, utimes, mkdir, rmdir) against a plain
 *    directory, every name and the directory itself stat-ed after each step.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuseSkipReason, sh, shOk, TestPool } from './helpers.js';

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/fuse/attrcache: skipped: ${skip}`);

interface Counters {
  ops: Record<string, { count: number }>;
  native: { getattrs: number };
}

describe.skipIf(skip !== undefined)('the attribute cache (GETATTR in C)', () => {
  let pool: TestPool;

  async function counters(name: string): Promise<{ jsGetattr: number; cGetattr: number }> {
    const r = await pool.cli('stats', name, '--json');
    expect(r.code, r.stderr).toBe(0);
    const c = (JSON.parse(r.stdout) as { mounts: { name: string; counters: Counters }[] }).mounts.find((x) => x.name === name)!.counters;
    return { jsGetattr: c.ops.getattr?.count ?? 0, cGetattr: c.native.getattrs };
  }

  beforeAll(async () => {
    pool = await TestPool.create({});
    const src = path.join(pool.dir, 'src');
    fs.mkdirSync(path.join(src, 'd'), { recursive: true });
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, 'd', `f${i}`), Buffer.alloc(100 + i * 3000, i));
    for (const args of [['import', 'img', src], ['create', 'c1', 'img'], ['create', 'c2', 'img']]) {
      const r = await pool.cli(...args);
      expect(r.code, r.stderr).toBe(0);
    }
  }, 60_000);
  afterAll(async () => {
    await pool?.cleanup();
  });

  it('stats of files just read (the kernel forgot their atime) are answered in C, none in JS', async () => {
    const mnt = await pool.mount('c1');
    // The listing gives the daemon's attributes of every name (READDIRPLUS or LOOKUP): the cache fills.
    await shOk(`ls -l "${mnt}/d" > /dev/null`);
    // The first read of each (a fresh mount: nothing cached) reaches the daemon, so each next stat is a GETATTR.
    await shOk(`cat "${mnt}"/d/* > /dev/null`);
    const before = await counters('c1');
    // (%X: coreutils asks statx only for the fields it prints; atime is the one the kernel forgot.)
    const listed = await shOk(`stat -c '%n %s %a %h %X' "${mnt}"/d/* | sed 's|.*/||; s| [0-9]*$||'`);
    const after = await counters('c1');
    expect(after.jsGetattr - before.jsGetattr).toBe(0);
    expect(after.cGetattr - before.cGetattr).toBeGreaterThanOrEqual(40);
    const want = Array.from({ length: 40 }, (_, i) => `f${i} ${100 + i * 3000} 644 1`).sort();
    expect(listed.trim().split('\n').sort()).toEqual(want);
    await pool.umount('c1');
  });

  it('attributes after writes, truncates, chmod, links, unlinks, renames, xattrs, utimes, mkdir and rmdir: as a plain directory', async () => {
    const view = await pool.mount('c2');
    // Both trees in a directory of their own (the view's root holds the image's files too).
    const mnt = path.join(view, 'w');
    const host = path.join(pool.dir, 'model', 'w');
    fs.mkdirSync(host, { recursive: true });
    fs.mkdirSync(mnt);
    let seed = 777;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const names = ['p', 'q', 'r', 's', 't'];
    // Subdirectories come and go: the directory's link count changes (and its attributes
    // are handed to the cache after each change, lowlevel.ts refresh).
    const dirs = ['u', 'v'];
    const steps: string[] = ['for n in p q r; do head -c 5000 /dev/zero > "$D/$n"; done'];
    for (let i = 0; i < 80; i++) {
      const f = names[rnd(names.length)]!;
      const g = names[rnd(names.length)]!;
      const op = rnd(10);
      const cmd = [
        `if [ -e "$D/${f}" ]; then dd if=/dev/zero of="$D/${f}" bs=1 count=${1 + rnd(9000)} seek=${rnd(200000)} conv=notrunc status=none; fi`,
        `if [ -e "$D/${f}" ]; then truncate -s ${rnd(150000)} "$D/${f}"; fi`,
        `if [ -e "$D/${f}" ]; then chmod ${['600', '644', '755', '4711', '640'][rnd(5)]} "$D/${f}"; fi`,
        `if [ -e "$D/${f}" ] && [ ! -e "$D/${g}" ]; then ln "$D/${f}" "$D/${g}"; fi`,
        `rm -f "$D/${f}"`,
        `if [ -e "$D/${f}" ] && [ "${f}" != "${g}" ]; then mv -f "$D/${f}" "$D/${g}"; fi`,
        `if [ -e "$D/${f}" ]; then python3 -c "import os; os.setxattr('$D/${f}', 'user.k', b'${i}')"; fi`,
        `if [ -e "$D/${f}" ]; then touch -m -d @${1_600_000_000 + i * 1000} "$D/${f}"; fi`,
        `if [ ! -e "$D/${f}" ]; then head -c ${rnd(70000)} /dev/zero > "$D/${f}"; fi`,
        `if [ -d "$D/${dirs[rnd(2)]}" ]; then rmdir "$D/${dirs[rnd(2)]}" 2>/dev/null || true; else mkdir -p "$D/${dirs[rnd(2)]}"; fi`,
      ][op]!;
      steps.push(cmd);
    }
    // After each step: size, mode, link count and type of every name by statx with
    // AT_STATX_FORCE_SYNC (each a GETATTR: the cache answers it), and by a plain stat.
    const statx = path.join(pool.dir, 'statx.py');
    fs.writeFileSync(
      statx,
      [
        'import ctypes, os, struct, sys',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'for p in sys.argv[1:]:',
        '    buf = ctypes.create_string_buffer(256)',
        '    if libc.statx(-100, p.encode(), 0x2000, 0x7ff, buf) != 0:',
        '        print(os.path.basename(p), "-"); continue',
        '    nlink, mode, size = struct.unpack_from("<I", buf, 16)[0], struct.unpack_from("<H", buf, 28)[0], struct.unpack_from("<Q", buf, 40)[0]',
        '    print(os.path.basename(p), size if mode & 0o170000 == 0o100000 else "-", oct(mode), nlink)', // a directory's size is its file system's
      ].join('\n'),
    );
    const look = (d: string) =>
      `python3 "${statx}" ${[...names, ...dirs].map((n) => `"${d}/${n}"`).join(' ')} "${d}" | sed 's|^${path.basename(d)} |. |'; for n in ${names.join(' ')}; do stat -c "$n %s %a %h %F" "${d}/$n" 2>/dev/null || echo "$n -"; done`;
    const script = steps.map((s, i) => `D="${host}"; ${s}; D="${mnt}"; ${s}; check ${i}`).join('\n');
    const out = await sh(
      `check() { a=$(${look(host)}); b=$(${look(mnt)}); [ "$a" = "$b" ] || { echo "step $1:"; echo "$a"; echo "--- view:"; echo "$b"; exit 9; }; }\n` + script,
      { timeoutMs: 180_000 },
    );
    expect(out.code, out.stdout + out.stderr).toBe(0);
    const c = await counters('c2');
    expect(c.cGetattr).toBeGreaterThan(0);
    await pool.umount('c2');
    const check = await pool.cli('check');
    expect(check.code, check.stdout + check.stderr).toBe(0);
  }, 240_000);
});
