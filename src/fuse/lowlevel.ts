/**
 * The libfuse3 low-level transport, typed: fuse-native's inode-based mode
 * (native-deps/fuse-native/lowlevel.js over fuse-lowlevel.c; how its threads work and why
 * is at the top of the C file).
 *
 * One table, one translator. A filesystem serves a mount by handing `LowLevelSession.mount`
 * a table of handlers that must `satisfies LowLevelHandlers`. Each handler takes the
 * request's decoded arguments and RETURNS its answer (or a promise of it) — an entry, an
 * attr, bytes, a count — or throws; this module sends the reply. So a handler cannot
 * answer twice, forget to answer, or answer with the wrong kind of reply, and a handler
 * in the wrong slot does not compile (each slot is a function-typed property, so its
 * parameters are checked strictly). Every throw becomes an errno through errno.ts's
 * `toErrno` (ThinfsError -> its errno; anything else is logged and answered EIO); nothing
 * a handler throws reaches the binding. Each operation is logged at debug with its
 * target, errno and milliseconds, and slow ones (over a second) at warn.
 *
 * Lookup counts, the rule of the inode-based API: every entry a handler returns from
 * lookup, mknod, mkdir, symlink, link, create or readdirplus (except . and ..) is one
 * reference the kernel holds on that inode and gives back with forget(ino, n). The
 * handler counts it when it returns the entry. When the kernel never gets an entry —
 * the reply could not be sent (an interrupted request), or a readdirplus entry did not
 * fit the buffer — this module gives that reference back itself by calling
 * forget(ino, 1) (and release/releasedir for a file handle the kernel never saw), as
 * libfuse's passthrough_ll does.
 *
 * Other rules the kernel sets, for handler authors:
 *  - A failed lookup with ENOENT answers a negative entry cached for `negativeTimeout`.
 *  - Names are bytes: every name argument is a byte string (fs/bytes.ts) and every name
 *    returned (readdir, readlink, listxattr) goes back as its raw bytes.
 *  - write's `data` is libfuse's receive buffer, valid until the reply: copy what you
 *    keep. With the writeback cache the kernel writes back dirty pages through any open
 *    handle of the inode (`writepage` is then true and the caller is not meaningful),
 *    reads through handles opened O_WRONLY, and handles O_APPEND itself; it owns size
 *    and mtime of open files and sends them back with setattr (mtime, ctime).
 *  - Operations on an open handle (getattr/setattr with fh, read, write, fsync, release)
 *    keep working once the inode has no name left (nlink 0): the kernel holds the nodeid
 *    until forget, and the handle until release.
 *  - readdir/readdirplus get `offset` 0 first, then the `offset` of the last entry the
 *    kernel consumed; each entry's `offset` is the cookie of the entry AFTER it.
 *  - The kernel asks for security.capability before every write(2) (FUSE turns SB_NOSEC
 *    off). When getxattr answers ENODATA for it synchronously, the binding remembers the
 *    inode and answers that GETXATTR itself in the worker thread, without JS; the mark
 *    goes before any setxattr/removexattr of that name reaches the handler, and on forget.
 *    Whoever changes an xattr behind the kernel calls dropCapabilityCache().
 *  - Kernel notifications (invalInode, invalEntry, notifyDelete) run on the binding's
 *    notifier thread: the kernel may wait inside them for requests that only this
 *    thread answers (writeback of dirty pages, a directory lock held by a lookup).
 *    Never await one from inside a handler of the same mount.
 *
 * fuse-native lives on the main thread (its C side uses the default libuv loop): never
 * mount from a worker_thread, and never make a synchronous call into a path this
 * process serves.
 */
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { performance } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';
import type { ByteString, Fh, Ino, TimeSpec } from '../fs/index.js';
import { logger } from '../log.js';
import { toErrno } from './errno.js';

const log = logger('fuse');

/** Operations slower than this are logged at warn. */
const SLOW_OP_MS = 1000;
const ENOENT = osConstants.errno.ENOENT;
const ERANGE = osConstants.errno.ERANGE;
const EIO = osConstants.errno.EIO;

// ------------------------------------------------------------------ reply types

/** A value or a promise of it: handlers may be synchronous or async. */
export type Reply<T> = T | Promise<T>;

/** The attributes the kernel is told (ids as shown on the mount). Times in ns since the epoch. */
export interface LlAttr {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blksize: number;
  /** 512-byte units. */
  blocks: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** An entry reply: the nodeid (the inode number) the kernel will use for this name. */
export interface LlEntry {
  ino: Ino;
  /** With ino, unique over the filesystem's life (0 when inode numbers are never reused). */
  generation?: number;
  attr: LlAttr;
  /** Seconds the kernel trusts the name; default: the session's entryTimeout. */
  entryTimeout?: number;
  /** Seconds the kernel trusts the attributes; default: the session's attrTimeout. */
  attrTimeout?: number;
}

/** An open/opendir reply. */
export interface LlOpen {
  fh: Fh;
  /** Keep the inode's page cache from earlier opens (the daemon is the only writer). */
  keepCache?: boolean;
  /** Bypass the page cache for this handle. */
  directIo?: boolean;
  nonseekable?: boolean;
  /** opendir: let the kernel cache the listing. */
  cacheReaddir?: boolean;
  /** No FLUSH on close(2). */
  noflush?: boolean;
}

/** A create reply: the new entry and its open handle. */
export interface LlCreated {
  entry: LlEntry;
  open: LlOpen;
}

/** A read answered from file descriptors: [fd, position, length] triples (fd -1: zeros). */
export interface LlSegments {
  segments: Float64Array;
  /** Triples used (default: all). */
  count?: number;
}

/** What read answers: bytes, several buffers (sent as one iovec), or file ranges. */
export type LlData = Uint8Array | readonly Uint8Array[] | LlSegments;

export interface LlDirEntry {
  name: ByteString;
  ino: number;
  /** File type bits (S_IFDIR, S_IFREG, ...). */
  type: number;
  /** The cookie of the entry after this one. */
  offset: number;
}

export interface LlDirEntryPlus {
  name: ByteString;
  /** For . and .., only attr.ino and attr.mode matter (no lookup is counted). */
  entry: LlEntry;
  offset: number;
}

export interface LlStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  namemax: number;
  fsid?: number;
  flag?: number;
}

