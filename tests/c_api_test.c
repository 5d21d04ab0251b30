/* The C API (memcg/memcg.h) from C99: every function, NULL handles and bad sizes, errors as
 * negative errno, the refusal reasons of every refusal source, sockets in caller storage. */
#define _POSIX_C_SOURCE 200809L
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "memcg/memcg.h"

static int failures = 0;
#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
      ++failures;                                                                \
    }                                                                            \
  } while (0)

/* ---- helpers ---- */

static memcg_hierarchy* new_hierarchy(void) {
  memcg_hierarchy* h = NULL;
  CHECK(memcg_hierarchy_create(NULL, &h) == 0);
  return h;
}
static memcg_proto* new_proto(int64_t reserve) {
  memcg_proto_options o;
  memcg_proto* p = NULL;
  memcg_proto_options_init(&o);
  o.pcpu_reserve_pages = reserve;
  CHECK(memcg_proto_create(&o, &p) == 0);
  return p;
}
static memcg_proto_stats proto_stats(const memcg_proto* p) {
  memcg_proto_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  CHECK(memcg_proto_stats_get(p, &s) == 0);
  return s;
}
static int64_t allocated(const memcg_proto* p) { return proto_stats(p).memory_allocated; }
static memcg_sock_info sock_info(const memcg_sock* s) {
  memcg_sock_info i;
  memset(&i, 0, sizeof i);
  i.size = sizeof i;
  CHECK(memcg_sock_get_info(s, &i) == 0);
  return i;
}
static memcg_counter_info counter(const memcg_group* g, memcg_counter c) {
  memcg_counter_info i;
  memset(&i, 0, sizeof i);
  i.size = sizeof i;
  CHECK(memcg_group_counter(g, c, &i) == 0);
  return i;
}
static memcg_refusal last_refusal(void) {
  memcg_refusal r;
  memset(&r, 0, sizeof r);
  r.size = sizeof r;
  CHECK(memcg_last_refusal(&r) == 0);
  return r;
}
/* memcg_read as text: the whole length, or the error. */
static int read_text(memcg_hierarchy* h, memcg_group* g, const char* file, char* buf, size_t len) {
  size_t n = 0;
  int e = memcg_read(h, g, file, buf, len, &n);
  return e ? e : (int)n;
}
static memcg_group* find(memcg_hierarchy* h, const char* path) {
  memcg_group* g = NULL;
  CHECK(memcg_find(h, path, &g) == 0);
  return g;
}

struct pressure_log {
  int enters, leaves;
  int64_t last_ms;
};

static void on_pressure(memcg_proto* p, int entering, int64_t duration_ms, void* user) {
  struct pressure_log* log = (struct pressure_log*)user;
  (void)p;
  if (entering) ++log->enters;
  else {
    ++log->leaves;
    log->last_ms = duration_ms;
  }
}

/* ---- version, NULL handles, sizes ---- */

static void test_version(void) {
  CHECK(memcg_version() == MEMCG_VERSION_NUMBER);
  CHECK(MEMCG_VERSION_NUMBER == MEMCG_VERSION_MAJOR * 10000 + MEMCG_VERSION_MINOR * 100 +
                                    MEMCG_VERSION_PATCH);
}

