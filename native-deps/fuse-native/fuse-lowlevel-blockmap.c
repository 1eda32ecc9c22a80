/*
 * fuse-lowlevel-blockmap.c — the C hot path of fuse-native's low-level mode (thinfs):
 * READ of mapped blocks and WRITE into blocks the top layer owns, served in the libfuse
 * worker thread that received the request, from a block map JS fills. No JS, no thread
 * hop: a read is a lookup here and a pread of the pool's data file (by libfuse, into the
 * reply), a write is a lookup and a pwrite. Everything else — and every block this map
 * does not know — goes to JS as before.
 *
 * Why: with every READ and WRITE on the one JS thread, cold sequential reads ran at
 * 0.37-0.50x fuse-overlayfs (one pread at a time, while the kernel's readahead had several
 * requests in flight) and 4 KiB random writes at 0.66x (issue 8's benchmark).
 *
 * The map, per session: inode -> { size, chunks of 256 block entries }. An entry is
 *     >= 0        (pool block << 1) | own: the block's bytes are at pool block * block size
 *                 of the data file; `own` = the device's top layer maps it, so a write may
 *                 go there in place (never set on a read-only view, or when the pool takes
 *                 no writes: fail mode)
 *     BM_ZERO     nothing maps the block (or a hiding row): it reads as zeros
 *     BM_JS       JS must answer (an inline block: its bytes are in the metadata)
 * A request is served here only when every block it touches is known: a read up to the
 * inode's size (EOF replies short, as JS does), a write only inside the size and only into
 * own pool blocks. A write that extends a file, fills a hole, copies a lower block or
 * touches an inline block goes to JS, which changes the mappings.
 *
 * Who changes the map (all on the JS thread; the workers only read it, under `lock`):
 *  - fill(ino, size, first block, entries): after JS served a request the map did not
 *    know (the worker says so: a "miss" flag on the request).
 *  - drop(ino) before JS changes an inode's blocks or size (write, truncate, free),
 *    drop() of everything when the metadata is reloaded (a rolled-back operation or
 *    transaction, fail mode) or a device's layers change (a snapshot of a mounted
 *    container: its own blocks become an image's).
 *  - quiesce(): waits until every read and write that looked the map up before now has
 *    finished. JS calls it before a freed block can be punched or handed out again (after
 *    the commit that frees it; before an aborted transaction's blocks are punched) and
 *    after a layer change: a worker that found a block just before it was dropped may
 *    still be reading or writing it, and must be done before the block holds anything
 *    else. That is the epoch: lookups count themselves in active[epoch & 1]; quiesce
 *    flips the epoch and waits for the old slot to drain (a short wait: one pread or
 *    pwrite). Blocks freed in a transaction are never reused inside it (pool
 *    spacemap.ts), so between a drop and the next commit a stale lookup still reads the
 *    bytes it would have read before.
 *
 * Failure contract: a read whose pread fails is answered with its errno (libfuse's
 * fuse_reply_data); nothing changed. A write whose pwrite fails is answered with its
 * errno; the own blocks it wrote in place hold what a crash during that write would leave
 * (crash rule 6 of the pool: own blocks are overwritten in place, as dm-thin does); no
 * metadata changed. Durability: the bytes are in the data file's page cache; JS's fsync
 * handler fdatasyncs the data file when this side wrote since (the write counter).
 *
 * Memory: at most BM_MAX_BYTES (4 MiB: ~500k block entries, 32 GiB of 64 KiB blocks, or
 * ~60k small files) of map per session, so 50 mounted containers stay within the daemon's
 * RSS budget; past that everything is dropped and refilled on demand (one resolve per
 * 16 MiB of file).
 */
#include "fuse-lowlevel.h"

#define BM_CHUNK_SHIFT 8
#define BM_CHUNK_BLOCKS (1u << BM_CHUNK_SHIFT)
#define BM_ZERO (-1)
#define BM_JS (-2)
#define BM_BUCKETS 4096
#define BM_MAX_BYTES (4u * 1024 * 1024)
/* Blocks one request may touch here (1 MiB requests of 64 KiB blocks touch 17). */
#define BM_MAX_SEGS 64
#define BM_ZEROS_LEN (1024 * 1024)

typedef struct bm_chunk {
  uint32_t count;          /* entries; blocks past them read as zeros (past the size at fill time) */
  int64_t e[];
} bm_chunk_t;

