/*
 * fuse-lowlevel.c — a libfuse3 low-level (inode-based) mode for fuse-native.
 *
 * Added to fuse-native by thinfs (native-deps/build.cjs copies this file into
 * node_modules/fuse-native and native-deps/fuse-native.patch adds it to binding.gyp as
 * the target fuse_lowlevel, linked against the system libfuse3). The libfuse2
 * high-level mode of fuse-native (fuse-native.c) is untouched by this file; the two are
 * separate .node files because libfuse2 and libfuse3 export the same symbol names.
 *
 * Requests are inode-based: the kernel's nodeid is whatever JS answers in an entry
 * reply (thinfs: its inode number), so all names of a file share one kernel inode and
 * one page cache, and lookup counts / FORGET reach JS.
 *
 * Threads and who may do what
 * ---------------------------
 *  - the loop thread (one per session) mounts (fuse_session_mount: mount(2), or
 *    fusermount3 for non-root) and runs fuse_session_loop_mt, which starts libfuse
 *    worker threads on demand. When the loop returns — the kernel ended the connection
 *    (someone ran umount / fusermount -u, or the last user of a lazily detached mount
 *    let go), or the session was told to exit — it stops the notifier thread, lets
 *    libfuse close /dev/fuse and posts ENDED: JS hears 'unmounted' at once, not on a
 *    timer.
 *  - libfuse worker threads run the ll_* callbacks below. Each copies what the request
 *    carries (names, attributes, the caller's uid/gid/pid/umask from fuse_req_ctx) into
 *    an item, appends it to the session's queue and returns to read the next request:
 *    the JS thread is the only one waiting on anything. The one exception is WRITE: its
 *    data sits in the worker's receive buffer, so the worker waits (on a semaphore in
 *    the item) until JS has replied, and JS reads the data in place (an external
 *    Buffer, detached once the reply is sent). No 1 MiB copy per write.
 *  - the JS thread: one uv_async per session. Its callback takes the queue at once (up
 *    to MAX_BATCH items; requests batch up while JS is busy: one wake-up serves many), and
 *    calls the JS dispatcher once per item inside one callback scope (microtasks run
 *    once per batch). Replies (ll_reply_*) are made from the JS thread, synchronously
 *    or later (a handler may reply after an await): each request has a numeric id
 *    (slot + generation in a JS-thread-only table), so a second reply to the same id,
 *    or a reply after the session ended, is refused instead of touching freed memory.
 *  - the notifier thread (one per session) makes every kernel notification
 *    (fuse_lowlevel_notify_inval_inode / inval_entry / delete). Never the JS thread:
 *    the kernel may wait, inside that write to /dev/fuse, for a request that only JS
 *    can answer — inval_inode with the writeback cache first writes back the inode's
 *    dirty pages (WRITE requests), and inval_entry takes the directory's inode lock,
 *    which a LOOKUP/CREATE in that directory holds while it waits for its reply. From
 *    the JS thread either is a deadlock; from the notifier thread it is a short wait.
 *    JS hears the outcome as a NOTIFY_DONE event carrying its token.
 *  - an unmount helper thread (ll_unmount): a lazy detach (umount2 MNT_DETACH as root,
 *    fusermount3 -u -z otherwise), off the JS thread for the same reason: a kernel
 *    unmount writes back dirty pages first.
 *
 * The later C hot path (READ of mapped blocks and WRITE into owned blocks served in the
 * worker threads from a block-map cache JS fills) plugs in at ll_read/ll_write: a hook
 * that serves the request in the worker and returns 1, or returns 0 to pass it to JS
 * (see ll_session_t.read_hook / write_hook; NULL today).
 *
 * Names are bytes: every name reaches JS as a latin1 string (one char per byte,
 * napi_create_string_latin1), and every name JS hands back (readdir, readlink, notify)
 * is written back as those raw bytes (napi_get_value_string_latin1).
 */
#define FUSE_USE_VERSION 312
#define NAPI_VERSION 8
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <node_api.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

extern char **environ;

/* ---- what JS sees: operation codes, events, the shared argument array ---- */

enum {
  OP_LOOKUP = 1, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR,
  OP_UNLINK, OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ, OP_WRITE,
  OP_FLUSH, OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR, OP_RELEASEDIR, OP_FSYNCDIR,
  OP_STATFS, OP_SETXATTR, OP_GETXATTR, OP_LISTXATTR, OP_REMOVEXATTR, OP_ACCESS,
  OP_CREATE, OP_READDIRPLUS, OP_FALLOCATE, OP_LSEEK,
  OP_COUNT,
  /* not requests: no id, no reply */
  EV_INIT = 100,     /* A[0..9]: the negotiated connection (see ll_init) */
  EV_MOUNT_FAILED,   /* name: libfuse's last message */
  EV_NOTIFY_DONE,    /* A[0]: token, A[1]: 0 or -errno */
  EV_UNMOUNT_DONE,   /* A[0]: 0 or -errno of the lazy detach */
  EV_ENDED,          /* A[0]: the loop's result; last event of a session */
  IT_FORGET_MULTI,   /* internal: one BATCH_FORGET, dispatched as OP_FORGET per pair */
};

static const char *const op_names[OP_COUNT] = {
  NULL, "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir",
  "unlink", "rmdir", "symlink", "rename", "link", "open", "read", "write",
  "flush", "release", "fsync", "opendir", "readdir", "releasedir", "fsyncdir",
  "statfs", "setxattr", "getxattr", "listxattr", "removexattr", "access",
  "create", "readdirplus", "fallocate", "lseek",
};

/* The shared Float64Array JS reads a request's numbers from (valid during dispatch). */
enum {
  A_INO = 0,   /* the inode (or parent) */
  A_INO2,      /* newparent (rename, link) */
  A_FH,        /* fi->fh */
  A_OFF,       /* offset */
  A_SIZE,      /* size / length */
  A_U1,        /* mode, open flags, mask, to_set, datasync, nlookup, whence, xattr flags */
  A_U2,        /* rdev, rename flags, fallocate mode, release flags */
  A_U3,        /* 1 when fi was given (getattr/setattr), writepage (write), flush (release) */
  A_UID, A_GID, A_PID, A_UMASK,
  A_ATTR,      /* setattr's struct stat, in the STAT layout (15 fields) */
  A_LEN = A_ATTR + 15,
};

/* struct stat as 15 doubles (replies and setattr). */
enum {
  ST_INO = 0, ST_MODE, ST_NLINK, ST_UID, ST_GID, ST_RDEV, ST_SIZE, ST_BLKSIZE, ST_BLOCKS,
  ST_ATIME, ST_ATIME_NS, ST_MTIME, ST_MTIME_NS, ST_CTIME, ST_CTIME_NS, ST_LEN,
};
/* struct fuse_entry_param: nodeid, generation, entry timeout, attr timeout, stat. */
enum { E_INO = 0, E_GEN, E_ENTRY_TIMEOUT, E_ATTR_TIMEOUT, E_STAT, E_LEN = E_STAT + ST_LEN };
/* Open reply flags (ll_reply_open / ll_reply_create). */
enum { OF_DIRECT_IO = 1, OF_KEEP_CACHE = 2, OF_NONSEEKABLE = 4, OF_CACHE_READDIR = 8, OF_NOFLUSH = 16 };

/* ---- items and sessions ---- */

typedef struct ll_session ll_session_t;

typedef struct ll_item {
  struct ll_item *next;
  ll_session_t *s;
  fuse_req_t req;          /* NULL for events and forgets */
  int kind;
  uint32_t slot, gen;      /* the JS table slot while JS owns the request */
  double a[A_LEN];         /* copied into the shared array at dispatch */
  const char *name;        /* copied into tail */
  const char *name2;
  const char *data;        /* write: the worker's buffer (borrowed); setxattr: tail */
  size_t data_len;
  int waiting;             /* write: the worker waits on `done` */
  sem_t done;
  napi_ref buf_ref;        /* write: the ArrayBuffer to detach after the reply */
  size_t nforgets;         /* IT_FORGET_MULTI: pairs (ino, nlookup) in tail */
  char tail[];
} ll_item_t;

typedef struct ll_notify {
  struct ll_notify *next;
  int kind;                /* 1 inval_inode, 2 inval_entry, 3 delete */
  double token;
  uint64_t ino, child;
  int64_t off, len;
  size_t namelen;
  char name[];
} ll_notify_t;

typedef int (*ll_read_hook_t)(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, uint64_t fh);
typedef int (*ll_write_hook_t)(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, uint64_t fh);

struct ll_session {
  napi_env env;
  struct fuse_session *se;
  char *mountpoint;
  int refs;                /* the JS external + the running session */

  /* configuration, fixed before mount */
  uint64_t want, unwant;
  unsigned max_write, max_readahead, max_background, congestion_threshold;
  int max_threads, max_idle_threads, clone_fd;

  /* inbound queue: worker/loop/notifier/unmount threads -> JS thread */
  pthread_mutex_t qlock;
  ll_item_t *qhead, *qtail;
  uv_async_t async;

