/**
 * The C hot path on real mounts: READ of mapped blocks and WRITE into the container's own
 * blocks answered in libfuse's worker threads from the block map (fuse/blockmap.ts,
 * native-deps/fuse-native/fuse-lowlevel-blockmap.c). O_DIRECT reads bypass the page cache,
 * so every read reaches the daemon; `thinfs stats` shows how many the C side answered.
 *  - an image file read and own blocks overwritten in place: byte-exact, also after a remount;
 *  - a commit of the mounted container: later writes copy, the image keeps its bytes; it
 *    takes what was written without fsync (the kernel's cached pages are written back first);
 *  - truncate, unlink, rewrite and commits (blocks freed and reused) mixed with cold reads,
 *    against a plain directory doing the same.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuseSkipReason, sh, shOk, TestPool } from './helpers.js';

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/fuse/hotpath: skipped: ${skip}`);

interface Native {
  reads: number;
  writes: number;
  readErrors: number;
  writeErrors: number;
  opens: number;
}

describe.skipIf(skip !== undefined)('the C hot path', () => {
  let pool: TestPool;
  let src: string;

  async function native(name: string): Promise<Native> {
    const r = await pool.cli('stats', name, '--json');
    expect(r.code, r.stderr).toBe(0);
    const m = (JSON.parse(r.stdout) as { mounts: { name: string; counters: { native: Native } }[] }).mounts.find((x) => x.name === name)!;
    return m.counters.native;
  }

  /** cmp of a host file with a view file read with O_DIRECT (every byte from the daemon). */
  const cmpDirect = (plain: string, viewFile: string) => shOk(`cmp "${plain}" <(dd if="${viewFile}" iflag=direct bs=1M status=none)`);

  beforeAll(async () => {
    pool = await TestPool.create({});
    src = path.join(pool.dir, 'src');
    fs.mkdirSync(src);
    await shOk(`head -c 8388608 /dev/urandom > "${src}/big"`);
    for (const args of [['import', 'img', src], ['create', 'c1', 'img'], ['create', 'c2', 'img']]) {
      const r = await pool.cli(...args);
      expect(r.code, r.stderr).toBe(0);
    }
  }, 60_000);
  afterAll(async () => {
    await pool?.cleanup();
  });

  it('reads an image file and overwrites own blocks in place in C, byte-exact, also after a remount', async () => {
    let mnt = await pool.mount('c1');
    const n0 = await native('c1');
    await cmpDirect(`${src}/big`, `${mnt}/big`);
    const n1 = await native('c1');
    expect(n1.reads - n0.reads).toBeGreaterThanOrEqual(4); // 8 MiB in 1 MiB reads; the first of each 16 MiB goes to JS

    // A file of the container's own (written, then fsync'ed), overwritten at random 4 KiB
    // offsets through O_DIRECT (each write a WRITE request now), mirrored on the host.
    const plain = path.join(pool.dir, 'own.plain');
    await shOk(`head -c 4194304 /dev/urandom > "${plain}" && dd if="${plain}" of="${mnt}/own" bs=1M conv=fsync status=none`);
    const mtimeBefore = fs.statSync(`${mnt}/own`).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    await shOk(
      `for i in $(seq 1 64); do off=$(( (RANDOM * 7 + i) % 1024 )); head -c 4096 /dev/urandom > "${pool.dir}/chunk";` +
        ` dd if="${pool.dir}/chunk" of="${plain}" bs=4k seek=$off conv=notrunc status=none;` +
        ` dd if="${pool.dir}/chunk" of="${mnt}/own" bs=4k seek=$off conv=notrunc oflag=direct status=none; done; sync "${mnt}/own"`,
    );
    const n2 = await native('c1');
    expect(n2.writes - n1.writes).toBeGreaterThanOrEqual(32);
    expect(n2.writeErrors + n2.readErrors).toBe(0);
    await cmpDirect(plain, `${mnt}/own`);
    await cmpDirect(`${src}/big`, `${mnt}/big`);

    // The kernel keeps mtime of in-place writes (writeback cache) and hands it over with SETATTR.
    const mtimeAfter = fs.statSync(`${mnt}/own`).mtimeMs;
    expect(mtimeAfter).toBeGreaterThan(mtimeBefore);
    await pool.umount('c1');
    mnt = await pool.mount('c1');
    await cmpDirect(plain, `${mnt}/own`);
    expect(fs.statSync(`${mnt}/own`).mtimeMs).toBe(mtimeAfter);
    await pool.umount('c1');
    const check = await pool.cli('check');
    expect(check.code, check.stdout + check.stderr).toBe(0);
  });

  it('a commit of the mounted container: writes after it are copied, the image keeps its bytes', async () => {
    const mnt = await pool.mount('c2');
    const plain = path.join(pool.dir, 'c2.plain');
    await shOk(`head -c 2097152 /dev/urandom > "${plain}" && dd if="${plain}" of="${mnt}/f" bs=1M conv=fsync status=none`);
    await cmpDirect(plain, `${mnt}/f`); // the map now knows f's own blocks as writable in place
    // A writer keeps overwriting f in place while the commit runs.
    const writer = sh(`for i in $(seq 1 200); do dd if=/dev/zero of="${mnt}/f" bs=4k seek=$((i % 512)) count=1 conv=notrunc oflag=direct status=none; done`);
    const commit = await pool.cli('commit', 'c2', 'img2');
    expect(commit.code, commit.stderr).toBe(0);
    expect((await writer).code).toBe(0);
    // After the commit: zeros written over all of f in the container...
    await shOk(`dd if=/dev/zero of="${mnt}/f" bs=1M count=2 conv=notrunc oflag=direct status=none && sync "${mnt}/f"`);
    await shOk(`cmp <(head -c 2097152 /dev/zero) <(dd if="${mnt}/f" iflag=direct bs=1M status=none)`);
    // ...and the image holds what the container held when it was committed: the random
    // bytes except blocks the writer had zeroed before the commit (never a later zero, never garbage).
    const r = await pool.cli('create', 'c3', 'img2');
    expect(r.code, r.stderr).toBe(0);
    const m3 = await pool.mount('c3');
    const img = fs.readFileSync(`${m3}/f`);
    const orig = fs.readFileSync(plain);
    expect(img.length).toBe(orig.length);
    for (let b = 0; b < 512; b++) {
      const got = img.subarray(b * 4096, (b + 1) * 4096);
      if (!got.equals(orig.subarray(b * 4096, (b + 1) * 4096))) expect(got.every((x) => x === 0), `4 KiB block ${b} of the image`).toBe(true);
    }
    expect(img.equals(Buffer.alloc(orig.length))).toBe(false);
    await pool.umount('c3');
    await pool.umount('c2');
  });

  it('a file read once opens and reads again, warm, without a request reaching the daemon\'s JS', async () => {
    const mnt = await pool.mount('c1');
    const jsOps = async (): Promise<Record<string, number>> => {
      const r = await pool.cli('stats', 'c1', '--json');
      const m = (JSON.parse(r.stdout) as { mounts: { name: string; counters: { ops: Record<string, { count: number }> } }[] }).mounts.find((x) => x.name === 'c1')!;
      return Object.fromEntries(Object.entries(m.counters.ops).map(([k, v]) => [k, v.count]));
    };
    await shOk(`cat "${mnt}/big" > /dev/null`); // the first time through JS: the map learns the file
    const before = await jsOps();
    const n0 = await native('c1');
    const sum = await shOk(`for i in 1 2 3; do sha256sum < "${mnt}/big"; done | sort -u`);
    expect(sum).toBe(await shOk(`sha256sum < "${src}/big"`));
    const after = await jsOps();
    const n1 = await native('c1');
    expect(n1.opens - n0.opens).toBe(3);
    expect(after.open ?? 0).toBe(before.open ?? 0);
    expect(after.release ?? 0).toBe(before.release ?? 0);
    // A handle the C side opened still reads (by inode) what the map does not know, and fsyncs.
    await shOk(`python3 -c "import os; fd = os.open('${mnt}/big', os.O_RDONLY); os.fsync(fd); assert len(os.pread(fd, 10, 5)) == 10"`);
    await pool.umount('c1');
  });

  it('a directory listing is cached across opens and dropped when the directory changes', async () => {
    const r = await pool.cli('create', 'c6', 'img');
    expect(r.code, r.stderr).toBe(0);
    const mnt = await pool.mount('c6');
    const readdirs = async (): Promise<number> => {
      const s = await pool.cli('stats', 'c6', '--json');
      const ops = (JSON.parse(s.stdout) as { mounts: { name: string; counters: { ops: Record<string, { count: number }> } }[] }).mounts.find((x) => x.name === 'c6')!.counters.ops;
      return (ops.readdir?.count ?? 0) + (ops.readdirplus?.count ?? 0);
    };
    fs.mkdirSync(`${mnt}/d`);
    for (let i = 0; i < 20; i++) fs.writeFileSync(`${mnt}/d/f${i}`, `${i}`);
    expect(fs.readdirSync(`${mnt}/d`).length).toBe(20);
    const n0 = await readdirs();
    for (let i = 0; i < 3; i++) expect(fs.readdirSync(`${mnt}/d`).length).toBe(20);
    expect(await readdirs()).toBe(n0); // answered from the kernel's cache
    fs.unlinkSync(`${mnt}/d/f7`);
    fs.writeFileSync(`${mnt}/d/new`, 'x');
    fs.renameSync(`${mnt}/d/f8`, `${mnt}/d/g8`);
    const names = fs.readdirSync(`${mnt}/d`).sort();
    expect(names).toContain('new');
    expect(names).toContain('g8');
    expect(names).not.toContain('f7');
    expect(names).not.toContain('f8');
    expect(names.length).toBe(20);
    await pool.umount('c6');
  });

  it('a commit and an export of a mounted container take what was written without fsync (the kernel writes its cached pages back first)', async () => {
    const r = await pool.cli('create', 'c5', 'img');
    expect(r.code, r.stderr).toBe(0);
    const mnt = await pool.mount('c5');
    // Written, no fsync, the file still open in a process that neither closes nor forks
    // (any close of the file, even of a copy inherited by a child at exec, writes the pages
    // back): with the writeback cache the bytes are kernel pages the daemon has not seen.
    const py = `import os, sys, time\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\nos.write(fd, b'written before the commit\\n' * 40)\nprint('ready', flush=True)\ntime.sleep(60)\n`;
    const holder = spawn('python3', ['-c', py, `${mnt}/nosync`], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', () => reject(new Error('the holder shell ended early')));
      });
      const commit = await pool.cli('commit', 'c5', 'img5');
      expect(commit.code, commit.stderr).toBe(0);
    } finally {
      holder.kill('SIGKILL');
    }
    const tar = path.join(pool.dir, 'img5.tar');
    const exp = await pool.cli('export', 'img5', tar);
    expect(exp.code, exp.stderr).toBe(0);
    expect(await shOk(`tar -xOf "${tar}" nosync`)).toBe('written before the commit\n'.repeat(40));
    await pool.umount('c5');
  });

  it('truncate, unlink, rewrite and commits (blocks freed and reused) with cold reads: as a plain directory', async () => {
    const r = await pool.cli('create', 'c4', 'img');
    expect(r.code, r.stderr).toBe(0);
    const mnt = await pool.mount('c4');
    const host = path.join(pool.dir, 'model');
    fs.mkdirSync(host);
    // One seeded random script, run on both trees; after each step every file is compared
    // with O_DIRECT reads (the daemon answers them: C where the map knows the blocks).
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const K = 65536;
    // Each step: an optional chunk of random bytes made once, then the same command on both trees ($D).
    const steps: { chunk?: number; cmd: string }[] = [];
    for (let i = 0; i < 60; i++) {
      const f = `f${rnd(4)}`;
      const op = rnd(10);
      if (op < 5) {
        const off = rnd(24) * K + (rnd(2) === 0 ? 0 : rnd(K));
        const len = 1 + rnd(3 * K);
        steps.push({ chunk: len, cmd: `dd if="$T/chunk" of="$D/${f}" bs=${len} count=1 seek=${off} oflag=seek_bytes conv=notrunc status=none` });
      } else if (op < 7) steps.push({ cmd: `if [ -e "$D/${f}" ]; then truncate -s ${rnd(20) * (rnd(2) === 0 ? K : 1000)} "$D/${f}"; fi` });
      else if (op < 8) steps.push({ cmd: `rm -f "$D/${f}"` });
      else steps.push({ cmd: `sync "$D/anchor"` }); // a commit: what was freed may be reused
    }
    const script = steps
      .map((s) => `${s.chunk === undefined ? '' : `head -c ${s.chunk} /dev/urandom > "$T/chunk"; `}D="${host}"; ${s.cmd}; D="${mnt}"; ${s.cmd}; check`)
      .join('\n');
    const out = await sh(
      `T="${pool.dir}"; touch "${host}/anchor" "${mnt}/anchor"\n` +
        `check() { for f in f0 f1 f2 f3; do if [ -e "${host}/$f" ]; then cmp "${host}/$f" <(dd if="${mnt}/$f" iflag=direct bs=1M status=none) || exit 9; else [ ! -e "${mnt}/$f" ] || exit 8; fi; done; }\n` +
        script,
      { timeoutMs: 180_000 },
    );
    expect(out.code, out.stdout + out.stderr).toBe(0);
    const n = await native('c4');
    expect(n.reads).toBeGreaterThan(0);
    expect(n.readErrors + n.writeErrors).toBe(0);
    await pool.umount('c4');
    const check = await pool.cli('check');
    expect(check.code, check.stdout + check.stderr).toBe(0);
  }, 240_000);
});
