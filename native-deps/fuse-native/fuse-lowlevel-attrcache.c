/*
 * fuse-lowlevel-attrcache.c — GETATTR answered in the libfuse worker thread (thinfs): the
 * attributes JS last replied for an inode (to a GETATTR, a LOOKUP, a CREATE, MKNOD, MKDIR
 * or SYMLINK, or in a READDIRPLUS entry: after drop_caches `find` meets every name that
 * way), kept per session
 * and handed back without a trip to JS while nothing has changed them.
 *
 * Why: the kernel caches attributes for the attr_timeout JS gives (a day), but every READ
 * it sends invalidates the inode's atime (fuse_invalidate_atime, on any read-write
 * mount), so the next stat/fstat of a file it has read is a GETATTR. Reading a tree warm
 * (`find | xargs cat`, 4,272 files of /usr/share/doc) sent 5,144 GETATTRs to JS, about
 * 40 µs each, and ran at 0.47-0.95x fuse-overlayfs, which answers them in C. thinfs
 * never changes atime on read (fs/filesystem.ts: noatime semantics), so the answer to
 * such a GETATTR is exactly the last one: this cache gives it.
 *
 * What keeps it true. Nothing changes an inode's attributes behind the kernel except
 * the requests JS serves and the JS-side events that already drop the whole block map
 * (a rolled-back operation, fail mode, a layer change: bm_drop() calls ac_drop). So:
 *  - ac_replied(): before JS's reply to a request that may change attributes is sent,
 *    the inodes it may change are dropped (SETATTR, WRITE, FALLOCATE, SETXATTR,
 *    REMOVEXATTR, OPEN with O_TRUNC: the inode; MKNOD, MKDIR, SYMLINK, CREATE,
 *    LINK: the parent(s) and, for LINK, the inode). UNLINK, RMDIR and RENAME change a
 *    child this side cannot name (its nlink, ctime): everything is dropped — one
 *    increment of the generation, entries of older generations are dead.
 *  - A fill is refused when a drop of its inode (or of everything) happened between the
 *    fill's request being received and JS answering it, so attributes JS read before a
 *    change can never be cached after it. Drops are numbered (`mark`); the last AC_RECENT
 *    are remembered by inode, and a fill older than those is refused whatever its inode.
 *    (RELEASE drops nothing: closing a file changes no attribute, and with it in the list
 *    the close after each first read dropped what the reads had filled.)
 *  - FORGET drops the inode (its number may name another inode later).
 *  - Only replies with a nonzero attr timeout are kept, and handed back with it.
 * A GETATTR answered here reflects every change the kernel has been told is done; one
 * that races a change still in JS may see the state before it, as it could from JS.
 *
 * Memory: at most AC_MAX entries (~176 bytes each, ~2.8 MiB) per session; past that the
 * whole cache is emptied and refills on demand.
 */
#include "fuse-lowlevel.h"

#define AC_BUCKETS 4096
#define AC_MAX 16384
#define AC_RECENT 64

typedef struct ac_entry {
  struct ac_entry *next;
  uint64_t ino;
  uint64_t gen;            /* valid while it equals the cache's generation */
  double timeout;
  struct stat st;
} ac_entry_t;

struct ll_attrcache {
  pthread_mutex_t lock;
  ac_entry_t *buckets[AC_BUCKETS];
  size_t count;            /* entries allocated, dead ones included */
  uint64_t gen;
  uint64_t mark;           /* drops so far (fills compare it) */
  uint64_t recent[AC_RECENT]; /* the inode of drop number n at n % AC_RECENT (0: everything) */
  uint64_t hits, fills;
};

static size_t ac_bucket(uint64_t ino) { return (size_t) ((ino * 0x9E3779B97F4A7C15ull) >> 52) & (AC_BUCKETS - 1); }

/* Under lock. */
static void ac_free_all(ll_attrcache_t *c) {
  for (size_t b = 0; b < AC_BUCKETS; b++) {
    ac_entry_t *e = c->buckets[b];
    while (e != NULL) {
      ac_entry_t *next = e->next;
      free(e);
      e = next;
    }
    c->buckets[b] = NULL;
  }
  c->count = 0;
}

