/**
 * The native side on a real kernel: fallocate punch hole through the addon, and a
 * real FUSE mount through the patched fuse-native showing the caller's uid/gid/pid.
 *
 * Everything that touches the mount runs in a child process started with async
 * spawn: the FUSE handlers run on this process's main thread, so a synchronous
 * call into the mount from here (execSync, spawnSync, fs.*Sync) would deadlock.
 *
 * Run as root (as CI does). Udev makes /dev/fuse 0666; a bare container leaves it
 * 0600, so as root the setup chmods it 0666 (what a non-root mount needs anyway).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callerContext, loadFuse, utimensTimes, type CallerContext, type FuseHandle, type UtimeSpec } from '../src/fuse/native.js';
import { punchHole } from '../src/pool/punch.js';

const isRoot = process.getuid?.() === 0;
const hasFuse = fs.existsSync('/dev/fuse');
const NOBODY = 65534;

if (!hasFuse) console.warn('native.test: /dev/fuse is missing here; skipping the real-mount tests');
if (hasFuse && !isRoot) console.warn('native.test: not root; skipping the allow_other test as uid 65534');

interface RunResult {
  pid: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command in a child process without blocking this (FUSE-serving) thread. */
function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ pid: child.pid ?? -1, code, stdout, stderr });
    });
  });
}