typedef struct bm_inode {
  struct bm_inode *next;   /* hash chain */
  uint64_t ino;
  uint64_t size;
  size_t nchunks;
  bm_chunk_t **chunks;     /* NULL: not filled */
} bm_inode_t;

struct ll_blockmap {
  pthread_mutex_t lock;
  pthread_cond_t drained;
  int fd;                  /* our dup of the pool's data file */
  unsigned shift;          /* log2 of the block size */
  int writes;              /* writes may be served here */
  int opens;               /* read-only opens of known files answered here (fh 0, keep_cache) */
  bm_inode_t *buckets[BM_BUCKETS];
  size_t bytes;            /* held by the map */
  uint64_t epoch;
  uint64_t active[2];
  int waiters;
  /* counters (under lock) */
  uint64_t reads, read_bytes, writes_n, write_bytes, write_errors, read_errors, fills, drops, quiesce_waits, opens_n;
};

static const char *bm_zeros;
static pthread_once_t bm_zeros_once = PTHREAD_ONCE_INIT;
static void bm_zeros_init(void) { bm_zeros = calloc(1, BM_ZEROS_LEN); }

static size_t bm_bucket(uint64_t ino) { return (size_t) ((ino * 0x9E3779B97F4A7C15ull) >> 52) & (BM_BUCKETS - 1); }

static bm_inode_t *bm_find(ll_blockmap_t *m, uint64_t ino) {
  for (bm_inode_t *n = m->buckets[bm_bucket(ino)]; n != NULL; n = n->next)
    if (n->ino == ino) return n;
  return NULL;
}

static void bm_free_inode(ll_blockmap_t *m, bm_inode_t *n) {
  for (size_t i = 0; i < n->nchunks; i++) {
    if (n->chunks[i] != NULL) m->bytes -= sizeof(bm_chunk_t) + n->chunks[i]->count * sizeof(int64_t);
    free(n->chunks[i]);
  }
  m->bytes -= sizeof(bm_inode_t) + n->nchunks * sizeof(bm_chunk_t *);
  free(n->chunks);
  free(n);
}

/* Under lock. */
static void bm_drop_ino(ll_blockmap_t *m, uint64_t ino) {
  bm_inode_t **p = &m->buckets[bm_bucket(ino)];
  for (; *p != NULL; p = &(*p)->next) {
    if ((*p)->ino == ino) {
      bm_inode_t *n = *p;
      *p = n->next;
      bm_free_inode(m, n);
      m->drops++;
      return;
    }
  }
}

/* Under lock. */
static void bm_drop_all(ll_blockmap_t *m) {
  for (size_t b = 0; b < BM_BUCKETS; b++) {
    bm_inode_t *n = m->buckets[b];
    while (n != NULL) {
      bm_inode_t *next = n->next;
      bm_free_inode(m, n);
      n = next;
    }
    m->buckets[b] = NULL;
  }
  m->drops++;
}

/* The entry of block fb of n: BM_JS when the map does not know it (*filled = 0 when its chunk was never filled). */
static int64_t bm_entry(const ll_blockmap_t *m, const bm_inode_t *n, uint64_t fb, int *filled) {
  (void) m;
  uint64_t c = fb >> BM_CHUNK_SHIFT;
  if (c >= n->nchunks || n->chunks[c] == NULL) {
    *filled = 0;
    return BM_JS;
  }
  const bm_chunk_t *ch = n->chunks[c];
  uint32_t i = (uint32_t) (fb & (BM_CHUNK_BLOCKS - 1));
  return i < ch->count ? ch->e[i] : BM_ZERO;
}

/* One run of a request: file bytes [off, off+len) at data file position pos (pos < 0: zeros). */
typedef struct { int64_t pos; size_t len; } bm_seg_t;

/*
 * Under lock: the runs of [off, off+len) of n (consecutive pool blocks and zeros coalesced),
 * or a negative result: -1 the map lacks a chunk (JS should fill), -2 a block needs JS,
 * -3 a write may not go here (not own, or zeros: the mappings must change), -4 too many runs.
 */