  /* JS thread only */
  napi_ref self_ref, dispatch_ref;
  napi_async_context actx;
  int ended;               /* ENDED was dispatched: no more requests, no new notifications */
  int closing;
  uint64_t outstanding;    /* requests JS has not answered yet */
  uint64_t stat_requests, stat_batches, stat_max_batch;

  /* threads */
  pthread_t loop_thread, notify_thread, unmount_thread;
  int loop_started, notify_started, unmount_started;

  /* notifier */
  pthread_mutex_t nlock;
  pthread_cond_t ncond;
  ll_notify_t *nhead, *ntail;
  int nstop;

  /* the later C hot path: serve READ/WRITE in the worker; NULL = everything goes to JS */
  ll_read_hook_t read_hook;
  ll_write_hook_t write_hook;
};

/* The argument array shared with JS (its ArrayBuffer is kept alive by a reference). */
static double *shared_args = NULL;
static napi_ref shared_args_ref = NULL;

/* libfuse's last error line, for error messages (mount failures, bad options). libfuse
   writes some lines in pieces (fuse_log per word), so pieces are joined up to '\n'. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[512];
static char log_line[512];

static void ll_log(enum fuse_log_level level, const char *fmt, va_list ap) {
  char piece[512];
  vsnprintf(piece, sizeof(piece), fmt, ap);
  fputs(piece, stderr);
  if (level > FUSE_LOG_ERR) return;
  pthread_mutex_lock(&log_lock);
  size_t used = strlen(log_line);
  snprintf(log_line + used, sizeof(log_line) - used, "%s", piece);
  size_t n = strlen(log_line);
  if (n > 0 && log_line[n - 1] == '\n') {
    while (n > 0 && (log_line[n - 1] == '\n' || log_line[n - 1] == ' ')) log_line[--n] = 0;
    memcpy(last_log, log_line, n + 1);
    log_line[0] = 0;
  }
  pthread_mutex_unlock(&log_lock);
}

static void copy_last_log(char *out, size_t size) {
  pthread_mutex_lock(&log_lock);
  snprintf(out, size, "%s", last_log[0] ? last_log : log_line);
  pthread_mutex_unlock(&log_lock);
}

static void clear_last_log(void) {
  pthread_mutex_lock(&log_lock);
  last_log[0] = log_line[0] = 0;
  pthread_mutex_unlock(&log_lock);
}

/* Threads this file starts take no signals (Node's main thread handles them). */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int res = pthread_create(t, NULL, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return res;
}

/* ---- worker side: requests become items ---- */

static ll_item_t *item_new(ll_session_t *s, fuse_req_t req, int kind, size_t tail) {
  ll_item_t *it = calloc(1, sizeof(ll_item_t) + tail);
  if (it == NULL) return NULL;
  it->s = s;
  it->req = req;
  it->kind = kind;
  if (req != NULL) {
    const struct fuse_ctx *c = fuse_req_ctx(req);
    it->a[A_UID] = c->uid;
    it->a[A_GID] = c->gid;
    it->a[A_PID] = c->pid;
    it->a[A_UMASK] = c->umask;
  }
  return it;
}

static void enqueue(ll_session_t *s, ll_item_t *it) {
  it->next = NULL;
  pthread_mutex_lock(&s->qlock);
  if (s->qtail != NULL) s->qtail->next = it;
  else s->qhead = it;
  s->qtail = it;
  pthread_mutex_unlock(&s->qlock);
  uv_async_send(&s->async);
}

/* Posts an event (no request) to the JS thread. */
static void post_event(ll_session_t *s, int kind, double a0, double a1, const char *msg) {
  size_t n = msg ? strlen(msg) + 1 : 0;
  ll_item_t *it = item_new(s, NULL, kind, n);
  if (it == NULL) return; /* out of memory: the event is lost, nothing else to do */
  it->a[0] = a0;
  it->a[1] = a1;
  if (msg) {
    memcpy(it->tail, msg, n);
    it->name = it->tail;
  }
  enqueue(s, it);
}

#define SESSION(req) ((ll_session_t *) fuse_req_userdata(req))
#define NEW_ITEM(it, kind, tail)                                   \
  ll_item_t *it = item_new(SESSION(req), req, kind, (tail));       \
  if (it == NULL) {                                                \
    fuse_reply_err(req, ENOMEM);                                   \
    return;                                                        \
  }
#define FI_FH(fi) ((fi) != NULL ? (double) (fi)->fh : 0)

/* Copies names into the item's tail: name first, then name2. */
static void set_names(ll_item_t *it, const char *name, const char *name2) {
  char *p = it->tail;
  if (name) {
    size_t n = strlen(name) + 1;
    memcpy(p, name, n);
    it->name = p;
    p += n;
  }
  if (name2) {
    size_t n = strlen(name2) + 1;
    memcpy(p, name2, n);
    it->name2 = p;
  }
}

static size_t names_len(const char *a, const char *b) {
  return (a ? strlen(a) + 1 : 0) + (b ? strlen(b) + 1 : 0);
}

static void put_timespec(double *f, const struct timespec *t) {
  f[0] = (double) t->tv_sec;
  f[1] = (double) t->tv_nsec;
}

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  ll_session_t *s = userdata;
  conn->want |= (unsigned) (s->want & conn->capable);
  conn->want &= ~(unsigned) s->unwant;
  /* libfuse has already clamped max_write to its receive buffer (1 MiB + header). */
  if (s->max_write > 0 && s->max_write < conn->max_write) conn->max_write = s->max_write;
  if (s->max_readahead > 0 && s->max_readahead < conn->max_readahead) conn->max_readahead = s->max_readahead;
  if (s->max_background > 0) conn->max_background = s->max_background;
  if (s->congestion_threshold > 0) conn->congestion_threshold = s->congestion_threshold;
  conn->time_gran = 1;
  ll_item_t *it = item_new(s, NULL, EV_INIT, 0);
  if (it == NULL) return;
  it->a[0] = conn->proto_major;
  it->a[1] = conn->proto_minor;
  it->a[2] = conn->capable;
  it->a[3] = conn->want;
  it->a[4] = conn->max_write;
  it->a[5] = conn->max_readahead;
  it->a[6] = conn->max_background;
  it->a[7] = conn->congestion_threshold;
  it->a[8] = conn->time_gran;
  it->a[9] = conn->max_read;
  enqueue(s, it);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW_ITEM(it, OP_LOOKUP, names_len(name, NULL));
  it->a[A_INO] = parent;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  ll_session_t *s = SESSION(req);
  fuse_reply_none(req);
  ll_item_t *it = item_new(s, NULL, OP_FORGET, 0);
  if (it == NULL) return; /* the count leaks (an inode kept too long), nothing breaks */
  it->a[A_INO] = ino;
  it->a[A_U1] = (double) nlookup;
  enqueue(s, it);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  ll_session_t *s = SESSION(req);
  ll_item_t *it = item_new(s, NULL, IT_FORGET_MULTI, count * 2 * sizeof(double));
  if (it != NULL) {
    double *pairs = (double *) it->tail;
    for (size_t i = 0; i < count; i++) {
      pairs[2 * i] = forgets[i].ino;
      pairs[2 * i + 1] = (double) forgets[i].nlookup;
    }
    it->nforgets = count;
  }
  fuse_reply_none(req);
  if (it != NULL) enqueue(s, it);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_GETATTR, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = FI_FH(fi);
  it->a[A_U3] = fi != NULL;
  enqueue(it->s, it);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_SETATTR, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = FI_FH(fi);
  it->a[A_U1] = to_set;
  it->a[A_U3] = fi != NULL;
  double *f = it->a + A_ATTR;
  f[ST_MODE] = attr->st_mode;
  f[ST_UID] = attr->st_uid;
  f[ST_GID] = attr->st_gid;
  f[ST_SIZE] = (double) attr->st_size;
  put_timespec(f + ST_ATIME, &attr->st_atim);
  put_timespec(f + ST_MTIME, &attr->st_mtim);
  put_timespec(f + ST_CTIME, &attr->st_ctim);
  enqueue(it->s, it);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  NEW_ITEM(it, OP_READLINK, 0);
  it->a[A_INO] = ino;
  enqueue(it->s, it);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  NEW_ITEM(it, OP_MKNOD, names_len(name, NULL));
  it->a[A_INO] = parent;
  it->a[A_U1] = mode;
  it->a[A_U2] = (double) rdev;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  NEW_ITEM(it, OP_MKDIR, names_len(name, NULL));
  it->a[A_INO] = parent;
  it->a[A_U1] = mode;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW_ITEM(it, OP_UNLINK, names_len(name, NULL));
  it->a[A_INO] = parent;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW_ITEM(it, OP_RMDIR, names_len(name, NULL));
  it->a[A_INO] = parent;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