describe('punchHole', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-punch-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('frees the blocks of the range and keeps the size', () => {
    const file = path.join(dir, 'data');
    const MiB = 1024 * 1024;
    const fd = fs.openSync(file, 'w+');
    try {
      fs.writeSync(fd, Buffer.alloc(4 * MiB, 0xab), 0, 4 * MiB, 0);
      fs.fsyncSync(fd);
      const before = fs.fstatSync(fd);
      punchHole(fd, MiB, 2 * MiB);
      const after = fs.fstatSync(fd);
      expect(after.size).toBe(4 * MiB);
      // st_blocks counts 512-byte units: 2 MiB punched = 4096 units.
      expect(before.blocks - after.blocks).toBeGreaterThanOrEqual((2 * MiB) / 512);
      const hole = Buffer.alloc(2 * MiB, 1);
      fs.readSync(fd, hole, 0, hole.length, MiB);
      expect(hole.every((b) => b === 0)).toBe(true);
      const kept = Buffer.alloc(MiB);
      fs.readSync(fd, kept, 0, kept.length, 3 * MiB);
      expect(kept.every((b) => b === 0xab)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('throws an errno-carrying error', () => {
    const file = path.join(dir, 'ro');
    fs.writeFileSync(file, 'x');
    const fd = fs.openSync(file, 'r');
    try {
      expect(() => punchHole(fd, 0, 4096)).toThrow(expect.objectContaining({ code: 'EBADF', errno: 9 }));
      expect(() => punchHole(-1, 0, 4096)).toThrow(/EBADF: bad file descriptor, fallocate/);
    } finally {
      fs.closeSync(fd);
    }
  });
});

interface Inode {
  mode: number;
  uid: number;
  gid: number;
  ino: number;
  data: Buffer;
  mtime: Date;
}

describe.skipIf(!hasFuse)('fuse-native (patched) on a real mount', () => {
  let tmp: string;
  let mnt: string;
  let fuse: FuseHandle | undefined;
  let nextIno = 1000;
  let maxWriteBytes = 0;
  const nodes = new Map<string, Inode>();
  const created = new Map<string, CallerContext>();
  const times = new Map<string, { atime: UtimeSpec; mtime: UtimeSpec; mtimeMs: number }>();

  beforeAll(async () => {
    if (isRoot && (fs.statSync('/dev/fuse').mode & 0o777) !== 0o666) fs.chmodSync('/dev/fuse', 0o666);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-native-'));
    fs.chmodSync(tmp, 0o755); // uid 65534 must reach the mount point
    mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(mnt);

    const Fuse = loadFuse();
    const errno = (name: string): number => Fuse[name] as number;
    const now = new Date();
    nodes.set('/', { mode: 0o40777, uid: 0, gid: 0, ino: 1, data: Buffer.alloc(0), mtime: now });
    const stat = (n: Inode) => ({
      mode: n.mode,
      uid: n.uid,
      gid: n.gid,
      ino: n.ino,
      size: n.data.length,
      nlink: n.mode & 0o40000 ? 2 : 1,
      blksize: 4096,
      blocks: Math.ceil(n.data.length / 512),
      atime: n.mtime,
      mtime: n.mtime,
      ctime: n.mtime,
    });
    const make = (p: string, mode: number, ctx: CallerContext): Inode => {
      const n = { mode, uid: ctx.uid, gid: ctx.gid, ino: nextIno++, data: Buffer.alloc(0), mtime: new Date() };
      nodes.set(p, n);
      return n;
    };

    const ops = {
      getattr(p: string, cb: (err: number, st?: object) => void) {
        const n = nodes.get(p);
        if (n === undefined) return cb(errno('ENOENT'));
        return cb(0, stat(n));
      },
      readdir(p: string, cb: (err: number, names?: string[]) => void) {
        const prefix = p === '/' ? '/' : `${p}/`;
        const names = [...nodes.keys()].filter((k) => k !== p && k.startsWith(prefix) && !k.slice(prefix.length).includes('/'));
        cb(0, names.map((k) => k.slice(prefix.length)));
      },
      create(p: string, mode: number, cb: (err: number, fd?: number) => void) {
        const ctx = callerContext();
        created.set(p, ctx);
        make(p, mode, ctx);
        cb(0, 42);
      },
      mkdir(p: string, mode: number, cb: (err: number) => void) {
        const ctx = callerContext();
        created.set(p, ctx);
        make(p, mode | 0o40000, ctx);
        cb(0);
      },
      open(_p: string, _flags: number, cb: (err: number, fd?: number) => void) {
        cb(0, 42);
      },
      release(_p: string, _fd: number, cb: (err: number) => void) {
        cb(0);
      },
      flush(_p: string, _fd: number, cb: (err: number) => void) {
        cb(0);
      },
      truncate(p: string, size: number, cb: (err: number) => void) {
        const n = nodes.get(p);
        if (n === undefined) return cb(errno('ENOENT'));
        n.data = Buffer.concat([n.data, Buffer.alloc(Math.max(0, size - n.data.length))]).subarray(0, size);
        return cb(0);
      },
      write(p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) {
        maxWriteBytes = Math.max(maxWriteBytes, len);
        const n = nodes.get(p);
        if (n === undefined) return cb(errno('ENOENT'));
        if (n.data.length < pos + len) n.data = Buffer.concat([n.data, Buffer.alloc(pos + len - n.data.length)]);
        buf.copy(n.data, pos, 0, len);
        return cb(len);
      },
      read(p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) {
        const n = nodes.get(p);
        if (n === undefined) return cb(errno('ENOENT'));
        return cb(n.data.copy(buf, 0, pos, Math.min(n.data.length, pos + len)));
      },
      utimens(p: string, _atimeMs: number, mtimeMs: number, cb: (err: number) => void) {
        const exact = utimensTimes();
        times.set(p, { ...exact, mtimeMs });
        const n = nodes.get(p);
        if (n !== undefined && typeof exact.mtime === 'object') n.mtime = new Date(exact.mtime.sec * 1000);
        cb(0);
      },
    };

    // The options a thinfs mount uses: allow_other + default_permissions when root
    // (kernel permission checks for every uid), libfuse2 options via extraOptions.
    fuse = new Fuse(mnt, ops, {
      allowOther: isRoot,
      defaultPermissions: true,
      fsname: 'thinfs-test',
      subtype: 'thinfs',
      extraOptions: ['use_ino', 'big_writes', 'max_write=131072', 'hard_remove'],
    });
    const handle = fuse;
    await new Promise<void>((resolve, reject) => handle.mount((err) => (err ? reject(err) : resolve())));
  });

  afterAll(async () => {
    const handle = fuse;
    fuse = undefined;
    if (handle !== undefined) {
      const err = await new Promise<Error | null>((resolve) => handle.unmount(resolve));
      if (err) await run('fusermount', ['-uz', mnt]).catch(() => undefined);
    }
    if (tmp !== undefined) {
      const mounts = await fs.promises.readFile('/proc/self/mounts', 'utf8');
      if (!mounts.includes(` ${mnt} `)) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('is mounted with the libfuse2 options', async () => {
    const mounts = await fs.promises.readFile('/proc/self/mounts', 'utf8');
    const line = mounts.split('\n').find((l) => l.split(' ')[1] === mnt);
    expect(line).toMatch(/^thinfs-test \S+ fuse\.thinfs /);
    expect(line).toMatch(/default_permissions/);
    if (isRoot) expect(line).toMatch(/allow_other/);
  });

  it('sees the uid, gid and pid of a root caller', async () => {
    const r = await run('touch', [path.join(mnt, 'by-root')]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(created.get('/by-root')).toMatchObject({ uid: 0, gid: 0, pid: r.pid });
  });

  it.skipIf(!isRoot)('sees uid 65534 of an unprivileged caller (allow_other)', async () => {
    const asNobody = ['--reuid=65534', '--regid=65534', '--clear-groups'];
    const file = await run('setpriv', [...asNobody, 'touch', path.join(mnt, 'by-nobody')]);
    expect(file).toMatchObject({ code: 0, stderr: '' });
    expect(created.get('/by-nobody')).toEqual({ uid: NOBODY, gid: NOBODY, pid: file.pid, umask: expect.any(Number) });

    const dir = await run('setpriv', [...asNobody, 'mkdir', path.join(mnt, 'dir-by-nobody')]);
    expect(dir).toMatchObject({ code: 0, stderr: '' });
    expect(created.get('/dir-by-nobody')).toMatchObject({ uid: NOBODY, gid: NOBODY, pid: dir.pid });

    const st = await run('stat', ['-c', '%u:%g', path.join(mnt, 'by-nobody')]);
    expect(st.stdout.trim()).toBe(`${NOBODY}:${NOBODY}`);
  });

  it('sees the caller umask on create', async () => {
    const file = path.join(mnt, 'masked');
    const r = await run('sh', ['-c', 'umask 027 && exec touch "$0"', file]);
    expect(r.code).toBe(0);
    expect(created.get('/masked')).toMatchObject({ pid: r.pid, umask: 0o027 });
    expect(nodes.get('/masked')!.mode & 0o777).toBe(0o640);
  });

  it('keeps inode numbers (use_ino) and gets big writes (big_writes)', async () => {
    const file = path.join(mnt, 'big');
    const dd = await run('dd', ['if=/dev/zero', `of=${file}`, 'bs=131072', 'count=4']);
    expect(dd.code).toBe(0);
    expect(nodes.get('/big')!.data.length).toBe(4 * 131072);
    expect(maxWriteBytes).toBeGreaterThan(4096);
    const st = await run('stat', ['-c', '%i', file]);
    expect(Number(st.stdout.trim())).toBe(nodes.get('/big')!.ino);
  });

  it('passes exact utimens times, UTIME_OMIT and UTIME_NOW', async () => {
    const file = path.join(mnt, 'by-root');
    expect((await run('touch', ['-m', '-d', '@1000000000.123456789', file])).code).toBe(0);
    expect(times.get('/by-root')).toEqual({
      atime: 'omit',
      mtime: { sec: 1_000_000_000, nsec: 123_456_789 },
      mtimeMs: 1_000_000_000_123,
    });
    expect((await run('touch', ['-a', file])).code).toBe(0);
    expect(times.get('/by-root')).toMatchObject({ atime: 'now', mtime: 'omit' });
  });

  it('refuses callerContext() outside a handler', () => {
    expect(() => callerContext()).toThrow(/outside the synchronous part/);
  });
});
