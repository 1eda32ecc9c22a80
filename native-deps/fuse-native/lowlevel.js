'use strict'
// thinfs: fuse-native's libfuse3 low-level (inode-based) mode.
//
// Copied into node_modules/fuse-native by native-deps/build.cjs; the binding is
// build/Release/fuse_lowlevel.node (fuse-lowlevel*.c, linked against the system
// libfuse3). Threads, batching and why notifications never run on this thread: see the
// top of fuse-lowlevel.c.
//
//   const { FuseLowLevel, reply } = require('fuse-native/lowlevel')
//   const ll = new FuseLowLevel('/mnt', {
//     lookup (req, parent, name) { reply.entry(req, { ino, generation, attr, entryTimeout, attrTimeout }) },
//     getattr (req, ino, fh) { reply.attr(req, attr, timeout) },
//     forget (ino, nlookup) {},
//     ...
//   }, { options: ['fsname=x', 'allow_other'], want: ['WRITEBACK_CACHE'] })
//   ll.mount((err, conn) => ...); ll.on('unmounted', () => ...)
//
// Every handler gets a request id first (except forget) and answers it exactly once,
// now or later, with one reply.* call (reply.err for a failure). Numbers (inodes, file
// handles, offsets) are JS numbers. Names are bytes: each name argument is a latin1
// string (one char per byte) and names handed back (readdir, readlink, notify) are
// written as those raw bytes. Handler signatures:
//
//   lookup(req, parent, name)                    -> reply.entry (ino 0: negative entry)
//   forget(ino, nlookup)                         (no reply)
//   getattr(req, ino, fh|null)                   -> reply.attr
//   setattr(req, ino, attr, toSet, fh|null)      -> reply.attr; toSet: FuseLowLevel.SET bits,
//                                                   attr: { mode, uid, gid, size, atime, mtime, ctime: { sec, nsec } }
//   readlink(req, ino)                           -> reply.readlink
//   mknod(req, parent, name, mode, rdev, caller) -> reply.entry
//   mkdir(req, parent, name, mode, caller)       -> reply.entry
//   unlink(req, parent, name), rmdir(...)        -> reply.err(req, 0)
//   symlink(req, target, parent, name, caller)   -> reply.entry
//   rename(req, parent, name, newParent, newName, flags) -> reply.err(req, 0)
//   link(req, ino, newParent, newName)           -> reply.entry
//   open(req, ino, flags), opendir(...)          -> reply.open(req, fh, openFlags)
//   read(req, ino, size, offset, fh, flags, miss) -> reply.buf / reply.iov / reply.data
//   write(req, ino, buf, offset, fh, flags, writepage, miss) -> reply.write (buf is valid until the reply)
//     (miss: the block map lacks these blocks — see blockMapFill — when one is configured)
//   flush(req, ino, fh), releasedir(req, ino, fh)          -> reply.err(req, 0)
//   release(req, ino, fh, flags, flush)                   -> reply.err(req, 0)
//   fsync(req, ino, datasync, fh), fsyncdir(...)          -> reply.err(req, 0)
//   readdir(req, ino, size, offset, fh)          -> reply.readdir
//   readdirplus(req, ino, size, offset, fh)      -> reply.readdirplus
//   statfs(req, ino)                             -> reply.statfs
//   setxattr(req, ino, name, value, flags)       -> reply.err(req, 0)
//   getxattr(req, ino, name, size), listxattr(req, ino, size) -> reply.buf, or reply.xattr(req, n) when size is 0
//   removexattr(req, ino, name)                  -> reply.err(req, 0)
//   access(req, ino, mask)                       -> reply.err(req, 0)
//   create(req, parent, name, mode, flags, caller) -> reply.create
//   fallocate(req, ino, mode, offset, length, fh)  -> reply.err(req, 0)
//   lseek(req, ino, offset, whence, fh)          -> reply.lseek
//
// caller: { uid, gid, pid, umask } of the process that made the request
// (FuseLowLevel.context() gives the same during the synchronous part of any handler).

const { EventEmitter } = require('events')
const path = require('path')

const binding = require(path.join(__dirname, 'build', 'Release', 'fuse_lowlevel.node'))

const A = binding.args
const OPS = binding.ops
const EV = binding.events
const L = binding.layout
const { A_INO, A_INO2, A_FH, A_OFF, A_SIZE, A_U1, A_U2, A_U3, A_UID, A_GID, A_PID, A_UMASK, A_ATTR } = L