/* symlink(target, parent, name): name2 carries the target. */
static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  NEW_ITEM(it, OP_SYMLINK, names_len(name, link));
  it->a[A_INO] = parent;
  set_names(it, name, link);
  enqueue(it->s, it);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  NEW_ITEM(it, OP_RENAME, names_len(name, newname));
  it->a[A_INO] = parent;
  it->a[A_INO2] = newparent;
  it->a[A_U2] = flags;
  set_names(it, name, newname);
  enqueue(it->s, it);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  NEW_ITEM(it, OP_LINK, names_len(newname, NULL));
  it->a[A_INO] = ino;
  it->a[A_INO2] = newparent;
  set_names(it, newname, NULL);
  enqueue(it->s, it);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_OPEN, 0);
  it->a[A_INO] = ino;
  it->a[A_U1] = fi->flags;
  enqueue(it->s, it);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  ll_session_t *s = SESSION(req);
  if (s->read_hook != NULL && s->read_hook(s, req, ino, size, off, fi->fh)) return;
  NEW_ITEM(it, OP_READ, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_OFF] = (double) off;
  it->a[A_SIZE] = (double) size;
  it->a[A_U1] = fi->flags;
  enqueue(s, it);
}

/* The worker waits until JS has replied: JS reads `buf` in place. */
static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  ll_session_t *s = SESSION(req);
  if (s->write_hook != NULL && s->write_hook(s, req, ino, buf, size, off, fi->fh)) return;
  NEW_ITEM(it, OP_WRITE, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_OFF] = (double) off;
  it->a[A_SIZE] = (double) size;
  it->a[A_U1] = fi->flags;
  it->a[A_U3] = fi->writepage;
  it->data = buf;
  it->data_len = size;
  it->waiting = 1;
  sem_init(&it->done, 0, 0);
  enqueue(s, it);
  while (sem_wait(&it->done) != 0 && errno == EINTR) {
  }
  sem_destroy(&it->done);
  free(it);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_FLUSH, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  enqueue(it->s, it);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_RELEASE, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_U2] = fi->flags;
  it->a[A_U3] = fi->flush;
  enqueue(it->s, it);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_FSYNC, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_U1] = datasync;
  enqueue(it->s, it);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_OPENDIR, 0);
  it->a[A_INO] = ino;
  it->a[A_U1] = fi->flags;
  enqueue(it->s, it);
}

static void ll_readdir_common(int kind, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  NEW_ITEM(it, kind, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_OFF] = (double) off;
  it->a[A_SIZE] = (double) size;
  enqueue(it->s, it);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  ll_readdir_common(OP_READDIR, req, ino, size, off, fi);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  ll_readdir_common(OP_READDIRPLUS, req, ino, size, off, fi);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_RELEASEDIR, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  enqueue(it->s, it);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_FSYNCDIR, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_U1] = datasync;
  enqueue(it->s, it);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  NEW_ITEM(it, OP_STATFS, 0);
  it->a[A_INO] = ino;
  enqueue(it->s, it);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  size_t n = names_len(name, NULL);
  NEW_ITEM(it, OP_SETXATTR, n + size);
  it->a[A_INO] = ino;
  it->a[A_SIZE] = (double) size;
  it->a[A_U1] = flags;
  set_names(it, name, NULL);
  memcpy(it->tail + n, value, size);
  it->data = it->tail + n;
  it->data_len = size;
  enqueue(it->s, it);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  NEW_ITEM(it, OP_GETXATTR, names_len(name, NULL));
  it->a[A_INO] = ino;
  it->a[A_SIZE] = (double) size;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  NEW_ITEM(it, OP_LISTXATTR, 0);
  it->a[A_INO] = ino;
  it->a[A_SIZE] = (double) size;
  enqueue(it->s, it);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  NEW_ITEM(it, OP_REMOVEXATTR, names_len(name, NULL));
  it->a[A_INO] = ino;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  NEW_ITEM(it, OP_ACCESS, 0);
  it->a[A_INO] = ino;
  it->a[A_U1] = mask;
  enqueue(it->s, it);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_CREATE, names_len(name, NULL));
  it->a[A_INO] = parent;
  it->a[A_U1] = mode;
  it->a[A_U2] = fi->flags;
  set_names(it, name, NULL);
  enqueue(it->s, it);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_FALLOCATE, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_OFF] = (double) offset;
  it->a[A_SIZE] = (double) length;
  it->a[A_U2] = mode;
  enqueue(it->s, it);
}

static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  NEW_ITEM(it, OP_LSEEK, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_OFF] = (double) off;
  it->a[A_U1] = whence;
  enqueue(it->s, it);
}

/* ---- the JS-thread request table ---- */

#define SLOT_BITS 24
#define SLOT_SPAN 16777216.0 /* 2^SLOT_BITS */
#define NO_SLOT UINT32_MAX

typedef struct {
  ll_item_t *item;
  uint32_t gen;
  uint32_t next_free;
} slot_t;

static slot_t *slots = NULL;
static uint32_t nslots = 0;
static uint32_t free_slot = NO_SLOT;

/* Gives `it` an id JS replies with; -1 when the table is full or out of memory. */
static double slot_take(ll_item_t *it) {
  if (free_slot == NO_SLOT) {
    uint32_t grow = nslots == 0 ? 256 : nslots;
    if (nslots + grow > (1u << SLOT_BITS)) grow = (1u << SLOT_BITS) - nslots;
    if (grow == 0) return -1;
    slot_t *bigger = realloc(slots, (nslots + grow) * sizeof(slot_t));
    if (bigger == NULL) return -1;
    slots = bigger;
    for (uint32_t i = nslots; i < nslots + grow; i++) {
      slots[i].item = NULL;
      slots[i].gen = 0;
      slots[i].next_free = i + 1 < nslots + grow ? i + 1 : NO_SLOT;
    }
    free_slot = nslots;
    nslots += grow;
  }
  uint32_t i = free_slot;
  free_slot = slots[i].next_free;
  slots[i].gen = (slots[i].gen + 1) & ((1u << 28) - 1);
  if (slots[i].gen == 0) slots[i].gen = 1;
  slots[i].item = it;
  it->slot = i;
  it->gen = slots[i].gen;
  return (double) slots[i].gen * SLOT_SPAN + (double) i;
}

static void slot_release(ll_item_t *it) {
  uint32_t i = it->slot;
  slots[i].item = NULL;
  slots[i].next_free = free_slot;
  free_slot = i;
}

/* The live item with this id, taken out of the table (so it is answered once); NULL if stale. */
static ll_item_t *slot_claim(double id) {
  if (!(id >= 0) || id > 9007199254740991.0) return NULL;
  uint64_t v = (uint64_t) id;
  uint32_t i = (uint32_t) (v & ((1u << SLOT_BITS) - 1));
  uint32_t gen = (uint32_t) (v >> SLOT_BITS);
  if (i >= nslots || slots[i].item == NULL || slots[i].gen != gen) return NULL;
  ll_item_t *it = slots[i].item;
  slot_release(it);
  return it;
}

/* After the reply: lets a waiting worker go (write) or frees the item. */
static void item_finish(napi_env env, ll_item_t *it) {
  it->s->outstanding--;
  if (it->buf_ref != NULL) {
    napi_value ab;
    if (napi_get_reference_value(env, it->buf_ref, &ab) == napi_ok && ab != NULL) napi_detach_arraybuffer(env, ab);
    napi_delete_reference(env, it->buf_ref);
    it->buf_ref = NULL;
  }
  if (it->waiting) sem_post(&it->done); /* the worker frees it */
  else free(it);
}

/* ---- the JS thread: dispatch ---- */

static void session_release(ll_session_t *s);
static void session_teardown(napi_env env, ll_session_t *s);
static void stop_notifier(ll_session_t *s);

static napi_value make_name(napi_env env, const char *name) {
  napi_value v;
  if (name == NULL) napi_get_undefined(env, &v);
  else napi_create_string_latin1(env, name, NAPI_AUTO_LENGTH, &v);
  return v;
}

/* Calls dispatch(kind, id, name, name2, buf) with this = the session object. */
static void call_js(napi_env env, ll_session_t *s, napi_value fn, napi_value self, int kind, double id, napi_value name, napi_value name2, napi_value buf, napi_ref *error) {
  napi_value argv[5];
  napi_create_int32(env, kind, &argv[0]);
  napi_create_double(env, id, &argv[1]);
  argv[2] = name;
  argv[3] = name2;
  argv[4] = buf;
  napi_value result;
  napi_status st = napi_call_function(env, self, fn, 5, argv, &result);
  if (st == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    if (*error == NULL) napi_create_reference(env, err, 1, error);
  }
}