/** What a SETATTR changes (absent: unchanged). */
export interface LlSetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: Exclude<TimeSpec, 'omit'>;
  mtime?: Exclude<TimeSpec, 'omit'>;
  /** Sent by the kernel with the writeback cache (it keeps ctime of open files). */
  ctime?: bigint;
  /** The kernel asks to clear setuid / setgid (only with handleKillpriv). */
  killSuid?: boolean;
  killSgid?: boolean;
}

/** The process that made a request. */
export interface RequestCaller {
  uid: number;
  gid: number;
  pid: number;
  /** The caller's umask (create, mkdir, mknod; the kernel has applied it to mode already). */
  umask: number;
}

// ------------------------------------------------------------------ the handler table

/**
 * The handlers of one mount, by FUSE operation. lookup, getattr and forget are required;
 * an absent handler is not offered to the kernel (libfuse answers ENOSYS, and the kernel
 * stops asking for access, flush, xattrs, fallocate, lseek; open/opendir/release then
 * succeed with fh 0).
 */
export interface LowLevelHandlers {
  lookup: (parent: Ino, name: ByteString) => Reply<LlEntry>;
  /** The kernel drops `nlookup` references on ino (never answered). */
  forget: (ino: Ino, nlookup: number) => void;
  getattr: (ino: Ino, fh: Fh | undefined) => Reply<LlAttr>;
  setattr?: (ino: Ino, set: LlSetAttr, fh: Fh | undefined) => Reply<LlAttr>;
  readlink?: (ino: Ino) => Reply<ByteString>;
  mknod?: (parent: Ino, name: ByteString, mode: number, rdev: number, caller: RequestCaller) => Reply<LlEntry>;
  mkdir?: (parent: Ino, name: ByteString, mode: number, caller: RequestCaller) => Reply<LlEntry>;
  unlink?: (parent: Ino, name: ByteString) => Reply<void>;
  rmdir?: (parent: Ino, name: ByteString) => Reply<void>;
  symlink?: (target: ByteString, parent: Ino, name: ByteString, caller: RequestCaller) => Reply<LlEntry>;
  /** flags: RENAME_NOREPLACE (1), RENAME_EXCHANGE (2). */
  rename?: (parent: Ino, name: ByteString, newParent: Ino, newName: ByteString, flags: number) => Reply<void>;
  link?: (ino: Ino, newParent: Ino, newName: ByteString) => Reply<LlEntry>;
  /** flags: the open(2) flags (O_TRUNC only with atomicOTrunc; the kernel truncates first otherwise). */
  open?: (ino: Ino, flags: number) => Reply<LlOpen>;
  /** `miss`: the C block map (LowLevelSession.blockMap*) lacks these blocks: fill it after answering. */
  read?: (ino: Ino, sizeBytes: number, offsetBytes: number, fh: Fh, miss: boolean) => Reply<LlData>;
  /** Answers the bytes written. `data` is valid until the reply. `miss` as for read. */
  write?: (ino: Ino, data: Buffer, offsetBytes: number, fh: Fh, writepage: boolean, miss: boolean) => Reply<number>;
  flush?: (ino: Ino, fh: Fh) => Reply<void>;
  release?: (ino: Ino, fh: Fh, flags: number) => Reply<void>;
  fsync?: (ino: Ino, datasync: boolean, fh: Fh) => Reply<void>;
  opendir?: (ino: Ino, flags: number) => Reply<LlOpen>;
  readdir?: (ino: Ino, offset: number, sizeBytes: number, fh: Fh) => Reply<readonly LlDirEntry[]>;
  /** Each entry returned (but . and ..) is one lookup; those that do not fit are forgotten here. */
  readdirplus?: (ino: Ino, offset: number, sizeBytes: number, fh: Fh) => Reply<readonly LlDirEntryPlus[]>;
  releasedir?: (ino: Ino, fh: Fh) => Reply<void>;
  fsyncdir?: (ino: Ino, datasync: boolean, fh: Fh) => Reply<void>;
  statfs?: (ino: Ino) => Reply<LlStatfs>;
  /** flags: XATTR_CREATE (1), XATTR_REPLACE (2). */
  setxattr?: (ino: Ino, name: ByteString, value: Buffer, flags: number) => Reply<void>;
  /** The whole value; sizing (size 0 probes, ERANGE) is done here. */
  getxattr?: (ino: Ino, name: ByteString) => Reply<Uint8Array>;
  /** Every name; sizing is done here. */
  listxattr?: (ino: Ino) => Reply<readonly ByteString[]>;
  removexattr?: (ino: Ino, name: ByteString) => Reply<void>;
  access?: (ino: Ino, mask: number, caller: RequestCaller) => Reply<void>;
  /** flags: the real open(2) flags of the create. */
  create?: (parent: Ino, name: ByteString, mode: number, flags: number, caller: RequestCaller) => Reply<LlCreated>;
  fallocate?: (ino: Ino, mode: number, offsetBytes: number, lengthBytes: number, fh: Fh) => Reply<void>;
  /** whence: SEEK_DATA (3) / SEEK_HOLE (4) (the kernel handles SEEK_SET/CUR/END). */
  lseek?: (ino: Ino, offsetBytes: number, whence: number, fh: Fh) => Reply<number>;
}

