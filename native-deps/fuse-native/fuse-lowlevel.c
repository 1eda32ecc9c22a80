/*
 * fuse-lowlevel.c — a libfuse3 low-level (inode-based) mode for fuse-native.
 *
 * Added to fuse-native by thinfs (native-deps/build.cjs copies the fuse-lowlevel* files
 * into node_modules/fuse-native and native-deps/fuse-native.patch adds them to
 * binding.gyp as the target fuse_lowlevel, linked against the system libfuse3). This
 * file: sessions (mount, the loop, notifier and unmount threads, teardown) and the
 * module; the other files are named in fuse-lowlevel.h. fuse-native's libfuse2
 * high-level mode (fuse-native.c) is not built in thinfs: binding.gyp builds only this
 * binary, fuse_lowlevel.node, which lowlevel.js loads by path.
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
 * The C hot path: READ of mapped blocks and WRITE into blocks the top layer owns are
 * served in the worker threads from a block map JS fills and drops
 * (fuse-lowlevel-blockmap.c: what the map holds, and the epoch that keeps a freed block
 * from being reused under an in-flight read).
 *
 * Names are bytes: every name reaches JS as a latin1 string (one char per byte,
 * napi_create_string_latin1), and every name JS hands back (readdir, readlink, notify)
 * is written back as those raw bytes (napi_get_value_string_latin1).
 */
#include "fuse-lowlevel.h"

extern char **environ;

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
void session_teardown(napi_env env, ll_session_t *s) {
  if (s->ended) return;
  s->ended = 1;
  if (s->loop_started) pthread_join(s->loop_thread, NULL);
  s->loop_started = 0;
  if (s->unmount_started) pthread_join(s->unmount_thread, NULL);
  s->unmount_started = 0;
  stop_notifier(s); /* a mount that failed never started it; otherwise already stopped */
  /* Requests JS never answered: free them (the connection is gone); late replies are refused. */
  table_drop_session(env, s);
  fuse_session_destroy(s->se);
  s->se = NULL;
}

void session_release(ll_session_t *s) {
  if (--s->refs > 0) return;
  pthread_mutex_destroy(&s->qlock);
  pthread_mutex_destroy(&s->nlock);
  pthread_mutex_destroy(&s->nocap_lock);
  free(s->nocap);
  bm_destroy(s->bm);
  ac_destroy(s->ac);
  pthread_cond_destroy(&s->ncond);
  free(s->mountpoint);
  free(s);
}

/* ---- mount, unmount, notify ---- */

static void session_finalize(napi_env env, void *data, void *hint) {
  (void) env;
  (void) hint;
  session_release(data);
}

/* Only the operations JS implements are given to libfuse: for the others libfuse answers
   ENOSYS (the kernel then stops asking for access, flush, xattrs, fallocate, lseek, ...) or
   does the default (open/opendir/release: fh 0, nothing to do). */
static void select_ops(struct fuse_lowlevel_ops *ops, const int *have) {
  memset(ops, 0, sizeof(*ops));
  ops->init = ll_all_ops.init;
#define PICK(code, field) if (have[code]) ops->field = ll_all_ops.field;
  PICK(OP_LOOKUP, lookup)
  if (have[OP_FORGET]) {
    ops->forget = ll_all_ops.forget;
    ops->forget_multi = ll_all_ops.forget_multi;
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
  pthread_mutex_init(&s->nocap_lock, NULL);
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

/* nocap(session, ino, none): ino has no security.capability (none = true), or may have
   one (false); nocap(session) forgets every inode (thinfs changed files behind the kernel). */
static napi_value ll_nocap(napi_env env, napi_callback_info info) {
  ARGS(3)
  ll_session_t *s = session_of(env, argv[0]);
  if (s == NULL) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t == napi_undefined) {
    nocap_clear(s);
  } else {
    bool none = false;
    napi_get_value_bool(env, argv[2], &none);
    nocap_set(s, (uint64_t) num_of(env, argv[1], 0), none);
  }
  return js_bool(env, 1);
}

/* stats(session) -> [requests dispatched to JS, wake-ups that carried requests, largest batch, requests JS holds, getxattr answered in C] */
static napi_value ll_stats(napi_env env, napi_callback_info info) {
  ARGS(1)
  ll_session_t *s = session_of(env, argv[0]);
  if (s == NULL) return NULL;
  napi_value arr;
  napi_create_array_with_length(env, 5, &arr);
  napi_set_element(env, arr, 0, js_num(env, (double) s->stat_requests));
  napi_set_element(env, arr, 1, js_num(env, (double) s->stat_batches));
  napi_set_element(env, arr, 2, js_num(env, (double) s->stat_max_batch));
  napi_set_element(env, arr, 3, js_num(env, (double) s->outstanding));
  pthread_mutex_lock(&s->nocap_lock);
  napi_set_element(env, arr, 4, js_num(env, (double) s->stat_nocap_hits));
  pthread_mutex_unlock(&s->nocap_lock);
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
  set_fn(env, exports, "nocap", ll_nocap);
  ll_export_replies(env, exports);
  ll_export_blockmap(env, exports);
  ll_export_attrcache(env, exports);

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