static void dispatch_item(napi_env env, ll_session_t *s, ll_item_t *it, napi_value fn, napi_value self, napi_ref *error) {
  napi_value undef;
  napi_get_undefined(env, &undef);
  if (it->kind == IT_FORGET_MULTI) {
    const double *pairs = (const double *) it->tail;
    for (size_t i = 0; i < it->nforgets; i++) {
      shared_args[A_INO] = pairs[2 * i];
      shared_args[A_U1] = pairs[2 * i + 1];
      call_js(env, s, fn, self, OP_FORGET, 0, undef, undef, undef, error);
    }
    free(it);
    return;
  }
  memcpy(shared_args, it->a, sizeof(it->a));
  if (it->req == NULL) { /* forget or event */
    call_js(env, s, fn, self, it->kind, 0, make_name(env, it->name), undef, undef, error);
    free(it);
    return;
  }
  s->stat_requests++;
  double id = slot_take(it);
  if (id < 0) {
    fuse_reply_err(it->req, ENOMEM);
    if (it->waiting) sem_post(&it->done);
    else free(it);
    return;
  }
  s->outstanding++;
  napi_value buf = undef;
  if (it->kind == OP_WRITE && it->data_len > 0) {
    napi_value ab;
    if (napi_create_external_buffer(env, it->data_len, (void *) it->data, NULL, NULL, &buf) == napi_ok &&
        napi_get_typedarray_info(env, buf, NULL, NULL, NULL, &ab, NULL) == napi_ok) {
      napi_create_reference(env, ab, 1, &it->buf_ref);
    } else {
      /* no external buffers here (a sandboxed Node): copy instead */
      void *copy;
      napi_create_buffer_copy(env, it->data_len, it->data, &copy, &buf);
    }
  } else if (it->kind == OP_WRITE || it->kind == OP_SETXATTR) {
    void *copy;
    napi_create_buffer_copy(env, it->data_len, it->data_len ? it->data : "", &copy, &buf);
  }
  napi_ref before = *error;
  call_js(env, s, fn, self, it->kind, id, make_name(env, it->name), make_name(env, it->name2), buf, error);
  if (*error != before) {
    /* The handler threw: answer EIO unless it replied first. */
    ll_item_t *still = slot_claim(id);
    if (still != NULL) {
      fuse_reply_err(still->req, EIO);
      item_finish(env, still);
    }
  }
}

static void on_closed(uv_handle_t *handle) {
  session_release(handle->data);
}

static void dispatch_one(napi_env env, ll_session_t *s, ll_item_t *it, napi_value fn, napi_value self, napi_ref *error) {
  napi_handle_scope hs;
  napi_open_handle_scope(env, &hs);
  dispatch_item(env, s, it, fn, self, error);
  napi_close_handle_scope(env, hs);
}

/* At most this many items per wake-up: the rest go back to the queue head, so timers and
   sockets of the event loop (the daemon's control socket) get their turn in a flood. */
#define MAX_BATCH 1024

static void on_async(uv_async_t *handle) {
  ll_session_t *s = handle->data;
  napi_env env = s->env;
  pthread_mutex_lock(&s->qlock);
  ll_item_t *list = s->qhead;
  s->qhead = s->qtail = NULL;
  pthread_mutex_unlock(&s->qlock);
  if (list == NULL || s->closing) return;
  {
    ll_item_t *cut = list;
    for (int n = 1; n < MAX_BATCH && cut->next != NULL; n++) cut = cut->next;
    ll_item_t *rest = cut->next;
    if (rest != NULL) {
      cut->next = NULL;
      ll_item_t *rest_tail = rest;
      while (rest_tail->next != NULL) rest_tail = rest_tail->next;
      pthread_mutex_lock(&s->qlock);
      rest_tail->next = s->qhead;
      if (s->qhead == NULL) s->qtail = rest_tail;
      s->qhead = rest;
      pthread_mutex_unlock(&s->qlock);
      uv_async_send(&s->async);
    }
  }

  napi_handle_scope outer;
  napi_open_handle_scope(env, &outer);
  napi_value fn, self;
  napi_get_reference_value(env, s->dispatch_ref, &fn);
  napi_get_reference_value(env, s->self_ref, &self);
  napi_callback_scope scope;
  napi_open_callback_scope(env, self, s->actx, &scope);
  napi_ref error = NULL;
  ll_item_t *last = NULL; /* ENDED or MOUNT_FAILED: dispatched after everything else */
  uint64_t batch = 0;
  while (list != NULL) {
    ll_item_t *it = list;
    list = it->next;
    if (it->kind == EV_ENDED || it->kind == EV_MOUNT_FAILED) {
      /* The loop thread's last event: every request came before it. Join the threads,
         free what JS still holds, then take what the unmount helper posted meanwhile. */
      last = it;
      session_teardown(env, s);
      pthread_mutex_lock(&s->qlock);
      ll_item_t *late = s->qhead;
      s->qhead = s->qtail = NULL;
      pthread_mutex_unlock(&s->qlock);
      if (late != NULL) {
        ll_item_t **tail = &list;
        while (*tail != NULL) tail = &(*tail)->next;
        *tail = late;
      }
      continue;
    }
    if (it->req != NULL) batch++;
    dispatch_one(env, s, it, fn, self, &error);
  }
  if (batch > 0) {
    s->stat_batches++;
    if (batch > s->stat_max_batch) s->stat_max_batch = batch;
  }
  if (last != NULL) dispatch_one(env, s, last, fn, self, &error);
  napi_close_callback_scope(env, scope);
  if (last != NULL) {
    s->closing = 1;
    napi_delete_reference(env, s->dispatch_ref);
    napi_delete_reference(env, s->self_ref);
    napi_async_destroy(env, s->actx);
    uv_close((uv_handle_t *) &s->async, on_closed); /* drops the session's own reference */
  }
  if (error != NULL) {
    napi_value err;
    napi_get_reference_value(env, error, &err);
    napi_delete_reference(env, error);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, outer);
}

/* ---- the loop thread, the notifier thread, the unmount helper ---- */

static void *notify_main(void *arg) {
  ll_session_t *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->nlock);
    while (s->nhead == NULL && !s->nstop) pthread_cond_wait(&s->ncond, &s->nlock);
    ll_notify_t *n = s->nhead;
    if (n != NULL) {
      s->nhead = n->next;
      if (s->nhead == NULL) s->ntail = NULL;
    }
    int stop = s->nstop;
    pthread_mutex_unlock(&s->nlock);
    if (n == NULL) break;
    int res;
    if (stop) res = -ENOTCONN;
    else if (n->kind == 1) res = fuse_lowlevel_notify_inval_inode(s->se, n->ino, n->off, n->len);
    else if (n->kind == 2) res = fuse_lowlevel_notify_inval_entry(s->se, n->ino, n->name, n->namelen);
    else res = fuse_lowlevel_notify_delete(s->se, n->ino, n->child, n->name, n->namelen);
    post_event(s, EV_NOTIFY_DONE, n->token, res, NULL);
    free(n);
  }
  return NULL;
}

/* Stops the notifier after it has answered what is queued (-ENOTCONN); new notifications are refused. */
static void stop_notifier(ll_session_t *s) {
  pthread_mutex_lock(&s->nlock);
  int started = s->notify_started;
  s->nstop = 1;
  pthread_cond_signal(&s->ncond);
  pthread_mutex_unlock(&s->nlock);
  if (!started) return;
  pthread_join(s->notify_thread, NULL);
  pthread_mutex_lock(&s->nlock);
  s->notify_started = 0;
  pthread_mutex_unlock(&s->nlock);
}

static void *loop_main(void *arg) {
  ll_session_t *s = arg;
  if (fuse_session_mount(s->se, s->mountpoint) != 0) {
    char msg[512];
    copy_last_log(msg, sizeof(msg));
    post_event(s, EV_MOUNT_FAILED, 0, 0, msg[0] ? msg : "fuse_session_mount failed");
    return NULL;
  }
  pthread_mutex_lock(&s->nlock);
  if (start_thread(&s->notify_thread, notify_main, s) == 0) s->notify_started = 1;
  pthread_mutex_unlock(&s->nlock);
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  int res = ENOMEM;
  if (cfg != NULL) {
    if (s->max_threads > 0) fuse_loop_cfg_set_max_threads(cfg, s->max_threads);
    if (s->max_idle_threads >= 0) fuse_loop_cfg_set_idle_threads(cfg, (unsigned) s->max_idle_threads); /* else libfuse's default: keep idle workers */
    fuse_loop_cfg_set_clone_fd(cfg, s->clone_fd);
    res = fuse_session_loop_mt(s->se, cfg);
    fuse_loop_cfg_destroy(cfg);
  }
  /* No notification may race the close of /dev/fuse (its fd number could be reused). */
  stop_notifier(s);
  /* Already unmounted (the usual case): libfuse sees POLLERR and only closes the fd. */
  fuse_session_unmount(s->se);
  post_event(s, EV_ENDED, res, 0, NULL);
  return NULL;
}

static void *unmount_main(void *arg) {
  ll_session_t *s = arg;
  int res = 0;
  if (geteuid() == 0 && umount2(s->mountpoint, MNT_DETACH) == 0) {
    res = 0;
  } else {
    char *argv[] = { "fusermount3", "-u", "-q", "-z", "--", s->mountpoint, NULL };
    pid_t pid;
    int status = 0;
    res = posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ);
    if (res == 0) {
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      res = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
    } else {
      res = -res;
    }
  }
  post_event(s, EV_UNMOUNT_DONE, res, 0, NULL);
  return NULL;
}