static int bm_plan(ll_blockmap_t *m, bm_inode_t *n, uint64_t off, size_t len, int for_write, bm_seg_t *segs, size_t *nsegs) {
  size_t bs = (size_t) 1 << m->shift;
  size_t k = 0;
  uint64_t end = off + len;
  for (uint64_t p = off; p < end;) {
    uint64_t fb = p >> m->shift;
    uint64_t bend = (fb + 1) << m->shift;
    size_t part = (size_t) ((bend < end ? bend : end) - p);
    int filled = 1;
    int64_t e = bm_entry(m, n, fb, &filled);
    if (!filled) return -1;
    if (e == BM_JS) return -2;
    if (for_write && (e < 0 || (e & 1) == 0)) return -3;
    int64_t pos = e < 0 ? -1 : (int64_t) ((uint64_t) (e >> 1) << m->shift) + (int64_t) (p - (fb << m->shift));
    if (k > 0 && ((pos < 0 && segs[k - 1].pos < 0) || (pos >= 0 && segs[k - 1].pos >= 0 && segs[k - 1].pos + (int64_t) segs[k - 1].len == pos))) {
      segs[k - 1].len += part;
    } else {
      if (k == BM_MAX_SEGS) return -4;
      segs[k].pos = pos;
      segs[k].len = part;
      k++;
    }
    p += part;
    (void) bs;
  }
  *nsegs = k;
  return 0;
}

/* Under lock: counts a lookup in the current epoch; returns its slot. */
static int bm_enter(ll_blockmap_t *m) {
  int slot = (int) (m->epoch & 1);
  m->active[slot]++;
  return slot;
}

static void bm_leave(ll_blockmap_t *m, int slot) {
  if (--m->active[slot] == 0 && m->waiters > 0) pthread_cond_broadcast(&m->drained);
}

/* The read hook: 1 served, 0 not in the map (JS serves it and fills), -1 JS must serve it (no fill). */
int bm_read(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, uint64_t fh) {
  (void) fh;
  ll_blockmap_t *m = s->bm;
  if (m == NULL || off < 0) return -1;
  bm_seg_t segs[BM_MAX_SEGS];
  size_t nsegs = 0;
  pthread_mutex_lock(&m->lock);
  bm_inode_t *n = bm_find(m, ino);
  if (n == NULL) {
    pthread_mutex_unlock(&m->lock);
    return 0;
  }
  uint64_t end = (uint64_t) off + size;
  if (end > n->size) end = n->size;
  if ((uint64_t) off >= end) {
    m->reads++;
    pthread_mutex_unlock(&m->lock);
    fuse_reply_buf(req, NULL, 0);
    return 1;
  }
  int plan = bm_plan(m, n, (uint64_t) off, (size_t) (end - (uint64_t) off), 0, segs, &nsegs);
  if (plan < 0) {
    pthread_mutex_unlock(&m->lock);
    return plan == -1 ? 0 : -1;
  }
  int slot = bm_enter(m);
  pthread_mutex_unlock(&m->lock);

  pthread_once(&bm_zeros_once, bm_zeros_init);
  size_t nbufs = 0;
  for (size_t i = 0; i < nsegs; i++) nbufs += segs[i].pos < 0 ? (segs[i].len + BM_ZEROS_LEN - 1) / BM_ZEROS_LEN : 1;
  struct fuse_bufvec *bv = bm_zeros == NULL ? NULL : calloc(1, sizeof(struct fuse_bufvec) + nbufs * sizeof(struct fuse_buf));
  int res;
  if (bv == NULL) {
    res = fuse_reply_err(req, ENOMEM);
  } else {
    size_t k = 0;
    for (size_t i = 0; i < nsegs; i++) {
      if (segs[i].pos < 0) {
        for (size_t left = segs[i].len; left > 0;) {
          size_t part = left < BM_ZEROS_LEN ? left : BM_ZEROS_LEN;
          bv->buf[k].mem = (void *) bm_zeros;
          bv->buf[k].size = part;
          k++;
          left -= part;
        }
      } else {
        bv->buf[k].fd = m->fd;
        bv->buf[k].pos = (off_t) segs[i].pos;
        bv->buf[k].size = segs[i].len;
        bv->buf[k].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
        k++;
      }
    }
    bv->count = k;
    /* libfuse preads the fd ranges into the reply (a failed pread is answered with its errno). */
    res = fuse_reply_data(req, bv, 0);
    free(bv);
  }
  pthread_mutex_lock(&m->lock);
  bm_leave(m, slot);
  if (res == 0) {
    m->reads++;
    m->read_bytes += end - (uint64_t) off;
  } else {
    m->read_errors++;
  }
  pthread_mutex_unlock(&m->lock);
  return 1;
}