function caller () {
  return { uid: A[A_UID], gid: A[A_GID], pid: A[A_PID], umask: A[A_UMASK] }
}

function fh () {
  return A[A_U3] ? A[A_FH] : null
}

// Request decoders, by operation code: (handlers, id, name, name2, buf) -> handler call.
const DECODE = []
DECODE[OPS.lookup] = (h, id, name) => h.lookup(id, A[A_INO], name)
DECODE[OPS.forget] = (h) => h.forget(A[A_INO], A[A_U1])
DECODE[OPS.getattr] = (h, id) => h.getattr(id, A[A_INO], fh())
DECODE[OPS.setattr] = (h, id) => h.setattr(id, A[A_INO], {
  mode: A[A_ATTR + 1],
  uid: A[A_ATTR + 3],
  gid: A[A_ATTR + 4],
  size: A[A_ATTR + 6],
  atime: { sec: A[A_ATTR + 9], nsec: A[A_ATTR + 10] },
  mtime: { sec: A[A_ATTR + 11], nsec: A[A_ATTR + 12] },
  ctime: { sec: A[A_ATTR + 13], nsec: A[A_ATTR + 14] }
}, A[A_U1], fh())
DECODE[OPS.readlink] = (h, id) => h.readlink(id, A[A_INO])
DECODE[OPS.mknod] = (h, id, name) => h.mknod(id, A[A_INO], name, A[A_U1], A[A_U2], caller())
DECODE[OPS.mkdir] = (h, id, name) => h.mkdir(id, A[A_INO], name, A[A_U1], caller())
DECODE[OPS.unlink] = (h, id, name) => h.unlink(id, A[A_INO], name)
DECODE[OPS.rmdir] = (h, id, name) => h.rmdir(id, A[A_INO], name)
DECODE[OPS.symlink] = (h, id, name, target) => h.symlink(id, target, A[A_INO], name, caller())
DECODE[OPS.rename] = (h, id, name, newName) => h.rename(id, A[A_INO], name, A[A_INO2], newName, A[A_U2])
DECODE[OPS.link] = (h, id, newName) => h.link(id, A[A_INO], A[A_INO2], newName)
DECODE[OPS.open] = (h, id) => h.open(id, A[A_INO], A[A_U1])
DECODE[OPS.read] = (h, id) => h.read(id, A[A_INO], A[A_SIZE], A[A_OFF], A[A_FH], A[A_U1], A[A_U2] !== 0)
DECODE[OPS.write] = (h, id, n1, n2, buf) => h.write(id, A[A_INO], buf, A[A_OFF], A[A_FH], A[A_U1], A[A_U3] !== 0, A[A_U2] !== 0)
DECODE[OPS.flush] = (h, id) => h.flush(id, A[A_INO], A[A_FH])
DECODE[OPS.release] = (h, id) => h.release(id, A[A_INO], A[A_FH], A[A_U2], A[A_U3] !== 0)
DECODE[OPS.fsync] = (h, id) => h.fsync(id, A[A_INO], A[A_U1] !== 0, A[A_FH])
DECODE[OPS.opendir] = (h, id) => h.opendir(id, A[A_INO], A[A_U1])
DECODE[OPS.readdir] = (h, id) => h.readdir(id, A[A_INO], A[A_SIZE], A[A_OFF], A[A_FH])
DECODE[OPS.readdirplus] = (h, id) => h.readdirplus(id, A[A_INO], A[A_SIZE], A[A_OFF], A[A_FH])
DECODE[OPS.releasedir] = (h, id) => h.releasedir(id, A[A_INO], A[A_FH])
DECODE[OPS.fsyncdir] = (h, id) => h.fsyncdir(id, A[A_INO], A[A_U1] !== 0, A[A_FH])
DECODE[OPS.statfs] = (h, id) => h.statfs(id, A[A_INO])
DECODE[OPS.setxattr] = (h, id, name, n2, value) => h.setxattr(id, A[A_INO], name, value, A[A_U1])
DECODE[OPS.getxattr] = (h, id, name) => h.getxattr(id, A[A_INO], name, A[A_SIZE])
DECODE[OPS.listxattr] = (h, id) => h.listxattr(id, A[A_INO], A[A_SIZE])
DECODE[OPS.removexattr] = (h, id, name) => h.removexattr(id, A[A_INO], name)
DECODE[OPS.access] = (h, id) => h.access(id, A[A_INO], A[A_U1])
DECODE[OPS.create] = (h, id, name) => h.create(id, A[A_INO], name, A[A_U1], A[A_U2], caller())
DECODE[OPS.fallocate] = (h, id) => h.fallocate(id, A[A_INO], A[A_U2], A[A_OFF], A[A_SIZE], A[A_FH])
DECODE[OPS.lseek] = (h, id) => h.lseek(id, A[A_INO], A[A_OFF], A[A_U1], A[A_FH])