/* JS thread, once the loop thread has posted its last event. */
static void session_teardown(napi_env env, ll_session_t *s) {
  if (s->ended) return;
  s->ended = 1;
  if (s->loop_started) pthread_join(s->loop_thread, NULL);
  s->loop_started = 0;
  if (s->unmount_started) pthread_join(s->unmount_thread, NULL);
  s->unmount_started = 0;
  stop_notifier(s); /* a mount that failed never started it; otherwise already stopped */
  /* Requests JS never answered: free them (the connection is gone); late replies are refused. */
  for (uint32_t i = 0; i < nslots && s->outstanding > 0; i++) {
    ll_item_t *it = slots[i].item;
    if (it == NULL || it->s != s) continue;
    slot_release(it);
    fuse_reply_none(it->req);
    item_finish(env, it);
  }
  fuse_session_destroy(s->se);
  s->se = NULL;
}

static void session_release(ll_session_t *s) {
  if (--s->refs > 0) return;
  pthread_mutex_destroy(&s->qlock);
  pthread_mutex_destroy(&s->nlock);
  pthread_cond_destroy(&s->ncond);
  free(s->mountpoint);
  free(s);
}

/* ---- N-API helpers ---- */

#define CHECK(call)                                                         \
  do {                                                                      \
    if ((call) != napi_ok) {                                                \
      napi_throw_error(env, NULL, "fuse_lowlevel: " #call " failed");        \
      return NULL;                                                          \
    }                                                                       \
  } while (0)

#define ARGS(n)                                                             \
  napi_value argv[n];                                                       \
  size_t argc = n;                                                          \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));              \
  for (size_t _i = argc; _i < n; _i++) napi_get_undefined(env, &argv[_i]);

static napi_value js_bool(napi_env env, int b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

static napi_value js_num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static double num_of(napi_env env, napi_value v, double fallback) {
  double d;
  return napi_get_value_double(env, v, &d) == napi_ok ? d : fallback;
}

static double prop_num(napi_env env, napi_value obj, const char *name, double fallback) {
  napi_value v;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return fallback;
  return num_of(env, v, fallback);
}

/* A Float64Array of at least `need` elements, or NULL (an empty one gives a pointer to a zero). */
static double *f64_of(napi_env env, napi_value v, size_t need, size_t *len_out) {
  static double empty = 0;
  napi_typedarray_type t;
  size_t len;
  void *data;
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return NULL;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, NULL, NULL) != napi_ok) return NULL;
  if (t != napi_float64_array || len < need) return NULL;
  if (len_out) *len_out = len;
  return len == 0 || data == NULL ? &empty : data;
}

/* The bytes of a Buffer / TypedArray / ArrayBuffer. */
static int bytes_of(napi_env env, napi_value v, const char **p, size_t *n) {
  bool is;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type t;
    size_t len;
    void *data;
    if (napi_get_typedarray_info(env, v, &t, &len, &data, NULL, NULL) != napi_ok) return 0;
    size_t el = 1;
    if (t == napi_int16_array || t == napi_uint16_array) el = 2;
    else if (t == napi_int32_array || t == napi_uint32_array || t == napi_float32_array) el = 4;
    else if (t == napi_float64_array || t == napi_bigint64_array || t == napi_biguint64_array) el = 8;
    *p = data;
    *n = len * el;
    return 1;
  }
  if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    void *data;
    if (napi_get_arraybuffer_info(env, v, &data, n) != napi_ok) return 0;
    *p = data;
    return 1;
  }
  return 0;
}

/* A latin1 JS string as raw bytes into buf (NUL-terminated); its length, or -1 if no string / too long. */
static ssize_t latin1_of(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len;
  if (napi_get_value_string_latin1(env, v, NULL, 0, &len) != napi_ok) return -1;
  if (len + 1 > size) return -1;
  napi_get_value_string_latin1(env, v, buf, size, &len);
  return (ssize_t) len;
}

static void stat_from(const double *f, struct stat *st) {
  memset(st, 0, sizeof(*st));
  st->st_ino = (ino_t) f[ST_INO];
  st->st_mode = (mode_t) f[ST_MODE];
  st->st_nlink = (nlink_t) f[ST_NLINK];
  st->st_uid = (uid_t) f[ST_UID];
  st->st_gid = (gid_t) f[ST_GID];
  st->st_rdev = (dev_t) f[ST_RDEV];
  st->st_size = (off_t) f[ST_SIZE];
  st->st_blksize = (blksize_t) f[ST_BLKSIZE];
  st->st_blocks = (blkcnt_t) f[ST_BLOCKS];
  st->st_atim.tv_sec = (time_t) f[ST_ATIME];
  st->st_atim.tv_nsec = (long) f[ST_ATIME_NS];
  st->st_mtim.tv_sec = (time_t) f[ST_MTIME];
  st->st_mtim.tv_nsec = (long) f[ST_MTIME_NS];
  st->st_ctim.tv_sec = (time_t) f[ST_CTIME];
  st->st_ctim.tv_nsec = (long) f[ST_CTIME_NS];
}

static void entry_from(const double *e, struct fuse_entry_param *p) {
  memset(p, 0, sizeof(*p));
  p->ino = (fuse_ino_t) e[E_INO];
  p->generation = (uint64_t) e[E_GEN];
  p->entry_timeout = e[E_ENTRY_TIMEOUT];
  p->attr_timeout = e[E_ATTR_TIMEOUT];
  stat_from(e + E_STAT, &p->attr);
}

static void open_flags_to(struct fuse_file_info *fi, uint32_t flags) {
  fi->direct_io = (flags & OF_DIRECT_IO) != 0;
  fi->keep_cache = (flags & OF_KEEP_CACHE) != 0;
  fi->nonseekable = (flags & OF_NONSEEKABLE) != 0;
  fi->cache_readdir = (flags & OF_CACHE_READDIR) != 0;
  fi->noflush = (flags & OF_NOFLUSH) != 0;
}

/* Replies: the first argument is the request id. Each returns 0 (sent), -errno (libfuse
   could not send it: the kernel never saw the reply, e.g. -ENOENT when the request was
   interrupted), or false when the id is not a live request (answered already, or the
   session ended). A reply with bad arguments answers EIO and throws a TypeError. */

#define CLAIM(argv0)                                                        \
  ll_item_t *it = slot_claim(num_of(env, argv0, -1));                       \
  if (it == NULL) return js_bool(env, 0);

#define BAD_ARGS(msg)                                                       \
  do {                                                                      \
    fuse_reply_err(it->req, EIO);                                           \
    item_finish(env, it);                                                   \
    napi_throw_type_error(env, NULL, msg);                                  \
    return NULL;                                                            \
  } while (0)

#define DONE(res)                                                           \
  do {                                                                      \
    int _r = (res);                                                         \
    item_finish(env, it);                                                   \
    return js_num(env, _r);                                                 \
  } while (0)

/* reply_err(id, errno): errno positive (0 = success with no data). */
static napi_value ll_reply_err(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  int e = (int) num_of(env, argv[1], EIO);
  if (e < 0) e = -e;
  DONE(fuse_reply_err(it->req, e));
}

/* reply_entry(id, Float64Array[E_LEN]) — also a negative entry (nodeid 0). */
static napi_value ll_reply_entry(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  double *e = f64_of(env, argv[1], E_LEN, NULL);
  if (e == NULL) BAD_ARGS("reply_entry: expected a Float64Array entry");
  struct fuse_entry_param p;
  entry_from(e, &p);
  DONE(fuse_reply_entry(it->req, &p));
}

/* reply_create(id, entry, fh, openFlags) */
static napi_value ll_reply_create(napi_env env, napi_callback_info info) {
  ARGS(4)
  CLAIM(argv[0])
  double *e = f64_of(env, argv[1], E_LEN, NULL);
  if (e == NULL) BAD_ARGS("reply_create: expected a Float64Array entry");
  struct fuse_entry_param p;
  entry_from(e, &p);
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof(fi));
  fi.fh = (uint64_t) num_of(env, argv[2], 0);
  open_flags_to(&fi, (uint32_t) num_of(env, argv[3], 0));
  DONE(fuse_reply_create(it->req, &p, &fi));
}

/* reply_attr(id, Float64Array[ST_LEN], timeout) */
static napi_value ll_reply_attr(napi_env env, napi_callback_info info) {
  ARGS(3)
  CLAIM(argv[0])
  double *f = f64_of(env, argv[1], ST_LEN, NULL);
  if (f == NULL) BAD_ARGS("reply_attr: expected a Float64Array stat");
  struct stat st;
  stat_from(f, &st);
  DONE(fuse_reply_attr(it->req, &st, num_of(env, argv[2], 0)));
}

/* reply_readlink(id, target byte string) */
static napi_value ll_reply_readlink(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  char target[PATH_MAX + 1];
  if (latin1_of(env, argv[1], target, sizeof(target)) < 0) BAD_ARGS("reply_readlink: expected a byte string of at most PATH_MAX bytes");
  DONE(fuse_reply_readlink(it->req, target));
}

/* reply_open(id, fh, openFlags) — open and opendir */
static napi_value ll_reply_open(napi_env env, napi_callback_info info) {
  ARGS(3)
  CLAIM(argv[0])
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof(fi));
  fi.fh = (uint64_t) num_of(env, argv[1], 0);
  open_flags_to(&fi, (uint32_t) num_of(env, argv[2], 0));
  DONE(fuse_reply_open(it->req, &fi));
}

