/**
 * `thinfs diff` through the built CLI.
 *  - An image imported as an OCI layer on a parent (whiteout, opaque directory, a name
 *    that is not UTF-8): exactly the A/C/D lines docker diff prints, the directories above
 *    each change as C, the non-UTF-8 name as \xNN with its raw bytes in --json; a base
 *    image lists everything as added; a new container nothing.
 *  - A container changed through a real mount (new, appended, chmod'ed, deleted and
 *    renamed files, a removed tree, a moved directory): diffed while mounted (the daemon
 *    answers) it equals a walk that compares the mounted tree with the image's source
 *    tree — computed independently, file by file; after `commit` the new image's diff is
 *    the same and the container's is empty. A file a process appended to and still holds
 *    open is listed (the daemon flushes the view's writeback cache before it reads).
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiffResult } from '../../src/daemon/ops/index.js';
import { fuseSkipReason, TestPool } from '../fuse/helpers.js';
import { tmpDir } from '../helpers/tmp.js';
import { json, thinfsAt } from './helpers.js';

const XFF = Buffer.from([0x6e, 0xff]); // "n\xff": not UTF-8

/** Write `tree` (relative path -> content; a trailing / makes a directory) under `dir`. */
function writeTree(dir: string, tree: Record<string, string>): void {
  for (const [rel, content] of Object.entries(tree)) {
    const abs = path.join(dir, rel);
    if (rel.endsWith('/')) fs.mkdirSync(abs, { recursive: true });
    else {
      fs.mkdirSync(path.dirname(abs), { recursive: true });
      fs.writeFileSync(abs, content);
    }
  }
}

describe('diff of imported layers', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  const { cli, ok } = thinfsAt(() => root);

  beforeAll(async () => {
    t = tmpDir('thinfs-diff-');
    root = path.join(t.dir, 'root');
    const base = path.join(t.dir, 'base');
    writeTree(base, { 'etc/motd': 'motd\n', 'etc/hosts': 'hosts\n', 'usr/bin/tool': 'tool\n', 'var/lib/x/y': 'y\n', 'opq/old1': 'o\n', 'opq/keep': 'k\n' });
    const layer = path.join(t.dir, 'layer');
    writeTree(layer, { 'etc/motd': 'new motd\n', 'etc/.wh.hosts': '', 'usr/bin/new': 'n\n', 'opq/.wh..wh..opq': '', 'opq/fresh': 'f\n' });
    fs.writeFileSync(Buffer.concat([Buffer.from(`${layer}/`), XFF]), 'z');
    execFileSync('tar', ['-C', layer, '-cf', path.join(t.dir, 'layer.tar'), '.']);
    await ok('init', '--data-size', '256M');
    await ok('import', 'base', base);
    await ok('import', 'layer', path.join(t.dir, 'layer.tar'), '--parent', 'base');
  });
  afterAll(() => t?.cleanup());

  it('a layer: A/C/D lines as docker diff prints them, directories above each change as C', async () => {
    const r = await ok('diff', 'layer');
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    // An opaque directory hides everything below it: shown as one opaque C, or as a D for each hidden entry.
    const opaque = json<DiffResult>(await ok('diff', '--json', 'layer')).changes.find((c) => c.path === '/opq')?.opaque === true;
    expect(lines).toEqual([
      'C /etc',
      'D /etc/hosts',
      'C /etc/motd',
      'A /n\\xff',
      'C /opq',
      'A /opq/fresh',
      ...(opaque ? [] : ['D /opq/keep', 'D /opq/old1']),
      'C /usr',
      'C /usr/bin',
      'A /usr/bin/new',
    ]);
  });

  it('--json: the compared devices, each change with its kind; a name that is not UTF-8 also as its raw bytes', async () => {
    const d = json<DiffResult>(await ok('diff', 'layer', '--json'));
    expect(d).toMatchObject({ name: 'layer', kind: 'image', parent: 'base' });
    expect(d.changes.find((c) => c.path === '/etc/hosts')).toEqual({ kind: 'D', path: '/etc/hosts' });
    const odd = d.changes.find((c) => c.path === '/n\\xff')!;
    expect(odd).toEqual({ kind: 'A', path: '/n\\xff', pathBase64: Buffer.concat([Buffer.from('/'), XFF]).toString('base64') });
  });

  it('a base image lists all it holds as added; a new container nothing', async () => {
    const base = json<DiffResult>(await ok('diff', 'base', '--json'));
    expect(base.parent).toBeNull();
    expect(base.changes.map((c) => `${c.kind} ${c.path}`)).toEqual([
      'A /etc', 'A /etc/hosts', 'A /etc/motd', 'A /opq', 'A /opq/keep', 'A /opq/old1', 'A /usr', 'A /usr/bin', 'A /usr/bin/tool', 'A /var', 'A /var/lib', 'A /var/lib/x', 'A /var/lib/x/y',
    ]);
    await ok('create', 'fresh', 'layer');
    expect((await ok('diff', 'fresh')).stdout).toBe('');
  });

  it('an unknown name: one line, exit 1', async () => {
    const r = await cli('diff', 'nope');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([`thinfs: ENOENT: no image or container named 'nope' (see \`thinfs ls\`), diff 'nope'`]);
  });
});

// ------------------------------------------------------------------ through a real mount

const noFuse = fuseSkipReason();
if (noFuse !== undefined) console.warn(`skipping the diff-through-a-mount test: ${noFuse}`);