// ---- replies ----

const ST_LEN = L.ST_LEN
const E_LEN = L.E_LEN
const STAT = new Float64Array(ST_LEN)
const ENTRY = new Float64Array(E_LEN)
const STATFS = new Float64Array(11)
const NS = 1000000000n

// Writes seconds and nanoseconds of a time: bigint ns (`ns`), else a Date or ms number (`t`).
function putTime (f, o, ns, t) {
  if (typeof ns === 'bigint') {
    let sec = ns / NS
    let nsec = ns % NS
    if (nsec < 0n) { sec -= 1n; nsec += NS }
    f[o] = Number(sec)
    f[o + 1] = Number(nsec)
    return
  }
  const ms = t instanceof Date ? t.getTime() : (typeof t === 'number' ? t : 0)
  const sec = Math.floor(ms / 1000)
  f[o] = sec
  f[o + 1] = Math.round((ms - sec * 1000) * 1e6)
}

// A stat into f at o: { ino, mode, nlink, uid, gid, rdev, size, blksize, blocks } and
// times as atimeNs/mtimeNs/ctimeNs (bigint ns) or atime/mtime/ctime (Date or ms).
function putStat (f, o, st) {
  if (st === undefined || st === null) {
    f.fill(0, o, o + ST_LEN)
    return
  }
  f[o] = st.ino || 0
  f[o + 1] = st.mode || 0
  f[o + 2] = st.nlink || 0
  f[o + 3] = st.uid || 0
  f[o + 4] = st.gid || 0
  f[o + 5] = st.rdev || 0
  f[o + 6] = st.size || 0
  f[o + 7] = st.blksize || 0
  f[o + 8] = st.blocks || 0
  putTime(f, o + 9, st.atimeNs, st.atime)
  putTime(f, o + 11, st.mtimeNs, st.mtime)
  putTime(f, o + 13, st.ctimeNs, st.ctime)
}

// { ino (the nodeid; 0 = negative entry), generation, attr, entryTimeout, attrTimeout }
function putEntry (f, o, e) {
  f[o] = e.ino || 0
  f[o + 1] = e.generation || 0
  f[o + 2] = e.entryTimeout || 0
  f[o + 3] = e.attrTimeout || 0
  putStat(f, o + 4, e.attr)
}

function openFlags (o) {
  if (typeof o === 'number') return o
  if (!o) return 0
  return (o.directIo ? L.OF_DIRECT_IO : 0) |
    (o.keepCache ? L.OF_KEEP_CACHE : 0) |
    (o.nonseekable ? L.OF_NONSEEKABLE : 0) |
    (o.cacheReaddir ? L.OF_CACHE_READDIR : 0) |
    (o.noflush ? L.OF_NOFLUSH : 0)
}

function isDots (name) {
  return name === '.' || name === '..'
}