/* reply_write(id, count) */
static napi_value ll_reply_write(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  DONE(fuse_reply_write(it->req, (size_t) num_of(env, argv[1], 0)));
}

/* reply_buf(id, bytes[, length]) — read, getxattr, listxattr; bytes may be undefined (empty) */
static napi_value ll_reply_buf(napi_env env, napi_callback_info info) {
  ARGS(3)
  CLAIM(argv[0])
  const char *p = NULL;
  size_t n = 0;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_undefined && t != napi_null && !bytes_of(env, argv[1], &p, &n)) BAD_ARGS("reply_buf: expected a Buffer");
  napi_typeof(env, argv[2], &t);
  if (t == napi_number) {
    double want = num_of(env, argv[2], (double) n);
    if (want >= 0 && want < (double) n) n = (size_t) want;
  }
  DONE(fuse_reply_buf(it->req, p, n));
}

/* reply_iov(id, [bytes, ...]) */
static napi_value ll_reply_iov(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  uint32_t n;
  bool is;
  if (napi_is_array(env, argv[1], &is) != napi_ok || !is || napi_get_array_length(env, argv[1], &n) != napi_ok) BAD_ARGS("reply_iov: expected an array of Buffers");
  struct iovec stack_iov[16];
  struct iovec *iov = n <= 16 ? stack_iov : malloc(n * sizeof(struct iovec));
  if (iov == NULL) {
    fuse_reply_err(it->req, ENOMEM);
    DONE(-ENOMEM);
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    const char *p;
    size_t len;
    if (napi_get_element(env, argv[1], i, &el) != napi_ok || !bytes_of(env, el, &p, &len)) {
      if (iov != stack_iov) free(iov);
      BAD_ARGS("reply_iov: expected an array of Buffers");
    }
    iov[i].iov_base = (void *) p;
    iov[i].iov_len = len;
  }
  int res = fuse_reply_iov(it->req, iov, (int) n);
  if (iov != stack_iov) free(iov);
  DONE(res);
}

/* Zeros for reply_data holes. */
#define ZEROS_LEN (1024 * 1024)
static char *zeros = NULL;

/* reply_data(id, Float64Array [fd, pos, len]*, count): a read answered straight from
   file descriptors (fd -1: len zero bytes). libfuse reads (or splices, with
   FUSE_CAP_SPLICE_WRITE) the ranges; a short read ends the reply there. */
static napi_value ll_reply_data(napi_env env, napi_callback_info info) {
  ARGS(3)
  CLAIM(argv[0])
  size_t len;
  double *f = f64_of(env, argv[1], 0, &len);
  if (f == NULL) BAD_ARGS("reply_data: expected a Float64Array of [fd, pos, len] triples");
  size_t count = (size_t) num_of(env, argv[2], (double) (len / 3));
  if (count * 3 > len) BAD_ARGS("reply_data: count exceeds the array");
  if (zeros == NULL && (zeros = calloc(1, ZEROS_LEN)) == NULL) {
    fuse_reply_err(it->req, ENOMEM);
    DONE(-ENOMEM);
  }
  /* Zero ranges longer than the zero buffer take several bufs. */
  size_t nbufs = 0;
  for (size_t i = 0; i < count; i++) {
    size_t l = (size_t) f[3 * i + 2];
    nbufs += f[3 * i] < 0 ? (l + ZEROS_LEN - 1) / ZEROS_LEN : 1;
  }
  struct fuse_bufvec *bv = calloc(1, sizeof(struct fuse_bufvec) + (nbufs ? nbufs : 1) * sizeof(struct fuse_buf));
  if (bv == NULL) {
    fuse_reply_err(it->req, ENOMEM);
    DONE(-ENOMEM);
  }
  size_t k = 0;
  for (size_t i = 0; i < count; i++) {
    int fd = (int) f[3 * i];
    size_t l = (size_t) f[3 * i + 2];
    if (fd < 0) {
      while (l > 0) {
        size_t part = l < ZEROS_LEN ? l : ZEROS_LEN;
        bv->buf[k].mem = zeros;
        bv->buf[k].size = part;
        k++;
        l -= part;
      }
    } else {
      bv->buf[k].fd = fd;
      bv->buf[k].pos = (off_t) f[3 * i + 1];
      bv->buf[k].size = l;
      bv->buf[k].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
      k++;
    }
  }
  bv->count = k;
  bv->idx = 0;
  bv->off = 0;
  int res = fuse_reply_data(it->req, bv, 0);
  free(bv);
  DONE(res);
}

/* reply_statfs(id, Float64Array [bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax]) */
static napi_value ll_reply_statfs(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  double *f = f64_of(env, argv[1], 11, NULL);
  if (f == NULL) BAD_ARGS("reply_statfs: expected a Float64Array of 11");
  struct statvfs st;
  memset(&st, 0, sizeof(st));
  st.f_bsize = (unsigned long) f[0];
  st.f_frsize = (unsigned long) f[1];
  st.f_blocks = (fsblkcnt_t) f[2];
  st.f_bfree = (fsblkcnt_t) f[3];
  st.f_bavail = (fsblkcnt_t) f[4];
  st.f_files = (fsfilcnt_t) f[5];
  st.f_ffree = (fsfilcnt_t) f[6];
  st.f_favail = (fsfilcnt_t) f[7];
  st.f_fsid = (unsigned long) f[8];
  st.f_flag = (unsigned long) f[9];
  st.f_namemax = (unsigned long) f[10];
  DONE(fuse_reply_statfs(it->req, &st));
}

/* reply_xattr(id, size): the size a getxattr/listxattr with size 0 asked for */
static napi_value ll_reply_xattr(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  DONE(fuse_reply_xattr(it->req, (size_t) num_of(env, argv[1], 0)));
}

/* reply_lseek(id, offset) */
static napi_value ll_reply_lseek(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  DONE(fuse_reply_lseek(it->req, (off_t) num_of(env, argv[1], 0)));
}

/* reply_readdir(id, names[], Float64Array, plus): entries from the start of the arrays
   until the request's size is full; plain: [ino, mode, nextOffset] per entry, plus:
   [entry (E_LEN), nextOffset]. Returns how many entries were sent (>= 0) or -errno.
   With plus, each entry sent with a nonzero nodeid other than . and .. is one lookup. */
static napi_value ll_reply_readdir(napi_env env, napi_callback_info info) {
  ARGS(4)
  CLAIM(argv[0])
  bool plus = false;
  napi_get_value_bool(env, argv[3], &plus);
  size_t stride = plus ? E_LEN + 1 : 3;
  uint32_t n = 0;
  bool is;
  if (napi_is_array(env, argv[1], &is) != napi_ok || !is || napi_get_array_length(env, argv[1], &n) != napi_ok) BAD_ARGS("reply_readdir: expected an array of names");
  size_t flen;
  double *f = f64_of(env, argv[2], (size_t) n * stride, &flen);
  if (f == NULL) BAD_ARGS("reply_readdir: the Float64Array is shorter than the names");
  size_t size = (size_t) it->a[A_SIZE];
  char *buf = malloc(size ? size : 1);
  if (buf == NULL) {
    fuse_reply_err(it->req, ENOMEM);
    DONE(-ENOMEM);
  }
  size_t used = 0;
  uint32_t sent = 0;
  char name[1025];
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    if (napi_get_element(env, argv[1], i, &v) != napi_ok || latin1_of(env, v, name, sizeof(name)) <= 0) {
      free(buf);
      BAD_ARGS("reply_readdir: a name is no byte string of 1 to 1024 bytes");
    }
    const double *e = f + (size_t) i * stride;
    size_t need;
    if (plus) {
      struct fuse_entry_param p;
      entry_from(e, &p);
      need = fuse_add_direntry_plus(it->req, buf + used, size - used, name, &p, (off_t) e[E_LEN]);
    } else {
      struct stat st;
      memset(&st, 0, sizeof(st));
      st.st_ino = (ino_t) e[0];
      st.st_mode = (mode_t) e[1];
      need = fuse_add_direntry(it->req, buf + used, size - used, name, &st, (off_t) e[2]);
    }
    if (need > size - used) break;
    used += need;
    sent++;
  }
  int res = fuse_reply_buf(it->req, buf, used);
  free(buf);
  DONE(res < 0 ? res : (int) sent);
}

/* ---- mount, unmount, notify ---- */

static void session_finalize(napi_env env, void *data, void *hint) {
  (void) env;
  (void) hint;
  session_release(data);
}

