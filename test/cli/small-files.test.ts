/**
 * Small files through the built CLI (issue 9): the byte counts users see are exact —
 * `ls`, `inspect`, `info` and `stats` count the bytes of small blocks held inline in the
 * metadata, and statfs (`df`) of a mounted view grows by them — and `init --inline-max`
 * picks the threshold (0: block-only), refusing what the pool cannot take in one line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { DeviceSummary, InfoResult, InspectResult, StatsResult } from '../../src/daemon/ops/index.js';
import { fuseSkipReason, sleep, TestPool } from '../fuse/helpers.js';
import { tmpDir } from '../helpers/tmp.js';
import { json, thinfs } from './helpers.js';

const KiB = 1024;
const BLOCK = 64 * KiB;

const noFuse = fuseSkipReason();
if (noFuse !== undefined) console.warn(`skipping the mounted small-file tests: ${noFuse}`);

/** A source tree of small files and one file of a full block plus a small tail; returns the bytes of each kind. */
function smallTree(dir: string): { total: number; inline: number; blocks: number } {
  fs.mkdirSync(path.join(dir, 'etc'), { recursive: true });
  let inline = 0;
  for (let i = 0; i < 20; i++) {
    fs.writeFileSync(path.join(dir, 'etc', `conf-${i}`), Buffer.alloc(100 + 37 * i, i + 1));
    inline += 100 + 37 * i;
  }
  fs.writeFileSync(path.join(dir, 'tail'), Buffer.alloc(BLOCK + 4464, 0xaa));
  inline += 4464;
  fs.symlinkSync('etc/conf-0', path.join(dir, 'link'));
  return { total: inline + BLOCK, inline, blocks: 1 };
}

describe('exact byte counts of small files in ls, inspect and info', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  const cli = (...args: string[]) => thinfs(['--root', root, ...args]);
  beforeEach(() => {
    t = tmpDir('thinfs-small-');
    root = path.join(t.dir, 'root');
  });
  afterEach(() => t.cleanup());

  it('ls/inspect/info --json show the bytes written, inline bytes apart; a container sees them and owns none', async () => {
    expect((await cli('init', '--data-size', '256M')).code).toBe(0);
    const src = path.join(t.dir, 'src');
    const want = smallTree(src);
    expect((await cli('import', 'img', src)).code).toBe(0);
    expect((await cli('create', 'c', 'img')).code).toBe(0);

    const ls = json<DeviceSummary[]>(await cli('ls', '--json'));
    const img = ls.find((d) => d.name === 'img')!;
    expect(img).toMatchObject({ mappedBytes: want.total, exclusiveBytes: want.total, inlineBytes: want.inline, inlineExclusiveBytes: want.inline });
    expect(ls.find((d) => d.name === 'c')).toMatchObject({ mappedBytes: want.total, exclusiveBytes: 0, inlineBytes: want.inline, inlineExclusiveBytes: 0 });

    const ins = json<InspectResult>(await cli('inspect', '--json', 'img'));
    expect(ins).toMatchObject({ mappedBytes: want.total, exclusiveBytes: want.total, inlineBytes: want.inline });
    const text = (await cli('inspect', 'img')).stdout;
    expect(text).toMatch(/\n Used: \S+ \S+ \(\S+ \S+ inline\)\n/);

    const info = json<InfoResult>(await cli('info', '--json'));
    expect(info).toMatchObject({ dataUsed: want.blocks * BLOCK, inlineUsed: want.inline, inlineMax: BLOCK / 2 });
    expect(info.metadataUsed).toBeGreaterThan(want.inline);
    const infoText = (await cli('info')).stdout;
    expect(infoText).toContain(' Inline Data Space Used: ');
    expect(infoText).toContain(' Inline Block Maximum: 32 KB\n');
  });

  it('init --inline-max 0 makes a block-only pool: a 100-byte file maps a whole block', async () => {
    const r = await cli('init', '--data-size', '256M', '--inline-max', '0');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('no inline blocks');
    const src = path.join(t.dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'f'), Buffer.alloc(100, 1));
    expect((await cli('import', 'img', src)).code).toBe(0);
    expect(json<InfoResult>(await cli('info', '--json'))).toMatchObject({ dataUsed: BLOCK, inlineUsed: 0, inlineMax: 0 });
    expect(json<DeviceSummary[]>(await cli('ls', '--json'))[0]).toMatchObject({ name: 'img', mappedBytes: BLOCK, inlineBytes: 0 });
    expect((await cli('info')).stdout).toContain(' Inline Block Maximum: off (every block in the data file)\n');
  });

  it('init --inline-max 8K keeps blocks up to 8 KiB inline, larger ones in the data file', async () => {
    expect((await cli('init', '--data-size', '256M', '--inline-max', '8K', '--json')).code).toBe(0);
    const src = path.join(t.dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'small'), Buffer.alloc(8 * KiB, 1));
    fs.writeFileSync(path.join(src, 'larger'), Buffer.alloc(8 * KiB + 1, 2));
    expect((await cli('import', 'img', src)).code).toBe(0);
    expect(json<InfoResult>(await cli('info', '--json'))).toMatchObject({ dataUsed: BLOCK, inlineUsed: 8 * KiB, inlineMax: 8 * KiB });
  });

  it('init --inline-max equal to the block size is taken', async () => {
    expect((await cli('init', '--data-size', '256M', '--block-size', '4K', '--inline-max', '4K')).code).toBe(0);
    expect(json<InfoResult>(await cli('info', '--json')).inlineMax).toBe(4 * KiB);
  });

  it.each([
    [['--inline-max', '70k'], 1, /^thinfs: EINVAL: the inline threshold must be from 0 \(off\) to the block size \(65536 bytes\), got 71680/],
    [['--block-size', '4K', '--inline-max', '8K'], 1, /^thinfs: EINVAL: the inline threshold must be from 0 \(off\) to the block size \(4096 bytes\), got 8192/],
    [['--inline-max', 'lots'], 2, /^thinfs: option '--inline-max <size>' argument 'lots' is invalid\. expected a size/],
    [['--inline-max', '-1'], 2, /^thinfs: option '--inline-max <size>' argument '-1' is invalid/],
  ])('init %j: one line, exit %i, nothing created', async (args, code, message) => {
    const r = await cli('init', ...args);
    expect(r.code).toBe(code);
    expect(r.errLines).toHaveLength(1);
    expect(r.errLines[0]).toMatch(message);
    expect(r.stdout).toBe('');
    expect(fs.existsSync(root)).toBe(false);
  });
});