// Each reply returns 0 (sent), a negative errno (libfuse could not send it: the kernel
// never saw it, e.g. -ENOENT for an interrupted request), or false (no such request:
// answered already, or its session ended). readdir/readdirplus return how many entries
// were sent instead of 0.
const reply = {
  err (req, errno) { return binding.reply_err(req, errno < 0 ? -errno : errno) },
  ok (req) { return binding.reply_err(req, 0) },
  entry (req, e) {
    putEntry(ENTRY, 0, e)
    return binding.reply_entry(req, ENTRY)
  },
  create (req, e, fh, flags) {
    putEntry(ENTRY, 0, e)
    return binding.reply_create(req, ENTRY, fh, openFlags(flags))
  },
  attr (req, attr, timeout) {
    putStat(STAT, 0, attr)
    return binding.reply_attr(req, STAT, timeout || 0)
  },
  readlink (req, target) { return binding.reply_readlink(req, target) },
  open (req, fh, flags) { return binding.reply_open(req, fh || 0, openFlags(flags)) },
  write (req, count) { return binding.reply_write(req, count) },
  buf (req, buf, length) { return binding.reply_buf(req, buf, length) },
  iov (req, bufs) { return binding.reply_iov(req, bufs) },
  // segments: Float64Array of [fd, position, length] triples (fd -1: zeros), count of triples
  data (req, segments, count) { return binding.reply_data(req, segments, count === undefined ? segments.length / 3 : count) },
  statfs (req, s) {
    STATFS[0] = s.bsize || 0
    STATFS[1] = s.frsize || 0
    STATFS[2] = s.blocks || 0
    STATFS[3] = s.bfree || 0
    STATFS[4] = s.bavail || 0
    STATFS[5] = s.files || 0
    STATFS[6] = s.ffree || 0
    STATFS[7] = s.favail || 0
    STATFS[8] = s.fsid || 0
    STATFS[9] = s.flag || 0
    STATFS[10] = s.namemax || 0
    return binding.reply_statfs(req, STATFS)
  },
  xattr (req, size) { return binding.reply_xattr(req, size) },
  lseek (req, offset) { return binding.reply_lseek(req, offset) },
  // entries: [{ name, ino, mode (type bits), offset (the cookie of the NEXT entry) }]
  readdir (req, entries) {
    const names = new Array(entries.length)
    const f = new Float64Array(entries.length * 3)
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]
      names[i] = e.name
      f[3 * i] = e.ino || 0
      f[3 * i + 1] = e.mode || 0
      f[3 * i + 2] = e.offset
    }
    return binding.reply_readdir(req, names, f, false)
  },
  // entries: [{ name, entry: { ino, generation, attr, entryTimeout, attrTimeout }, offset }].
  // Every entry sent, except . and .. (whose nodeid is sent as 0), is one lookup of its
  // inode: count it, and forget the entries past the returned count yourself.
  readdirplus (req, entries) {
    const stride = E_LEN + 1
    const names = new Array(entries.length)
    const f = new Float64Array(entries.length * stride)
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]
      names[i] = e.name
      putEntry(f, i * stride, e.entry)
      if (isDots(e.name)) f[i * stride] = 0
      f[i * stride + E_LEN] = e.offset
    }
    return binding.reply_readdir(req, names, f, true)
  }
}

// ---- sessions ----

function errnoError (errno, what) {
  const name = Object.keys(require('os').constants.errno).find((k) => require('os').constants.errno[k] === -errno) || 'EIO'
  const err = new Error(`${name}: ${what}`)
  err.errno = errno
  err.code = name
  return err
}

class FuseLowLevel extends EventEmitter {
  /**
   * mnt: the mountpoint; handlers: { lookup, getattr, ... } (lookup and getattr required);
   * opts: { options: string[] (mount -o options: 'allow_other', 'fsname=x', ...), debug,
   * want / unwant: capability names (FuseLowLevel.CAPS keys) to ask for or turn off,
   * maxWrite, maxReadahead, maxBackground, congestionThreshold, maxThreads,
   * maxIdleThreads (-1: keep idle workers), cloneFd }.
   */
  constructor (mnt, handlers, opts = {}) {
    super()
    this.mnt = path.resolve(mnt)
    this.opts = opts
    this.conn = null
    this.mounted = false
    this.ended = false
    this._handlers = handlers
    this._session = null
    this._mountCb = null
    this._unmountCbs = []
    this._notifyCbs = new Map()
    this._token = 0
  }