// ------------------------------------------------------------------ session options

/** How a low-level session talks to the kernel. */
export interface LowLevelOptions {
  /** For logs. */
  name: string;
  /** mount -o options, verbatim: fsname=, subtype=, allow_other, default_permissions, ro, suid/nosuid, nodev, ... */
  mountOptions: readonly string[];
  /** Seconds the kernel trusts names and attributes by default (each reply may say otherwise). */
  entryTimeout: number;
  attrTimeout: number;
  /** Seconds the kernel remembers that a name does not exist (0: not at all). */
  negativeTimeout: number;
  /** FUSE_CAP_WRITEBACK_CACHE: writes land in the page cache and are written back in large requests. */
  writebackCache: boolean;
  /**
   * GETATTR answered in C from the attributes the handlers last replied (to a getattr or
   * lookup), dropped by the replies that may change them (fuse-lowlevel-attrcache.c). Only
   * for a filesystem whose attributes change by requests alone, or that calls
   * blockMapDrop (which drops attributes too) when they change otherwise. Default off.
   */
  attrCache?: boolean;
  /** 'auto' (default): the kernel chooses per directory; 'always'; only with a readdirplus handler. */
  readdirplus?: 'auto' | 'always';
  /** FUSE_CAP_ATOMIC_O_TRUNC: open gets O_TRUNC and truncates (default off: the kernel sends setattr(size 0) first). */
  atomicOTrunc?: boolean;
  /** FUSE_CAP_HANDLE_KILLPRIV: the filesystem clears setuid/setgid on write, chown, truncate (default off: the kernel does). */
  handleKillpriv?: boolean;
  /** FUSE_CAP_SPLICE_WRITE/MOVE: file-range read replies are spliced, not copied (default off). */
  splice?: boolean;
  /** Largest WRITE (and, with max_pages, READ) request; at most 1 MiB (libfuse's buffer). Default 1 MiB. */
  maxWriteBytes?: number;
  maxReadaheadBytes?: number;
  maxBackground?: number;
  congestionThreshold?: number;
  /** libfuse worker threads at most (default 10: only WRITE holds one until JS replies, the rest return at once). */
  maxThreads?: number;
  /**
   * Idle workers kept (default 2; -1 keeps all, libfuse's default). Each worker that served
   * a large request keeps its 1 MiB receive buffer resident: 50 mounts after 4 MiB written
   * into each measured 196 MiB RSS keeping all, 135 MiB with 2 (113 MiB with glibc's
   * MALLOC_MMAP_THRESHOLD_=262144, which returns freed buffers). Fewer than 2 makes a QD1
   * writer start and end a thread per write (one waits for JS, one reads the next request).
   */
  maxIdleThreads?: number;
  /** One /dev/fuse fd per worker. */
  cloneFd?: boolean;
  /** libfuse's -d: every request on stderr. */
  debug?: boolean;
  /** Called once per answered request (op, milliseconds in the handler, errno or 0): the mount's counters. */
  onAnswer?: (op: string, ms: number, errno: number) => void;
}

/** What the kernel and libfuse agreed on at INIT. */
export interface ConnInfo {
  protoMajor: number;
  protoMinor: number;
  /** FUSE_CAP_* bits the kernel offers / that are in use. */
  capable: number;
  want: number;
  maxWrite: number;
  maxReadahead: number;
  maxBackground: number;
  congestionThreshold: number;
  timeGran: number;
}

/** Counters of the binding: requests dispatched to JS, the wake-ups that carried them, the largest batch, requests unanswered now, security.capability lookups answered in C. */
export interface SessionStats {
  requests: number;
  batches: number;
  maxBatch: number;
  outstanding: number;
  nocapHits: number;
}

/** Counters of the C hot path (fuse-lowlevel-blockmap.c): requests it answered, bytes, errors, map fills and drops, quiesce calls that waited, bytes of map held. */
export interface BlockMapStats {
  reads: number;
  readBytes: number;
  readErrors: number;
  writes: number;
  writeBytes: number;
  writeErrors: number;
  fills: number;
  drops: number;
  quiesceWaits: number;
  bytesHeld: number;
  /** Read-only opens answered in C (fh 0). */
  opens: number;
}

/** The attribute cache's counters (LowLevelOptions.attrCache). */
export interface AttrCacheStats {
  /** GETATTRs answered in C. */
  hits: number;
  /** getattr/lookup replies kept. */
  fills: number;
  /** Entries held (dead ones of older generations included, until reclaimed). */
  entries: number;
}

/** Entries of a block map fill: one chunk of at most this many blocks, starting at a multiple of it. */
export const BLOCK_MAP_CHUNK = 256;

// ------------------------------------------------------------------ the binding (lowlevel.js), typed

type ReqId = number & { readonly __brand: 'FuseReq' };
/** 0: sent; < 0: -errno, the kernel never got it; false: no such request (answered, or the session ended). */
type Sent = number | false;
type RawCb = (err: Error | null) => void;
type RawHandler = (...args: any[]) => unknown;

