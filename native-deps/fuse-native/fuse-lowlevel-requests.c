/*
 * fuse-lowlevel-requests.c — the libfuse worker side of fuse-native's low-level mode
 * (thinfs). Each callback runs in a libfuse worker thread: it copies what the request
 * carries (names, attributes, the caller from fuse_req_ctx) into an item in the JS
 * layout (A_*), queues it for the JS thread and returns to read the next request. WRITE
 * alone keeps its worker until JS has replied, so JS reads the data in place. READ and
 * WRITE of blocks the block map knows are answered here, in the worker, without JS
 * (fuse-lowlevel-blockmap.c); the ones it does not know carry a "fill" flag to JS (A_U2).
 *
 * One request is answered here without JS: GETXATTR security.capability of an inode JS
 * has said has none. FUSE clears SB_NOSEC, so the kernel asks for that xattr before
 * EVERY write(2) (to know whether to drop file capabilities): with the writeback cache,
 * 2,249 GETXATTR against 9 WRITE requests for ~2,250 small writes, measured. The set is
 * filled by JS (an ENODATA answer for that name) and emptied for an inode before any
 * setxattr/removexattr of it reaches JS, and on forget (lowlevel.ts does both).
 */
#include "fuse-lowlevel.h"

/* ---- worker side: requests become items ---- */

ll_item_t *item_new(ll_session_t *s, fuse_req_t req, int kind, size_t tail) {
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
    it->ac_mark = ac_mark(s);
  }
  return it;
}

void enqueue(ll_session_t *s, ll_item_t *it) {
  it->next = NULL;
  pthread_mutex_lock(&s->qlock);
  if (s->qtail != NULL) s->qtail->next = it;
  else s->qhead = it;
  s->qtail = it;
  pthread_mutex_unlock(&s->qlock);
  uv_async_send(&s->async);
}

void post_event(ll_session_t *s, int kind, double a0, double a1, const char *msg) {
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
  ac_drop(s, ino);
  fuse_reply_none(req);
  ll_item_t *it = item_new(s, NULL, OP_FORGET, 0);
  if (it == NULL) return; /* the count leaks (an inode kept too long), nothing breaks */
  it->a[A_INO] = ino;
  it->a[A_U1] = (double) nlookup;
  enqueue(s, it);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  ll_session_t *s = SESSION(req);
  for (size_t i = 0; i < count; i++) ac_drop(s, forgets[i].ino);
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
  if (ac_getattr(SESSION(req), req, ino)) return;
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
  if (bm_open(SESSION(req), req, ino, fi)) return;
  NEW_ITEM(it, OP_OPEN, 0);
  it->a[A_INO] = ino;
  it->a[A_U1] = fi->flags;
  enqueue(it->s, it);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  ll_session_t *s = SESSION(req);
  int served = bm_read(s, req, ino, size, off, fi->fh);
  if (served == 1) return;
  NEW_ITEM(it, OP_READ, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_OFF] = (double) off;
  it->a[A_SIZE] = (double) size;
  it->a[A_U1] = fi->flags;
  it->a[A_U2] = served == 0; /* the map lacks these blocks: JS fills it */
  enqueue(s, it);
}

/* The worker waits until JS has replied: JS reads `buf` in place. */
static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  ll_session_t *s = SESSION(req);
  int served = bm_write(s, req, ino, buf, size, off, fi->fh);
  if (served == 1) return;
  NEW_ITEM(it, OP_WRITE, 0);
  it->a[A_INO] = ino;
  it->a[A_FH] = (double) fi->fh;
  it->a[A_OFF] = (double) off;
  it->a[A_SIZE] = (double) size;
  it->a[A_U1] = fi->flags;
  it->a[A_U3] = fi->writepage;
  it->a[A_U2] = served == 0;
  it->data = buf;
  it->data_len = size;
  it->waiting = 1;
  it->write_reply = -1;
  sem_init(&it->done, 0, 0);
  enqueue(s, it);
  while (sem_wait(&it->done) != 0 && errno == EINTR) {
  }
  /* The reply is sent here, not on the JS thread (ll_reply_write): the kernel ends the
     writeback of the request's pages inside that writev, ~0.3 ms per 1 MiB WRITE measured,
     a tenth of the JS thread's time in a sequential write. */
  if (it->write_reply >= 0) fuse_reply_write(req, (size_t) it->write_reply);
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
  if (bm_release(SESSION(req), req, fi)) return;
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

/* ---- inodes without security.capability: a small open-addressing set ---- */

static size_t nocap_find(const ll_session_t *s, uint64_t ino) {
  size_t mask = s->nocap_size - 1;
  size_t i = (size_t) (ino * 0x9E3779B97F4A7C15ull) & mask;
  while (s->nocap[i] != 0 && s->nocap[i] != ino) i = (i + 1) & mask;
  return i;
}

static int nocap_has(ll_session_t *s, uint64_t ino) {
  pthread_mutex_lock(&s->nocap_lock);
  int has = s->nocap_size > 0 && s->nocap[nocap_find(s, ino)] == ino;
  if (has) s->stat_nocap_hits++;
  pthread_mutex_unlock(&s->nocap_lock);
  return has;
}

static void nocap_grow(ll_session_t *s) {
  size_t old_size = s->nocap_size;
  uint64_t *old = s->nocap;
  size_t size = old_size == 0 ? 1024 : old_size * 2;
  uint64_t *table = calloc(size, sizeof(uint64_t));
  if (table == NULL) return; /* stays as it is: the next getxattr goes to JS */
  s->nocap = table;
  s->nocap_size = size;
  for (size_t i = 0; i < old_size; i++) {
    if (old[i] != 0) s->nocap[nocap_find(s, old[i])] = old[i];
  }
  free(old);
}

void nocap_set(ll_session_t *s, uint64_t ino, int none) {
  if (ino == 0) return;
  pthread_mutex_lock(&s->nocap_lock);
  if (none) {
    if (s->nocap_used * 2 >= s->nocap_size) nocap_grow(s);
    if (s->nocap_used * 2 < s->nocap_size) {
      size_t i = nocap_find(s, ino);
      if (s->nocap[i] == 0) {
        s->nocap[i] = ino;
        s->nocap_used++;
      }
    }
  } else if (s->nocap_size > 0) {
    size_t mask = s->nocap_size - 1;
    size_t i = nocap_find(s, ino);
    if (s->nocap[i] == ino) {
      /* backward-shift deletion keeps every probe sequence unbroken */
      s->nocap[i] = 0;
      s->nocap_used--;
      for (size_t j = (i + 1) & mask; s->nocap[j] != 0; j = (j + 1) & mask) {
        uint64_t v = s->nocap[j];
        s->nocap[j] = 0;
        s->nocap[nocap_find(s, v)] = v;
      }
    }
  }
  pthread_mutex_unlock(&s->nocap_lock);
}

void nocap_clear(ll_session_t *s) {
  pthread_mutex_lock(&s->nocap_lock);
  if (s->nocap_size > 0) memset(s->nocap, 0, s->nocap_size * sizeof(uint64_t));
  s->nocap_used = 0;
  pthread_mutex_unlock(&s->nocap_lock);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  ll_session_t *s = SESSION(req);
  if (strcmp(name, "security.capability") == 0 && nocap_has(s, ino)) {
    fuse_reply_err(req, ENODATA);
    return;
  }
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

const struct fuse_lowlevel_ops ll_all_ops = {
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

