/**
 * A tiny in-memory filesystem served through the low-level transport (src/fuse/lowlevel.ts),
 * run as a CHILD process of test/native-ll.test.ts (with vite-node), so the test process
 * can use synchronous fs calls on the mountpoint without waiting on itself.
 *
 * Config comes as JSON in $LL_MEMFS (mountpoint, mount options, writeback). The child
 * talks over the IPC channel: it sends { ev: 'ready', conn } once mounted and
 * { ev: 'unmounted', at } (Date.now()) when the session ends; it answers { id, cmd, ... }
 * requests with { id, result } (see `commands`), and exits when the test disconnects.
 *
 * The filesystem keeps the inode-based rules the real one must keep: each entry handed to
 * the kernel is one lookup, FORGET gives lookups back, and an inode lives while it has a
 * name, a lookup or an open handle.
 */
import * as fs from 'node:fs';
import { fail } from '../../src/errors.js';
import type { ByteString, Fh, Ino } from '../../src/fs/index.js';
import {
  LowLevelSession,
  type LlAttr,
  type LlDirEntry,
  type LlDirEntryPlus,
  type LlEntry,
  type LlSetAttr,
  type LowLevelHandlers,
  type RequestCaller,
} from '../../src/fuse/lowlevel.js';

interface Config {
  mountpoint: string;
  mountOptions: string[];
  writebackCache: boolean;
}