/* The write hook: as bm_read. */
int bm_write(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, uint64_t fh) {
  (void) fh;
  ll_blockmap_t *m = s->bm;
  if (m == NULL || off < 0 || size == 0) return -1;
  bm_seg_t segs[BM_MAX_SEGS];
  size_t nsegs = 0;
  pthread_mutex_lock(&m->lock);
  if (!m->writes) {
    pthread_mutex_unlock(&m->lock);
    return -1;
  }
  bm_inode_t *n = bm_find(m, ino);
  if (n == NULL) {
    pthread_mutex_unlock(&m->lock);
    return 0;
  }
  if ((uint64_t) off + size > n->size) {
    /* Growing the file: JS (the size changes in the metadata). */
    pthread_mutex_unlock(&m->lock);
    return -1;
  }
  int plan = bm_plan(m, n, (uint64_t) off, size, 1, segs, &nsegs);
  if (plan < 0) {
    pthread_mutex_unlock(&m->lock);
    return plan == -1 ? 0 : -1;
  }
  int slot = bm_enter(m);
  pthread_mutex_unlock(&m->lock);

  int err = 0;
  const char *p = buf;
  for (size_t i = 0; i < nsegs && err == 0; i++) {
    size_t done = 0;
    while (done < segs[i].len) {
      ssize_t w = pwrite(m->fd, p + done, segs[i].len - done, (off_t) segs[i].pos + (off_t) done);
      if (w < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      if (w == 0) {
        err = EIO;
        break;
      }
      done += (size_t) w;
    }
    p += segs[i].len;
  }
  pthread_mutex_lock(&m->lock);
  bm_leave(m, slot);
  if (err == 0) {
    m->writes_n++;
    m->write_bytes += size;
  } else {
    m->write_errors++;
  }
  pthread_mutex_unlock(&m->lock);
  if (err != 0) fuse_reply_err(req, err);
  else fuse_reply_write(req, size);
  return 1;
}

/*
 * OPEN of a file the map knows, read-only (no O_TRUNC/O_APPEND/O_CREAT): answered here with
 * fh 0 and keep_cache, so reading a file again warm (its pages cached) costs no request to
 * JS at all; RELEASE of fh 0 is answered here too. JS handles never have fh 0 (fs
 * handles.ts counts from 1), and a READ with fh 0 that reaches JS reads by inode. The
 * inode's lifetime needs no handle: the kernel holds a lookup of an open file (no FORGET
 * until it is closed). Permissions are the kernel's (default_permissions) or the mounting
 * user's, as for every open.
 */
int bm_open(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  ll_blockmap_t *m = s->bm;
  if (m == NULL) return 0;
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_APPEND | O_CREAT | O_EXCL)) != 0) return 0;
  pthread_mutex_lock(&m->lock);
  int known = m->opens && bm_find(m, ino) != NULL;
  if (known) m->opens_n++;
  pthread_mutex_unlock(&m->lock);
  if (!known) return 0;
  fi->fh = 0;
  fi->keep_cache = 1;
  fi->direct_io = 0;
  fuse_reply_open(req, fi);
  return 1;
}

int bm_release(ll_session_t *s, fuse_req_t req, struct fuse_file_info *fi) {
  if (s->bm == NULL || fi->fh != 0) return 0;
  fuse_reply_err(req, 0);
  return 1;
}

void bm_destroy(ll_blockmap_t *m) {
  if (m == NULL) return;
  bm_drop_all(m);
  if (m->fd >= 0) close(m->fd);
  pthread_mutex_destroy(&m->lock);
  pthread_cond_destroy(&m->drained);
  free(m);
}

/* ---- the JS side (JS thread) ---- */

static ll_session_t *bm_session(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) {
    napi_throw_type_error(env, NULL, "blockmap: not a session");
    return NULL;
  }
  return p;
}

/*
 * bm_configure(session, fd, blockShift, writes, opens): serve reads (and, with writes, writes
 * into own blocks; with opens, read-only opens of known files: bm_open) from the data file
 * `fd` (dup'ed: the session keeps its own descriptor). Call before the first fill; again to
 * change `writes`/`opens` (the map is dropped).
 */