static const struct fuse_lowlevel_ops all_ops = {
  .init = ll_init,
  .lookup = ll_lookup,
  .forget = ll_forget,
  .forget_multi = ll_forget_multi,
  .getattr = ll_getattr,
  .setattr = ll_setattr,
  .readlink = ll_readlink,
  .mknod = ll_mknod,
  .mkdir = ll_mkdir,
  .unlink = ll_unlink,
  .rmdir = ll_rmdir,
  .symlink = ll_symlink,
  .rename = ll_rename,
  .link = ll_link,
  .open = ll_open,
  .read = ll_read,
  .write = ll_write,
  .flush = ll_flush,
  .release = ll_release,
  .fsync = ll_fsync,
  .opendir = ll_opendir,
  .readdir = ll_readdir,
  .readdirplus = ll_readdirplus,
  .releasedir = ll_releasedir,
  .fsyncdir = ll_fsyncdir,
  .statfs = ll_statfs,
  .setxattr = ll_setxattr,
  .getxattr = ll_getxattr,
  .listxattr = ll_listxattr,
  .removexattr = ll_removexattr,
  .access = ll_access,
  .create = ll_create,
  .fallocate = ll_fallocate,
  .lseek = ll_lseek,
};

/* Only the operations JS implements are given to libfuse: for the others libfuse answers
   ENOSYS (the kernel then stops asking for access, flush, xattrs, fallocate, lseek, ...) or
   does the default (open/opendir/release: fh 0, nothing to do). */
static void select_ops(struct fuse_lowlevel_ops *ops, const int *have) {
  memset(ops, 0, sizeof(*ops));
  ops->init = all_ops.init;
#define PICK(code, field) if (have[code]) ops->field = all_ops.field;
  PICK(OP_LOOKUP, lookup)
  if (have[OP_FORGET]) {
    ops->forget = all_ops.forget;
    ops->forget_multi = all_ops.forget_multi;
  }
  PICK(OP_GETATTR, getattr)
  PICK(OP_SETATTR, setattr)
  PICK(OP_READLINK, readlink)
  PICK(OP_MKNOD, mknod)
  PICK(OP_MKDIR, mkdir)
  PICK(OP_UNLINK, unlink)
  PICK(OP_RMDIR, rmdir)
  PICK(OP_SYMLINK, symlink)
  PICK(OP_RENAME, rename)
  PICK(OP_LINK, link)
  PICK(OP_OPEN, open)
  PICK(OP_READ, read)
  PICK(OP_WRITE, write)
  PICK(OP_FLUSH, flush)
  PICK(OP_RELEASE, release)
  PICK(OP_FSYNC, fsync)
  PICK(OP_OPENDIR, opendir)
  PICK(OP_READDIR, readdir)
  PICK(OP_READDIRPLUS, readdirplus)
  PICK(OP_RELEASEDIR, releasedir)
  PICK(OP_FSYNCDIR, fsyncdir)
  PICK(OP_STATFS, statfs)
  PICK(OP_SETXATTR, setxattr)
  PICK(OP_GETXATTR, getxattr)
  PICK(OP_LISTXATTR, listxattr)
  PICK(OP_REMOVEXATTR, removexattr)
  PICK(OP_ACCESS, access)
  PICK(OP_CREATE, create)
  PICK(OP_FALLOCATE, fallocate)
  PICK(OP_LSEEK, lseek)
#undef PICK
}

/*
 * mount(mountpoint, args string[], config, dispatch, self) -> session
 *   args: libfuse arguments after argv[0], e.g. ['-o', 'allow_other,fsname=x', '-d'];
 *   config: { ops: number[] (operation codes JS implements), want, unwant (FUSE_CAP_*
 *   bits), maxWrite, maxReadahead, maxBackground, congestionThreshold, maxThreads,
 *   maxIdleThreads, cloneFd }; dispatch(kind, id, name, name2, buf) is called with
 *   this = self (the JS session object) for every request and event; the numbers of
 *   each are in the shared `args` array (A_* layout) while it runs.
 * Throws when libfuse refuses the arguments; a failed mount(2) arrives as MOUNT_FAILED.
 */
static napi_value ll_mount(napi_env env, napi_callback_info info) {
  ARGS(5)
  char mnt[PATH_MAX];
  size_t mlen;
  if (napi_get_value_string_utf8(env, argv[0], mnt, sizeof(mnt), &mlen) != napi_ok || mlen == 0 || mlen >= sizeof(mnt) - 1) {
    napi_throw_type_error(env, NULL, "mount: the mountpoint must be a non-empty string");
    return NULL;
  }
  napi_valuetype t;
  napi_typeof(env, argv[3], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "mount: dispatch must be a function");
    return NULL;
  }
  napi_typeof(env, argv[4], &t);
  if (t != napi_object) {
    napi_throw_type_error(env, NULL, "mount: the session object is missing");
    return NULL;
  }

  /* operations */
  int have[OP_COUNT] = { 0 };
  napi_value opsv;
  uint32_t nops = 0;
  if (napi_get_named_property(env, argv[2], "ops", &opsv) == napi_ok) napi_get_array_length(env, opsv, &nops);
  for (uint32_t i = 0; i < nops; i++) {
    napi_value v;
    napi_get_element(env, opsv, i, &v);
    int code = (int) num_of(env, v, 0);
    if (code > 0 && code < OP_COUNT) have[code] = 1;
  }
  if (!have[OP_LOOKUP] || !have[OP_GETATTR]) {
    napi_throw_type_error(env, NULL, "mount: lookup and getattr are required");
    return NULL;
  }
  struct fuse_lowlevel_ops ops;
  select_ops(&ops, have);

  /* libfuse arguments: fuse_opt_add_arg keeps them in an allocated argv it may extend */
  struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
  fuse_opt_add_arg(&args, "fuse-native-lowlevel");
  bool is_arr = false;
  napi_is_array(env, argv[1], &is_arr);
  uint32_t nargs = 0;
  if (is_arr) napi_get_array_length(env, argv[1], &nargs);
  for (uint32_t i = 0; i < nargs; i++) {
    napi_value v;
    char a[4096];
    size_t alen;
    napi_get_element(env, argv[1], i, &v);
    if (napi_get_value_string_utf8(env, v, a, sizeof(a), &alen) != napi_ok || alen >= sizeof(a) - 1) {
      fuse_opt_free_args(&args);
      napi_throw_type_error(env, NULL, "mount: every libfuse argument must be a string under 4 KiB");
      return NULL;
    }
    fuse_opt_add_arg(&args, a);
  }

  ll_session_t *s = calloc(1, sizeof(ll_session_t));
  if (s == NULL) {
    fuse_opt_free_args(&args);
    napi_throw_error(env, "ENOMEM", "mount: out of memory");
    return NULL;
  }
  s->env = env;
  s->refs = 2; /* the JS external, the running session */
  s->mountpoint = strdup(mnt);
  s->want = (uint64_t) prop_num(env, argv[2], "want", 0);
  s->unwant = (uint64_t) prop_num(env, argv[2], "unwant", 0);
  s->max_write = (unsigned) prop_num(env, argv[2], "maxWrite", 0);
  s->max_readahead = (unsigned) prop_num(env, argv[2], "maxReadahead", 0);
  s->max_background = (unsigned) prop_num(env, argv[2], "maxBackground", 0);
  s->congestion_threshold = (unsigned) prop_num(env, argv[2], "congestionThreshold", 0);
  s->max_threads = (int) prop_num(env, argv[2], "maxThreads", 0);
  s->max_idle_threads = (int) prop_num(env, argv[2], "maxIdleThreads", -1);
  s->clone_fd = (int) prop_num(env, argv[2], "cloneFd", 0);
  pthread_mutex_init(&s->qlock, NULL);
  pthread_mutex_init(&s->nlock, NULL);
  pthread_cond_init(&s->ncond, NULL);

  clear_last_log();
  s->se = fuse_session_new(&args, &ops, sizeof(ops), s);
  fuse_opt_free_args(&args);
  if (s->se == NULL) {
    char msg[600];
    char why[512];
    copy_last_log(why, sizeof(why));
    snprintf(msg, sizeof(msg), "libfuse refused the mount options%s%s", why[0] ? ": " : "", why);
    s->refs = 1;
    session_release(s);
    napi_throw_error(env, "EINVAL", msg);
    return NULL;
  }

  uv_loop_t *loop;
  napi_value self = argv[4], name, ext;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_async_init(loop, &s->async, on_async) != 0) {
    fuse_session_destroy(s->se);
    s->refs = 1;
    session_release(s);
    napi_throw_error(env, NULL, "mount: cannot create the libuv async handle");
    return NULL;
  }
  s->async.data = s;
  napi_create_reference(env, argv[3], 1, &s->dispatch_ref);
  napi_create_reference(env, self, 1, &s->self_ref);
  napi_create_string_utf8(env, "fuse-native:lowlevel", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, self, name, &s->actx);

  if (start_thread(&s->loop_thread, loop_main, s) != 0) {
    /* Nothing started: end the session through the normal path. */
    post_event(s, EV_MOUNT_FAILED, 0, 0, "cannot start the FUSE loop thread");
  } else {
    s->loop_started = 1;
  }
  CHECK(napi_create_external(env, s, session_finalize, NULL, &ext));
  return ext;
}