/** What a file looks like, for the walk: type, mode, owner, size, content or target, mtime. */
function fingerprint(abs: string): string {
  const st = fs.lstatSync(abs, { bigint: true });
  const kind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? `l:${fs.readlinkSync(abs)}` : st.isFile() ? `f:${createHash('sha256').update(fs.readFileSync(abs)).digest('hex')}` : 'o';
  return `${kind} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.isDirectory() ? '' : st.size} ${st.mtimeNs / 1_000_000n}`;
}

/** Every path under `dir` ('/x/y') with its fingerprint. */
function walk(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (rel: string) => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const p = `${rel}/${name}`;
      out.set(p, fingerprint(path.join(dir, p)));
      if (fs.lstatSync(path.join(dir, p)).isDirectory()) visit(p);
    }
  };
  visit('');
  return out;
}

/** docker diff computed the slow way: compare two trees path by path (plus the directories above each change). */
function walkDiff(before: Map<string, string>, after: Map<string, string>): string[] {
  const out = new Map<string, string>();
  for (const [p, f] of after) if (!before.has(p)) out.set(p, 'A');
  else if (before.get(p) !== f) out.set(p, 'C');
  for (const p of before.keys()) {
    // Only the top-most deleted path: below a deleted directory nothing more is listed.
    const parent = path.posix.dirname(p);
    if (!after.has(p) && (parent === '/' || after.has(parent))) out.set(p, 'D');
  }
  for (const p of [...out.keys()]) {
    for (let d = path.posix.dirname(p); d !== '/'; d = path.posix.dirname(d)) if (!out.has(d)) out.set(d, 'C');
  }
  return [...out].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, k]) => `${k} ${p}`);
}

describe.skipIf(noFuse !== undefined)('diff of a container changed through a real mount', () => {
  let p: TestPool;
  let src: string;
  beforeAll(async () => {
    p = await TestPool.create({}, 'thinfs-diff-mount-');
    src = path.join(p.dir, 'src');
    writeTree(src, {
      'etc/motd': 'motd\n',
      'etc/hosts': 'hosts\n',
      'etc/app/conf': 'a=1\n',
      'usr/bin/tool': 'tool\n',
      'usr/lib/big': 'x'.repeat(200_000),
      'var/log/old/1': '1\n',
      'var/log/old/2': '2\n',
      'home/u/notes': 'n\n',
      'empty/': '',
    });
    const r = await p.cli('import', 'img', src);
    expect(r.code).toBe(0);
    expect((await p.cli('create', 'c', 'img')).code).toBe(0);
  });
  afterAll(async () => {
    await p?.cleanup();
  });

  it('while mounted equals a tree walk against the image; after commit the image has that diff and the container none', async () => {
    const mnt = await p.mount('c');
    try {
      fs.writeFileSync(path.join(mnt, 'etc', 'new'), 'new\n');
      fs.appendFileSync(path.join(mnt, 'etc', 'motd'), 'more\n');
      fs.chmodSync(path.join(mnt, 'usr', 'bin', 'tool'), 0o755);
      fs.unlinkSync(path.join(mnt, 'etc', 'hosts'));
      fs.renameSync(path.join(mnt, 'home', 'u', 'notes'), path.join(mnt, 'home', 'u', 'notes.txt'));
      fs.rmSync(path.join(mnt, 'var', 'log', 'old'), { recursive: true });
      fs.renameSync(path.join(mnt, 'etc', 'app'), path.join(mnt, 'app'));
      fs.writeFileSync(path.join(mnt, 'usr', 'lib', 'big'), 'y', { flag: 'r+' });
      fs.mkdirSync(path.join(mnt, 'empty', 'sub'));
      fs.symlinkSync('/etc/motd', path.join(mnt, 'link'));

      const want = walkDiff(walk(src), walk(mnt));
      expect(want.length).toBeGreaterThan(10);
      const r = await p.cli('diff', 'c');
      expect(r).toMatchObject({ code: 0, stderr: '' });
      expect(r.stdout.split('\n').filter((l) => l !== '')).toEqual(want);
      expect(p.daemonPid()).toBeDefined(); // the daemon answered, with the view mounted

      expect((await p.cli('commit', 'c', 'snap')).code).toBe(0);
      expect((await p.cli('diff', 'snap')).stdout.split('\n').filter((l) => l !== '')).toEqual(want);
      expect((await p.cli('diff', 'c')).stdout).toBe('');
      fs.writeFileSync(path.join(mnt, 'after-commit'), 'x');
      expect((await p.cli('diff', 'c')).stdout).toBe('A /after-commit\n');
    } finally {
      await p.umount(mnt);
    }
  });

  it('sees what a process wrote to a file it still holds open (the kernel writeback cache is flushed first)', async () => {
    expect((await p.cli('create', 'c2', 'img')).code).toBe(0);
    const m2 = await p.mount('c2');
    // Appends to a file of the image and keeps it open: its pages may stay in the kernel until written back.
    const holder = spawn('bash', ['-c', 'exec 3>>"$1"; echo more >&3; echo ready; exec sleep 600', 'holder', path.join(m2, 'etc', 'motd')], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => holder.stdout!.once('data', () => resolve()));
      const r = await p.cli('diff', 'c2');
      expect(r).toMatchObject({ code: 0, stderr: '' });
      expect(r.stdout).toBe('C /etc\nC /etc/motd\n');
    } finally {
      const exited = new Promise((resolve) => holder.once('exit', resolve));
      holder.kill('SIGKILL');
      await exited;
      await p.umount(m2);
    }
  });
});