interface RawReply {
  err(req: ReqId, errno: number): Sent;
  entry(req: ReqId, e: RawEntry): Sent;
  create(req: ReqId, e: RawEntry, fh: number, flags: RawOpenFlags): Sent;
  attr(req: ReqId, attr: LlAttr, timeout: number): Sent;
  readlink(req: ReqId, target: ByteString): Sent;
  open(req: ReqId, fh: number, flags: RawOpenFlags): Sent;
  write(req: ReqId, count: number): Sent;
  buf(req: ReqId, buf: Uint8Array | undefined, length?: number): Sent;
  iov(req: ReqId, bufs: readonly Uint8Array[]): Sent;
  data(req: ReqId, segments: Float64Array, count?: number): Sent;
  statfs(req: ReqId, s: LlStatfs): Sent;
  xattr(req: ReqId, size: number): Sent;
  lseek(req: ReqId, offset: number): Sent;
  readdir(req: ReqId, entries: readonly { name: string; ino: number; mode: number; offset: number }[]): Sent;
  readdirplus(req: ReqId, entries: readonly { name: string; entry: RawEntry; offset: number }[]): Sent;
}

interface RawEntry {
  ino: number;
  generation: number;
  attr: LlAttr | undefined;
  entryTimeout: number;
  attrTimeout: number;
}

type RawOpenFlags = Omit<LlOpen, 'fh'>;

interface RawSession {
  readonly conn: ConnInfo | null;
  mount(cb: (err: Error | null, conn: ConnInfo) => void): void;
  unmount(cb: RawCb): void;
  notifyInvalInode(ino: number, offset: number, length: number, cb: RawCb): void;
  notifyInvalEntry(parent: number, name: ByteString, cb: RawCb): void;
  notifyDelete(parent: number, child: number, name: ByteString, cb: RawCb): void;
  stats(): SessionStats;
  noSecurityCapability(ino?: number, none?: boolean): void;
  blockMapConfigure(fd: number, blockShift: number, writes: boolean, opens: boolean): boolean;
  blockMapFill(ino: number, size: number, firstBlock: number, entries: Float64Array, count?: number): boolean;
  blockMapDrop(ino?: number): boolean;
  blockMapQuiesce(): boolean;
  blockMapStats(): BlockMapStats;
  attrCachePut(ino: number, attr: LlAttr, timeout: number): void;
  attrCacheStats(): AttrCacheStats;
  on(event: 'unmounted', listener: (code: number) => void): void;
}

interface RawModule {
  FuseLowLevel: {
    new (mnt: string, handlers: Record<string, RawHandler>, opts: object): RawSession;
    context(): RequestCaller;
    readonly SET: Record<'MODE' | 'UID' | 'GID' | 'SIZE' | 'ATIME' | 'MTIME' | 'ATIME_NOW' | 'MTIME_NOW' | 'CTIME' | 'KILL_SUID' | 'KILL_SGID', number>;
  };
  reply: RawReply;
}

let raw: RawModule | undefined;

/** Loads fuse-native's low-level mode (the thinfs-patched build). */
function loadLowLevel(): RawModule {
  if (raw === undefined) {
    if (!isMainThread) throw new Error('fuse-native must run on the main thread, not in a worker_thread');
    let mod: RawModule;
    try {
      mod = createRequire(import.meta.url)('fuse-native/lowlevel.js') as RawModule;
    } catch (err) {
      throw new Error(`fuse-native has no low-level mode (run npm install, or node native-deps/build.cjs): ${(err as Error).message}`);
    }
    raw = mod;
  }
  return raw;
}

/** The caller of the request being handled; valid in the synchronous part of any handler only. */
export function requestCaller(): RequestCaller {
  return loadLowLevel().FuseLowLevel.context();
}

// ------------------------------------------------------------------ the session

/** One mount served through the low-level mode. */
export class LowLevelSession {
  private endedFlag = false;
  private readonly listeners: Array<(code: number) => void> = [];

  private constructor(
    readonly name: string,
    readonly mountpoint: string,
    /** What the kernel and libfuse agreed on at INIT. */
    readonly conn: ConnInfo,
    private readonly session: RawSession,
  ) {
    session.on('unmounted', (code) => {
      this.endedFlag = true;
      for (const l of this.listeners.splice(0)) l(code);
    });
  }

  /**
   * Mounts `handlers` at `mountpoint` (fuse_session_mount: mount(2) as root, fusermount3
   * otherwise); resolves once the kernel has sent INIT. Rejects with the reason when the
   * options are refused or the mount fails.
   */
  static async mount(mountpoint: string, handlers: LowLevelHandlers, options: LowLevelOptions): Promise<LowLevelSession> {
    const { FuseLowLevel } = loadLowLevel();
    const want: string[] = [];
    const unwant: string[] = [];
    (options.writebackCache ? want : unwant).push('WRITEBACK_CACHE');
    (options.atomicOTrunc === true ? want : unwant).push('ATOMIC_O_TRUNC');
    (options.handleKillpriv === true ? want : unwant).push('HANDLE_KILLPRIV');
    (options.splice === true ? want : unwant).push('SPLICE_WRITE', 'SPLICE_MOVE');
    if (options.readdirplus === 'always') unwant.push('READDIRPLUS_AUTO');
    let raw: RawSession | undefined; // handlers run only once mounted
    const side: BindingSide = {
      capabilities: (ino, none) => raw?.noSecurityCapability(ino, none),
      attrs: (ino, attr) => raw?.attrCachePut(ino, attr, options.attrTimeout),
    };
    const session = new FuseLowLevel(mountpoint, adapt(handlers, options, side), {
      options: options.mountOptions,
      debug: options.debug === true,
      want,
      unwant,
      maxWrite: options.maxWriteBytes ?? 1024 * 1024,
      maxReadahead: options.maxReadaheadBytes ?? 0,
      maxBackground: options.maxBackground ?? 0,
      congestionThreshold: options.congestionThreshold ?? 0,
      maxThreads: options.maxThreads ?? 0,
      maxIdleThreads: options.maxIdleThreads ?? 2,
      cloneFd: options.cloneFd === true,
      attrCache: options.attrCache === true,
    });
    raw = session;
    const conn = await new Promise<ConnInfo>((resolve, reject) => session.mount((err, c) => (err ? reject(err) : resolve(c))));
    log.info({ mount: options.name, mountpoint, conn }, 'mounted (libfuse3 low-level)');
    return new LowLevelSession(options.name, mountpoint, conn, session);
  }