static ll_session_t *session_of(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* unmount(session): lazy detach off the JS thread; UNMOUNT_DONE follows, then ENDED once
   the kernel lets go of the connection. False when the session has ended already. */
static napi_value ll_unmount(napi_env env, napi_callback_info info) {
  ARGS(1)
  ll_session_t *s = session_of(env, argv[0]);
  if (s == NULL || s->ended || s->closing || s->unmount_started) return js_bool(env, 0);
  if (start_thread(&s->unmount_thread, unmount_main, s) != 0) return js_bool(env, 0);
  s->unmount_started = 1;
  return js_bool(env, 1);
}

/* notify(session, kind, token, ino, offOrChild, len, name): kind 1 inval_inode(ino, off,
   len), 2 inval_entry(parent=ino, name), 3 delete(parent=ino, child, name). Queued for
   the notifier thread; NOTIFY_DONE(token, result) follows. -ENOTCONN if ended. */
static napi_value ll_notify(napi_env env, napi_callback_info info) {
  ARGS(7)
  ll_session_t *s = session_of(env, argv[0]);
  if (s == NULL || s->ended || s->closing) return js_num(env, -ENOTCONN);
  int kind = (int) num_of(env, argv[1], 0);
  if (kind < 1 || kind > 3) {
    napi_throw_type_error(env, NULL, "notify: unknown kind");
    return NULL;
  }
  char name[1025];
  ssize_t nlen = 0;
  if (kind != 1 && (nlen = latin1_of(env, argv[6], name, sizeof(name))) <= 0) {
    napi_throw_type_error(env, NULL, "notify: the name must be a byte string of 1 to 1024 bytes");
    return NULL;
  }
  ll_notify_t *n = calloc(1, sizeof(ll_notify_t) + (size_t) nlen + 1);
  if (n == NULL) return js_num(env, -ENOMEM);
  n->kind = kind;
  n->token = num_of(env, argv[2], 0);
  n->ino = (uint64_t) num_of(env, argv[3], 0);
  double b = num_of(env, argv[4], 0);
  n->off = (int64_t) b;
  n->child = b > 0 ? (uint64_t) b : 0;
  n->len = (int64_t) num_of(env, argv[5], 0);
  if (nlen > 0) memcpy(n->name, name, (size_t) nlen);
  n->namelen = (size_t) nlen;
  pthread_mutex_lock(&s->nlock);
  if (!s->notify_started || s->nstop) {
    pthread_mutex_unlock(&s->nlock);
    free(n);
    return js_num(env, -ENOTCONN);
  }
  if (s->ntail != NULL) s->ntail->next = n;
  else s->nhead = n;
  s->ntail = n;
  pthread_cond_signal(&s->ncond);
  pthread_mutex_unlock(&s->nlock);
  return js_num(env, 0);
}

/* stats(session) -> [requests dispatched to JS, wake-ups that carried requests, largest batch, requests JS holds] */
static napi_value ll_stats(napi_env env, napi_callback_info info) {
  ARGS(1)
  ll_session_t *s = session_of(env, argv[0]);
  if (s == NULL) return NULL;
  napi_value arr;
  napi_create_array_with_length(env, 4, &arr);
  napi_set_element(env, arr, 0, js_num(env, (double) s->stat_requests));
  napi_set_element(env, arr, 1, js_num(env, (double) s->stat_batches));
  napi_set_element(env, arr, 2, js_num(env, (double) s->stat_max_batch));
  napi_set_element(env, arr, 3, js_num(env, (double) s->outstanding));
  return arr;
}

/* ---- module ---- */

static void set_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

static void set_num(napi_env env, napi_value obj, const char *name, double v) {
  napi_set_named_property(env, obj, name, js_num(env, v));
}

static napi_value init_module(napi_env env, napi_value exports) {
  fuse_set_log_func(ll_log);

  napi_value ab, args;
  void *data;
  if (shared_args == NULL) {
    if (napi_create_arraybuffer(env, A_LEN * sizeof(double), &data, &ab) != napi_ok) return NULL;
    shared_args = data;
    napi_create_typedarray(env, napi_float64_array, A_LEN, ab, 0, &args);
    napi_create_reference(env, args, 1, &shared_args_ref);
  } else {
    napi_get_reference_value(env, shared_args_ref, &args);
  }
  napi_set_named_property(env, exports, "args", args);

  set_fn(env, exports, "mount", ll_mount);
  set_fn(env, exports, "unmount", ll_unmount);
  set_fn(env, exports, "notify", ll_notify);
  set_fn(env, exports, "stats", ll_stats);
  set_fn(env, exports, "reply_err", ll_reply_err);
  set_fn(env, exports, "reply_entry", ll_reply_entry);
  set_fn(env, exports, "reply_create", ll_reply_create);
  set_fn(env, exports, "reply_attr", ll_reply_attr);
  set_fn(env, exports, "reply_readlink", ll_reply_readlink);
  set_fn(env, exports, "reply_open", ll_reply_open);
  set_fn(env, exports, "reply_write", ll_reply_write);
  set_fn(env, exports, "reply_buf", ll_reply_buf);
  set_fn(env, exports, "reply_iov", ll_reply_iov);
  set_fn(env, exports, "reply_data", ll_reply_data);
  set_fn(env, exports, "reply_statfs", ll_reply_statfs);
  set_fn(env, exports, "reply_xattr", ll_reply_xattr);
  set_fn(env, exports, "reply_lseek", ll_reply_lseek);
  set_fn(env, exports, "reply_readdir", ll_reply_readdir);

  napi_value ops, ev, caps, set, layout;
  napi_create_object(env, &ops);
  for (int i = 1; i < OP_COUNT; i++) set_num(env, ops, op_names[i], i);
  napi_set_named_property(env, exports, "ops", ops);

  napi_create_object(env, &ev);
  set_num(env, ev, "INIT", EV_INIT);
  set_num(env, ev, "MOUNT_FAILED", EV_MOUNT_FAILED);
  set_num(env, ev, "NOTIFY_DONE", EV_NOTIFY_DONE);
  set_num(env, ev, "UNMOUNT_DONE", EV_UNMOUNT_DONE);
  set_num(env, ev, "ENDED", EV_ENDED);
  napi_set_named_property(env, exports, "events", ev);

  napi_create_object(env, &caps);
#define CAP(n) set_num(env, caps, #n, FUSE_CAP_##n);
  CAP(ASYNC_READ) CAP(POSIX_LOCKS) CAP(ATOMIC_O_TRUNC) CAP(EXPORT_SUPPORT) CAP(DONT_MASK)
  CAP(SPLICE_WRITE) CAP(SPLICE_MOVE) CAP(SPLICE_READ) CAP(FLOCK_LOCKS) CAP(IOCTL_DIR)
  CAP(AUTO_INVAL_DATA) CAP(READDIRPLUS) CAP(READDIRPLUS_AUTO) CAP(ASYNC_DIO)
  CAP(WRITEBACK_CACHE) CAP(NO_OPEN_SUPPORT) CAP(PARALLEL_DIROPS) CAP(POSIX_ACL)
  CAP(HANDLE_KILLPRIV) CAP(CACHE_SYMLINKS) CAP(NO_OPENDIR_SUPPORT) CAP(EXPLICIT_INVAL_DATA)
#undef CAP
  napi_set_named_property(env, exports, "caps", caps);

  napi_create_object(env, &set);
#define SET(n) set_num(env, set, #n, FUSE_SET_ATTR_##n);
  SET(MODE) SET(UID) SET(GID) SET(SIZE) SET(ATIME) SET(MTIME) SET(ATIME_NOW) SET(MTIME_NOW)
  SET(CTIME) SET(KILL_SUID) SET(KILL_SGID)
#undef SET
  napi_set_named_property(env, exports, "setattr", set);

  napi_create_object(env, &layout);
  set_num(env, layout, "A_INO", A_INO);
  set_num(env, layout, "A_INO2", A_INO2);
  set_num(env, layout, "A_FH", A_FH);
  set_num(env, layout, "A_OFF", A_OFF);
  set_num(env, layout, "A_SIZE", A_SIZE);
  set_num(env, layout, "A_U1", A_U1);
  set_num(env, layout, "A_U2", A_U2);
  set_num(env, layout, "A_U3", A_U3);
  set_num(env, layout, "A_UID", A_UID);
  set_num(env, layout, "A_GID", A_GID);
  set_num(env, layout, "A_PID", A_PID);
  set_num(env, layout, "A_UMASK", A_UMASK);
  set_num(env, layout, "A_ATTR", A_ATTR);
  set_num(env, layout, "ST_LEN", ST_LEN);
  set_num(env, layout, "E_LEN", E_LEN);
  set_num(env, layout, "OF_DIRECT_IO", OF_DIRECT_IO);
  set_num(env, layout, "OF_KEEP_CACHE", OF_KEEP_CACHE);
  set_num(env, layout, "OF_NONSEEKABLE", OF_NONSEEKABLE);
  set_num(env, layout, "OF_CACHE_READDIR", OF_CACHE_READDIR);
  set_num(env, layout, "OF_NOFLUSH", OF_NOFLUSH);
  napi_set_named_property(env, exports, "layout", layout);

  set_num(env, exports, "FUSE_VERSION", fuse_version());
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