/* Under lock: unlinks and frees ino's entry and the dead ones of its chain. */
static void ac_drop_ino(ll_attrcache_t *c, uint64_t ino) {
  ac_entry_t **p = &c->buckets[ac_bucket(ino)];
  while (*p != NULL) {
    ac_entry_t *e = *p;
    if (e->ino == ino || e->gen != c->gen) {
      *p = e->next;
      free(e);
      c->count--;
    } else {
      p = &e->next;
    }
  }
}

/* Worker: 1 when the GETATTR was answered here. */
int ac_getattr(ll_session_t *s, fuse_req_t req, fuse_ino_t ino) {
  ll_attrcache_t *c = __atomic_load_n(&s->ac, __ATOMIC_ACQUIRE);
  if (c == NULL) return 0;
  struct stat st;
  double timeout = 0;
  int hit = 0;
  pthread_mutex_lock(&c->lock);
  for (ac_entry_t *e = c->buckets[ac_bucket(ino)]; e != NULL; e = e->next) {
    if (e->ino == ino && e->gen == c->gen) {
      st = e->st;
      timeout = e->timeout;
      hit = 1;
      c->hits++;
      break;
    }
  }
  pthread_mutex_unlock(&c->lock);
  if (!hit) return 0;
  fuse_reply_attr(req, &st, timeout);
  return 1;
}

/* Worker: the mark an item carries to its fill. */
uint64_t ac_mark(ll_session_t *s) {
  ll_attrcache_t *c = __atomic_load_n(&s->ac, __ATOMIC_ACQUIRE);
  if (c == NULL) return 0;
  pthread_mutex_lock(&c->lock);
  uint64_t m = c->mark;
  pthread_mutex_unlock(&c->lock);
  return m;
}

/* Any thread: ino (0: everything) may have changed. */
void ac_drop(ll_session_t *s, uint64_t ino) {
  ll_attrcache_t *c = __atomic_load_n(&s->ac, __ATOMIC_ACQUIRE);
  if (c == NULL) return;
  pthread_mutex_lock(&c->lock);
  if (ino == 0) c->gen++;
  else ac_drop_ino(c, ino);
  c->mark++;
  c->recent[c->mark % AC_RECENT] = ino;
  pthread_mutex_unlock(&c->lock);
}

/* JS thread, before the reply to `it` is sent: what that request may have changed is dropped. */
void ac_replied(ll_session_t *s, const ll_item_t *it) {
  if (s->ac == NULL) return;
  uint64_t ino = (uint64_t) it->a[A_INO];
  switch (it->kind) {
  case OP_SETATTR: case OP_WRITE: case OP_FALLOCATE: case OP_SETXATTR: case OP_REMOVEXATTR:
  case OP_MKNOD: case OP_MKDIR: case OP_SYMLINK: case OP_CREATE:
    ac_drop(s, ino);
    break;
  case OP_OPEN:
    if (((int) it->a[A_U1] & O_TRUNC) != 0) ac_drop(s, ino);
    break;
  case OP_LINK:
    ac_drop(s, ino);
    ac_drop(s, (uint64_t) it->a[A_INO2]);
    break;
  case OP_UNLINK: case OP_RMDIR: case OP_RENAME:
    ac_drop(s, 0);
    break;
  default:
    break;
  }
}

/* Under lock: is a fill whose request carried `mark` older than a drop of ino (or of everything)? */
static int ac_stale(const ll_attrcache_t *c, uint64_t mark, uint64_t ino) {
  if (c->mark - mark >= AC_RECENT) return 1;
  for (uint64_t n = mark + 1; n <= c->mark; n++) {
    uint64_t d = c->recent[n % AC_RECENT];
    if (d == 0 || d == ino) return 1;
  }
  return 0;
}

/* Keeps ino's attributes unless `it` (NULL: JS read them just now) is older than a drop of them. */
static void ac_keep(ll_session_t *s, const ll_item_t *it, uint64_t ino, const struct stat *st, double timeout) {
  ll_attrcache_t *c = s->ac;
  if (c == NULL || timeout <= 0 || ino == 0) return;
  ac_entry_t *e = malloc(sizeof(ac_entry_t));
  if (e == NULL) return;
  e->ino = ino;
  e->timeout = timeout;
  e->st = *st;
  pthread_mutex_lock(&c->lock);
  if (it != NULL && ac_stale(c, it->ac_mark, ino)) {
    pthread_mutex_unlock(&c->lock);
    free(e);
    return;
  }
  ac_drop_ino(c, ino);
  if (c->count >= AC_MAX) ac_free_all(c);
  e->gen = c->gen;
  size_t b = ac_bucket(ino);
  e->next = c->buckets[b];
  c->buckets[b] = e;
  c->count++;
  c->fills++;
  pthread_mutex_unlock(&c->lock);
}