static napi_value js_bm_configure(napi_env env, napi_callback_info info) {
  ARGS(5)
  ll_session_t *s = bm_session(env, argv[0]);
  if (s == NULL) return NULL;
  int fd = (int) num_of(env, argv[1], -1);
  unsigned shift = (unsigned) num_of(env, argv[2], 0);
  bool writes = false, opens = false;
  napi_get_value_bool(env, argv[3], &writes);
  napi_get_value_bool(env, argv[4], &opens);
  if (shift < 12 || shift > 30) {
    napi_throw_range_error(env, NULL, "blockmap: block size must be 4 KiB .. 1 GiB");
    return NULL;
  }
  ac_drop(s, 0);
  if (s->bm != NULL) {
    ll_blockmap_t *m = s->bm;
    pthread_mutex_lock(&m->lock);
    bm_drop_all(m);
    m->writes = writes;
    m->opens = opens;
    pthread_mutex_unlock(&m->lock);
    return js_bool(env, 1);
  }
  ll_blockmap_t *m = calloc(1, sizeof(ll_blockmap_t));
  if (m == NULL) {
    napi_throw_error(env, "ENOMEM", "blockmap: out of memory");
    return NULL;
  }
  m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (m->fd < 0) {
    free(m);
    napi_throw_error(env, "EBADF", "blockmap: cannot duplicate the data file descriptor");
    return NULL;
  }
  m->shift = shift;
  m->writes = writes;
  m->opens = opens;
  pthread_mutex_init(&m->lock, NULL);
  pthread_cond_init(&m->drained, NULL);
  /* Published before the first fill; the hooks read s->bm once per request. */
  __atomic_store_n(&s->bm, m, __ATOMIC_RELEASE);
  return js_bool(env, 1);
}

/* bm_fill(session, ino, size, firstBlock, Float64Array entries, count): the entries of blocks
   [firstBlock, firstBlock + count) of ino (the range is one chunk: firstBlock a multiple of 256,
   count <= 256), and its size. */