interface Node {
  ino: Ino;
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  nlink: number;
  data: Buffer;
  target?: ByteString;
  children?: Map<ByteString, Ino>;
  parent: Ino;
  xattrs: Map<ByteString, Buffer>;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  lookups: number;
  opens: number;
  /** Reads answered from a host file (reply.data: fd ranges, zeros past its end). */
  backing?: { fd: number; length: number };
  /** Reads answered as two buffers (reply.iov). */
  iov?: boolean;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const TIMEOUT = 1e9; // seconds: the kernel caches names and attributes (this process is the only writer)

const cfg = JSON.parse(process.env.LL_MEMFS ?? '{}') as Config;
const nodes = new Map<Ino, Node>();
const handles = new Map<Fh, Ino>();
let nextIno = 2;
let nextFh = 1;

// What the test asks about: requests per operation, write sizes, forgets.
const counts: Record<string, number> = {};
const writeSizes: number[] = [];
const readSizes: number[] = [];
const createFlags: number[] = [];
const openFlags: number[] = [];
const forgets: [number, number][] = [];
const count = (op: string): void => {
  counts[op] = (counts[op] ?? 0) + 1;
};

const now = (): bigint => BigInt(Date.now()) * 1_000_000n;

function newNode(mode: number, caller: { uid: number; gid: number }, parent: Ino): Node {
  const t = now();
  const n: Node = {
    ino: nextIno++ as Ino,
    mode,
    uid: caller.uid,
    gid: caller.gid,
    rdev: 0,
    nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1,
    data: Buffer.alloc(0),
    parent,
    xattrs: new Map(),
    atimeNs: t,
    mtimeNs: t,
    ctimeNs: t,
    lookups: 0,
    opens: 0,
  };
  if ((mode & S_IFMT) === S_IFDIR) n.children = new Map();
  nodes.set(n.ino, n);
  return n;
}

const root = newNode(S_IFDIR | 0o777, { uid: 0, gid: 0 }, 1 as Ino);
nodes.delete(root.ino);
root.ino = 1 as Ino;
root.parent = 1 as Ino;
nodes.set(root.ino, root);
nextIno = 100;

function node(ino: Ino): Node {
  const n = nodes.get(ino);
  if (n === undefined) throw fail('ESTALE', 'inode', `#${ino}`);
  return n;
}

function dir(ino: Ino): Map<ByteString, Ino> {
  const n = node(ino);
  if (n.children === undefined) throw fail('ENOTDIR', 'lookup', `#${ino}`);
  return n.children;
}

/** Frees an inode nobody can reach any more (no name, no lookup, no open handle). */
function maybeFree(n: Node): void {
  if (n.nlink === 0 && n.lookups === 0 && n.opens === 0 && n.ino !== 1) nodes.delete(n.ino);
}

function attr(n: Node): LlAttr {
  return {
    ino: n.ino,
    mode: n.mode,
    nlink: n.nlink,
    uid: n.uid,
    gid: n.gid,
    rdev: n.rdev,
    size: (n.mode & S_IFMT) === S_IFLNK ? Buffer.byteLength(n.target ?? '', 'latin1') : n.data.length,
    blksize: 4096,
    blocks: Math.ceil(n.data.length / 512),
    atimeNs: n.atimeNs,
    mtimeNs: n.mtimeNs,
    ctimeNs: n.ctimeNs,
  };
}

/** An entry for the kernel: one more lookup of n. */
function entry(n: Node): LlEntry {
  n.lookups++;
  return { ino: n.ino, attr: attr(n), entryTimeout: TIMEOUT, attrTimeout: TIMEOUT };
}

function addName(parent: Ino, name: ByteString, n: Node): void {
  const d = dir(parent);
  if (d.has(name)) throw fail('EEXIST', 'create', name);
  d.set(name, n.ino);
  if (n.children !== undefined) node(parent).nlink++;
  touch(node(parent));
}

function touch(n: Node): void {
  n.mtimeNs = n.ctimeNs = now();
}

function removeName(parent: Ino, name: ByteString): Node {
  const d = dir(parent);
  const ino = d.get(name);
  if (ino === undefined) throw fail('ENOENT', 'unlink', name);
  const n = node(ino);
  d.delete(name);
  n.nlink -= n.children !== undefined ? 2 : 1;
  if (n.children !== undefined) node(parent).nlink--;
  n.ctimeNs = now();
  touch(node(parent));
  maybeFree(n);
  return n;
}

function create(parent: Ino, name: ByteString, mode: number, caller: RequestCaller): Node {
  const n = newNode(mode, caller, parent);
  try {
    addName(parent, name, n);
  } catch (err) {
    nodes.delete(n.ino);
    throw err;
  }
  return n;
}

function openFile(n: Node): Fh {
  const fh = nextFh++;
  handles.set(fh, n.ino);
  n.opens++;
  return fh;
}

function dirEntries(ino: Ino): [ByteString, Node][] {
  const n = node(ino);
  const out: [ByteString, Node][] = [
    ['.', n],
    ['..', node(n.parent)],
  ];
  for (const [name, child] of dir(ino)) out.push([name, node(child)]);
  return out;
}

const handlers = {
  lookup: (parent: Ino, name: ByteString) => {
    count('lookup');
    const ino = dir(parent).get(name);
    if (ino === undefined) throw fail('ENOENT', 'lookup', name);
    return entry(node(ino));
  },
  forget: (ino: Ino, nlookup: number) => {
    count('forget');
    forgets.push([ino, nlookup]);
    const n = nodes.get(ino);
    if (n === undefined) return;
    n.lookups -= nlookup;
    maybeFree(n);
  },
  getattr: (ino: Ino) => {
    count('getattr');
    return attr(node(ino));
  },
  setattr: (ino: Ino, set: LlSetAttr) => {
    count('setattr');
    const n = node(ino);
    if (set.mode !== undefined) n.mode = (n.mode & S_IFMT) | (set.mode & 0o7777);
    if (set.uid !== undefined) n.uid = set.uid;
    if (set.gid !== undefined) n.gid = set.gid;
    if (set.size !== undefined) {
      const data = Buffer.alloc(set.size);
      n.data.copy(data, 0, 0, Math.min(set.size, n.data.length));
      n.data = data;
      n.mtimeNs = now();
    }
    if (set.atime !== undefined) n.atimeNs = set.atime === 'now' ? now() : set.atime;
    if (set.mtime !== undefined) n.mtimeNs = set.mtime === 'now' ? now() : set.mtime;
    n.ctimeNs = set.ctime ?? now();
    return attr(n);
  },
  readlink: (ino: Ino) => {
    count('readlink');
    const n = node(ino);
    if (n.target === undefined) throw fail('EINVAL', 'readlink', `#${ino}`);
    return n.target;
  },
  mkdir: (parent: Ino, name: ByteString, mode: number, caller: RequestCaller) => {
    count('mkdir');
    return entry(create(parent, name, S_IFDIR | (mode & 0o7777), caller));
  },
  mknod: (parent: Ino, name: ByteString, mode: number, rdev: number, caller: RequestCaller) => {
    count('mknod');
    const n = create(parent, name, mode, caller);
    n.rdev = rdev;
    return entry(n);
  },
  symlink: (target: ByteString, parent: Ino, name: ByteString, caller: RequestCaller) => {
    count('symlink');
    const n = create(parent, name, S_IFLNK | 0o777, caller);
    n.target = target;
    return entry(n);
  },
  unlink: (parent: Ino, name: ByteString) => {
    count('unlink');
    const ino = dir(parent).get(name);
    if (ino !== undefined && node(ino).children !== undefined) throw fail('EISDIR', 'unlink', name);
    removeName(parent, name);
  },
  rmdir: (parent: Ino, name: ByteString) => {
    count('rmdir');
    const ino = dir(parent).get(name);
    if (ino === undefined) throw fail('ENOENT', 'rmdir', name);
    if (dir(ino).size > 0) throw fail('ENOTEMPTY', 'rmdir', name);
    removeName(parent, name);
  },
  rename: (parent: Ino, name: ByteString, newParent: Ino, newName: ByteString, flags: number) => {
    count('rename');
    if (flags !== 0) throw fail('EINVAL', 'rename', name);
    const ino = dir(parent).get(name);
    if (ino === undefined) throw fail('ENOENT', 'rename', name);
    if (dir(newParent).has(newName)) removeName(newParent, newName);
    const n = node(ino);
    dir(parent).delete(name);
    if (n.children !== undefined) {
      node(parent).nlink--;
      node(newParent).nlink++;
      n.parent = newParent;
    }
    dir(newParent).set(newName, ino);
    touch(node(parent));
    touch(node(newParent));
  },
  link: (ino: Ino, newParent: Ino, newName: ByteString) => {
    count('link');
    const n = node(ino);
    if (n.children !== undefined) throw fail('EPERM', 'link', newName);
    addName(newParent, newName, n);
    n.nlink++;
    n.ctimeNs = now();
    return entry(n);
  },
  create: (parent: Ino, name: ByteString, mode: number, flags: number, caller: RequestCaller) => {
    count('create');
    const n = create(parent, name, S_IFREG | (mode & 0o7777), caller);
    createFlags.push(flags);
    return { entry: entry(n), open: { fh: openFile(n), keepCache: true } };
  },
  open: (ino: Ino, flags: number) => {
    count('open');
    openFlags.push(flags);
    return { fh: openFile(node(ino)), keepCache: true };
  },
  read: (ino: Ino, size: number, offset: number) => {
    count('read');
    readSizes.push(size);
    const n = node(ino);
    const end = Math.min(n.data.length, offset + size);
    if (n.backing !== undefined) {
      const fromHost = Math.max(0, Math.min(n.backing.length, end) - offset);
      const zeros = Math.max(0, end - offset - fromHost);
      return { segments: new Float64Array([n.backing.fd, offset, fromHost, -1, 0, zeros]) };
    }
    const bytes = n.data.subarray(offset, end);
    if (n.iov === true) return [bytes.subarray(0, bytes.length >> 1), bytes.subarray(bytes.length >> 1)];
    return bytes;
  },
  write: (ino: Ino, data: Buffer, offset: number) => {
    count('write');
    writeSizes.push(data.length);
    const n = node(ino);
    if (n.data.length < offset + data.length) {
      const grown = Buffer.alloc(offset + data.length);
      n.data.copy(grown);
      n.data = grown;
    }
    data.copy(n.data, offset);
    n.mtimeNs = n.ctimeNs = now();
    return data.length;
  },
  flush: () => {
    count('flush');
  },
  release: (_ino: Ino, fh: Fh) => {
    count('release');
    const ino = handles.get(fh);
    handles.delete(fh);
    const n = ino === undefined ? undefined : nodes.get(ino);
    if (n === undefined) return;
    n.opens--;
    maybeFree(n);
  },
  fsync: () => {
    count('fsync');
  },
  opendir: (ino: Ino) => {
    count('opendir');
    dir(ino);
    return { fh: 0 };
  },
  readdir: (ino: Ino, offset: number) => {
    count('readdir');
    return dirEntries(ino)
      .map(([name, n], i): LlDirEntry => ({ name, ino: n.ino, type: n.mode & S_IFMT, offset: i + 1 }))
      .slice(offset);
  },
  readdirplus: (ino: Ino, offset: number) => {
    count('readdirplus');
    return dirEntries(ino)
      .slice(offset)
      .map(([name, n], i): LlDirEntryPlus => ({
        name,
        // . and .. are no lookups (the kernel ignores their nodeid)
        entry: name === '.' || name === '..' ? { ino: n.ino, attr: attr(n) } : entry(n),
        offset: offset + i + 1,
      }));
  },
  releasedir: () => {
    count('releasedir');
  },
  statfs: () => {
    count('statfs');
    return { bsize: 4096, frsize: 4096, blocks: 262144, bfree: 131072, bavail: 131000, files: 100000, ffree: 99000, favail: 99000, namemax: 255 };
  },
  setxattr: (ino: Ino, name: ByteString, value: Buffer, flags: number) => {
    count('setxattr');
    const x = node(ino).xattrs;
    if (flags === 1 && x.has(name)) throw fail('EEXIST', 'setxattr', name);
    if (flags === 2 && !x.has(name)) throw fail('ENODATA', 'setxattr', name);
    x.set(name, Buffer.from(value));
  },
  getxattr: (ino: Ino, name: ByteString) => {
    count('getxattr');
    const v = node(ino).xattrs.get(name);
    if (v === undefined) throw fail('ENODATA', 'getxattr', name);
    return v;
  },
  listxattr: (ino: Ino) => {
    count('listxattr');
    return [...node(ino).xattrs.keys()];
  },
  removexattr: (ino: Ino, name: ByteString) => {
    count('removexattr');
    if (!node(ino).xattrs.delete(name)) throw fail('ENODATA', 'removexattr', name);
  },
} satisfies LowLevelHandlers;

let session: LowLevelSession | undefined;

/** Resolves a path (a byte string, relative to the root) without the kernel. */
function resolve(p: ByteString): Node {
  let n = root;
  for (const part of p.split('/').filter((s) => s !== '')) n = node(dir(n.ino).get(part) ?? (0 as Ino));
  return n;
}

const commands: Record<string, (m: Record<string, unknown>) => unknown | Promise<unknown>> = {
  stats: () => ({ counts, writeSizes, readSizes, forgets, createFlags, openFlags, session: session?.stats(), conn: session?.conn }),
  reset: () => {
    for (const k of Object.keys(counts)) delete counts[k];
    writeSizes.length = readSizes.length = forgets.length = createFlags.length = openFlags.length = 0;
  },
  /** The inode at `path` (latin1): its counts as this process sees them. */
  node: (m) => {
    const n = resolve(m.path as string);
    return { ino: n.ino, nlink: n.nlink, lookups: n.lookups, opens: n.opens, uid: n.uid, gid: n.gid, mode: n.mode };
  },
  alive: (m) => nodes.has(m.ino as Ino),
  /** A file in the root whose reads come from the host file `host` (then zeros up to `size`), or as two buffers (iov). */
  special: (m) => {
    const n = create(1 as Ino, m.name as string, S_IFREG | 0o644, { uid: 0, gid: 0, pid: 0, umask: 0 });
    if (m.host !== undefined) {
      n.backing = { fd: fs.openSync(m.host as string, 'r'), length: fs.statSync(m.host as string).size };
      n.data = Buffer.alloc(m.size as number); // only its length counts
    } else {
      n.iov = true;
      n.data = Buffer.from(m.data as string, 'latin1');
    }
    return n.ino;
  },
  /** Names in a directory, as latin1 strings (the test compares bytes). */
  names: (m) => [...dir(resolve(m.path as string).ino).keys()],
  /** Changes a file's bytes behind the kernel's back (same length). */
  poke: (m) => {
    const n = resolve(m.path as string);
    Buffer.from(m.data as string, 'latin1').copy(n.data);
    return n.ino;
  },
  /** Renames behind the kernel's back. */
  sneakRename: (m) => {
    const d = dir(resolve(m.dir as string).ino);
    const ino = d.get(m.from as string)!;
    d.delete(m.from as string);
    d.set(m.to as string, ino);
    return ino;
  },
  invalInode: async (m) => session!.invalInode(m.ino as Ino, 0, 0),
  invalEntry: async (m) => session!.invalEntry(resolve(m.dir as string).ino, m.name as string),
  unmount: async () => session!.unmount(),
};

// The test ends this process by disconnecting (messages still queued are delivered first).
process.on('disconnect', () => process.exit(0));

process.on('message', (m: Record<string, unknown>) => {
  const id = m.id;
  Promise.resolve()
    .then(() => commands[m.cmd as string]!(m))
    .then(
      (result) => process.send!({ id, result }),
      (err: Error) => process.send!({ id, error: `${err.message}` }),
    );
});

LowLevelSession.mount(cfg.mountpoint, handlers, {
  name: 'llmemfs',
  mountOptions: cfg.mountOptions,
  entryTimeout: TIMEOUT,
  attrTimeout: TIMEOUT,
  negativeTimeout: TIMEOUT,
  writebackCache: cfg.writebackCache,
}).then(
  (s) => {
    session = s;
    s.onUnmounted(() => process.send!({ ev: 'unmounted', at: Date.now() }));
    process.send!({ ev: 'ready', conn: s.conn });
  },
  (err: Error) => {
    process.send!({ ev: 'failed', error: err.message }, () => process.exit(1));
  },
);
