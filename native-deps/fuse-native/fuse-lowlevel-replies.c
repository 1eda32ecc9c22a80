/*
 * fuse-lowlevel-replies.c — how JS answers a request in fuse-native's low-level mode
 * (thinfs): one ll_reply_* per kind of FUSE reply, called from the JS thread with the
 * request id, decoding what JS hands over (Float64Array layouts ST_/E_, Buffers, latin1
 * byte strings) into libfuse's fuse_reply_* and fuse_add_direntry[_plus].
 */
#include "fuse-lowlevel.h"

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

void stat_from(const double *f, struct stat *st) {
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
  if (it == NULL) return js_bool(env, 0);                                   \
  ac_replied(it->s, it);

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
  /* A new or found name's attributes (LINK's are refused: its own drop of the inode came first). */
  if (it->kind == OP_LOOKUP || it->kind == OP_MKNOD || it->kind == OP_MKDIR || it->kind == OP_SYMLINK || it->kind == OP_LINK)
    ac_fill(it->s, it, p.ino, &p.attr, p.attr_timeout);
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
  ac_fill(it->s, it, p.ino, &p.attr, p.attr_timeout);
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
  double timeout = num_of(env, argv[2], 0);
  if (it->kind == OP_GETATTR) ac_fill(it->s, it, (uint64_t) it->a[A_INO], &st, timeout);
  DONE(fuse_reply_attr(it->req, &st, timeout));
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

/* reply_write(id, count): sent by the worker that waits for it (0: handed over), else here. */
static napi_value ll_reply_write(napi_env env, napi_callback_info info) {
  ARGS(2)
  CLAIM(argv[0])
  size_t count = (size_t) num_of(env, argv[1], 0);
  if (it->waiting) {
    it->write_reply = (int64_t) count;
    DONE(0);
  }
  DONE(fuse_reply_write(it->req, count));
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
      if (need <= size - used && p.ino != 0 && strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
        ac_fill(it->s, it, p.ino, &p.attr, p.attr_timeout);
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


static void set_reply(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

void ll_export_replies(napi_env env, napi_value exports) {
  set_reply(env, exports, "reply_err", ll_reply_err);
  set_reply(env, exports, "reply_entry", ll_reply_entry);
  set_reply(env, exports, "reply_create", ll_reply_create);
  set_reply(env, exports, "reply_attr", ll_reply_attr);
  set_reply(env, exports, "reply_readlink", ll_reply_readlink);
  set_reply(env, exports, "reply_open", ll_reply_open);
  set_reply(env, exports, "reply_write", ll_reply_write);
  set_reply(env, exports, "reply_buf", ll_reply_buf);
  set_reply(env, exports, "reply_iov", ll_reply_iov);
  set_reply(env, exports, "reply_data", ll_reply_data);
  set_reply(env, exports, "reply_statfs", ll_reply_statfs);
  set_reply(env, exports, "reply_xattr", ll_reply_xattr);
  set_reply(env, exports, "reply_lseek", ll_reply_lseek);
  set_reply(env, exports, "reply_readdir", ll_reply_readdir);
}