  /** True once the kernel has ended the connection (unmounted by anyone, or detached and let go). */
  get ended(): boolean {
    return this.endedFlag;
  }

  /** Calls `listener` once, as soon as the session ends (at once if it has). */
  onUnmounted(listener: (code: number) => void): void {
    if (this.endedFlag) queueMicrotask(() => listener(0));
    else this.listeners.push(listener);
  }

  /** Resolves when the session has ended. */
  whenUnmounted(): Promise<void> {
    return new Promise((resolve) => this.onUnmounted(() => resolve()));
  }

  /**
   * Detaches the mount lazily (off this thread); resolves when the detach is done. The
   * session ends once the kernel lets go of it: at once, or when the last process using
   * the detached mount does. The busy-refusing unmount is kernel.ts's `unmountNow`.
   */
  unmount(): Promise<void> {
    return new Promise((resolve, reject) => this.session.unmount((err) => (err ? reject(err) : resolve())));
  }

  /** Drops the kernel's attributes of `ino` and its cached pages in [offsetBytes, +lengthBytes) (0: to the end; offsetBytes < 0: attributes only). */
  invalInode(ino: Ino, offsetBytes = 0, lengthBytes = 0): Promise<void> {
    return new Promise((resolve, reject) => this.session.notifyInvalInode(ino, offsetBytes, lengthBytes, (err) => (err ? reject(err) : resolve())));
  }

  /** Drops the kernel's entry parent/name (and the parent's attributes); the next use looks it up. */
  invalEntry(parent: Ino, name: ByteString): Promise<void> {
    return new Promise((resolve, reject) => this.session.notifyInvalEntry(parent, name, (err) => (err ? reject(err) : resolve())));
  }

  /** Like invalEntry, and tells inotify watchers that `name` (inode `child`) is gone. */
  notifyDelete(parent: Ino, child: Ino, name: ByteString): Promise<void> {
    return new Promise((resolve, reject) => this.session.notifyDelete(parent, child, name, (err) => (err ? reject(err) : resolve())));
  }

  /** Forgets which inodes have no security.capability (after thinfs changed xattrs behind the kernel: commit, import). */
  dropCapabilityCache(): void {
    this.session.noSecurityCapability();
  }

  /** The binding's counters (requests, batches, ...). */
  stats(): SessionStats {
    return this.session.stats();
  }

  // ---- the C hot path: READ of mapped blocks and WRITE into own blocks answered in the
  // libfuse workers from a block map (fuse-lowlevel-blockmap.c; fuse/blockmap.ts fills it)

  /**
   * Serve from the pool's data file `fd` (blocks of 2^blockShift bytes); in-place writes into
   * own blocks too when `writes`; read-only opens of files the map knows when `opens` (fh 0,
   * keep_cache: a READ with fh 0 that reaches JS reads by inode, a RELEASE of fh 0 never does).
   */
  blockMapConfigure(fd: number, blockShift: number, writes: boolean, opens: boolean): void {
    this.session.blockMapConfigure(fd, blockShift, writes, opens);
  }

  /** Blocks [firstBlock, firstBlock + entries.length) of `ino` (one chunk, BLOCK_MAP_CHUNK), and its size. */
  blockMapFill(ino: Ino, sizeBytes: number, firstBlock: number, entries: Float64Array): void {
    this.session.blockMapFill(ino, sizeBytes, firstBlock, entries, entries.length);
  }

  /** Forget `ino`'s blocks; no ino: everything. */
  blockMapDrop(ino?: Ino): void {
    this.session.blockMapDrop(ino);
  }

  /** Returns once every read and write the C side started before the call has finished (a short wait: one pread or pwrite). */
  blockMapQuiesce(): void {
    this.session.blockMapQuiesce();
  }

  blockMapStats(): BlockMapStats {
    return this.session.blockMapStats();
  }

  /** GETATTRs answered in C, replies kept, entries held (LowLevelOptions.attrCache). */
  attrCacheStats(): AttrCacheStats {
    return this.session.attrCacheStats();
  }
}

// ------------------------------------------------------------------ table -> binding handlers

const isPromise = <T>(v: Reply<T>): v is Promise<T> => typeof (v as { then?: unknown } | null)?.then === 'function';

const SECURITY_CAPABILITY = 'security.capability';
const ENODATA = osConstants.errno.ENODATA;

/**
 * The binding's handlers for a typed table: decode, one call, one reply (and the
 * lookup-count repairs). `capabilities(ino, none)` tells the binding whether ino is known
 * to have no security.capability.
 */
/** What the adapter tells the binding besides replies (once mounted). */
interface BindingSide {
  /** ino is known to have (none=false) or not have a security.capability xattr. */
  capabilities(ino: number, none: boolean): void;
  /** The attribute cache: ino's attributes now, after a reply that changed them dropped them. */
  attrs(ino: number, attr: LlAttr): void;
}