  /** Mounts; cb(err, conn) once the kernel has sent INIT (conn: what was negotiated). */
  mount (cb) {
    if (this._session !== null) return process.nextTick(cb, new Error('already mounted'))
    const h = this._handlers
    const ops = Object.keys(OPS).filter((name) => typeof h[name] === 'function').map((name) => OPS[name])
    const args = []
    const o = this.opts.options || []
    if (o.length > 0) args.push('-o', o.join(','))
    if (this.opts.debug) args.push('-d')
    const caps = (names) => (names || []).reduce((bits, n) => {
      if (!(n in binding.caps)) throw new TypeError(`unknown FUSE capability ${n}`)
      return bits + (binding.caps[n] >>> 0)
    }, 0)
    const config = {
      ops,
      want: caps(this.opts.want),
      unwant: caps(this.opts.unwant),
      maxWrite: this.opts.maxWrite || 0,
      maxReadahead: this.opts.maxReadahead || 0,
      maxBackground: this.opts.maxBackground || 0,
      congestionThreshold: this.opts.congestionThreshold || 0,
      maxThreads: this.opts.maxThreads || 0,
      maxIdleThreads: this.opts.maxIdleThreads === undefined ? -1 : this.opts.maxIdleThreads,
      cloneFd: this.opts.cloneFd ? 1 : 0
    }
    try {
      this._session = binding.mount(this.mnt, args, config, dispatch, this)
      // Before JS answers anything: every reply from here on can fill it.
      if (this.opts.attrCache) binding.ac_configure(this._session)
    } catch (err) {
      return process.nextTick(cb, err)
    }
    this._mountCb = cb
  }

  /**
   * Lazy detach (umount2 MNT_DETACH as root, fusermount3 -u -z otherwise), off the JS
   * thread. cb(err) when the detach is done; 'unmounted' follows once the kernel has let
   * go of the connection (at once, unless a process still uses the detached mount).
   */
  unmount (cb = () => {}) {
    if (this._session === null || this.ended) return process.nextTick(cb, null)
    this._unmountCbs.push(cb)
    if (this._unmountCbs.length > 1) return
    if (!binding.unmount(this._session)) {
      const cbs = this._unmountCbs.splice(0)
      for (const c of cbs) process.nextTick(c, null)
    }
  }

  /** Drops the kernel's cached attributes of ino and its pages in [offset, offset+length) (length 0: all; offset < 0: attributes only). */
  notifyInvalInode (ino, offset, length, cb) { this._notify(1, ino, offset, length, undefined, cb) }
  /** Drops the kernel's cached entry parent/name (and the parent's attributes). */
  notifyInvalEntry (parent, name, cb) { this._notify(2, parent, 0, 0, name, cb) }
  /** Like notifyInvalEntry, and tells inotify watchers that name (inode child) is gone. */
  notifyDelete (parent, child, name, cb) { this._notify(3, parent, child, 0, name, cb) }

  _notify (kind, ino, b, len, name, cb = () => {}) {
    if (this._session === null) return process.nextTick(cb, errnoError(-107, 'not mounted'))
    const token = ++this._token
    const res = binding.notify(this._session, kind, token, ino, b, len, name)
    if (res < 0) return process.nextTick(cb, errnoError(res, 'notify'))
    this._notifyCbs.set(token, cb)
  }

  /**
   * Tells the C side that ino has no security.capability xattr (none = true), so the
   * GETXATTR the kernel sends before every write(2) is answered without JS; false when it
   * may have one (call before a setxattr/removexattr of it takes effect); no ino: forget all.
   */
  noSecurityCapability (ino, none) {
    if (this._session === null || this.ended) return
    if (ino === undefined) binding.nocap(this._session)
    else binding.nocap(this._session, ino, none !== false)
  }

  // ---- the C hot path (fuse-lowlevel-blockmap.c): READ/WRITE served in the workers ----

  /**
   * Serve reads of mapped blocks from data file `fd` (dup'ed), writes into own blocks when
   * `writes`, read-only opens of known files when `opens` (fh 0, keep_cache; a read with fh 0
   * that reaches JS reads by inode); blocks are 2^blockShift bytes.
   */
  blockMapConfigure (fd, blockShift, writes, opens) {
    if (this._session === null || this.ended) return false
    return binding.bm_configure(this._session, fd, blockShift, writes === true, opens === true)
  }

  /** Entries (Float64Array: pool block * 2 + own, -1 zeros, -2 JS) of blocks [firstBlock, firstBlock + count) of ino, one chunk of 256 blocks; size: the file's. */
  blockMapFill (ino, size, firstBlock, entries, count) {
    if (this._session === null || this.ended) return false
    return binding.bm_fill(this._session, ino, size, firstBlock, entries, count === undefined ? entries.length : count)
  }

  /** Forget ino's blocks (no ino: everything). */
  blockMapDrop (ino) {
    if (this._session === null || this.ended) return false
    return ino === undefined ? binding.bm_drop(this._session) : binding.bm_drop(this._session, ino)
  }

