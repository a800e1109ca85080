/*
 * client.c: rload() and rex_hosts(): one short conversation with the local
 * rexd over its Unix socket (docs/PROTOCOL.md sections 1, 4.1, 4.5, 4.6):
 * preface, HELLO, one request on stream 1, its answer, close. The connection
 * and its hazards are conn.c's; REX_TIMEOUT_MS bounds the whole conversation.
 * Replies are validated against the attribute tables before anything is
 * copied.
 */
#include "conn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* REX_TIMEOUT_MS bounds the whole conversation. */
#define DEFAULT_TIMEOUT_MS 5000

/* rexd's ERROR -> -errno (docs/man/rload.3.md): DENIED is EACCES, anything else a protocol error. */
static int remote_error(const struct rex__conn *c, const struct rex_frame *f) {
  static const struct rex__errno_map map[] = {{REX_EPROTO_DENIED, EACCES}, {0, 0}};
  struct rex__remote_error e;
  int err = rex__conn_error(f, map, &e);
  rex__set_error("%s answered ERROR %s: %s", c->where, e.name, e.text);
  return -err;
}

/*
 * The whole conversation: connect, preface and HELLO, then `request` on
 * stream 1; on success f holds the `answer` frame (valid until rex__conn_close).
 */
static int exchange(struct rex__conn *c, uint16_t request, uint16_t answer, struct rex_frame *f) {
  rex__clear_error();
  int rc = rex__conn_open(c, NULL, rex__env_ms("REX_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, 3600000), "REX_TIMEOUT_MS");
  if (!rc) rc = rex__conn_queue_hello(c);
  if (!rc) rc = rex__conn_flush(c);
  if (!rc) rc = rex__conn_welcome(c, f);
  if (rc == REX__CONN_ERROR) return remote_error(c, f);
  if (rc) return rc;

  struct rex_frame out;
  rex_frame_init(&out, NULL, 0);
  rex_frame_start(&out, request, REX_FLAG_END, 1);
  rc = rex__conn_send(c, &out);
  if (!rc) rc = rex__conn_await(c, 1, f);
  if (rc == REX__CONN_ERROR) return remote_error(c, f);
  if (rc) return rc;
  if (f->type != answer) {
    rex__set_error("%s answered with frame type 0x%04x, expected 0x%04x", c->where, f->type, answer);
    return -EPROTO;
  }
  return 0;
}

double rload(void) {
  static const struct rex__field load_fields[] = {{REX_LOAD_HOST, REX_KIND_STRING, 0},  {REX_LOAD_LOAD, REX_KIND_F64, 0},
                                             {REX_LOAD_LOADAVG, REX_KIND_LIST, 0}, {REX_LOAD_CORES, REX_KIND_UINT, 0},
                                             {REX_LOAD_JOBS, REX_KIND_UINT, 0},    {REX_LOAD_TIME, REX_KIND_UINT, 0},
                                             {REX_LOAD_MEM_AVAILABLE, REX_KIND_UINT, 0}};
  struct rex__conn c;
  struct rex_frame f;
  double load = -1.0;
  int rc = exchange(&c, REX_MSG_LOAD_GET, REX_MSG_LOAD, &f);
  if (rc == 0) rc = rex__check_fields(&f, REX_ATTR_NONE, load_fields, sizeof load_fields / sizeof *load_fields, "LOAD");
  if (rc == 0) {
    const struct rex_attr *a = rex__field(&f, REX_ATTR_NONE, REX_LOAD_LOAD);
    if (!a || isnan(a->v.f) || a->v.f < 0) {
      rex__set_error("%s sent LOAD without a valid load figure", c.where);
      rc = -EPROTO;
    } else
      load = a->v.f;
  }
  rex__conn_close(&c);
  if (rc) {
    errno = -rc;
    return -1.0;
  }
  return load;
}

static int fill_host(const struct rex_frame *f, uint32_t entry, struct rex_host *h, int index) {
  static const struct rex__field host_fields[] = {
      {REX_HOST_NAME, REX_KIND_STRING, 0},    {REX_HOST_ADDRESS, REX_KIND_STRING, 0}, {REX_HOST_PORT, REX_KIND_UINT, 0},
      {REX_HOST_LOAD, REX_KIND_F64, 0},       {REX_HOST_CORES, REX_KIND_UINT, 0},     {REX_HOST_JOBS, REX_KIND_UINT, 0},
      {REX_HOST_REACHABLE, REX_KIND_BOOL, 0}, {REX_HOST_AGE_MS, REX_KIND_UINT, 0},    {REX_HOST_SELF, REX_KIND_BOOL, 0},
      {REX_HOST_ERROR, REX_KIND_STRING, 0},   {REX_HOST_LOADAVG1, REX_KIND_F64, 0}};
  char what[32];
  snprintf(what, sizeof what, "HOSTS host[%d]", index);
  int rc = rex__check_fields(f, entry, host_fields, sizeof host_fields / sizeof *host_fields, what);
  if (rc) return rc;
  const struct rex_attr *a = rex__field(f, entry, REX_HOST_NAME);
  if (!a) {
    rex__set_error("%s has no name", what);
    return -EPROTO;
  }
  if (!h) return 0;
  memset(h, 0, sizeof *h);
  rex__copy_str(h->name, sizeof h->name, a);
  if ((a = rex__field(f, entry, REX_HOST_ADDRESS))) rex__copy_str(h->address, sizeof h->address, a);
  if ((a = rex__field(f, entry, REX_HOST_ERROR))) rex__copy_str(h->error, sizeof h->error, a);
  h->port = (a = rex__field(f, entry, REX_HOST_PORT)) && a->v.u <= 0xffffffffu ? (unsigned)a->v.u : 0;
  h->load = (a = rex__field(f, entry, REX_HOST_LOAD)) ? a->v.f : -1.0;
  h->loadavg1 = (a = rex__field(f, entry, REX_HOST_LOADAVG1)) ? a->v.f : -1.0;
  h->cores = (a = rex__field(f, entry, REX_HOST_CORES)) && a->v.u <= 0xffffffffu ? (unsigned)a->v.u : 0;
  h->jobs = (a = rex__field(f, entry, REX_HOST_JOBS)) && a->v.u <= 0xffffffffu ? (unsigned)a->v.u : 0;
  h->reachable = (a = rex__field(f, entry, REX_HOST_REACHABLE)) ? a->v.b : 0;
  h->self = (a = rex__field(f, entry, REX_HOST_SELF)) ? a->v.b : 0;
  h->age_ms = (a = rex__field(f, entry, REX_HOST_AGE_MS)) && a->v.u <= (uint64_t)INT64_MAX ? (long long)a->v.u : -1;
  return 0;
}

int rex_hosts(struct rex_host *hosts, size_t max) {
  static const struct rex__field hosts_fields[] = {{REX_HOSTS_HOST, REX_KIND_LIST, 1}};
  if (!hosts && max) {
    errno = EINVAL;
    return -1;
  }
  struct rex__conn c;
  struct rex_frame f;
  int count = 0;
  int rc = exchange(&c, REX_MSG_HOSTS_GET, REX_MSG_HOSTS, &f);
  if (rc == 0) rc = rex__check_fields(&f, REX_ATTR_NONE, hosts_fields, 1, "HOSTS");
  for (uint32_t i = rc ? REX_ATTR_NONE : rex_attr_first(&f, REX_ATTR_NONE); i != REX_ATTR_NONE; i = f.attrs[i].next) {
    if ((f.attrs[i].tag & (uint16_t)~REX_TAG_CRITICAL) != REX_HOSTS_HOST) continue;
    rc = fill_host(&f, i, (size_t)count < max ? &hosts[count] : NULL, count);
    if (rc) break;
    count++;
  }
  rex__conn_close(&c);
  if (rc) {
    errno = -rc;
    return -1;
  }
  return count;
}