static void test_null_handles(void) {
  char buf[8];
  size_t n = 0;
  memcg_sock* s = NULL;
  memcg_group* g = NULL;
  memcg_hierarchy* h = NULL;
  memcg_proto* p = NULL;
  memcg_clock* c = NULL;
  memcg_listener* l = NULL;
  memcg_sock_info info;
  memcg_window_advice adv;
  memcg_proto_stats ps;
  memcg_counter_info ci;
  memcg_events ev;
  memcg_socket_accounting sa;
  memcg_pressure_level level;
  memcg_sock_storage st;
  int64_t v = 0, three[3];
  int flag = 0;
  info.size = sizeof info;
  adv.size = sizeof adv;
  ps.size = sizeof ps;
  ci.size = sizeof ci;
  ev.size = sizeof ev;
  CHECK(memcg_last_refusal(NULL) == -EINVAL);
  CHECK(memcg_clock_create_virtual(NULL) == -EINVAL);
  CHECK(memcg_clock_create(NULL, NULL, NULL, &c) == -EINVAL);
  CHECK(memcg_clock_advance(NULL, 1) == -EINVAL);
  CHECK(memcg_clock_now(NULL, &v) == -EINVAL);
  CHECK(memcg_hierarchy_create(NULL, NULL) == -EINVAL);
  CHECK(memcg_root(NULL, &g) == -EINVAL);
  CHECK(memcg_find(NULL, "/", &g) == -EINVAL);
  CHECK(memcg_mkdir(NULL, "A", NULL) == -EINVAL);
  CHECK(memcg_rmdir(NULL, "A") == -EINVAL);
  CHECK(memcg_for_each_group(NULL, NULL, NULL, NULL) == -EINVAL);
  CHECK(memcg_hierarchy_set_charge_batch(NULL, 1) == -EINVAL);
  CHECK(memcg_hierarchy_charge_batch(NULL, &v) == -EINVAL);
  CHECK(memcg_hierarchy_set_socket_accounting(NULL, MEMCG_SOCKET_ACCOUNTING_V1) == -EINVAL);
  CHECK(memcg_hierarchy_socket_accounting(NULL, &sa) == -EINVAL);
  CHECK(memcg_hierarchy_set_clock(NULL, NULL) == -EINVAL);
  CHECK(memcg_write(NULL, NULL, "memory.max", "1M") == -EINVAL);
  CHECK(memcg_read(NULL, NULL, "memory.max", buf, sizeof buf, &n) == -EINVAL);
  CHECK(memcg_group_path(NULL, buf, sizeof buf, &n) == -EINVAL);
  CHECK(memcg_group_parent(NULL, &g) == -EINVAL);
  CHECK(memcg_group_dead(NULL, &flag) == -EINVAL);
  CHECK(memcg_charge(NULL, MEMCG_KIND_ANON, 1, MEMCG_GFP_KERNEL) == -EINVAL);
  CHECK(memcg_uncharge(NULL, MEMCG_KIND_ANON, 1) == -EINVAL);
  CHECK(memcg_group_counter(NULL, MEMCG_COUNTER_MEMORY, &ci) == -EINVAL);
  CHECK(memcg_group_events(NULL, 0, &ev) == -EINVAL);
  CHECK(memcg_group_stat(NULL, MEMCG_KIND_ANON, 0, &v) == -EINVAL);
  CHECK(memcg_group_pressure_listen(NULL, MEMCG_PRESSURE_LOW, MEMCG_PRESSURE_MODE_LOCAL, NULL,
                                    NULL, &l) == -EINVAL);
  CHECK(memcg_group_pressure_level(NULL, &level) == -EINVAL);
  CHECK(memcg_group_pressure_emit(NULL, MEMCG_PRESSURE_LOW) == -EINVAL);
  CHECK(memcg_group_socket_pressure(NULL, &flag) == -EINVAL);
  CHECK(memcg_proto_create(NULL, NULL) == -EINVAL);
  CHECK(memcg_proto_set_tcp_mem(NULL, 1, 2, 3) == -EINVAL);
  CHECK(memcg_proto_set_tcp_rmem(NULL, 1, 2, 3) == -EINVAL);
  CHECK(memcg_proto_set_tcp_wmem(NULL, 1, 2, 3) == -EINVAL);
  CHECK(memcg_proto_tcp_mem(NULL, three) == -EINVAL);
  CHECK(memcg_proto_tcp_rmem(NULL, three) == -EINVAL);
  CHECK(memcg_proto_tcp_wmem(NULL, three) == -EINVAL);
  CHECK(memcg_proto_stats_get(NULL, &ps) == -EINVAL);
  CHECK(memcg_proto_set_pressure_callback(NULL, on_pressure, NULL) == -EINVAL);
  CHECK(memcg_sock_open(NULL, NULL, &s) == -EINVAL);
  CHECK(memcg_sock_init(&st, sizeof st, NULL, NULL, &s) == -EINVAL);
  CHECK(memcg_sock_recv(NULL, 1, 0) == -EINVAL);
  CHECK(memcg_sock_consume(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_send(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_ack(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_close(NULL) == -EINVAL);
  CHECK(memcg_sock_set_rcvbuf(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_set_sndbuf(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_rmem_schedule(NULL, 1, 0) == -EINVAL);
  CHECK(memcg_sock_wmem_schedule(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_forced_mem_schedule(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_mem_charge(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_mem_uncharge(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_get_info(NULL, &info) == -EINVAL);
  CHECK(memcg_sock_advice(NULL, 1460, &adv) == -EINVAL);
  CHECK(memcg_sock_group(NULL, &g) == -EINVAL);
  /* Missing out-parameters on live handles. */
  h = new_hierarchy();
  p = new_proto(0);
  CHECK(memcg_root(h, NULL) == -EINVAL);
  CHECK(memcg_find(h, "/", NULL) == -EINVAL);
  CHECK(memcg_find(h, NULL, &g) == -EINVAL);
  CHECK(memcg_hierarchy_charge_batch(h, NULL) == -EINVAL);
  CHECK(memcg_hierarchy_socket_accounting(h, NULL) == -EINVAL);
  CHECK(memcg_root(h, &g) == 0);
  CHECK(memcg_read(h, g, "memory.max", NULL, 4, &n) == -EINVAL);
  CHECK(memcg_group_counter(g, (memcg_counter)3, &ci) == -EINVAL);
  CHECK(memcg_group_counter(g, MEMCG_COUNTER_MEMORY, NULL) == -EINVAL);
  CHECK(memcg_group_stat(g, (memcg_kind)7, 0, &v) == -EINVAL);
  CHECK(memcg_group_stat(g, MEMCG_KIND_ANON, 0, NULL) == -EINVAL);
  CHECK(memcg_charge(g, MEMCG_KIND_ANON, 1, 1u << 5) == -EINVAL); /* an unknown gfp bit */
  CHECK(memcg_proto_stats_get(p, NULL) == -EINVAL);
  CHECK(memcg_proto_tcp_mem(p, NULL) == -EINVAL);
  CHECK(memcg_sock_open(p, g, NULL) == -EINVAL);
  CHECK(memcg_sock_init(&st, sizeof st, p, g, NULL) == -EINVAL);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
  memcg_sock_destroy(NULL);
  memcg_sock_fini(NULL);
  memcg_listener_destroy(NULL);
  memcg_clock_destroy(NULL);
  memcg_proto_destroy(NULL);
  memcg_hierarchy_destroy(NULL);
  memcg_hierarchy_options_init(NULL);
  memcg_proto_options_init(NULL);
}

/* Output structs: a size below the struct is -EINVAL (nothing written), a larger one (a caller
 * built against a newer header) gets the known fields and zeroes past them. Options: bytes past
 * the library's struct must be zero. */
static void test_struct_sizes(void) {
  struct bigger_info {
    memcg_sock_info info;
    unsigned char newer[24];
  } big;
  struct bigger_options {
    memcg_hierarchy_options o;
    unsigned char newer[16];
  } bo;
  memcg_proto* p = new_proto(0);
  memcg_hierarchy* h = NULL;
  memcg_sock* s = NULL;
  memcg_sock_info small;
  memcg_window_advice adv;
  memcg_proto_stats ps;
  memcg_hierarchy_options o;
  int64_t batch = 0;
  size_t i;
  int all_zero = 1;
  CHECK(memcg_sock_open(p, NULL, &s) == 0);
  CHECK(memcg_sock_recv(s, 100, 0) == 0);

  memset(&small, 0x5a, sizeof small);
  small.size = sizeof small - 1;
  CHECK(memcg_sock_get_info(s, &small) == -EINVAL);
  CHECK(small.rmem_alloc == (int64_t)0x5a5a5a5a5a5a5a5aLL); /* untouched */
  small.size = 0;
  CHECK(memcg_sock_get_info(s, &small) == -EINVAL);
  adv.size = 0;
  CHECK(memcg_sock_advice(s, 1460, &adv) == -EINVAL);
  ps.size = 4;
  CHECK(memcg_proto_stats_get(p, &ps) == -EINVAL);

  memset(&big, 0xa5, sizeof big);
  big.info.size = sizeof big;
  CHECK(memcg_sock_get_info(s, &big.info) == 0);
  CHECK(big.info.size == sizeof big);
  CHECK(big.info.rmem_alloc == 100);
  CHECK(big.info.forward_alloc == 4096 - 100);
  for (i = 0; i < sizeof big.newer; ++i) all_zero &= big.newer[i] == 0;
  CHECK(all_zero);

  /* Options: defaults, a smaller (older) struct, a larger one with zero and non-zero tails. */
  memcg_hierarchy_options_init(&o);
  CHECK(o.size == sizeof o && o.charge_batch == 64 && o.clock == NULL);
  o.charge_batch = 0;
  CHECK(memcg_hierarchy_create(&o, &h) == -EINVAL);
  o.charge_batch = 1025;
  CHECK(memcg_hierarchy_create(&o, &h) == -EINVAL);
  memcg_hierarchy_options_init(&o);
  o.socket_accounting = 3;
  CHECK(memcg_hierarchy_create(&o, &h) == -EINVAL);
  memcg_hierarchy_options_init(&o);
  o.size = 2; /* not even the size field */
  CHECK(memcg_hierarchy_create(&o, &h) == -EINVAL);
  o.charge_batch = 7;
  o.size = offsetof(memcg_hierarchy_options, socket_accounting); /* knows charge_batch only */
  o.socket_accounting = 99; /* past its size: ignored */
  CHECK(memcg_hierarchy_create(&o, &h) == 0);
  CHECK(memcg_hierarchy_charge_batch(h, &batch) == 0);
  CHECK(batch == 7);
  memcg_hierarchy_destroy(h);
  memset(&bo, 0, sizeof bo);
  memcg_hierarchy_options_init(&bo.o);
  bo.o.size = sizeof bo;
  CHECK(memcg_hierarchy_create(&bo.o, &h) == 0);
  memcg_hierarchy_destroy(h);
  h = NULL;
  bo.newer[3] = 1; /* asks for something this library does not know */
  CHECK(memcg_hierarchy_create(&bo.o, &h) == -E2BIG);
  CHECK(h == NULL);

  CHECK(memcg_sock_consume(s, 100) == 0);
  memcg_sock_destroy(s);
  memcg_proto_destroy(p);
}

/* ---- refusals: every source, with who refused ---- */

static void test_refusals(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_proto* p = new_proto(0);
  memcg_group *a = NULL, *b = NULL, *k = NULL;
  memcg_sock *s = NULL, *t = NULL;
  memcg_refusal r;
  memcg_refusal small;

  CHECK(memcg_mkdir(h, "A", &a) == 0);
  CHECK(memcg_mkdir(h, "A/B", &b) == 0);
  CHECK(memcg_write(h, a, "memory.max", "1M") == 0);

  /* A group charge past an ancestor's memory.max: A (256 pages) refuses, B asked 300. */
  CHECK(memcg_charge(b, MEMCG_KIND_ANON, 300, MEMCG_GFP_KERNEL) == -ENOMEM);
  r = last_refusal();
  CHECK(r.size == sizeof r);
  CHECK(r.source == MEMCG_REFUSAL_GROUP_LIMIT);
  CHECK(r.error == -ENOMEM);
  CHECK(r.group == a);
  CHECK(r.nr_pages == 300);
  CHECK(r.limit == 256);
  CHECK(r.usage == 0);
  small.size = sizeof small - 1;
  CHECK(memcg_last_refusal(&small) == -EINVAL);

  /* The kmem sub-limit (v1 memory.kmem.limit_in_bytes). */
  CHECK(memcg_mkdir(h, "K", &k) == 0);
  CHECK(memcg_write(h, k, "memory.kmem.limit_in_bytes", "16384") == 0);
  CHECK(memcg_charge(k, MEMCG_KIND_KMEM, 5, MEMCG_GFP_KERNEL) == -ENOMEM);
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_KMEM_LIMIT);
  CHECK(r.group == k);
  CHECK(r.nr_pages == 5);
  CHECK(r.limit == 4);
  CHECK(memcg_charge(k, MEMCG_KIND_KMEM, 4, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_uncharge(k, MEMCG_KIND_KMEM, 4) == 0);

  /* A socket at its group's tcp sub-limit (the queue is not empty, so nothing is forced). */
  CHECK(memcg_write(h, b, "memory.kmem.tcp.limit_in_bytes", "8K") == 0);
  CHECK(memcg_sock_open(p, b, &s) == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_sock_recv(s, 3 * 4096, 0) == -ENOMEM);
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_TCP_LIMIT);
  CHECK(r.group == b);
  CHECK(r.nr_pages == 3);
  CHECK(r.limit == 2);
  CHECK(r.usage == 1);
  /* The same through the primitive. */
  CHECK(memcg_sock_rmem_schedule(s, 3 * 4096, 0) == -ENOMEM);
  CHECK(last_refusal().source == MEMCG_REFUSAL_TCP_LIMIT);
  CHECK(memcg_sock_consume(s, 4096) == 0);

  /* A socket at an ancestor's memory.max (the sending side: charged as the application). */
  CHECK(memcg_write(h, b, "memory.kmem.tcp.limit_in_bytes", "max") == -EINVAL); /* v1: -1 */
  CHECK(memcg_write(h, b, "memory.kmem.tcp.limit_in_bytes", "-1") == 0);
  CHECK(memcg_write(h, a, "memory.max", "16K") == 0);
  CHECK(memcg_sock_set_sndbuf(s, 1 << 20) == 0);
  CHECK(memcg_sock_send(s, 4096) == 0);
  CHECK(memcg_sock_send(s, 5 * 4096) == -ENOMEM);
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_GROUP_LIMIT);
  CHECK(r.group == a);
  CHECK(r.nr_pages == 5);
  CHECK(r.limit == 4);
  CHECK(memcg_sock_wmem_schedule(s, 5 * 4096) == -ENOMEM);
  CHECK(last_refusal().group == a);
  CHECK(memcg_sock_ack(s, 4096) == 0);
  CHECK(memcg_write(h, a, "memory.max", "max") == 0);

  /* The protocol's hard limit tcp_mem[2] (no group). */
  CHECK(memcg_proto_set_tcp_mem(p, 1, 100, 4) == -EINVAL);
  CHECK(memcg_proto_set_tcp_mem(p, 1, 3, 4) == 0);
  CHECK(memcg_sock_open(p, NULL, &t) == 0);
  CHECK(memcg_sock_recv(t, 4096, 0) == 0);
  CHECK(memcg_sock_recv(t, 4 * 4096, 0) == -ENOMEM);
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_PROTO_LIMIT);
  CHECK(r.group == NULL);
  CHECK(r.nr_pages == 4);
  CHECK(r.limit == 4);
  CHECK(r.usage == 1);
  CHECK(memcg_sock_consume(t, 4096) == 0);

  /* Fairness: the protocol under pressure (above tcp_mem[1] = 2) and this socket holding half of
   * tcp_mem[2] = 100 with 2 sockets open. tcp_rmem[0] = 0: no minimum-buffer guarantee. */
  CHECK(memcg_proto_set_tcp_mem(p, 1, 2, 100) == 0);
  CHECK(memcg_proto_set_tcp_rmem(p, 0, 131072, 6291456) == 0);
  CHECK(memcg_sock_set_rcvbuf(t, 1 << 22) == 0);
  CHECK(memcg_sock_recv(t, 40 * 4096, 0) == 0); /* into an empty queue: taken */
  CHECK(memcg_sock_recv(t, 9 * 4096, 0) == 0);  /* 49 pages: 2 * 49 < 100 */
  CHECK(proto_stats(p).under_pressure == 1);
  CHECK(memcg_sock_recv(t, 4096, 0) == -ENOMEM); /* 2 * 50 >= 100 */
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_FAIRNESS);
  CHECK(r.group == NULL);
  CHECK(r.limit == 100);
  CHECK(r.usage == 100);
  CHECK(memcg_sock_consume(t, 49 * 4096) == 0);

  /* rcvbuf (-ENOBUFS) and sndbuf (-EAGAIN). */
  CHECK(memcg_sock_set_rcvbuf(t, 1) == 0); /* 2304 */
  CHECK(memcg_sock_recv(t, 3000, 0) == 0);
  CHECK(memcg_sock_recv(t, 10, 0) == -ENOBUFS);
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_RCVBUF);
  CHECK(r.error == -ENOBUFS);
  CHECK(r.limit == 2304);
  CHECK(r.usage == 3000);
  CHECK(memcg_sock_consume(t, 3000) == 0);
  CHECK(memcg_sock_set_sndbuf(t, 3000) == 0); /* 6000 */
  CHECK(memcg_sock_send(t, 6000) == 0);
  CHECK(memcg_sock_send(t, 1) == -EAGAIN);
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_SNDBUF);
  CHECK(r.error == -EAGAIN);
  CHECK(r.limit == 6000 && r.usage == 6000);
  CHECK(memcg_sock_ack(t, 6000) == 0);

  memcg_sock_destroy(s);
  memcg_sock_destroy(t);
  CHECK(allocated(p) == 0);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* A refusal whose cause is gone by the time it is diagnosed: the protocol's pressure callback
 * (run inside the refused raise, after the hard limit was read) frees another socket's pages, so
 * that right after the refusal neither tcp_mem[2] nor the pressure shows any more. */
static void give_back_on_pressure(memcg_proto* p, int entering, int64_t duration_ms, void* user) {
  (void)p;
  (void)duration_ms;
  if (entering) CHECK(memcg_sock_consume((memcg_sock*)user, 4 * 4096) == 0);
}
static void test_refusal_unknown(void) {
  memcg_proto* p = new_proto(0);
  memcg_sock *t = NULL, *u = NULL;
  memcg_refusal r;
  CHECK(memcg_proto_set_tcp_mem(p, 6, 6, 8) == 0);
  CHECK(memcg_sock_open(p, NULL, &t) == 0);
  CHECK(memcg_sock_open(p, NULL, &u) == 0);
  CHECK(memcg_sock_recv(u, 4 * 4096, 0) == 0); /* 4 pages */
  CHECK(memcg_sock_recv(t, 4096, 0) == 0);     /* 5 */
  CHECK(memcg_proto_set_pressure_callback(p, give_back_on_pressure, u) == 0);
  /* 9 pages: above tcp_mem[1] (the callback takes u's 4 and the protocol leaves pressure below
   * tcp_mem[0]), and the 9 read before it exceed tcp_mem[2]: refused. */
  CHECK(memcg_sock_recv(t, 4 * 4096, 0) == -ENOMEM);
  r = last_refusal();
  CHECK(r.source == MEMCG_REFUSAL_UNKNOWN);
  CHECK(r.error == -ENOMEM);
  CHECK(r.group == NULL);
  CHECK(r.nr_pages == 4);
  CHECK(r.limit == -1 && r.usage == -1);
  CHECK(proto_stats(p).under_pressure == 0);
  CHECK(memcg_proto_set_pressure_callback(p, NULL, NULL) == 0);
  CHECK(memcg_sock_consume(t, 4096) == 0);
  memcg_sock_destroy(t);
  memcg_sock_destroy(u);
  CHECK(allocated(p) == 0);
  memcg_proto_destroy(p);
}

/* The latest refusal is the calling thread's: a new thread has none. */
static void* refusal_thread(void* arg) {
  memcg_refusal r;
  memset(&r, 0, sizeof r);
  r.size = sizeof r;
  *(int*)arg = memcg_last_refusal(&r);
  return NULL;
}
static void test_refusal_per_thread(void) {
  pthread_t th;
  int rc = 1;
  CHECK(pthread_create(&th, NULL, refusal_thread, &rc) == 0);
  CHECK(pthread_join(th, NULL) == 0);
  CHECK(rc == -ENOENT);
}

/* ---- sockets in the caller's storage ---- */

struct pcb { /* a stack's connection block with the socket's memory state inside */
  int state;
  memcg_sock_storage mem;
  int other;
};

static void test_embedded_socket(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_proto* p = new_proto(0);
  memcg_group* g = NULL;
  memcg_group* owner = NULL;
  memcg_sock* s = NULL;
  struct pcb pcb;
  unsigned char raw[MEMCG_SOCK_SIZE + 16];
  memcg_sock_info i;
  char buf[32];
  CHECK(sizeof(memcg_sock_storage) == MEMCG_SOCK_SIZE);
  CHECK(memcg_mkdir(h, "T", &g) == 0);
  CHECK(memcg_sock_init(NULL, MEMCG_SOCK_SIZE, p, g, &s) == -EINVAL);
  CHECK(memcg_sock_init(&pcb.mem, MEMCG_SOCK_SIZE - 1, p, g, &s) == -EINVAL);
  /* Misaligned storage. */
  {
    unsigned char* m = raw;
    while (((uintptr_t)m % MEMCG_SOCK_ALIGN) != 1) ++m;
    CHECK(memcg_sock_init(m, MEMCG_SOCK_SIZE, p, g, &s) == -EINVAL);
  }
  CHECK(proto_stats(p).sockets_allocated == 0); /* refused: nothing built */

  pcb.state = 7;
  pcb.other = 9;
  CHECK(memcg_sock_init(&pcb.mem, sizeof pcb.mem, p, g, &s) == 0);
  CHECK((void*)s == (void*)&pcb.mem);
  CHECK(proto_stats(p).sockets_allocated == 1);
  CHECK(memcg_sock_group(s, &owner) == 0);
  CHECK(owner == g);
  CHECK(memcg_sock_recv(s, 1460, 0) == 0);
  CHECK(memcg_sock_recv(s, 1460, 0) == 0);
  CHECK(memcg_sock_send(s, 1000) == 0);
  i = sock_info(s);
  CHECK(i.rmem_alloc == 2920 && i.wmem_queued == 1000);
  CHECK(allocated(p) == 1);
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "4096") == 0);
  CHECK(pcb.state == 7 && pcb.other == 9); /* the neighbours are untouched */
  /* fini gives everything back without consume/ack, and frees nothing. */
  memcg_sock_fini(s);
  CHECK(allocated(p) == 0);
  CHECK(proto_stats(p).sockets_allocated == 0);
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  CHECK(pcb.state == 7 && pcb.other == 9);
  /* The storage is reusable. */
  CHECK(memcg_sock_init(&pcb.mem, sizeof pcb.mem, p, NULL, &s) == 0);
  CHECK(memcg_sock_group(s, &owner) == 0);
  CHECK(owner == NULL);
  CHECK(memcg_sock_close(s) == 0);
  CHECK(memcg_sock_close(s) == -EBADF);
  memcg_sock_fini(s); /* after close: only ends it */
  CHECK(proto_stats(p).sockets_allocated == 0);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* ---- the clock, the charge batch, socket accounting ---- */

static int64_t my_now(void* user) { return *(int64_t*)user; }
static void my_sleep(int64_t us, void* user) { *(int64_t*)user += us; }

static void test_clock(void) {
  memcg_clock* v = NULL;
  memcg_clock* mine = NULL;
  memcg_hierarchy_options ho;
  memcg_proto_options po;
  memcg_hierarchy* h = NULL;
  memcg_proto* p = NULL;
  memcg_group* g = NULL;
  memcg_sock* s = NULL;
  memcg_pressure_level level = MEMCG_PRESSURE_NONE;
  struct pressure_log log = {0, 0, -1};
  int64_t now = -1, t = 123;
  int flag = -1;
  memcg_proto_stats ps;

  CHECK(memcg_clock_create_virtual(&v) == 0);
  CHECK(memcg_clock_now(v, &now) == 0 && now == 0);
  CHECK(memcg_clock_advance(v, -1) == -EINVAL);
  CHECK(memcg_clock_advance(v, 5) == 0);
  CHECK(memcg_clock_now(v, &now) == 0 && now == 5);
  CHECK(memcg_clock_now(v, NULL) == -EINVAL);
  CHECK(memcg_clock_create(my_now, NULL, &t, &mine) == -EINVAL);
  CHECK(memcg_clock_create(my_now, my_sleep, &t, &mine) == 0);
  CHECK(memcg_clock_now(mine, &now) == 0 && now == 123);
  CHECK(memcg_clock_advance(mine, 1) == -EINVAL); /* the caller's clock moves by itself */

  /* The hierarchy's clock: vmpressure's socket hold lasts one second of it. */
  memcg_hierarchy_options_init(&ho);
  ho.clock = v;
  CHECK(memcg_hierarchy_create(&ho, &h) == 0);
  CHECK(memcg_mkdir(h, "G", &g) == 0);
  CHECK(memcg_group_socket_pressure(g, &flag) == 0 && flag == 0);
  CHECK(memcg_group_pressure_emit(g, MEMCG_PRESSURE_MEDIUM) == 0);
  CHECK(memcg_group_pressure_level(g, &level) == 0 && level == MEMCG_PRESSURE_MEDIUM);
  CHECK(memcg_group_socket_pressure(g, &flag) == 0 && flag == 1);
  CHECK(memcg_clock_advance(v, 999999) == 0);
  CHECK(memcg_group_socket_pressure(g, &flag) == 0 && flag == 1);
  CHECK(memcg_clock_advance(v, 2) == 0);
  CHECK(memcg_group_socket_pressure(g, &flag) == 0 && flag == 0);
  /* Replaced by the caller's clock, at 123 us: the hold computed now ends at 1,000,123 us. */
  CHECK(memcg_hierarchy_set_clock(h, mine) == 0);
  CHECK(memcg_group_pressure_emit(g, MEMCG_PRESSURE_CRITICAL) == 0);
  t = 1000000;
  CHECK(memcg_group_socket_pressure(g, &flag) == 0 && flag == 1);
  t = 1000124;
  CHECK(memcg_group_socket_pressure(g, &flag) == 0 && flag == 0);
  CHECK(memcg_hierarchy_set_clock(h, NULL) == 0);

  /* The protocol's clock: a pressure episode's length. */
  memcg_proto_options_init(&po);
  po.clock = v;
  po.pcpu_reserve_pages = -1;
  CHECK(memcg_proto_create(&po, &p) == -EINVAL);
  po.pcpu_reserve_pages = 0;
  CHECK(memcg_proto_create(&po, &p) == 0);
  CHECK(memcg_proto_set_tcp_mem(p, 1, 2, 100) == 0);
  CHECK(memcg_proto_set_pressure_callback(p, on_pressure, &log) == 0);
  CHECK(memcg_sock_open(p, NULL, &s) == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_sock_recv(s, 3 * 4096, 0) == 0); /* 4 pages > 2: pressure */
  CHECK(log.enters == 1);
  CHECK(memcg_clock_advance(v, 250 * 1000) == 0);
  CHECK(memcg_sock_consume(s, 4 * 4096) == 0); /* 0 pages < 1: leaves */
  CHECK(log.leaves == 1);
  CHECK(log.last_ms == 250);
  ps = proto_stats(p);
  CHECK(ps.pressures == 1 && ps.pressure_ms == 250 && ps.under_pressure == 0);
  memcg_sock_destroy(s);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
  memcg_clock_destroy(mine);
  memcg_clock_destroy(v);
}

static void test_charge_batch(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_group* g = NULL;
  int64_t batch = 0;
  CHECK(memcg_mkdir(h, "G", &g) == 0);
  CHECK(memcg_hierarchy_charge_batch(h, &batch) == 0 && batch == 64);
  CHECK(memcg_hierarchy_set_charge_batch(h, 0) == -EINVAL);
  CHECK(memcg_hierarchy_set_charge_batch(h, 1025) == -EINVAL);
  CHECK(memcg_hierarchy_charge_batch(h, &batch) == 0 && batch == 64);
  /* The batch: one page charges 64 to the counters, the rest parked in this thread's stock. */
  CHECK(memcg_charge(g, MEMCG_KIND_ANON, 1, MEMCG_GFP_KERNEL) == 0);
  CHECK(counter(g, MEMCG_COUNTER_MEMORY).usage == 64);
  CHECK(memcg_uncharge(g, MEMCG_KIND_ANON, 1) == 0);
  /* Batch 1: no stock; exact counters. */
  CHECK(memcg_hierarchy_set_charge_batch(h, 1) == 0);
  CHECK(memcg_hierarchy_charge_batch(h, &batch) == 0 && batch == 1);
  CHECK(counter(g, MEMCG_COUNTER_MEMORY).usage == 0); /* the stock was drained */
  CHECK(memcg_charge(g, MEMCG_KIND_ANON, 1, MEMCG_GFP_KERNEL) == 0);
  CHECK(counter(g, MEMCG_COUNTER_MEMORY).usage == 1);
  CHECK(memcg_uncharge(g, MEMCG_KIND_ANON, 1) == 0);
  CHECK(counter(g, MEMCG_COUNTER_MEMORY).usage == 0);
  memcg_hierarchy_destroy(h);
}

/* Where socket pages are charged: v1 the tcp counter alone, v2 the memory counter alone. */
static void test_socket_accounting(void) {
  char buf[64];
  memcg_group* g = NULL;
  memcg_sock* s = NULL;
  memcg_socket_accounting sa = (memcg_socket_accounting)-1;
  memcg_hierarchy* h = new_hierarchy();
  memcg_proto* p = new_proto(0);
  CHECK(memcg_hierarchy_socket_accounting(h, &sa) == 0 && sa == MEMCG_SOCKET_ACCOUNTING_BOTH);
  CHECK(memcg_hierarchy_set_socket_accounting(h, (memcg_socket_accounting)3) == -EINVAL);
  CHECK(memcg_mkdir(h, "G", &g) == 0);
  CHECK(memcg_write(h, g, "memory.max", "8K") == 0);
  CHECK(memcg_sock_open(p, g, &s) == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V1) == -EBUSY);
  CHECK(memcg_sock_recv(s, 8192, 0) == -ENOMEM); /* both: memory.max binds */
  CHECK(last_refusal().source == MEMCG_REFUSAL_GROUP_LIMIT);
  CHECK(memcg_sock_consume(s, 4096) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V1) == 0);
  CHECK(memcg_hierarchy_socket_accounting(h, &sa) == 0 && sa == MEMCG_SOCKET_ACCOUNTING_V1);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_sock_recv(s, 12288, 0) == 0); /* v1: past memory.max */
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "16384") == 0);
  CHECK(memcg_sock_consume(s, 16384) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V2) == 0);
  CHECK(memcg_write(h, g, "memory.kmem.tcp.limit_in_bytes", "4K") == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0); /* v2: past the tcp limit */
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  CHECK(memcg_sock_recv(s, 3 * 4096, 0) == -ENOMEM); /* v2: memory.max 8K binds */
  CHECK(last_refusal().source == MEMCG_REFUSAL_GROUP_LIMIT);
  CHECK(memcg_sock_consume(s, 8192) == 0);
  memcg_sock_destroy(s);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* ---- typed statistics, the group walk, pressure listeners ---- */

