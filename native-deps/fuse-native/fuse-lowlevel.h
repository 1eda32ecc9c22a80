/*
 * fuse-lowlevel.h — what the files of fuse-native's libfuse3 low-level mode share (thinfs):
 * the operation codes and array layouts JS sees, the queued item, the session, and the
 * functions one file offers the others. Who runs on which thread: fuse-lowlevel.c.
 *
 *   fuse-lowlevel.c           sessions: mount, the loop/notifier/unmount threads, teardown, the module
 *   fuse-lowlevel-requests.c  libfuse worker threads: each request becomes an item on the queue
 *   fuse-lowlevel-dispatch.c  the JS thread: the request table, one wake-up dispatches a batch
 *   fuse-lowlevel-replies.c   the JS thread: ll_reply_* (the one way a request is answered)
 *   fuse-lowlevel-blockmap.c  the C hot path: READ/WRITE of mapped blocks served in the workers
 */
#ifndef THINFS_FUSE_LOWLEVEL_H
#define THINFS_FUSE_LOWLEVEL_H

#define FUSE_USE_VERSION 312
#define NAPI_VERSION 8
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
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
  int64_t write_reply;     /* write: >= 0, the count the worker replies with once woken (-1: JS replied) */
  sem_t done;
  napi_ref buf_ref;        /* write: the ArrayBuffer to detach after the reply */
  size_t nforgets;         /* IT_FORGET_MULTI: pairs (ino, nlookup) in tail */
  uint64_t ac_mark;        /* the attribute cache's mark when the request was received (ac_fill) */
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

/* The C hot path's block map (fuse-lowlevel-blockmap.c). */
typedef struct ll_blockmap ll_blockmap_t;
/* GETATTR answered in the worker (fuse-lowlevel-attrcache.c). */
typedef struct ll_attrcache ll_attrcache_t;

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

  /* The C hot path: READ/WRITE served in the worker from this map; NULL until JS configures it. */
  ll_blockmap_t *bm;
  /* GETATTR from the attributes JS last replied; NULL until JS configures it. */
  ll_attrcache_t *ac;

  /* Inodes known to have no security.capability xattr (fuse-lowlevel-requests.c). */
  pthread_mutex_t nocap_lock;
  uint64_t *nocap;         /* open addressing, 0 = empty slot (nodeid 0 is never used) */
  size_t nocap_size, nocap_used;
  uint64_t stat_nocap_hits;
};

/* The argument array shared with JS (fuse-lowlevel-dispatch.c; created by the module). */
extern double *shared_args;

/* ---- fuse-lowlevel-requests.c (worker threads, and any thread that posts) ---- */

/* Every operation, for select_ops; init sets the negotiated connection and posts INIT. */
extern const struct fuse_lowlevel_ops ll_all_ops;
ll_item_t *item_new(ll_session_t *s, fuse_req_t req, int kind, size_t tail);
/* Appends to the session's queue and wakes the JS thread (thread-safe). */
void enqueue(ll_session_t *s, ll_item_t *it);
/* Posts an event (no request) to the JS thread. */
void post_event(ll_session_t *s, int kind, double a0, double a1, const char *msg);

/* Marks / unmarks ino as having no security.capability (any thread). */
void nocap_set(ll_session_t *s, uint64_t ino, int none);
void nocap_clear(ll_session_t *s);

/* ---- fuse-lowlevel-dispatch.c (JS thread) ---- */

void on_async(uv_async_t *handle);
/* The live item with this id, taken out of the table (answered once); NULL if stale. */
ll_item_t *slot_claim(double id);
/* After the reply: lets a waiting worker go (write) or frees the item. */
void item_finish(napi_env env, ll_item_t *it);
/* Frees the session's requests JS never answered (the connection is gone). */
void table_drop_session(napi_env env, ll_session_t *s);

/* ---- fuse-lowlevel.c (JS thread) ---- */

void session_teardown(napi_env env, ll_session_t *s);
void session_release(ll_session_t *s);

/* ---- fuse-lowlevel-replies.c (JS thread) ---- */

void ll_export_replies(napi_env env, napi_value exports);
/* A struct stat from its ST_LEN doubles. */
void stat_from(const double *f, struct stat *st);

/* ---- fuse-lowlevel-blockmap.c ---- */

/* Worker threads: 1 = answered here; 0 = not in the map (JS answers, then fills it); -1 = JS answers. */
int bm_read(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, uint64_t fh);
int bm_write(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, uint64_t fh);
/* Worker threads: read-only OPEN of a known file (fh 0), RELEASE of fh 0; 1 = answered here. */
int bm_open(ll_session_t *s, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
int bm_release(ll_session_t *s, fuse_req_t req, struct fuse_file_info *fi);
/* After the workers have stopped. */
void bm_destroy(ll_blockmap_t *m);
/* JS thread: bm_configure, bm_fill, bm_drop, bm_quiesce, bm_stats. */
void ll_export_blockmap(napi_env env, napi_value exports);

/* ---- fuse-lowlevel-attrcache.c ---- */

/* Worker: 1 = the GETATTR was answered here. */
int ac_getattr(ll_session_t *s, fuse_req_t req, fuse_ino_t ino);
/* Worker: the mark a GETATTR/LOOKUP item carries to ac_fill. */
uint64_t ac_mark(ll_session_t *s);
/* Any thread: ino (0: every inode) may have changed. */
void ac_drop(ll_session_t *s, uint64_t ino);
/* JS thread, before a reply is sent: drops what the request may have changed. */
void ac_replied(ll_session_t *s, const ll_item_t *it);
/* JS thread: JS answered GETATTR/LOOKUP `it` with ino's attributes. */
void ac_fill(ll_session_t *s, const ll_item_t *it, uint64_t ino, const struct stat *st, double timeout);
/* After the workers have stopped. */
void ac_destroy(ll_attrcache_t *c);
/* JS thread: ac_configure, ac_put, ac_stats. */
void ll_export_attrcache(napi_env env, napi_value exports);

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

static inline napi_value js_bool(napi_env env, int b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

static inline napi_value js_num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static inline double num_of(napi_env env, napi_value v, double fallback) {
  double d;
  return napi_get_value_double(env, v, &d) == napi_ok ? d : fallback;
}

static inline double prop_num(napi_env env, napi_value obj, const char *name, double fallback) {
  napi_value v;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return fallback;
  return num_of(env, v, fallback);
}

/* A latin1 JS string as raw bytes into buf (NUL-terminated); its length, or -1 if no string / too long. */
static inline ssize_t latin1_of(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len;
  if (napi_get_value_string_latin1(env, v, NULL, 0, &len) != napi_ok) return -1;
  if (len + 1 > size) return -1;
  napi_get_value_string_latin1(env, v, buf, size, &len);
  return (ssize_t) len;
}

#endif
