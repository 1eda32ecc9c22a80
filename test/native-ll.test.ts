/**
 * fuse-native's libfuse3 low-level mode on a real kernel, through the typed wrapper
 * (src/fuse/lowlevel.ts): a tiny in-memory filesystem (test/helpers/ll-memfs.ts) served
 * by a CHILD process, so this process may use synchronous fs calls on the mountpoint.
 *
 * What it shows: one kernel inode per inode (hard links share st_ino and the page cache,
 * with keep_cache and the writeback cache on), names as raw bytes both ways, lookup
 * counts and FORGET, 1 MiB write requests, kernel caching of names and attributes (a
 * second stat costs no request) and explicit invalidation from the notifier thread, an
 * open file working after its last name is gone, the real open flags of create, an
 * external umount / fusermount3 -u reported at once, and both mount paths: root
 * (mount(2), allow_other + default_permissions) and a user (fusermount3).
 *
 * Run as root (as CI does); /dev/fuse is made 0666 for the non-root mount, as udev does.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkoutUnreadableBy } from './helpers/unprivileged.js';
import { LowLevelSession, type LowLevelHandlers, type LowLevelOptions } from '../src/fuse/lowlevel.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VITE_NODE = path.join(ROOT, 'node_modules', 'vite-node', 'vite-node.mjs');
const MEMFS = path.join(ROOT, 'test', 'helpers', 'll-memfs.ts');
const isRoot = process.getuid?.() === 0;
const hasFuse = fs.existsSync('/dev/fuse');
const NOBODY = 65534;
const nobodyWhy = checkoutUnreadableBy(NOBODY);
if (nobodyWhy !== undefined) console.warn(`native-ll.test: skipping the non-root mount test: ${nobodyWhy}`);
const MiB = 1024 * 1024;
const FUSE_CAP_WRITEBACK_CACHE = 1 << 16;
const FUSE_CAP_READDIRPLUS = 1 << 13;

if (!hasFuse) console.warn('native-ll.test: /dev/fuse is missing here; skipping the real-mount tests');
if (hasFuse && !isRoot) console.warn('native-ll.test: not root; skipping the allow_other, drop_caches and non-root-mount tests');

interface Stats {
  counts: Record<string, number>;
  writeSizes: number[];
  readSizes: number[];
  forgets: [number, number][];
  createFlags: number[];
  openFlags: number[];
  session: { requests: number; batches: number; maxBatch: number; outstanding: number; nocapHits: number };
}

interface NodeInfo {
  ino: number;
  nlink: number;
  lookups: number;
  opens: number;
  uid: number;
  gid: number;
  mode: number;
}

/** The memfs child serving one mount. */
class Memfs {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** Date.now() in the child when its session ended. */
  readonly unmounted: Promise<number>;
  stderr = '';

  private constructor(
    readonly mountpoint: string,
    private readonly child: ChildProcess,
    readonly conn: { want: number; maxWrite: number },
    unmounted: Promise<number>,
  ) {
    this.unmounted = unmounted;
  }

