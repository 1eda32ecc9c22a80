/*
 * fuse-lowlevel-dispatch.c — the JS thread of fuse-native's low-level mode (thinfs): the
 * request table (ids JS replies with: slot + generation, so a second reply or one after
 * the session ended is refused), and the uv_async callback that takes the queue and calls
 * the JS dispatcher once per item inside one callback scope.
 */
#include "fuse-lowlevel.h"

double *shared_args = NULL;

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

ll_item_t *slot_claim(double id) {
  if (!(id >= 0) || id > 9007199254740991.0) return NULL;
  uint64_t v = (uint64_t) id;
  uint32_t i = (uint32_t) (v & ((1u << SLOT_BITS) - 1));
  uint32_t gen = (uint32_t) (v >> SLOT_BITS);
  if (i >= nslots || slots[i].item == NULL || slots[i].gen != gen) return NULL;
  ll_item_t *it = slots[i].item;
  slot_release(it);
  return it;
}

void item_finish(napi_env env, ll_item_t *it) {
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


void table_drop_session(napi_env env, ll_session_t *s) {
  for (uint32_t i = 0; i < nslots && s->outstanding > 0; i++) {
    ll_item_t *it = slots[i].item;
    if (it == NULL || it->s != s) continue;
    slot_release(it);
    fuse_reply_none(it->req);
    item_finish(env, it);
  }
}

/* ---- the JS thread: dispatch ---- */

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

void on_async(uv_async_t *handle) {
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