/* JS thread: JS answered `it` with these attributes of ino. */
void ac_fill(ll_session_t *s, const ll_item_t *it, uint64_t ino, const struct stat *st, double timeout) {
  ac_keep(s, it, ino, st, timeout);
}

void ac_destroy(ll_attrcache_t *c) {
  if (c == NULL) return;
  ac_free_all(c);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

/* ---- the JS side ---- */

static ll_session_t *ac_session(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) {
    napi_throw_type_error(env, NULL, "attrcache: not a session");
    return NULL;
  }
  return p;
}

/* ac_configure(session): answer GETATTR from the attributes JS last replied (once per session). */
static napi_value js_ac_configure(napi_env env, napi_callback_info info) {
  ARGS(1)
  ll_session_t *s = ac_session(env, argv[0]);
  if (s == NULL) return NULL;
  if (s->ac != NULL) return js_bool(env, 1);
  ll_attrcache_t *c = calloc(1, sizeof(ll_attrcache_t));
  if (c == NULL) return js_bool(env, 0);
  pthread_mutex_init(&c->lock, NULL);
  __atomic_store_n(&s->ac, c, __ATOMIC_RELEASE);
  return js_bool(env, 1);
}

/*
 * ac_put(session, ino, Float64Array stat, timeout): ino's attributes now. JS calls it right
 * after answering a request that changed a directory (create, mkdir, unlink, rename, ...):
 * that reply dropped the directory's attributes, and with default_permissions the kernel
 * asks for them again (a GETATTR) at the next path walk through it, for its permission
 * check. Measured: creating 100 files sent 100 such GETATTRs to JS, one per create.
 */
static napi_value js_ac_put(napi_env env, napi_callback_info info) {
  ARGS(4)
  ll_session_t *s = ac_session(env, argv[0]);
  if (s == NULL) return NULL;
  napi_typedarray_type type;
  size_t len;
  void *data;
  if (napi_get_typedarray_info(env, argv[2], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_float64_array || len < ST_LEN) {
    napi_throw_type_error(env, NULL, "attrcache: the attributes must be a Float64Array stat");
    return NULL;
  }
  struct stat st;
  stat_from(data, &st);
  ac_keep(s, NULL, (uint64_t) num_of(env, argv[1], 0), &st, num_of(env, argv[3], 0));
  return js_bool(env, 1);
}

/* ac_stats(session) -> [hits, fills, entries] */
static napi_value js_ac_stats(napi_env env, napi_callback_info info) {
  ARGS(1)
  ll_session_t *s = ac_session(env, argv[0]);
  if (s == NULL) return NULL;
  double v[3] = { 0 };
  ll_attrcache_t *c = s->ac;
  if (c != NULL) {
    pthread_mutex_lock(&c->lock);
    v[0] = (double) c->hits;
    v[1] = (double) c->fills;
    v[2] = (double) c->count;
    pthread_mutex_unlock(&c->lock);
  }
  napi_value arr;
  napi_create_array_with_length(env, 3, &arr);
  for (uint32_t i = 0; i < 3; i++) napi_set_element(env, arr, i, js_num(env, v[i]));
  return arr;
}

void ll_export_attrcache(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "ac_configure", NAPI_AUTO_LENGTH, js_ac_configure, NULL, &fn);
  napi_set_named_property(env, exports, "ac_configure", fn);
  napi_create_function(env, "ac_stats", NAPI_AUTO_LENGTH, js_ac_stats, NULL, &fn);
  napi_set_named_property(env, exports, "ac_stats", fn);
  napi_create_function(env, "ac_put", NAPI_AUTO_LENGTH, js_ac_put, NULL, &fn);
  napi_set_named_property(env, exports, "ac_put", fn);
}