describe.skipIf(noFuse !== undefined)('a mounted view counts small files at their size', () => {
  let p: TestPool;
  beforeAll(async () => {
    p = await TestPool.create({}, 'thinfs-small-mnt-');
    const src = path.join(p.dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'hello'), 'hi\n');
    expect((await p.cli('import', 'img', src)).code).toBe(0);
    expect((await p.cli('create', 'c', 'img')).code).toBe(0);
  });
  afterAll(async () => {
    await p?.cleanup();
  });

  it('statfs (df) grows by the bytes of small files written through the mount; ls and stats show them exactly', async () => {
    const mnt = await p.mount('c');
    const usedBytes = () => {
      const s = fs.statfsSync(mnt);
      return (s.blocks - s.bfree) * s.bsize;
    };
    const before = usedBytes();
    let written = 0;
    fs.mkdirSync(path.join(mnt, 'd'));
    for (let i = 0; i < 200; i++) {
      fs.writeFileSync(path.join(mnt, 'd', `f-${i}`), Buffer.alloc(1000 + i, i & 0xff)); // close writes the pages back
      written += 1000 + i;
    }
    const grown = usedBytes() - before;
    const unit = fs.statfsSync(mnt).bsize;
    expect(unit).toBe(4096);
    // Both counts round up to whole units (the image's 3-byte file sits in `before`).
    expect(Math.abs(grown - written)).toBeLessThan(unit);

    const c = json<DeviceSummary[]>(await p.cli('ls', '--json')).find((d) => d.name === 'c')!;
    expect(c).toMatchObject({ exclusiveBytes: written, inlineExclusiveBytes: written });
    const s = json<StatsResult>(await p.cli('stats', '--json', 'c'));
    expect(s.mounts[0]!.device).toMatchObject({ exclusiveBytes: written, inlineBytes: written + 3 });

    // Unlinked inodes go when the kernel forgets them (asynchronous): wait for that.
    for (let i = 0; i < 200; i++) fs.unlinkSync(path.join(mnt, 'd', `f-${i}`));
    for (let i = 0; i < 100 && usedBytes() !== before; i++) await sleep(50);
    expect(usedBytes()).toBe(before);
    await p.umount('c');
  });
});
