// Small system calls Node does not offer, for the thin pool's data file.
//
// punchHole(fd, offsetBytes, lengthBytes): fallocate(PUNCH_HOLE | KEEP_SIZE),
//   so freed pool blocks give their space back to the host file system.
// preallocate(fd, offsetBytes, lengthBytes): fallocate(KEEP_SIZE), reserving
//   space for a range without changing the file size.
//
// Both are synchronous (one fallocate, retried on EINTR) and throw an Error
// shaped like Node's own system errors: code 'EOPNOTSUPP', errno -95,
// syscall 'fallocate', message "EOPNOTSUPP: operation not supported, fallocate".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <node_api.h>

static const char *errno_name (int e) {
  switch (e) {
    case EBADF: return "EBADF";
    case EFBIG: return "EFBIG";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case ENODEV: return "ENODEV";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EPERM: return "EPERM";
    case ESPIPE: return "ESPIPE";
    case ETXTBSY: return "ETXTBSY";
    case EROFS: return "EROFS";
    case EACCES: return "EACCES";
    case EDQUOT: return "EDQUOT";
    case EWOULDBLOCK: return "EAGAIN";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_errno (napi_env env, int e, const char *syscall) {
  char msg[256];
  const char *code = errno_name(e);
  snprintf(msg, sizeof msg, "%s: %s, %s", code, strerror(e), syscall);
  napi_value err, code_v, msg_v, errno_v, syscall_v;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v);
  napi_create_int32(env, -e, &errno_v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_v);
  napi_create_error(env, code_v, msg_v, &err);
  napi_set_named_property(env, err, "errno", errno_v);
  napi_set_named_property(env, err, "syscall", syscall_v);
  napi_throw(env, err);
  return NULL;
}

// Reads (fd, offsetBytes, lengthBytes); throws a TypeError and returns 0 on bad input.
static int read_args (napi_env env, napi_callback_info info, int32_t *fd, int64_t *off, int64_t *len) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  double d;
  if (argc < 3 ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &d) != napi_ok || d != (double) (int64_t) d ||
      napi_get_value_int64(env, argv[1], off) != napi_ok ||
      napi_get_value_double(env, argv[2], &d) != napi_ok || d != (double) (int64_t) d ||
      napi_get_value_int64(env, argv[2], len) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "expected (fd, offsetBytes, lengthBytes) as integers");
    return 0;
  }
  return 1;
}

static napi_value do_fallocate (napi_env env, napi_callback_info info, int mode) {
  int32_t fd;
  int64_t off, len;
  if (!read_args(env, info, &fd, &off, &len)) return NULL;
  int r;
  do {
    r = fallocate(fd, mode, (off_t) off, (off_t) len);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return throw_errno(env, errno, "fallocate");
  return NULL;
}

static napi_value punch_hole (napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
}

static napi_value preallocate (napi_env env, napi_callback_info info) {
  return do_fallocate(env, info, FALLOC_FL_KEEP_SIZE);
}

// tryLockExclusive(fd): flock(LOCK_EX | LOCK_NB). true when taken, false when another
// open file description holds it. The kernel drops the lock when the holder dies, so a
// killed daemon never leaves a stale lock behind (a pid file would).
static napi_value try_lock_exclusive (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "expected (fd)");
    return NULL;
  }
  int r;
  do {
    r = flock(fd, LOCK_EX | LOCK_NB);
  } while (r != 0 && errno == EINTR);
  napi_value out;
  if (r != 0 && errno != EWOULDBLOCK) return throw_errno(env, errno, "flock");
  napi_get_boolean(env, r == 0, &out);
  return out;
}

NAPI_MODULE_INIT () {
  napi_value fn;
  napi_create_function(env, "punchHole", NAPI_AUTO_LENGTH, punch_hole, NULL, &fn);
  napi_set_named_property(env, exports, "punchHole", fn);
  napi_create_function(env, "preallocate", NAPI_AUTO_LENGTH, preallocate, NULL, &fn);
  napi_set_named_property(env, exports, "preallocate", fn);
  napi_create_function(env, "tryLockExclusive", NAPI_AUTO_LENGTH, try_lock_exclusive, NULL, &fn);
  napi_set_named_property(env, exports, "tryLockExclusive", fn);
  return exports;
}