static napi_value js_bm_fill(napi_env env, napi_callback_info info) {
  ARGS(6)
  ll_session_t *s = bm_session(env, argv[0]);
  if (s == NULL) return NULL;
  ll_blockmap_t *m = s->bm;
  if (m == NULL) return js_bool(env, 0);
  uint64_t ino = (uint64_t) num_of(env, argv[1], 0);
  uint64_t size = (uint64_t) num_of(env, argv[2], 0);
  uint64_t first = (uint64_t) num_of(env, argv[3], 0);
  napi_typedarray_type type;
  size_t len;
  void *data;
  if (napi_get_typedarray_info(env, argv[4], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_float64_array) {
    napi_throw_type_error(env, NULL, "blockmap: entries must be a Float64Array");
    return NULL;
  }
  size_t count = (size_t) num_of(env, argv[5], (double) len);
  if (ino == 0 || count > len || count > BM_CHUNK_BLOCKS || (first & (BM_CHUNK_BLOCKS - 1)) != 0) {
    napi_throw_range_error(env, NULL, "blockmap: a fill is one chunk of at most 256 blocks");
    return NULL;
  }
  const double *f = data;
  size_t c = (size_t) (first >> BM_CHUNK_SHIFT);
  bm_chunk_t *ch = malloc(sizeof(bm_chunk_t) + count * sizeof(int64_t));
  if (ch == NULL) return js_bool(env, 0);
  ch->count = (uint32_t) count;
  for (size_t i = 0; i < count; i++) ch->e[i] = (int64_t) f[i];

  pthread_mutex_lock(&m->lock);
  if (m->bytes > BM_MAX_BYTES) bm_drop_all(m);
  bm_inode_t *n = bm_find(m, ino);
  if (n != NULL && n->size != size) {
    /* The caller dropped it before changing the size; a different size means an older fill. */
    bm_drop_ino(m, ino);
    n = NULL;
  }
  if (n == NULL) {
    n = calloc(1, sizeof(bm_inode_t));
    if (n == NULL) {
      pthread_mutex_unlock(&m->lock);
      free(ch);
      return js_bool(env, 0);
    }
    n->ino = ino;
    n->size = size;
    size_t b = bm_bucket(ino);
    n->next = m->buckets[b];
    m->buckets[b] = n;
    m->bytes += sizeof(bm_inode_t);
  }
  if (c >= n->nchunks) {
    size_t want = c + 1;
    bm_chunk_t **grown = realloc(n->chunks, want * sizeof(bm_chunk_t *));
    if (grown == NULL) {
      pthread_mutex_unlock(&m->lock);
      free(ch);
      return js_bool(env, 0);
    }
    for (size_t i = n->nchunks; i < want; i++) grown[i] = NULL;
    m->bytes += (want - n->nchunks) * sizeof(bm_chunk_t *);
    n->chunks = grown;
    n->nchunks = want;
  }
  if (n->chunks[c] != NULL) {
    m->bytes -= sizeof(bm_chunk_t) + n->chunks[c]->count * sizeof(int64_t);
    free(n->chunks[c]);
  }
  n->chunks[c] = ch;
  m->bytes += sizeof(bm_chunk_t) + count * sizeof(int64_t);
  m->fills++;
  pthread_mutex_unlock(&m->lock);
  return js_bool(env, 1);
}

/* bm_drop(session, ino): forget ino; bm_drop(session): forget everything. */
static napi_value js_bm_drop(napi_env env, napi_callback_info info) {
  ARGS(2)
  ll_session_t *s = bm_session(env, argv[0]);
  if (s == NULL) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  uint64_t ino = t == napi_undefined ? 0 : (uint64_t) num_of(env, argv[1], 0);
  /* A drop of everything is a change behind the requests (a rollback, fail mode, a layer
     change): attributes go too. One inode's drop comes with a request whose reply drops its
     attributes (fuse-lowlevel-attrcache.c); dropping them here as well refused the fill of
     every CREATE (its truncate drops the new inode's map first). */
  if (ino == 0) ac_drop(s, 0);
  ll_blockmap_t *m = s->bm;
  if (m == NULL) return js_bool(env, 0);
  pthread_mutex_lock(&m->lock);
  if (ino == 0) bm_drop_all(m);
  else bm_drop_ino(m, ino);
  pthread_mutex_unlock(&m->lock);
  return js_bool(env, 1);
}

/* bm_quiesce(session): returns once every lookup made before the call has finished its I/O. */
static napi_value js_bm_quiesce(napi_env env, napi_callback_info info) {
  ARGS(1)
  ll_session_t *s = bm_session(env, argv[0]);
  if (s == NULL) return NULL;
  ll_blockmap_t *m = s->bm;
  if (m == NULL) return js_bool(env, 0);
  pthread_mutex_lock(&m->lock);
  int old = (int) (m->epoch & 1);
  m->epoch++;
  if (m->active[old] > 0) m->quiesce_waits++;
  while (m->active[old] > 0) {
    m->waiters++;
    pthread_cond_wait(&m->drained, &m->lock);
    m->waiters--;
  }
  pthread_mutex_unlock(&m->lock);
  return js_bool(env, 1);
}

/* bm_stats(session) -> [reads, readBytes, readErrors, writes, writeBytes, writeErrors, fills, drops, quiesceWaits, bytesHeld, opens] */
static napi_value js_bm_stats(napi_env env, napi_callback_info info) {
  ARGS(1)
  ll_session_t *s = bm_session(env, argv[0]);
  if (s == NULL) return NULL;
  ll_blockmap_t *m = s->bm;
  double v[11] = { 0 };
  if (m != NULL) {
    pthread_mutex_lock(&m->lock);
    v[0] = (double) m->reads;
    v[1] = (double) m->read_bytes;
    v[2] = (double) m->read_errors;
    v[3] = (double) m->writes_n;
    v[4] = (double) m->write_bytes;
    v[5] = (double) m->write_errors;
    v[6] = (double) m->fills;
    v[7] = (double) m->drops;
    v[8] = (double) m->quiesce_waits;
    v[9] = (double) m->bytes;
    v[10] = (double) m->opens_n;
    pthread_mutex_unlock(&m->lock);
  }
  napi_value arr;
  napi_create_array_with_length(env, 11, &arr);
  for (uint32_t i = 0; i < 11; i++) napi_set_element(env, arr, i, js_num(env, v[i]));
  return arr;
}

void ll_export_blockmap(napi_env env, napi_value exports) {
  static const struct { const char *name; napi_callback cb; } fns[] = {
    { "bm_configure", js_bm_configure }, { "bm_fill", js_bm_fill }, { "bm_drop", js_bm_drop },
    { "bm_quiesce", js_bm_quiesce }, { "bm_stats", js_bm_stats },
  };
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
}