function adapt(h: LowLevelHandlers, opts: LowLevelOptions, side: BindingSide): Record<string, RawHandler> {
  const capabilities = side.capabilities;
  const { reply, FuseLowLevel } = loadLowLevel();
  const SET = FuseLowLevel.SET;
  const debug = log.isLevelEnabled('debug');
  const mount = opts.name;
  const onAnswer = opts.onAnswer;

  /** For log lines and error messages: '#ino' or '#parent/name' (a byte string). */
  const target = (ino: number, name?: ByteString): string => (name === undefined ? `#${ino}` : `#${ino}/${name}`);

  function finish(op: string, ino: number, name: ByteString | undefined, errno: number, t0: number): void {
    const ms = performance.now() - t0;
    onAnswer?.(op, ms, errno);
    if (ms > SLOW_OP_MS) log.warn({ op, target: target(ino, name), errno, ms: Math.round(ms), mount }, 'slow FUSE operation');
    else if (debug) log.debug({ op, target: target(ino, name), errno, ms: Number(ms.toFixed(3)), mount }, 'op');
  }

  /**
   * Runs one handler call and sends its answer with `send`; a throw or a rejection is
   * answered with its errno (`onError` may answer otherwise, e.g. a negative entry; `sync`
   * says the handler threw before returning).
   */
  function run<T>(
    op: string,
    req: ReqId,
    ino: number,
    name: ByteString | undefined,
    call: () => Reply<T>,
    send: (v: T) => void,
    onError?: (errno: number, sync: boolean) => boolean,
  ): void {
    const t0 = performance.now();
    const ok = (v: T): void => {
      try {
        send(v);
      } catch (err) {
        // A value the binding could not encode: it has answered EIO already.
        log.error({ op, target: target(ino, name), err, mount }, 'bad reply from a FUSE handler; answered EIO');
        finish(op, ino, name, EIO, t0);
        return;
      }
      finish(op, ino, name, 0, t0);
    };
    const bad = (err: unknown, sync = false): void => {
      const errno = -toErrno(err, op, target(ino, name));
      if (onError === undefined || !onError(errno, sync)) reply.err(req, errno);
      finish(op, ino, name, errno, t0);
    };
    let r: Reply<T>;
    try {
      r = call();
    } catch (err) {
      bad(err, true);
      return;
    }
    if (isPromise(r)) r.then(ok, (err: unknown) => bad(err));
    else ok(r);
  }

  const rawEntry = (e: LlEntry): RawEntry => ({
    ino: e.ino,
    generation: e.generation ?? 0,
    attr: e.attr,
    entryTimeout: e.entryTimeout ?? opts.entryTimeout,
    attrTimeout: e.attrTimeout ?? opts.attrTimeout,
  });

  /** Gives back the kernel's reference when it never got the entry. */
  const forgetUnsent = (sent: Sent, ino: number): void => {
    if (sent !== 0 && ino !== 0) h.forget(ino as Ino, 1);
  };

  const sendEntry = (req: ReqId) => (e: LlEntry) => forgetUnsent(reply.entry(req, rawEntry(e)), e.ino);
  const sendOk = (req: ReqId) => () => void reply.err(req, 0);
  /**
   * After a reply that changed directories `dirs` (and so dropped their cached attributes):
   * hand the binding their attributes now, so that the GETATTR the kernel sends for its
   * permission check at the next path walk through them is answered in C
   * (fuse-lowlevel-attrcache.c ac_put). Only with the attribute cache; a failure or an
   * asynchronous getattr hands nothing (the kernel asks JS, as before).
   */
  const refresh = (...dirs: number[]): void => {
    if (opts.attrCache !== true) return;
    for (const ino of dirs) {
      try {
        const a = h.getattr(ino as Ino, undefined);
        if (!isPromise(a)) side.attrs(ino, a);
      } catch {
        // nothing handed over
      }
    }
  };
  const thenRefresh =
    <T>(send: (v: T) => void, ...dirs: number[]) =>
    (v: T): void => {
      send(v);
      refresh(...dirs);
    };
  const openFlags = (o: LlOpen): RawOpenFlags => o;

  /** getxattr/listxattr: size 0 asks for the length; a smaller buffer is ERANGE. */
  const sendSized = (req: ReqId, size: number) => (bytes: Uint8Array) => {
    if (size === 0) reply.xattr(req, bytes.length);
    else if (bytes.length > size) reply.err(req, ERANGE);
    else reply.buf(req, bytes);
  };

  const timeSpec = (now: boolean, sec: number, nsec: number): Exclude<TimeSpec, 'omit'> =>
    now ? 'now' : BigInt(sec) * 1_000_000_000n + BigInt(nsec);

  type Ts = { sec: number; nsec: number };
  const setAttr = (a: { mode: number; uid: number; gid: number; size: number; atime: Ts; mtime: Ts; ctime: Ts }, toSet: number): LlSetAttr => {
    const s: LlSetAttr = {};
    if (toSet & SET.MODE) s.mode = a.mode;
    if (toSet & SET.UID) s.uid = a.uid;
    if (toSet & SET.GID) s.gid = a.gid;
    if (toSet & SET.SIZE) s.size = a.size;
    if (toSet & (SET.ATIME | SET.ATIME_NOW)) s.atime = timeSpec((toSet & SET.ATIME_NOW) !== 0, a.atime.sec, a.atime.nsec);
    if (toSet & (SET.MTIME | SET.MTIME_NOW)) s.mtime = timeSpec((toSet & SET.MTIME_NOW) !== 0, a.mtime.sec, a.mtime.nsec);
    if (toSet & SET.CTIME) s.ctime = BigInt(a.ctime.sec) * 1_000_000_000n + BigInt(a.ctime.nsec);
    if (toSet & SET.KILL_SUID) s.killSuid = true;
    if (toSet & SET.KILL_SGID) s.killSgid = true;
    return s;
  };

  const sendData = (req: ReqId) => (d: LlData) => {
    if (d instanceof Uint8Array) reply.buf(req, d);
    else if (Array.isArray(d)) reply.iov(req, d as readonly Uint8Array[]);
    else reply.data(req, (d as LlSegments).segments, (d as LlSegments).count);
  };

  const fhOf = (fh: number | null): Fh | undefined => (fh === null ? undefined : fh);
  const table: Record<string, RawHandler> = {
    lookup: (req: ReqId, parent: Ino, name: ByteString) =>
      run('lookup', req, parent, name, () => h.lookup(parent, name), sendEntry(req), (errno) => {
        if (errno !== ENOENT || opts.negativeTimeout <= 0) return false;
        reply.entry(req, { ino: 0, generation: 0, attr: undefined, entryTimeout: opts.negativeTimeout, attrTimeout: 0 });
        return true;
      }),
    forget: (ino: Ino, nlookup: number) => {
      capabilities(ino, false);
      try {
        h.forget(ino, nlookup);
      } catch (err) {
        toErrno(err, 'forget', target(ino)); // logged; FORGET has no reply
      }
    },
    getattr: (req: ReqId, ino: Ino, fh: number | null) =>
      run('getattr', req, ino, undefined, () => h.getattr(ino, fhOf(fh)), (a) => void reply.attr(req, a, opts.attrTimeout)),
  };
  const t = table;
  if (h.setattr) {
    const f = h.setattr;
    t.setattr = (req: ReqId, ino: Ino, a: Parameters<typeof setAttr>[0], toSet: number, fh: number | null) =>
      run('setattr', req, ino, undefined, () => f(ino, setAttr(a, toSet), fhOf(fh)), (r) => void reply.attr(req, r, opts.attrTimeout));
  }
  if (h.readlink) {
    const f = h.readlink;
    t.readlink = (req: ReqId, ino: Ino) => run('readlink', req, ino, undefined, () => f(ino), (target) => void reply.readlink(req, target));
  }
  if (h.mknod) {
    const f = h.mknod;
    t.mknod = (req: ReqId, parent: Ino, name: ByteString, mode: number, rdev: number, caller: RequestCaller) =>
      run('mknod', req, parent, name, () => f(parent, name, mode, rdev, caller), thenRefresh(sendEntry(req), parent));
  }
  if (h.mkdir) {
    const f = h.mkdir;
    t.mkdir = (req: ReqId, parent: Ino, name: ByteString, mode: number, caller: RequestCaller) =>
      run('mkdir', req, parent, name, () => f(parent, name, mode, caller), thenRefresh(sendEntry(req), parent));
  }
  if (h.unlink) {
    const f = h.unlink;
    t.unlink = (req: ReqId, parent: Ino, name: ByteString) => run('unlink', req, parent, name, () => f(parent, name), thenRefresh(sendOk(req), parent));
  }
  if (h.rmdir) {
    const f = h.rmdir;
    t.rmdir = (req: ReqId, parent: Ino, name: ByteString) => run('rmdir', req, parent, name, () => f(parent, name), thenRefresh(sendOk(req), parent));
  }
  if (h.symlink) {
    const f = h.symlink;
    t.symlink = (req: ReqId, targetName: ByteString, parent: Ino, name: ByteString, caller: RequestCaller) =>
      run('symlink', req, parent, name, () => f(targetName, parent, name, caller), thenRefresh(sendEntry(req), parent));
  }
  if (h.rename) {
    const f = h.rename;
    t.rename = (req: ReqId, parent: Ino, name: ByteString, newParent: Ino, newName: ByteString, flags: number) =>
      run('rename', req, parent, name, () => f(parent, name, newParent, newName, flags), thenRefresh(sendOk(req), parent, newParent));
  }
  if (h.link) {
    const f = h.link;
    t.link = (req: ReqId, ino: Ino, newParent: Ino, newName: ByteString) =>
      run('link', req, newParent, newName, () => f(ino, newParent, newName), thenRefresh(sendEntry(req), newParent));
  }
  if (h.open) {
    const f = h.open;
    const release = h.release;
    t.open = (req: ReqId, ino: Ino, flags: number) =>
      run('open', req, ino, undefined, () => f(ino, flags), (o) => {
        if (reply.open(req, o.fh, openFlags(o)) !== 0 && release) void Promise.resolve().then(() => release(ino, o.fh, flags)).catch(() => {});
      });
  }
  if (h.read) {
    const f = h.read;
    t.read = (req: ReqId, ino: Ino, size: number, offset: number, fh: Fh, _flags: number, miss: boolean) =>
      run('read', req, ino, undefined, () => f(ino, size, offset, fh, miss), sendData(req));
  }
  if (h.write) {
    const f = h.write;
    t.write = (req: ReqId, ino: Ino, data: Buffer, offset: number, fh: Fh, _flags: number, writepage: boolean, miss: boolean) =>
      run('write', req, ino, undefined, () => f(ino, data, offset, fh, writepage, miss), (n) => void reply.write(req, n));
  }
  if (h.flush) {
    const f = h.flush;
    t.flush = (req: ReqId, ino: Ino, fh: Fh) => run('flush', req, ino, undefined, () => f(ino, fh), sendOk(req));
  }
  if (h.release) {
    const f = h.release;
    t.release = (req: ReqId, ino: Ino, fh: Fh, flags: number) => run('release', req, ino, undefined, () => f(ino, fh, flags), sendOk(req));
  }
  if (h.fsync) {
    const f = h.fsync;
    t.fsync = (req: ReqId, ino: Ino, datasync: boolean, fh: Fh) => run('fsync', req, ino, undefined, () => f(ino, datasync, fh), sendOk(req));
  }
  if (h.opendir) {
    const f = h.opendir;
    const releasedir = h.releasedir;
    t.opendir = (req: ReqId, ino: Ino, flags: number) =>
      run('opendir', req, ino, undefined, () => f(ino, flags), (o) => {
        if (reply.open(req, o.fh, openFlags(o)) !== 0 && releasedir) void Promise.resolve().then(() => releasedir(ino, o.fh)).catch(() => {});
      });
  }
  if (h.readdir) {
    const f = h.readdir;
    t.readdir = (req: ReqId, ino: Ino, size: number, offset: number, fh: Fh) =>
      run('readdir', req, ino, undefined, () => f(ino, offset, size, fh), (entries) => {
        reply.readdir(req, entries.map((e) => ({ name: e.name, ino: e.ino, mode: e.type, offset: e.offset })));
      });
  }
  if (h.readdirplus) {
    const f = h.readdirplus;
    t.readdirplus = (req: ReqId, ino: Ino, size: number, offset: number, fh: Fh) =>
      run('readdirplus', req, ino, undefined, () => f(ino, offset, size, fh), (entries) => {
        const sent = reply.readdirplus(req, entries.map((e) => ({ name: e.name, entry: rawEntry(e.entry), offset: e.offset })));
        const kept = typeof sent === 'number' && sent > 0 ? sent : 0;
        for (let i = kept; i < entries.length; i++) {
          const e = entries[i]!;
          if (e.name !== '.' && e.name !== '..' && e.entry.ino !== 0) h.forget(e.entry.ino, 1);
        }
      });
  }
  if (h.releasedir) {
    const f = h.releasedir;
    t.releasedir = (req: ReqId, ino: Ino, fh: Fh) => run('releasedir', req, ino, undefined, () => f(ino, fh), sendOk(req));
  }
  if (h.fsyncdir) {
    const f = h.fsyncdir;
    t.fsyncdir = (req: ReqId, ino: Ino, datasync: boolean, fh: Fh) => run('fsyncdir', req, ino, undefined, () => f(ino, datasync, fh), sendOk(req));
  }
  if (h.statfs) {
    const f = h.statfs;
    t.statfs = (req: ReqId, ino: Ino) => run('statfs', req, ino, undefined, () => f(ino), (s) => void reply.statfs(req, s));
  }
  if (h.setxattr) {
    const f = h.setxattr;
    t.setxattr = (req: ReqId, ino: Ino, name: ByteString, value: Buffer, flags: number) => {
      if (name === SECURITY_CAPABILITY) capabilities(ino, false);
      run('setxattr', req, ino, name, () => f(ino, name, value, flags), sendOk(req));
    };
  }
  if (h.getxattr) {
    const f = h.getxattr;
    t.getxattr = (req: ReqId, ino: Ino, name: ByteString, size: number) =>
      run('getxattr', req, ino, name, () => f(ino, name), sendSized(req, size), (errno, sync) => {
        // Only a synchronous answer: an async one may predate a setxattr handled meanwhile.
        if (errno === ENODATA && sync && name === SECURITY_CAPABILITY) capabilities(ino, true);
        return false;
      });
  }
  if (h.listxattr) {
    const f = h.listxattr;
    t.listxattr = (req: ReqId, ino: Ino, size: number) =>
      run('listxattr', req, ino, undefined, () => f(ino), (names) => {
        // NUL-terminated names, as raw bytes.
        sendSized(req, size)(Buffer.from(names.map((n) => `${n}\0`).join(''), 'latin1'));
      });
  }
  if (h.removexattr) {
    const f = h.removexattr;
    t.removexattr = (req: ReqId, ino: Ino, name: ByteString) => {
      if (name === SECURITY_CAPABILITY) capabilities(ino, false);
      run('removexattr', req, ino, name, () => f(ino, name), sendOk(req));
    };
  }
  if (h.access) {
    const f = h.access;
    t.access = (req: ReqId, ino: Ino, mask: number) => {
      const caller = FuseLowLevel.context();
      run('access', req, ino, undefined, () => f(ino, mask, caller), sendOk(req));
    };
  }
  if (h.create) {
    const f = h.create;
    const release = h.release;
    t.create = (req: ReqId, parent: Ino, name: ByteString, mode: number, flags: number, caller: RequestCaller) =>
      run('create', req, parent, name, () => f(parent, name, mode, flags, caller), (c) => {
        const sent = reply.create(req, rawEntry(c.entry), c.open.fh, openFlags(c.open));
        refresh(parent);
        if (sent === 0) return;
        forgetUnsent(sent, c.entry.ino);
        if (release) void Promise.resolve().then(() => release(c.entry.ino, c.open.fh, flags)).catch(() => {});
      });
  }
  if (h.fallocate) {
    const f = h.fallocate;
    t.fallocate = (req: ReqId, ino: Ino, mode: number, offset: number, length: number, fh: Fh) =>
      run('fallocate', req, ino, undefined, () => f(ino, mode, offset, length, fh), sendOk(req));
  }
  if (h.lseek) {
    const f = h.lseek;
    t.lseek = (req: ReqId, ino: Ino, offset: number, whence: number, fh: Fh) =>
      run('lseek', req, ino, undefined, () => f(ino, offset, whence, fh), (off) => void reply.lseek(req, off));
  }
  return table;
}