static void test_statistics(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_proto* p = new_proto(0);
  memcg_group *a = NULL, *b = NULL;
  memcg_sock* s = NULL;
  memcg_counter_info c;
  memcg_events ev;
  int64_t pages = -1;
  CHECK(memcg_hierarchy_set_charge_batch(h, 1) == 0); /* exact counters */
  CHECK(memcg_mkdir(h, "A", &a) == 0);
  CHECK(memcg_mkdir(h, "A/B", &b) == 0);
  CHECK(memcg_write(h, a, "memory.max", "40K") == 0);
  CHECK(memcg_write(h, a, "memory.high", "32K") == 0);
  CHECK(memcg_write(h, b, "memory.low", "8K") == 0);
  CHECK(memcg_charge(b, MEMCG_KIND_ANON, 6, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_charge(a, MEMCG_KIND_FILE, 2, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_charge(b, MEMCG_KIND_ANON, 20, MEMCG_GFP_KERNEL) == -ENOMEM);
  CHECK(memcg_sock_open(p, b, &s) == 0);
  CHECK(memcg_sock_recv(s, 100, 0) == 0);

  c = counter(a, MEMCG_COUNTER_MEMORY);
  CHECK(c.size == sizeof c);
  CHECK(c.usage == 9);
  CHECK(c.max == 10);
  CHECK(c.high == 8);
  CHECK(c.failcnt >= 1); /* one per refused try: the reclaim rounds retry */
  CHECK(c.watermark >= 9);
  c = counter(a, MEMCG_COUNTER_MEMORY);
  CHECK(counter(b, MEMCG_COUNTER_MEMORY).usage == 7 && counter(b, MEMCG_COUNTER_MEMORY).low == 2);
  CHECK(counter(b, MEMCG_COUNTER_MEMORY).failcnt == 0);
  CHECK(counter(b, MEMCG_COUNTER_TCP).usage == 1);
  CHECK(counter(b, MEMCG_COUNTER_KMEM).usage == 0);

  ev.size = sizeof ev;
  CHECK(memcg_group_events(a, 0, &ev) == 0);
  CHECK(ev.max == c.failcnt);
  CHECK(ev.oom == 0); /* 20 pages: more than the OOM handler is asked for */
  CHECK(memcg_group_events(a, 1, &ev) == 0);
  CHECK(ev.max == c.failcnt);
  CHECK(memcg_group_events(b, 0, &ev) == 0);
  CHECK(ev.max == 0);

  CHECK(memcg_group_stat(b, MEMCG_KIND_ANON, 0, &pages) == 0 && pages == 6);
  CHECK(memcg_group_stat(a, MEMCG_KIND_ANON, 0, &pages) == 0 && pages == 0);
  CHECK(memcg_group_stat(a, MEMCG_KIND_ANON, 1, &pages) == 0 && pages == 6);
  CHECK(memcg_group_stat(a, MEMCG_KIND_FILE, 1, &pages) == 0 && pages == 2);
  CHECK(memcg_group_stat(b, MEMCG_KIND_SOCK, 0, &pages) == 0 && pages == 1);

  memcg_sock_destroy(s);
  CHECK(memcg_uncharge(b, MEMCG_KIND_ANON, 6) == 0);
  CHECK(memcg_uncharge(a, MEMCG_KIND_FILE, 2) == 0);
  CHECK(counter(a, MEMCG_COUNTER_MEMORY).usage == 0);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

struct walk {
  char paths[8][16];
  int n, stop_at;
};
static int collect(memcg_group* g, void* user) {
  struct walk* w = (struct walk*)user;
  size_t len = 0;
  if (w->n < 8) CHECK(memcg_group_path(g, w->paths[w->n], sizeof w->paths[0], &len) == 0);
  ++w->n;
  return w->n == w->stop_at ? -EINTR : 0;
}

/* A walk's callback may change the tree: the walk goes on over its snapshot. */
struct rmdir_walk {
  memcg_hierarchy* h;
  int n, dead_seen;
};
static int rmdir_during_walk(memcg_group* g, void* user) {
  struct rmdir_walk* w = (struct rmdir_walk*)user;
  int dead = 0;
  CHECK(memcg_group_dead(g, &dead) == 0);
  w->dead_seen += dead;
  if (w->n++ == 0) {
    CHECK(memcg_rmdir(w->h, "D/E") == 0);
    CHECK(memcg_mkdir(w->h, "F", NULL) == 0);
  }
  return 0;
}

static void test_walk(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_hierarchy* other = new_hierarchy();
  memcg_group *a = NULL, *b = NULL, *root = NULL, *parent = NULL;
  struct walk w;
  char buf[4];
  size_t len = 0;
  int dead = -1;
  CHECK(memcg_mkdir(h, "A", &a) == 0);
  CHECK(memcg_mkdir(h, "A/B", &b) == 0);
  CHECK(memcg_mkdir(h, "C", NULL) == 0);
  CHECK(memcg_mkdir(h, "A", NULL) == -EEXIST);
  CHECK(memcg_mkdir(h, "X/Y", NULL) == -ENOENT);
  CHECK(memcg_mkdir(h, "A/../B", NULL) == -EINVAL);
  CHECK(memcg_find(h, "nosuch", &parent) == -ENOENT);
  CHECK(memcg_root(h, &root) == 0);
  CHECK(find(h, "/") == root);
  CHECK(find(h, "A/B") == b);

  memset(&w, 0, sizeof w);
  CHECK(memcg_for_each_group(h, NULL, collect, &w) == 0);
  CHECK(w.n == 4);
  CHECK(strcmp(w.paths[0], "/") == 0 && strcmp(w.paths[1], "A") == 0 &&
        strcmp(w.paths[2], "A/B") == 0 && strcmp(w.paths[3], "C") == 0);
  memset(&w, 0, sizeof w);
  CHECK(memcg_for_each_group(h, a, collect, &w) == 0);
  CHECK(w.n == 2 && strcmp(w.paths[1], "A/B") == 0);
  memset(&w, 0, sizeof w);
  w.stop_at = 2;
  CHECK(memcg_for_each_group(h, NULL, collect, &w) == -EINTR);
  CHECK(w.n == 2);
  CHECK(memcg_for_each_group(h, NULL, NULL, NULL) == -EINVAL);
  CHECK(memcg_for_each_group(other, a, collect, &w) == -EINVAL); /* another hierarchy's group */

  CHECK(memcg_group_path(b, buf, sizeof buf, &len) == 0);
  CHECK(len == 3 && strcmp(buf, "A/B") == 0);
  CHECK(memcg_group_path(b, buf, 2, &len) == 0); /* cut, NUL-terminated, the length whole */
  CHECK(len == 3 && strcmp(buf, "A") == 0);
  CHECK(memcg_group_path(b, NULL, 0, &len) == 0 && len == 3);
  CHECK(memcg_group_parent(b, &parent) == 0 && parent == a);
  CHECK(memcg_group_parent(root, &parent) == 0 && parent == NULL);
  CHECK(memcg_group_dead(b, &dead) == 0 && dead == 0);
  CHECK(memcg_rmdir(h, "A") == -EBUSY);
  CHECK(memcg_rmdir(h, "/") == -EINVAL);
  CHECK(memcg_rmdir(h, "A/B") == 0);
  CHECK(memcg_rmdir(h, "A/B") == -ENOENT);
  CHECK(memcg_group_dead(b, &dead) == 0 && dead == 1);
  memset(&w, 0, sizeof w);
  CHECK(memcg_for_each_group(h, NULL, collect, &w) == 0);
  CHECK(w.n == 3);
  {
    struct rmdir_walk rw;
    rw.h = h;
    rw.n = rw.dead_seen = 0;
    CHECK(memcg_mkdir(h, "D", NULL) == 0);
    CHECK(memcg_mkdir(h, "D/E", NULL) == 0);
    CHECK(memcg_for_each_group(h, NULL, rmdir_during_walk, &rw) == 0);
    CHECK(rw.n == 5); /* /, A, C, D, D/E (removed meanwhile, visited dead); not F */
    CHECK(rw.dead_seen == 1);
  }
  /* The control files across hierarchies are refused. */
  CHECK(memcg_write(other, a, "memory.max", "1M") == -EINVAL);
  memcg_hierarchy_destroy(other);
  memcg_hierarchy_destroy(h);
}

struct pressure_calls {
  int n;
  memcg_group *where, *origin;
  memcg_pressure_level level;
};
static void on_group_pressure(memcg_group* where, memcg_group* origin, memcg_pressure_level level,
                              void* user) {
  struct pressure_calls* c = (struct pressure_calls*)user;
  ++c->n;
  c->where = where;
  c->origin = origin;
  c->level = level;
}

static void test_pressure_listeners(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_group *a = NULL, *b = NULL;
  memcg_listener *l = NULL, *local = NULL;
  struct pressure_calls calls, local_calls;
  memcg_pressure_level level = MEMCG_PRESSURE_CRITICAL;
  memset(&calls, 0, sizeof calls);
  memset(&local_calls, 0, sizeof local_calls);
  CHECK(memcg_mkdir(h, "A", &a) == 0);
  CHECK(memcg_mkdir(h, "A/B", &b) == 0);
  CHECK(memcg_group_pressure_level(b, &level) == 0 && level == MEMCG_PRESSURE_NONE);
  CHECK(memcg_group_pressure_listen(a, (memcg_pressure_level)4, MEMCG_PRESSURE_MODE_HIERARCHY,
                                    on_group_pressure, &calls, &l) == -EINVAL);
  CHECK(memcg_group_pressure_listen(a, MEMCG_PRESSURE_MEDIUM, (memcg_pressure_mode)3,
                                    on_group_pressure, &calls, &l) == -EINVAL);
  CHECK(memcg_group_pressure_listen(a, MEMCG_PRESSURE_MEDIUM, MEMCG_PRESSURE_MODE_HIERARCHY, NULL,
                                    &calls, &l) == -EINVAL);
  CHECK(memcg_group_pressure_listen(a, MEMCG_PRESSURE_MEDIUM, MEMCG_PRESSURE_MODE_HIERARCHY,
                                    on_group_pressure, &calls, &l) == 0);
  CHECK(memcg_group_pressure_listen(a, MEMCG_PRESSURE_LOW, MEMCG_PRESSURE_MODE_LOCAL,
                                    on_group_pressure, &local_calls, &local) == 0);
  /* Below the listener's level: nothing for it. */
  CHECK(memcg_group_pressure_emit(b, MEMCG_PRESSURE_LOW) == 0);
  CHECK(calls.n == 0);
  CHECK(memcg_group_pressure_emit(b, (memcg_pressure_level)9) == -EINVAL);
  /* Computed in B, delivered to A's hierarchy listener, not to its local one. */
  CHECK(memcg_group_pressure_emit(b, MEMCG_PRESSURE_CRITICAL) == 0);
  CHECK(calls.n == 1);
  CHECK(calls.where == a && calls.origin == b && calls.level == MEMCG_PRESSURE_CRITICAL);
  CHECK(local_calls.n == 0);
  CHECK(memcg_group_pressure_level(b, &level) == 0 && level == MEMCG_PRESSURE_CRITICAL);
  /* Computed in A: both. */
  CHECK(memcg_group_pressure_emit(a, MEMCG_PRESSURE_MEDIUM) == 0);
  CHECK(calls.n == 2 && calls.origin == a && calls.level == MEMCG_PRESSURE_MEDIUM);
  CHECK(local_calls.n == 1 && local_calls.where == a);
  /* Destroyed: never called again. */
  memcg_listener_destroy(l);
  CHECK(memcg_group_pressure_emit(a, MEMCG_PRESSURE_CRITICAL) == 0);
  CHECK(calls.n == 2);
  CHECK(local_calls.n == 2);
  memcg_listener_destroy(local);
  memcg_hierarchy_destroy(h);
}

/* ---- give-backs and TCP's rules ---- */

/* Every counter a bad give-back could move: the socket's fields, the protocol's pages, the
 * group's memory, tcp and kmem counters and its anon and sock statistics. */
struct snapshot {
  memcg_sock_info info;
  int64_t allocated;
  char current[32], tcp[32], kmem[32], stat[512];
};

static void take(memcg_hierarchy* h, memcg_group* g, memcg_proto* p, memcg_sock* s,
                 struct snapshot* out) {
  memset(out, 0, sizeof *out);
  out->info = sock_info(s);
  out->allocated = allocated(p);
  CHECK(read_text(h, g, "memory.current", out->current, sizeof out->current) > 0);
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", out->tcp, sizeof out->tcp) > 0);
  CHECK(read_text(h, g, "memory.kmem.usage_in_bytes", out->kmem, sizeof out->kmem) > 0);
  CHECK(read_text(h, g, "memory.stat", out->stat, sizeof out->stat) > 0);
}

static int same(const struct snapshot* a, const struct snapshot* b) {
  return a->info.forward_alloc == b->info.forward_alloc &&
         a->info.rmem_alloc == b->info.rmem_alloc && a->info.wmem_queued == b->info.wmem_queued &&
         a->allocated == b->allocated && strcmp(a->current, b->current) == 0 &&
         strcmp(a->tcp, b->tcp) == 0 && strcmp(a->kmem, b->kmem) == 0 &&
         strcmp(a->stat, b->stat) == 0;
}

/* Every give-back of more than a socket or a group holds is -EINVAL and changes no counter
 * (taken, one would drive memory_allocated to -256 pages). */
#define CHECK_REFUSED(call)                                                       \
  do {                                                                            \
    struct snapshot after_;                                                       \
    CHECK((call) == -EINVAL);                                                     \
    take(h, g, p, s, &after_);                                                    \
    if (!same(&before, &after_)) {                                                \
      fprintf(stderr, "%s:%d: %s changed a counter\n", __FILE__, __LINE__, #call); \
      ++failures;                                                                 \
    }                                                                             \
  } while (0)

static void test_bad_give_backs(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_proto* p = new_proto(4); /* a per-thread reserve: reads stay exact */
  memcg_group* g = NULL;
  memcg_sock* s = NULL;
  memcg_sock* other = NULL;
  struct snapshot before;
  CHECK(memcg_mkdir(h, "G", &g) == 0);
  CHECK(memcg_sock_open(p, g, &s) == 0);
  CHECK(memcg_sock_open(p, g, &other) == 0);

  /* An empty socket: 1 MiB back is refused. */
  take(h, g, p, s, &before);
  CHECK(before.allocated == 0);
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, 1 << 20));
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, 1));
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, -1));
  CHECK_REFUSED(memcg_sock_consume(s, 1));
  CHECK_REFUSED(memcg_sock_ack(s, 1));

  /* Another socket of the group holds pages; this one holds bytes in every place. */
  CHECK(memcg_sock_recv(other, 3 * 4096, 0) == 0);
  CHECK(memcg_charge(g, MEMCG_KIND_ANON, 3, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_sock_recv(s, 1500, 0) == 0);
  CHECK(memcg_sock_send(s, 700) == 0);
  CHECK(memcg_sock_rmem_schedule(s, 5000, 0) == 0);
  CHECK(memcg_sock_mem_charge(s, 300) == 0);
  take(h, g, p, s, &before);
  CHECK(before.allocated == 5);
  CHECK(before.info.forward_alloc > 0);
  CHECK(before.info.stack_charged == 300);
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, 301));
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, 1 << 20));
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, INT64_MAX));
  CHECK_REFUSED(memcg_sock_mem_charge(s, before.info.forward_alloc + 1));
  CHECK_REFUSED(memcg_sock_mem_charge(s, -1));
  CHECK_REFUSED(memcg_sock_consume(s, 1501));
  CHECK_REFUSED(memcg_sock_consume(s, -1));
  CHECK_REFUSED(memcg_sock_consume(s, INT64_MAX));
  CHECK_REFUSED(memcg_sock_ack(s, 701));
  CHECK_REFUSED(memcg_sock_ack(s, INT64_MIN));
  CHECK_REFUSED(memcg_sock_rmem_schedule(s, -1, 0));
  CHECK_REFUSED(memcg_sock_wmem_schedule(s, INT64_MAX));
  CHECK_REFUSED(memcg_sock_forced_mem_schedule(s, -1));
  CHECK_REFUSED(memcg_sock_set_rcvbuf(s, -1));
  CHECK_REFUSED(memcg_sock_set_sndbuf(s, (int64_t)INT32_MAX + 1));
  CHECK_REFUSED(memcg_sock_advice(s, 0, NULL));
  /* The group: more than it holds, negative, and the pages its sockets hold. */
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_ANON, 4));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_ANON, -1));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_ANON, INT64_MAX));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_FILE, 1));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_KMEM, 1));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_SOCK, 1));
  CHECK_REFUSED(memcg_uncharge(g, (memcg_kind)-1, 1));
  CHECK_REFUSED(memcg_charge(g, MEMCG_KIND_SOCK, 1, MEMCG_GFP_KERNEL));
  CHECK_REFUSED(memcg_charge(g, MEMCG_KIND_ANON, -1, MEMCG_GFP_KERNEL));
  CHECK_REFUSED(memcg_write(h, g, "memory.max", "banana"));

  /* What was taken goes back exactly; a second give-back is refused. */
  CHECK(memcg_sock_mem_uncharge(s, 300) == 0);
  take(h, g, p, s, &before);
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, 1));
  CHECK(memcg_sock_consume(s, 1500) == 0);
  CHECK(memcg_sock_ack(s, 700) == 0);
  CHECK(memcg_uncharge(g, MEMCG_KIND_ANON, 3) == 0);
  CHECK(memcg_sock_consume(other, 3 * 4096) == 0);
  CHECK(allocated(p) == 0);

  /* Bytes a stack still holds at close come back with it. */
  CHECK(memcg_sock_wmem_schedule(s, 9000) == 0);
  CHECK(memcg_sock_mem_charge(s, 9000) == 0);
  CHECK(allocated(p) == 3);
  CHECK(memcg_sock_close(s) == 0);
  CHECK(allocated(p) == 0);
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", before.tcp, sizeof before.tcp) > 0);
  CHECK(strcmp(before.tcp, "0") == 0);
  memcg_sock_destroy(s);
  memcg_sock_destroy(other);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* TCP's rules around the raise: the forced first segment, rcvbuf, a send that would
 * block, SO_RCVBUF / SO_SNDBUF. */