  static start(mountpoint: string, opts: { mountOptions: string[]; writebackCache?: boolean; asUid?: number }): Promise<Memfs> {
    const cfg = JSON.stringify({ mountpoint, mountOptions: opts.mountOptions, writebackCache: opts.writebackCache ?? true });
    const node = [process.execPath, VITE_NODE, MEMFS];
    const [cmd, ...args] =
      opts.asUid === undefined ? node : ['setpriv', `--reuid=${opts.asUid}`, `--regid=${opts.asUid}`, '--clear-groups', ...node];
    const child = spawn(cmd!, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], env: { ...process.env, LL_MEMFS: cfg } });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve, reject) => {
      let resolveUnmounted: (at: number) => void;
      const unmounted = new Promise<number>((r) => (resolveUnmounted = r));
      let memfs: Memfs | undefined;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the memfs child did not mount within 30 s: ${stderr}`));
      }, 30_000);
      child.on('message', (m: { ev?: string; conn?: Memfs['conn']; at?: number; error?: string; id?: number; result?: unknown }) => {
        if (m.ev === 'ready') {
          clearTimeout(timer);
          memfs = new Memfs(mountpoint, child, m.conn!, unmounted);
          resolve(memfs);
        } else if (m.ev === 'failed') {
          clearTimeout(timer);
          reject(new Error(`${m.error} ${stderr}`));
        } else if (m.ev === 'unmounted') {
          resolveUnmounted(m.at!);
        } else if (m.id !== undefined && memfs !== undefined) {
          const p = memfs.pending.get(m.id);
          memfs.pending.delete(m.id);
          if (m.error !== undefined) p?.reject(new Error(m.error));
          else p?.resolve(m.result);
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        if (memfs === undefined) reject(new Error(`the memfs child exited (${code}) before mounting: ${stderr}`));
        resolveUnmounted(-1);
      });
    });
  }

  call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, cmd, ...args });
    });
  }

  stats = (): Promise<Stats> => this.call<Stats>('stats');
  reset = (): Promise<void> => this.call<void>('reset');
  node = (p: string): Promise<NodeInfo> => this.call<NodeInfo>('node', { path: p });

  /** Unmounts (lazily) if still mounted, and ends the child (by its pid). */
  async stop(): Promise<void> {
    if (mounted(this.mountpoint)) spawnSync('umount', ['-l', this.mountpoint]);
    if (mounted(this.mountpoint)) spawnSync('fusermount3', ['-u', '-z', this.mountpoint]);
    const exited = new Promise<void>((r) => (this.child.exitCode !== null ? r() : this.child.once('exit', () => r())));
    if (this.child.connected) this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

function mounted(mountpoint: string): boolean {
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mountpoint);
}

function mountLine(mountpoint: string): string | undefined {
  return fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === mountpoint);
}

/** A path under `dir` with raw bytes (latin1 string -> Buffer path). */
const bytesPath = (dir: string, name: string): Buffer => Buffer.concat([Buffer.from(`${dir}/`), Buffer.from(name, 'latin1')]);

describe.skipIf(!hasFuse)('fuse-native low-level mode (libfuse3) on a real mount', () => {
  let tmp: string;
  let mnt: string;
  let memfs: Memfs;

  beforeAll(async () => {
    if (isRoot && (fs.statSync('/dev/fuse').mode & 0o777) !== 0o666) fs.chmodSync('/dev/fuse', 0o666);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-ll-'));
    fs.chmodSync(tmp, 0o755);
    mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(mnt);
    const mountOptions = ['fsname=thinfs-ll-test', 'subtype=thinfs', 'default_permissions'];
    if (isRoot) mountOptions.push('allow_other');
    memfs = await Memfs.start(mnt, { mountOptions });
  });

  afterAll(async () => {
    await memfs?.stop();
    if (tmp !== undefined && !mounted(mnt)) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('is mounted with the asked options and negotiated the writeback cache and 1 MiB writes', () => {
    const line = mountLine(mnt);
    expect(line).toMatch(/^thinfs-ll-test \S+ fuse\.thinfs /);
    expect(line).toMatch(/default_permissions/);
    if (isRoot) expect(line).toMatch(/allow_other/);
    expect(memfs.conn.want & FUSE_CAP_WRITEBACK_CACHE).not.toBe(0);
    expect(memfs.conn.want & FUSE_CAP_READDIRPLUS).not.toBe(0);
    expect(memfs.conn.maxWrite).toBe(MiB);
  });

  it('creates, writes, reads, and lists with readdirplus', async () => {
    await memfs.reset();
    fs.writeFileSync(path.join(mnt, 'hello'), 'hello world\n');
    expect(fs.readFileSync(path.join(mnt, 'hello'), 'utf8')).toBe('hello world\n');
    fs.mkdirSync(path.join(mnt, 'd'));
    fs.writeFileSync(path.join(mnt, 'd', 'x'), 'x');
    const listed = fs.readdirSync(path.join(mnt, 'd'), { withFileTypes: true }).map((e) => [e.name, e.isFile()]);
    expect(listed).toEqual([['x', true]]);
    expect(fs.statSync(path.join(mnt, 'd', 'x')).size).toBe(1);
    const s = await memfs.stats();
    expect(s.counts.create).toBe(2);
    expect(s.counts.readdirplus).toBeGreaterThanOrEqual(1);
    // create got the real open flags (O_WRONLY|O_CREAT|O_TRUNC from writeFileSync; the
    // kernel turns O_WRONLY into O_RDWR for the writeback cache)
    expect(s.createFlags[0]! & fs.constants.O_CREAT).not.toBe(0);
  });

  it('caches names and attributes in the kernel: a second stat costs no request', async () => {
    const p = path.join(mnt, 'cached');
    fs.writeFileSync(p, 'abc');
    fs.statSync(p);
    await memfs.reset();
    for (let i = 0; i < 100; i++) fs.statSync(p);
    const s = await memfs.stats();
    expect(s.counts.lookup ?? 0).toBe(0);
    expect(s.counts.getattr ?? 0).toBe(0);
  });

  it('gives the two names of a hard link one inode and one page cache', async () => {
    const a = path.join(mnt, 'link-a');
    const b = path.join(mnt, 'link-b');
    fs.writeFileSync(a, 'AAAA');
    fs.linkSync(a, b);
    const sa = fs.statSync(a);
    const sb = fs.statSync(b);
    expect(sb.ino).toBe(sa.ino);
    expect(sa.nlink).toBe(2);
    expect(fs.readFileSync(b, 'utf8')).toBe('AAAA');
    // A write through one name is seen through the other at once (keep_cache and the
    // writeback cache are on: with a kernel inode per name this read the old bytes).
    fs.writeFileSync(a, 'BBBB');
    expect(fs.readFileSync(b, 'utf8')).toBe('BBBB');
    const fd = fs.openSync(b, 'r+');
    fs.writeSync(fd, 'C', 2);
    fs.closeSync(fd);
    expect(fs.readFileSync(a, 'utf8')).toBe('BBCB');
    expect((await memfs.node('link-a')).ino).toBe(sa.ino);
  });

  it('renames and unlinks; the inode of an unlinked file is forgotten by the kernel', async () => {
    const p = path.join(mnt, 'doomed');
    fs.writeFileSync(p, 'x');
    fs.renameSync(p, path.join(mnt, 'doomed2'));
    expect(fs.existsSync(p)).toBe(false);
    const info = await memfs.node('doomed2');
    expect(info.lookups).toBeGreaterThan(0);
    await memfs.reset();
    fs.unlinkSync(path.join(mnt, 'doomed2'));
    expect(fs.readdirSync(mnt)).not.toContain('doomed2');
    // nlink 0 and unused: the kernel evicts the inode and sends FORGET with all its lookups
    await expect.poll(async () => (await memfs.stats()).forgets.filter(([ino]) => ino === info.ino).length, { timeout: 5_000 }).toBe(1);
    expect(await memfs.call('alive', { ino: info.ino })).toBe(false);
  });

  it.skipIf(!isRoot)('forgets every inode the kernel drops (drop_caches, BATCH_FORGET)', async () => {
    const d = path.join(mnt, 'many');
    fs.mkdirSync(d);
    for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(d, `f${i}`), '');
    fs.readdirSync(d).forEach((n) => fs.statSync(path.join(d, n)));
    const before = await Promise.all([0, 17, 49].map((i) => memfs.node(`many/f${i}`)));
    expect(before.every((n) => n.lookups > 0)).toBe(true);
    await memfs.reset();
    fs.writeFileSync('/proc/sys/vm/drop_caches', '2');
    await expect.poll(async () => (await memfs.stats()).forgets.length, { timeout: 5_000 }).toBeGreaterThanOrEqual(50);
    const after = await Promise.all([0, 17, 49].map((i) => memfs.node(`many/f${i}`)));
    expect(after.map((n) => n.lookups)).toEqual([0, 0, 0]);
  });

  it('keeps an open file working after its last name is gone (nlink 0)', async () => {
    const p = path.join(mnt, 'orphan');
    fs.writeFileSync(p, 'orphan data');
    const fd = fs.openSync(p, 'r+');
    try {
      fs.unlinkSync(p);
      expect(fs.existsSync(p)).toBe(false);
      expect(fs.fstatSync(fd).nlink).toBe(0);
      fs.writeSync(fd, 'ORPHAN', 0);
      fs.fsyncSync(fd);
      const buf = Buffer.alloc(11);
      expect(fs.readSync(fd, buf, 0, 11, 0)).toBe(11);
      expect(buf.toString()).toBe('ORPHAN data');
      fs.ftruncateSync(fd, 3);
      expect(fs.fstatSync(fd).size).toBe(3);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('makes symlinks and reads them back', () => {
    fs.symlinkSync('target/of/link', path.join(mnt, 'sym'));
    expect(fs.readlinkSync(path.join(mnt, 'sym'))).toBe('target/of/link');
    expect(fs.lstatSync(path.join(mnt, 'sym')).isSymbolicLink()).toBe(true);
  });

  it('makes and removes directories (ENOTEMPTY when not empty)', () => {
    const d = path.join(mnt, 'dir1');
    fs.mkdirSync(d);
    fs.mkdirSync(path.join(d, 'sub'));
    expect(fs.statSync(d).nlink).toBe(3);
    expect(() => fs.rmdirSync(d)).toThrow(expect.objectContaining({ code: 'ENOTEMPTY' }));
    fs.rmdirSync(path.join(d, 'sub'));
    fs.rmdirSync(d);
    expect(fs.existsSync(d)).toBe(false);
  });

  it('sets, gets, lists and removes xattrs', () => {
    const p = path.join(mnt, 'xa');
    fs.writeFileSync(p, '');
    const run = (cmd: string, ...args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' });
    expect(run('setfattr', '-n', 'user.colour', '-v', 'blue', p).status).toBe(0);
    expect(run('setfattr', '-n', 'user.size', '-v', 'big', p).status).toBe(0);
    expect(run('getfattr', '--only-values', '-n', 'user.colour', p).stdout).toBe('blue');
    expect(run('getfattr', '-d', p).stdout).toMatch(/user\.colour="blue"\nuser\.size="big"/);
    expect(run('setfattr', '-x', 'user.colour', p).status).toBe(0);
    const gone = run('getfattr', '-n', 'user.colour', p);
    expect(gone.status).not.toBe(0);
    expect(gone.stderr).toMatch(/No such attribute/);
  });

  it('answers the security.capability lookup before each write in C once JS said there is none', async () => {
    const p = path.join(mnt, 'many-writes');
    fs.writeFileSync(p, '');
    const fd = fs.openSync(p, 'r+');
    try {
      fs.writeSync(fd, 'first', 0); // the kernel asks JS once: ENODATA, remembered
      await memfs.reset();
      const before = (await memfs.stats()).session.nocapHits;
      for (let i = 0; i < 300; i++) fs.writeSync(fd, 'abcd', i * 4096);
      const s = await memfs.stats();
      expect(s.counts.getxattr ?? 0).toBe(0);
      expect(s.session.nocapHits - before).toBeGreaterThanOrEqual(300);
    } finally {
      fs.closeSync(fd);
    }
  });

  it.skipIf(!isRoot)('still drops a file capability on write once one is set (no stale answer)', () => {
    const p = path.join(mnt, 'capped');
    fs.writeFileSync(p, 'x');
    fs.writeFileSync(p, 'y'); // marked: no security.capability
    expect(spawnSync('setcap', ['cap_net_raw+ep', p], { encoding: 'utf8' })).toMatchObject({ status: 0, stderr: '' });
    expect(spawnSync('getcap', [p], { encoding: 'utf8' }).stdout).toMatch(/cap_net_raw=ep/);
    fs.appendFileSync(p, 'z'); // the kernel must see the capability and remove it
    expect(spawnSync('getcap', [p], { encoding: 'utf8' }).stdout).toBe('');
  });

  it('answers statfs', () => {
    const s = fs.statfsSync(mnt);
    expect(s).toMatchObject({ bsize: 4096, blocks: 262144, bfree: 131072, bavail: 131000, files: 100000, ffree: 99000 });
  });

  it('passes names as raw bytes both ways (0xe9, 0xff)', async () => {
    const names = ['caf\xe9', 'x\xff\xfe', 'caf\xc3\xa9']; // latin1 strings of raw bytes: two invalid UTF-8, one UTF-8 é
    fs.mkdirSync(path.join(mnt, 'bytes'));
    for (const n of names) fs.writeFileSync(bytesPath(path.join(mnt, 'bytes'), n), Buffer.from(n, 'latin1'));
    const listed = fs.readdirSync(path.join(mnt, 'bytes'), { encoding: 'buffer' }).map((b) => b.toString('latin1'));
    expect(listed.sort()).toEqual([...names].sort());
    expect((await memfs.call<string[]>('names', { path: 'bytes' })).sort()).toEqual([...names].sort());
    for (const n of names) expect(fs.readFileSync(bytesPath(path.join(mnt, 'bytes'), n)).toString('latin1')).toBe(n);
    // 'caf\xe9' and 'caf\xe8' are two names, not one U+FFFD name
    expect(fs.existsSync(bytesPath(path.join(mnt, 'bytes'), 'caf\xe8'))).toBe(false);
    fs.symlinkSync(Buffer.from('t\xe9\xff', 'latin1'), bytesPath(path.join(mnt, 'bytes'), 'l\xff'));
    expect((fs.readlinkSync(bytesPath(path.join(mnt, 'bytes'), 'l\xff'), { encoding: 'buffer' }) as Buffer).toString('latin1')).toBe('t\xe9\xff');
  });

  it('gets 1 MiB writes as one request each', async () => {
    const p = path.join(mnt, 'big');
    await memfs.reset();
    const fd = fs.openSync(p, 'w');
    try {
      const chunk = Buffer.alloc(MiB, 0x5a);
      for (let i = 0; i < 4; i++) fs.writeSync(fd, chunk, 0, MiB, i * MiB);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    const s = await memfs.stats();
    expect(s.writeSizes.reduce((a, b) => a + b, 0)).toBe(4 * MiB);
    expect(Math.max(...s.writeSizes)).toBe(MiB);
    expect(s.writeSizes.every((n) => n <= MiB)).toBe(true);
    expect(fs.statSync(p).size).toBe(4 * MiB);
    // read back through a fresh open (keep_cache: the pages stay), byte-exact
    const back = fs.readFileSync(p);
    expect(back.length).toBe(4 * MiB);
    expect(back.every((b) => b === 0x5a)).toBe(true);
  });

  it('serves O_DIRECT reads and writes of 1 MiB as single requests', async () => {
    const p = path.join(mnt, 'direct');
    fs.writeFileSync(p, Buffer.alloc(2 * MiB, 1));
    await memfs.reset();
    // dd: O_DIRECT needs a page-aligned buffer (the kernel splits requests at page
    // boundaries of the caller's memory), which a Node Buffer is not
    const dd = (...args: string[]) => spawnSync('dd', [...args, 'bs=1M', 'count=1', 'status=none'], { encoding: 'utf8' });
    expect(dd('if=/dev/zero', `of=${p}`, 'seek=1', 'oflag=direct', 'conv=notrunc')).toMatchObject({ status: 0, stderr: '' });
    expect(dd(`if=${p}`, 'of=/dev/null', 'skip=1', 'iflag=direct')).toMatchObject({ status: 0, stderr: '' });
    const s = await memfs.stats();
    expect(s.writeSizes).toEqual([MiB]);
    expect(s.readSizes).toEqual([MiB]);
    expect(fs.readFileSync(p).subarray(MiB).every((b) => b === 0)).toBe(true);
  });

  it('answers reads with several buffers (iov) and straight from file descriptors, with zeros past their end', async () => {
    await memfs.call('special', { name: 'two-buffers', data: 'first half|second half' });
    expect(fs.readFileSync(path.join(mnt, 'two-buffers'), 'utf8')).toBe('first half|second half');
    const host = path.join(tmp, 'host-file');
    const hostData = Buffer.alloc(300_000);
    for (let i = 0; i < hostData.length; i++) hostData[i] = (i * 7) & 0xff;
    fs.writeFileSync(host, hostData);
    await memfs.call('special', { name: 'from-fd', host, size: 400_000 });
    const back = fs.readFileSync(path.join(mnt, 'from-fd'));
    expect(back.length).toBe(400_000);
    expect(back.subarray(0, hostData.length).equals(hostData)).toBe(true);
    expect(back.subarray(hostData.length).every((b) => b === 0)).toBe(true);
  });

  it('invalidates the kernel caches from the notifier thread (inval_inode, inval_entry)', async () => {
    const p = path.join(mnt, 'behind');
    fs.writeFileSync(p, 'old!');
    expect(fs.readFileSync(p, 'utf8')).toBe('old!');
    const ino = await memfs.call<number>('poke', { path: 'behind', data: 'new!' });
    // keep_cache and a long attr timeout: the kernel still serves its pages
    expect(fs.readFileSync(p, 'utf8')).toBe('old!');
    await memfs.call('invalInode', { ino });
    expect(fs.readFileSync(p, 'utf8')).toBe('new!');

    await memfs.call('sneakRename', { dir: '', from: 'behind', to: 'moved' });
    expect(fs.existsSync(p)).toBe(true); // the kernel's cached entry
    await memfs.call('invalEntry', { dir: '', name: 'behind' });
    expect(fs.existsSync(p)).toBe(false);
    expect(fs.readFileSync(path.join(mnt, 'moved'), 'utf8')).toBe('new!');
  });

  it('batches requests that arrive while JS is busy, and holds none after replying', async () => {
    const s = await memfs.stats();
    expect(s.session.requests).toBeGreaterThan(s.session.batches);
    expect(s.session.maxBatch).toBeGreaterThan(1);
    expect(s.session.outstanding).toBe(0);
  });

  it.skipIf(!isRoot)('lets other uids in with allow_other, owns their files, and checks permissions (default_permissions)', async () => {
    const asNobody = (cmd: string, ...args: string[]) =>
      spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', cmd, ...args], { encoding: 'utf8' });
    fs.mkdirSync(path.join(mnt, 'public'), { mode: 0o777 });
    fs.chmodSync(path.join(mnt, 'public'), 0o777);
    const made = asNobody('sh', '-c', `umask 022 && echo hi > ${path.join(mnt, 'public', 'mine')}`);
    expect(made).toMatchObject({ status: 0, stderr: '' });
    const info = await memfs.node('public/mine');
    expect(info).toMatchObject({ uid: NOBODY, gid: NOBODY });
    expect(info.mode & 0o777).toBe(0o644);
    fs.writeFileSync(path.join(mnt, 'root-only'), 'secret');
    fs.chmodSync(path.join(mnt, 'root-only'), 0o600);
    const denied = asNobody('cat', path.join(mnt, 'root-only'));
    expect(denied.status).not.toBe(0);
    expect(denied.stderr).toMatch(/Permission denied/);
  });
});

describe.skipIf(!hasFuse)('the end of a low-level session', () => {
  let tmp: string;
  const children: Memfs[] = [];

  beforeAll(() => {
    if (isRoot && (fs.statSync('/dev/fuse').mode & 0o777) !== 0o666) fs.chmodSync('/dev/fuse', 0o666);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-ll-end-'));
    fs.chmodSync(tmp, 0o755);
  });

  afterAll(async () => {
    for (const c of children) await c.stop();
    if (tmp !== undefined && !children.some((c) => mounted(c.mountpoint))) fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function mountOne(name: string, opts: { asUid?: number } = {}): Promise<Memfs> {
    const mnt = path.join(tmp, name);
    fs.mkdirSync(mnt);
    if (opts.asUid !== undefined) fs.chownSync(mnt, opts.asUid, opts.asUid);
    const m = await Memfs.start(mnt, { mountOptions: ['fsname=thinfs-ll-end', 'subtype=thinfs'], asUid: opts.asUid });
    children.push(m);
    return m;
  }

  /** Runs `cmd`, then returns how long after it finished the child saw its session end. */
  async function endBy(m: Memfs, cmd: string[], asUid?: number): Promise<number> {
    const [c, ...args] = asUid === undefined ? cmd : ['setpriv', `--reuid=${asUid}`, `--regid=${asUid}`, '--clear-groups', ...cmd];
    const r = spawnSync(c!, args, { encoding: 'utf8' });
    const done = Date.now();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const at = await m.unmounted;
    expect(at).toBeGreaterThan(0);
    return at - done;
  }

  it.skipIf(!isRoot)('hears an external umount at once', async () => {
    const m = await mountOne('by-umount');
    fs.writeFileSync(path.join(m.mountpoint, 'f'), 'x');
    const late = await endBy(m, ['umount', m.mountpoint]);
    console.log(`native-ll: umount -> unmounted callback ${late} ms`);
    expect(late).toBeLessThan(300);
    expect(mounted(m.mountpoint)).toBe(false);
  });

  it('hears fusermount3 -u at once', async () => {
    const m = await mountOne('by-fusermount');
    const late = await endBy(m, ['fusermount3', '-u', m.mountpoint]);
    console.log(`native-ll: fusermount3 -u -> unmounted callback ${late} ms`);
    expect(late).toBeLessThan(300);
  });

  it.skipIf(!isRoot || nobodyWhy !== undefined)('mounts as a user through fusermount3, serves that user, and hears its fusermount3 -u', async () => {
    const m = await mountOne('by-user', { asUid: NOBODY });
    const line = mountLine(m.mountpoint);
    expect(line).toMatch(/fuse\.thinfs /);
    expect(line).toMatch(new RegExp(`user_id=${NOBODY}\\b`));
    const asNobody = (script: string) =>
      spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sh', '-c', script], { encoding: 'utf8' });
    const r = asNobody(`echo data > ${m.mountpoint}/f && ln ${m.mountpoint}/f ${m.mountpoint}/g && cat ${m.mountpoint}/g && stat -c %i:%h:%u ${m.mountpoint}/f`);
    expect(r.stderr).toBe('');
    const ino = (await m.node('f')).ino;
    expect(r.stdout).toBe(`data\n${ino}:2:${NOBODY}\n`);
    const late = await endBy(m, ['fusermount3', '-u', m.mountpoint], NOBODY);
    expect(late).toBeLessThan(300);
  });

  it('detaches lazily on request (unmount) and then ends', async () => {
    const m = await mountOne('by-request');
    await m.call('unmount');
    const at = await m.unmounted;
    expect(at).toBeGreaterThan(0);
    expect(mounted(m.mountpoint)).toBe(false);
  });
});

describe.skipIf(!hasFuse)('a low-level mount that cannot be made', () => {
  // Nothing gets mounted here, so this process may try it itself.
  const handlers = {
    lookup: () => {
      throw new Error('not reached');
    },
    forget: () => {},
    getattr: () => {
      throw new Error('not reached');
    },
  } satisfies LowLevelHandlers;
  const options = (mountOptions: string[]): LowLevelOptions => ({
    name: 'refused',
    mountOptions,
    entryTimeout: 1,
    attrTimeout: 1,
    negativeTimeout: 0,
    writebackCache: true,
  });

  it('rejects an option libfuse does not know, with its reason', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-ll-bad-'));
    try {
      await expect(LowLevelSession.mount(dir, handlers, options(['no_such_option']))).rejects.toThrow(/unknown option.*no_such_option/);
      expect(mounted(dir)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects a missing mountpoint, with its reason', async () => {
    const missing = path.join(os.tmpdir(), `thinfs-ll-missing-${process.pid}`);
    await expect(LowLevelSession.mount(missing, handlers, options([]))).rejects.toThrow(/failed to access mountpoint.*No such file or directory/);
  });
});