  /** Returns once every read and write the C side started before the call has finished. */
  blockMapQuiesce () {
    if (this._session === null || this.ended) return false
    return binding.bm_quiesce(this._session)
  }

  /** { reads, readBytes, readErrors, writes, writeBytes, writeErrors, fills, drops, quiesceWaits, bytesHeld, opens } of the C side. */
  blockMapStats () {
    const v = this._session === null ? new Array(11).fill(0) : binding.bm_stats(this._session)
    const [reads, readBytes, readErrors, writes, writeBytes, writeErrors, fills, drops, quiesceWaits, bytesHeld, opens] = v
    return { reads, readBytes, readErrors, writes, writeBytes, writeErrors, fills, drops, quiesceWaits, bytesHeld, opens }
  }

  /** The attribute cache (opts.attrCache): ino's attributes as they are now, after a change the reply dropped them for. */
  attrCachePut (ino, attr, timeout) {
    if (this._session === null || this.ended) return
    putStat(STAT, 0, attr)
    binding.ac_put(this._session, ino, STAT, timeout)
  }

  /** { hits, fills, entries } of the attribute cache (fuse-lowlevel-attrcache.c): GETATTRs answered in C, replies kept, entries held. */
  attrCacheStats () {
    if (this._session === null) return { hits: 0, fills: 0, entries: 0 }
    const [hits, fills, entries] = binding.ac_stats(this._session)
    return { hits, fills, entries }
  }

  /** { requests, batches, maxBatch, outstanding, nocapHits }: requests dispatched to JS, the wake-ups that carried them, the largest batch, requests not yet answered, getxattr answered in C. */
  stats () {
    if (this._session === null) return { requests: 0, batches: 0, maxBatch: 0, outstanding: 0, nocapHits: 0 }
    const [requests, batches, maxBatch, outstanding, nocapHits] = binding.stats(this._session)
    return { requests, batches, maxBatch, outstanding, nocapHits }
  }

  _event (kind, message) {
    if (kind === EV.INIT) {
      this.mounted = true
      this.conn = {
        protoMajor: A[0],
        protoMinor: A[1],
        capable: A[2],
        want: A[3],
        maxWrite: A[4],
        maxReadahead: A[5],
        maxBackground: A[6],
        congestionThreshold: A[7],
        timeGran: A[8],
        maxRead: A[9]
      }
      const cb = this._mountCb
      this._mountCb = null
      if (cb) cb(null, this.conn)
    } else if (kind === EV.NOTIFY_DONE) {
      const cb = this._notifyCbs.get(A[0])
      this._notifyCbs.delete(A[0])
      const res = A[1]
      if (cb) cb(res < 0 ? errnoError(res, 'notify') : null)
    } else if (kind === EV.UNMOUNT_DONE) {
      const res = A[0]
      const cbs = this._unmountCbs.splice(0)
      const err = res < 0 ? errnoError(res, `cannot unmount ${this.mnt}`) : null
      for (const c of cbs) c(err)
    } else if (kind === EV.MOUNT_FAILED || kind === EV.ENDED) {
      const wasMounted = this.mounted
      const code = kind === EV.ENDED ? A[0] : -5
      this.ended = true
      this.mounted = false
      const cb = this._mountCb
      this._mountCb = null
      if (cb) {
        const why = kind === EV.MOUNT_FAILED ? message : `the session ended before INIT (${code})`
        const err = new Error(`cannot mount ${this.mnt}: ${why}`)
        err.code = 'EIO'
        cb(err)
      }
      for (const c of this._unmountCbs.splice(0)) c(null)
      if (wasMounted) this.emit('unmounted', code)
    }
  }
}

// Called by the binding for every request and event, with this = the FuseLowLevel.
function dispatch (kind, id, name, name2, buf) {
  const decode = DECODE[kind]
  if (decode !== undefined) return decode(this._handlers, id, name, name2, buf)
  return this._event(kind, name)
}

FuseLowLevel.context = caller
FuseLowLevel.OPS = OPS
FuseLowLevel.CAPS = binding.caps
FuseLowLevel.SET = binding.setattr
FuseLowLevel.FUSE_VERSION = binding.FUSE_VERSION
FuseLowLevel.reply = reply

module.exports = { FuseLowLevel, reply, context: caller, binding }