static void test_tcp_rules(void) {
  memcg_hierarchy* h = new_hierarchy();
  memcg_proto* p = new_proto(0);
  memcg_group* g = NULL;
  memcg_sock* r = NULL;
  memcg_sock* w = NULL;
  memcg_sock_info info;
  char buf[32];
  CHECK(memcg_mkdir(h, "G", &g) == 0);
  CHECK(memcg_write(h, g, "memory.kmem.tcp.limit_in_bytes", "8K") == 0);
  CHECK(memcg_sock_open(p, g, &r) == 0);
  CHECK(memcg_sock_open(p, g, &w) == 0);
  /* Past the tcp limit into an empty queue: taken; then dropped. */
  CHECK(memcg_sock_recv(r, 12288, 0) == 0);
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "12288") == 0);
  CHECK(memcg_sock_recv(r, 4096, 0) == -ENOMEM);
  CHECK(memcg_sock_consume(r, 12288) == 0);
  /* rcvbuf: SO_RCVBUF 1 gives 2304; a queue above it drops with -ENOBUFS. */
  CHECK(memcg_sock_set_rcvbuf(r, -1) == -EINVAL);
  CHECK(memcg_sock_set_rcvbuf(r, 1) == 0);
  info = sock_info(r);
  CHECK(info.rcvbuf == 2304 && info.rcvbuf_locked == 1 && info.sndbuf_locked == 0);
  CHECK(memcg_sock_recv(r, 2000, 0) == 0);
  CHECK(memcg_sock_recv(r, 1000, 0) == 0); /* 2000 <= 2304 */
  CHECK(memcg_sock_recv(r, 10, 0) == -ENOBUFS);
  /* sndbuf: SO_SNDBUF 3000 gives 6000; a full queue would block. */
  CHECK(memcg_sock_set_sndbuf(w, 3000) == 0);
  CHECK(memcg_sock_send(w, 6000) == 0);
  CHECK(memcg_sock_send(w, 1) == -EAGAIN);
  info = sock_info(w);
  CHECK(info.sndbuf == 6000 && info.sndbuf_locked == 1);
  CHECK(info.wmem_queued == 6000);
  /* The stack's own settings: clamped, not locked. */
  CHECK(memcg_sock_tune_rcvbuf(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_tune_sndbuf(NULL, 1) == -EINVAL);
  {
    memcg_sock* u = NULL;
    CHECK(memcg_sock_open(p, g, &u) == 0);
    CHECK(memcg_sock_tune_rcvbuf(u, 70000) == 0);
    CHECK(memcg_sock_tune_sndbuf(u, 1) == 0);
    info = sock_info(u);
    CHECK(info.rcvbuf == 70000 && info.rcvbuf_locked == 0);
    CHECK(info.sndbuf == 4608 && info.sndbuf_locked == 0);
    CHECK(memcg_sock_tune_rcvbuf(u, -5) == 0);
    CHECK(memcg_sock_tune_sndbuf(u, INT64_MAX) == 0);
    info = sock_info(u);
    CHECK(info.rcvbuf == 0 && info.sndbuf == INT32_MAX);
    CHECK(memcg_sock_close(u) == 0);
    CHECK(memcg_sock_tune_rcvbuf(u, 1) == -EBADF);
    CHECK(memcg_sock_tune_sndbuf(u, 1) == -EBADF);
    memcg_sock_destroy(u);
  }
  /* The primitive for stacks with their own queues. */
  CHECK(memcg_sock_forced_mem_schedule(w, -1) == -EINVAL);
  CHECK(memcg_sock_forced_mem_schedule(w, 3 * 4096) == 0);
  info = sock_info(w);
  CHECK(info.forward_alloc >= 3 * 4096);
  memcg_sock_destroy(r);
  memcg_sock_destroy(w);
  CHECK(allocated(p) == 0);
  CHECK(read_text(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* ---- the life of a socket, end to end ---- */

static void test_sockets(void) {
  char buf[256];
  memcg_group *a = NULL, *b = NULL, *owner = NULL;
  memcg_sock *s = NULL, *t = NULL;
  memcg_sock_info info;
  memcg_window_advice adv;
  memcg_proto_stats ps;
  struct pressure_log log = {0, 0, -1};
  int64_t three[3];
  memcg_hierarchy* h = new_hierarchy();
  memcg_proto* p = new_proto(0);

  CHECK(memcg_mkdir(h, "A", &a) == 0);
  CHECK(memcg_mkdir(h, "A/B", &b) == 0);
  CHECK(memcg_write(h, a, "memory.max", "1M") == 0);
  CHECK(memcg_write(h, a, "memory.max", "banana") == -EINVAL);
  CHECK(read_text(h, a, "memory.max", buf, sizeof buf) == 7);
  CHECK(strcmp(buf, "1048576") == 0);
  CHECK(read_text(h, a, "memory.max", buf, 4) == 7); /* cut, NUL-terminated */
  CHECK(strcmp(buf, "104") == 0);
  CHECK(read_text(h, a, "memory.events", buf, sizeof buf) > 0);
  CHECK(strncmp(buf, "low 0\n", 6) == 0);
  CHECK(read_text(h, a, "memory.nosuch", buf, sizeof buf) < 0);

  CHECK(memcg_proto_tcp_mem(p, three) == 0);
  CHECK(three[0] == 188388 && three[1] == 251184 && three[2] == 376776);
  CHECK(memcg_proto_set_tcp_mem(p, 10, 5, 20) == -EINVAL);
  CHECK(memcg_proto_set_tcp_mem(p, 2, 4, 100) == 0);
  CHECK(memcg_proto_tcp_mem(p, three) == 0 && three[0] == 2 && three[1] == 4 && three[2] == 100);
  CHECK(memcg_proto_set_tcp_rmem(p, 8192, 4096, 16384) == -EINVAL);
  CHECK(memcg_proto_set_tcp_rmem(p, 4096, 131072, 6291456) == 0);
  CHECK(memcg_proto_tcp_rmem(p, three) == 0 && three[1] == 131072);
  CHECK(memcg_proto_set_tcp_wmem(p, 4096, 16384, 4194304) == 0);
  CHECK(memcg_proto_tcp_wmem(p, three) == 0 && three[1] == 16384 && three[2] == 4194304);
  CHECK(memcg_proto_set_pressure_callback(p, on_pressure, &log) == 0);
  CHECK(memcg_sock_open(p, b, &s) == 0);
  CHECK(memcg_sock_open(p, NULL, &t) == 0);
  CHECK(proto_stats(p).sockets_allocated == 2);
  CHECK(memcg_sock_group(s, &owner) == 0 && owner == b);
  CHECK(memcg_sock_group(t, &owner) == 0 && owner == NULL);
  CHECK(memcg_sock_group(s, NULL) == -EINVAL);

  CHECK(memcg_sock_recv(s, 1500, 0) == 0);
  info = sock_info(s);
  CHECK(info.size == sizeof info);
  CHECK(info.forward_alloc == 2596);
  CHECK(info.rmem_alloc == 1500);
  CHECK(info.rcvbuf == 131072);
  CHECK(info.sndbuf == 16384);
  CHECK(info.under_pressure == 0);
  CHECK(info.closed == 0);
  CHECK(allocated(p) == 1);
  CHECK(read_text(h, b, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "4096") == 0);
  CHECK(memcg_sock_consume(s, 1501) == -EINVAL);
  CHECK(memcg_sock_consume(s, 1500) == 0);
  CHECK(allocated(p) == 0);
  CHECK(memcg_sock_send(s, 5000) == 0);
  CHECK(memcg_sock_ack(s, 5001) == -EINVAL);
  CHECK(memcg_sock_ack(s, 5000) == 0);

  /* Pressure: 5 pages > tcp_mem pressure 4. */
  CHECK(memcg_sock_recv(t, 5 * 4096, 0) == 0);
  CHECK(proto_stats(p).under_pressure == 1);
  CHECK(log.enters == 1);
  CHECK(sock_info(t).under_pressure == 1);
  CHECK(memcg_sock_consume(t, 5 * 4096) == 0);
  ps = proto_stats(p);
  CHECK(ps.under_pressure == 0);
  CHECK(log.leaves == 1);
  CHECK(log.last_ms >= 0);
  CHECK(ps.pressures == 1);
  CHECK(ps.pressure_ms >= 0);

  /* The primitives, as a stack that keeps its own queues uses them. */
  CHECK(memcg_sock_rmem_schedule(s, 3000, 0) == 0);
  CHECK(memcg_sock_mem_charge(s, 5000) == -EINVAL); /* more than scheduled */
  CHECK(memcg_sock_mem_charge(s, 3000) == 0);
  CHECK(memcg_sock_wmem_schedule(s, 100) == 0);
  CHECK(memcg_sock_mem_charge(s, 100) == 0);
  CHECK(memcg_sock_mem_uncharge(s, 3100) == 0);
  CHECK(sock_info(s).forward_alloc == 0);

  /* A receive at the group's limit is refused, forced it goes over. */
  CHECK(memcg_write(h, b, "memory.max", "4K") == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0); /* into an empty queue: always taken */
  CHECK(memcg_sock_recv(s, 8192, 0) == -ENOMEM);
  CHECK(memcg_sock_recv(s, 8192, 1) == 0);
  adv.size = sizeof adv;
  CHECK(memcg_sock_advice(s, 0, &adv) == -EINVAL);
  CHECK(memcg_sock_advice(s, 1460, NULL) == -EINVAL);
  CHECK(memcg_sock_advice(s, 1460, &adv) == 0);
  CHECK(adv.size == sizeof adv);
  CHECK(adv.rcv_window >= 0);
  CHECK(adv.snd_space >= 0);

  /* rmdir: the socket's memory is given back through the parent. */
  CHECK(memcg_rmdir(h, "A/B") == 0);
  CHECK(memcg_sock_group(s, &owner) == 0 && owner == a);

  /* Close, use after close, close twice. */
  CHECK(memcg_sock_close(s) == 0);
  CHECK(memcg_sock_close(s) == -EBADF);
  CHECK(memcg_sock_recv(s, 1, 0) == -EBADF);
  CHECK(memcg_sock_send(s, 1) == -EBADF);
  CHECK(memcg_sock_rmem_schedule(s, 1, 0) == -EBADF);
  CHECK(memcg_sock_wmem_schedule(s, 1) == -EBADF);
  CHECK(memcg_sock_forced_mem_schedule(s, 1) == -EBADF);
  CHECK(memcg_sock_mem_uncharge(s, 1) == -EBADF);
  CHECK(memcg_sock_set_rcvbuf(s, 1) == -EBADF);
  CHECK(sock_info(s).closed == 1);
  memcg_sock_destroy(s);
  memcg_sock_destroy(t);
  ps = proto_stats(p);
  CHECK(ps.sockets_allocated == 0);
  CHECK(ps.memory_allocated == 0);
  CHECK(read_text(h, a, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  CHECK(memcg_proto_set_pressure_callback(p, NULL, NULL) == 0);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* ---- group-level window promises ---- */

struct room_log {
  int calls;
  memcg_group* last;
};
static void on_room(memcg_group* g, void* user) {
  struct room_log* l = (struct room_log*)user;
  ++l->calls;
  l->last = g;
}
static int64_t promised_of(const memcg_sock* s) {
  int64_t v = -1;
  CHECK(memcg_sock_promised(s, &v) == 0);
  return v;
}
static int64_t group_promised(const memcg_group* g) {
  int64_t v = -1;
  CHECK(memcg_group_promised(g, &v) == 0);
  return v;
}
static int armed(const memcg_group* g) {
  int v = -1;
  CHECK(memcg_group_room_armed(g, &v) == 0);
  return v;
}
static memcg_window_advice advice_of(const memcg_sock* s, int64_t mss, int64_t overhead) {
  memcg_window_advice a;
  memset(&a, 0, sizeof a);
  a.size = sizeof a;
  CHECK(memcg_sock_window_advice(s, mss, overhead, &a) == 0);
  return a;
}
static int64_t promise(memcg_sock* s, int64_t mss, int64_t overhead) {
  memcg_window_advice a;
  memset(&a, 0, sizeof a);
  a.size = sizeof a;
  CHECK(memcg_sock_promise_window(s, mss, overhead, &a) == 0);
  return a.rcv_window;
}

static void test_window_promises(void) {
  memcg_hierarchy_options ho;
  memcg_hierarchy* h = NULL;
  memcg_proto* p = new_proto(0);
  memcg_group *g = NULL, *root = NULL;
  memcg_sock *a = NULL, *b = NULL, *free_sock = NULL;
  memcg_window_advice adv;
  struct room_log log = {0, NULL}, other = {0, NULL};
  int64_t v = 0;
  const int64_t room = 16 * MEMCG_PAGE_SIZE;

  /* One page per charge: the group's room is exactly memory.max - memory.current. */
  memcg_hierarchy_options_init(&ho);
  ho.charge_batch = 1;
  CHECK(memcg_hierarchy_create(&ho, &h) == 0);
  CHECK(memcg_root(h, &root) == 0);
  CHECK(memcg_mkdir(h, "P", &g) == 0);
  CHECK(memcg_write(h, g, "memory.max", "65536") == 0);
  CHECK(memcg_sock_open(p, g, &a) == 0);
  CHECK(memcg_sock_open(p, g, &b) == 0);
  CHECK(memcg_sock_open(p, NULL, &free_sock) == 0);
  CHECK(memcg_group_set_room_callback(g, on_room, &log) == 0);
  CHECK(memcg_group_set_room_callback(g, on_room, &log) == 0); /* the same record again */

  /* Payload bytes of memory, and back. */
  CHECK(memcg_payload_of(room, 1000, 100, &v) == 0 && v == 59 * 1000 + 536);
  CHECK(memcg_truesize_of(59 * 1000 + 536, 1000, 100, &v) == 0 && v == room);
  CHECK(memcg_payload_of(room, 1000, 0, &v) == 0 && v == room);
  CHECK(memcg_payload_of(room, 0, 0, &v) == -EINVAL);
  CHECK(memcg_truesize_of(1, 1, MEMCG_SOCK_MAX_SEGMENT + 1, &v) == -EINVAL);
  CHECK(memcg_payload_of(1, 1, 0, NULL) == -EINVAL);

  /* The advice in payload bytes: the group's 16 pages (rcvbuf's 128K is larger). */
  CHECK(advice_of(a, 1000, 0).rcv_window == room);
  CHECK(advice_of(a, 1000, 100).rcv_window == 59 * 1000 + 536);
  adv.size = sizeof adv;
  CHECK(memcg_sock_advice(a, 1000, &adv) == 0 && adv.rcv_window == room);

  /* a promises all of it (cut by the group: armed); b, in the same group, gets nothing. */
  CHECK(promise(a, 1000, 100) == 59 * 1000 + 536);
  CHECK(promised_of(a) == room);
  CHECK(group_promised(g) == room && group_promised(root) == room);
  CHECK(armed(g) == 1 && armed(root) == 0);
  CHECK(advice_of(b, 1000, 0).rcv_window == 0);
  CHECK(advice_of(a, 1000, 0).rcv_window == room); /* its own promise is not deducted */
  CHECK(promise(b, 1000, 0) == 0);
  CHECK(promised_of(b) == 0);
  CHECK(log.calls == 0);
  /* The socket without a group promises nothing. */
  CHECK(promise(free_sock, 1000, 0) > 0);
  CHECK(promised_of(free_sock) == 0 && group_promised(root) == room);

  /* Release: the room comes back, the callback runs once with the group (edge-triggered). */
  CHECK(memcg_sock_release_promise(a) == 0);
  CHECK(log.calls == 1 && log.last == g);
  CHECK(armed(g) == 0 && group_promised(g) == 0 && promised_of(a) == 0);
  CHECK(advice_of(b, 1000, 0).rcv_window == room);
  CHECK(memcg_sock_release_promise(a) == 0); /* nothing promised, nothing armed: no call */
  CHECK(memcg_group_room_check(g) == 0);
  CHECK(log.calls == 1);

  /* Data arrives: it takes its size from the promise; reading it gives a page back. */
  CHECK(promise(a, 1000, 0) == room && armed(g) == 1);
  CHECK(memcg_sock_recv(a, 4096, 0) == 0);
  CHECK(promised_of(a) == room - 4096 && group_promised(g) == room - 4096);
  CHECK(log.calls == 1); /* the segment was promised: no room appeared */
  CHECK(memcg_sock_consume(a, 4096) == 0);
  CHECK(log.calls == 2 && armed(g) == 0);
  CHECK(memcg_sock_consume(a, 0) == 0);
  CHECK(log.calls == 2);

  /* A limit raised (memcg_write) and pages uncharged (memcg_uncharge) are room too. */
  CHECK(promise(a, 1000, 0) == room && armed(g) == 1);
  CHECK(memcg_write(h, g, "memory.max", "131072") == 0);
  CHECK(log.calls == 3 && armed(g) == 0);
  CHECK(memcg_charge(g, MEMCG_KIND_ANON, 16, MEMCG_GFP_KERNEL) == 0);
  CHECK(promise(a, 1000, 0) == room && armed(g) == 1);
  CHECK(memcg_uncharge(g, MEMCG_KIND_ANON, 16) == 0);
  CHECK(log.calls == 4 && armed(g) == 0);
  CHECK(memcg_write(h, g, "memory.max", "65536") == 0);
  CHECK(log.calls == 4);

  /* Another callback replaces it; NULL removes it (the group still disarms). */
  CHECK(memcg_group_set_room_callback(g, on_room, &other) == 0);
  CHECK(promise(a, 1000, 0) > 0 && armed(g) == 1);
  CHECK(memcg_sock_release_promise(a) == 0);
  CHECK(other.calls == 1 && log.calls == 4);
  CHECK(memcg_group_set_room_callback(g, NULL, NULL) == 0);
  CHECK(promise(a, 1000, 0) > 0 && armed(g) == 1);
  CHECK(memcg_sock_release_promise(a) == 0);
  CHECK(other.calls == 1 && log.calls == 4 && armed(g) == 0);
  CHECK(memcg_group_set_room_callback(g, on_room, &log) == 0);

  /* EINVAL: nothing changes (the promise stays). */
  CHECK(promise(a, 1000, 0) > 0);
  v = promised_of(a);
  adv.size = sizeof adv;
  CHECK(memcg_sock_promise_window(a, 0, 0, &adv) == -EINVAL);
  CHECK(memcg_sock_promise_window(a, MEMCG_SOCK_MAX_SEGMENT + 1, 0, &adv) == -EINVAL);
  CHECK(memcg_sock_promise_window(a, 1000, -1, &adv) == -EINVAL);
  CHECK(memcg_sock_promise_window(a, 1000, MEMCG_SOCK_MAX_SEGMENT + 1, &adv) == -EINVAL);
  CHECK(memcg_sock_promise_window(a, 1000, 0, NULL) == -EINVAL);
  adv.size = 4;
  CHECK(memcg_sock_promise_window(a, 1000, 0, &adv) == -EINVAL);
  CHECK(memcg_sock_window_advice(a, 1000, 0, &adv) == -EINVAL);
  adv.size = sizeof adv;
  CHECK(memcg_sock_window_advice(a, 0, 0, &adv) == -EINVAL);
  CHECK(memcg_sock_window_advice(a, 1000, -1, &adv) == -EINVAL);
  CHECK(memcg_sock_promise_window(NULL, 1000, 0, &adv) == -EINVAL);
  CHECK(memcg_sock_release_promise(NULL) == -EINVAL);
  CHECK(memcg_sock_promised(a, NULL) == -EINVAL);
  CHECK(memcg_group_set_room_callback(NULL, on_room, NULL) == -EINVAL);
  CHECK(memcg_group_room_check(NULL) == -EINVAL);
  CHECK(memcg_group_promised(g, NULL) == -EINVAL);
  CHECK(memcg_group_room_armed(NULL, NULL) == -EINVAL);
  CHECK(promised_of(a) == v && group_promised(g) == v);

  /* Close gives the promise back (and tells the armed group); later calls are EBADF. */
  CHECK(armed(g) == 1);
  CHECK(memcg_sock_close(a) == 0);
  CHECK(log.calls == 5 && group_promised(g) == 0 && group_promised(root) == 0);
  CHECK(memcg_sock_promise_window(a, 1000, 0, &adv) == -EBADF);
  CHECK(memcg_sock_release_promise(a) == -EBADF);
  CHECK(promised_of(a) == 0);

  /* forward_keep: 0..INT32_MAX, nothing changes outside; a kept page stays charged. */
  CHECK(memcg_proto_forward_keep(p, &v) == 0 && v == 0);
  CHECK(memcg_proto_set_forward_keep(p, -1) == -EINVAL);
  CHECK(memcg_proto_set_forward_keep(p, (int64_t)INT32_MAX + 1) == -EINVAL);
  CHECK(memcg_proto_set_forward_keep(NULL, 0) == -EINVAL);
  CHECK(memcg_proto_forward_keep(p, NULL) == -EINVAL);
  CHECK(memcg_proto_forward_keep(p, &v) == 0 && v == 0);
  CHECK(memcg_proto_set_forward_keep(p, INT32_MAX) == 0);
  CHECK(memcg_proto_forward_keep(p, &v) == 0 && v == INT32_MAX);
  CHECK(memcg_proto_set_forward_keep(p, MEMCG_PAGE_SIZE) == 0);
  CHECK(memcg_sock_recv(b, 100, 0) == 0 && memcg_sock_consume(b, 100) == 0);
  CHECK(sock_info(b).forward_alloc == MEMCG_PAGE_SIZE && allocated(p) == 1);
  CHECK(memcg_proto_set_forward_keep(p, 0) == 0);
  CHECK(memcg_sock_recv(b, 100, 0) == 0 && memcg_sock_consume(b, 100) == 0);
  CHECK(sock_info(b).forward_alloc == 0 && allocated(p) == 0);

  /* Sockets of one group promising in turn (some data arriving, some read) never promise
   * together more than the group's room: limit less usage, plus what they hold forward. */
  {
    memcg_sock* many[8];
    int i, round, recvs = 0, shut = 0;
    int64_t sum, fwd;
    for (i = 0; i < 8; ++i) CHECK(memcg_sock_open(p, g, &many[i]) == 0);
    for (round = 0; round < 50; ++round) {
      memcg_sock* s = many[(round * 5) % 8];
      memcg_counter_info m;
      const int64_t window = promise(s, 1000, 100);
      CHECK(window >= 0);
      shut += window == 0;
      /* A peer sends only within the advertised window: a segment of 1000 payload bytes
       * (1100 of memory) arrives on a socket that promised it. */
      if (round % 3 != 2 && promised_of(s) >= 1100) {
        CHECK(memcg_sock_recv(s, 1100, 0) == 0);
        ++recvs;
        if (round % 2 == 0) CHECK(memcg_sock_consume(s, 1100) == 0);
      }
      m = counter(g, MEMCG_COUNTER_MEMORY);
      sum = 0;
      fwd = 0;
      for (i = 0; i < 8; ++i) {
        sum += promised_of(many[i]);
        fwd += sock_info(many[i]).forward_alloc;
      }
      sum += promised_of(b);
      fwd += sock_info(b).forward_alloc;
      CHECK(sum == group_promised(g));
      CHECK(sum <= (m.max - m.usage) * MEMCG_PAGE_SIZE + fwd);
    }
    CHECK(recvs > 0 && shut > 0);
    for (i = 0; i < 8; ++i) memcg_sock_destroy(many[i]);
    CHECK(group_promised(g) == promised_of(b));
  }

  memcg_sock_destroy(a);
  memcg_sock_destroy(b);
  memcg_sock_destroy(free_sock);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h); /* frees the callback records */
}

int main(void) {
  memcg_refusal r;
  /* One CPU: the tests count pages in the stocks, which are per CPU (a thread that migrated
     would find another CPU's stock). */
  int cpu = sched_getcpu();
  if (cpu >= 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    (void)sched_setaffinity(0, sizeof one, &one);
  }
  /* Before anything was refused on this thread. */
  memset(&r, 0, sizeof r);
  r.size = sizeof r;
  CHECK(memcg_last_refusal(&r) == -ENOENT);

  test_version();
  test_null_handles();
  test_struct_sizes();
  test_refusals();
  test_refusal_unknown();
  test_refusal_per_thread();
  test_embedded_socket();
  test_clock();
  test_charge_batch();
  test_socket_accounting();
  test_statistics();
  test_walk();
  test_pressure_listeners();
  test_bad_give_backs();
  test_tcp_rules();
  test_sockets();
  test_window_promises();
  if (failures) {
    fprintf(stderr, "c_api_test: %d checks failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}
