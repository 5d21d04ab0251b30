/* The C API (memcg/memcg.h) from C11: every function, NULL handles, errors as negative errno. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "memcg/memcg.h"

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

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

static void test_null_handles(void) {
  char buf[8];
  memcg_sock* s = NULL;
  memcg_sock_info info;
  memcg_window_advice adv;
  int64_t a, b;
  CHECK(memcg_root(NULL) == NULL);
  CHECK(memcg_find(NULL, "/") == NULL);
  CHECK(memcg_mkdir(NULL, "A", NULL) == -EINVAL);
  CHECK(memcg_rmdir(NULL, "A") == -EINVAL);
  CHECK(memcg_write(NULL, NULL, "memory.max", "1M") == -EINVAL);
  CHECK(memcg_read(NULL, NULL, "memory.max", buf, sizeof buf) == -EINVAL);
  CHECK(memcg_charge(NULL, MEMCG_KIND_ANON, 1, MEMCG_GFP_KERNEL) == -EINVAL);
  CHECK(memcg_uncharge(NULL, MEMCG_KIND_ANON, 1) == -EINVAL);
  CHECK(memcg_proto_set_tcp_mem(NULL, 1, 2, 3) == -EINVAL);
  CHECK(memcg_proto_set_tcp_rmem(NULL, 1, 2, 3) == -EINVAL);
  CHECK(memcg_proto_set_tcp_wmem(NULL, 1, 2, 3) == -EINVAL);
  CHECK(memcg_proto_memory_allocated(NULL) == -EINVAL);
  CHECK(memcg_proto_sockets_allocated(NULL) == -EINVAL);
  CHECK(memcg_proto_under_pressure(NULL) == -EINVAL);
  CHECK(memcg_proto_pressure_stats(NULL, &a, &b) == -EINVAL);
  CHECK(memcg_proto_set_pressure_callback(NULL, on_pressure, NULL) == -EINVAL);
  CHECK(memcg_sock_open(NULL, NULL, &s) == -EINVAL);
  CHECK(memcg_sock_recv(NULL, 1, 0) == -EINVAL);
  CHECK(memcg_sock_consume(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_send(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_ack(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_close(NULL) == -EINVAL);
  CHECK(memcg_sock_rmem_schedule(NULL, 1, 0) == -EINVAL);
  CHECK(memcg_sock_wmem_schedule(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_mem_charge(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_mem_uncharge(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_get_info(NULL, &info) == -EINVAL);
  CHECK(memcg_sock_advice(NULL, 1460, &adv) == -EINVAL);
  CHECK(memcg_sock_group(NULL) == NULL);
  memcg_sock_destroy(NULL);
  memcg_proto_destroy(NULL);
  memcg_hierarchy_destroy(NULL);
}

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
  CHECK(memcg_sock_get_info(s, &out->info) == 0);
  out->allocated = memcg_proto_memory_allocated(p);
  CHECK(memcg_read(h, g, "memory.current", out->current, sizeof out->current) > 0);
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", out->tcp, sizeof out->tcp) > 0);
  CHECK(memcg_read(h, g, "memory.kmem.usage_in_bytes", out->kmem, sizeof out->kmem) > 0);
  CHECK(memcg_read(h, g, "memory.stat", out->stat, sizeof out->stat) > 0);
}

static int same(const struct snapshot* a, const struct snapshot* b) {
  return a->info.forward_alloc == b->info.forward_alloc &&
         a->info.rmem_alloc == b->info.rmem_alloc && a->info.wmem_queued == b->info.wmem_queued &&
         a->allocated == b->allocated && strcmp(a->current, b->current) == 0 &&
         strcmp(a->tcp, b->tcp) == 0 && strcmp(a->kmem, b->kmem) == 0 &&
         strcmp(a->stat, b->stat) == 0;
}

/* Issue 14 item 10: every give-back of more than a socket or a group holds is -EINVAL and
 * changes no counter (it used to drive memory_allocated to -256 pages). */
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
  memcg_hierarchy* h = memcg_hierarchy_create();
  memcg_proto* p = memcg_proto_create(4); /* a per-thread reserve: reads stay exact */
  memcg_group* g = NULL;
  memcg_sock* s = NULL;
  memcg_sock* other = NULL;
  struct snapshot before;
  CHECK(h != NULL && p != NULL);
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
  CHECK(memcg_sock_rmem_schedule(s, 5000, 0) == 1);
  CHECK(memcg_sock_mem_charge(s, 300) == 0);
  take(h, g, p, s, &before);
  CHECK(before.allocated == 5);
  CHECK(before.info.forward_alloc > 0);
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
  /* The group: more than it holds, negative, and the pages its sockets hold. */
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_ANON, 4));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_ANON, -1));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_ANON, INT64_MAX));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_FILE, 1));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_KMEM, 1));
  CHECK_REFUSED(memcg_uncharge(g, MEMCG_KIND_SOCK, 1));
  CHECK_REFUSED(memcg_uncharge(g, (memcg_kind)-1, 1));
  CHECK_REFUSED(memcg_charge(g, MEMCG_KIND_SOCK, 1, MEMCG_GFP_KERNEL));

  /* What was taken goes back exactly; a second give-back is refused. */
  CHECK(memcg_sock_mem_uncharge(s, 300) == 0);
  take(h, g, p, s, &before);
  CHECK_REFUSED(memcg_sock_mem_uncharge(s, 1));
  CHECK(memcg_sock_consume(s, 1500) == 0);
  CHECK(memcg_sock_ack(s, 700) == 0);
  CHECK(memcg_uncharge(g, MEMCG_KIND_ANON, 3) == 0);
  CHECK(memcg_sock_consume(other, 3 * 4096) == 0);
  CHECK(memcg_proto_memory_allocated(p) == 0);

  /* Bytes a stack still holds at close come back with it. */
  CHECK(memcg_sock_wmem_schedule(s, 9000) == 1);
  CHECK(memcg_sock_mem_charge(s, 9000) == 0);
  CHECK(memcg_proto_memory_allocated(p) == 3);
  CHECK(memcg_sock_close(s) == 0);
  CHECK(memcg_proto_memory_allocated(p) == 0);
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", before.tcp, sizeof before.tcp) > 0);
  CHECK(strcmp(before.tcp, "0") == 0);
  memcg_sock_destroy(s);
  memcg_sock_destroy(other);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* TCP's rules around the raise (issue 15): the forced first segment, rcvbuf, a send that would
 * block, SO_RCVBUF / SO_SNDBUF. */
static void test_tcp_rules(void) {
  memcg_hierarchy* h = memcg_hierarchy_create();
  memcg_proto* p = memcg_proto_create(0);
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
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "12288") == 0);
  CHECK(memcg_sock_recv(r, 4096, 0) == -ENOMEM);
  CHECK(memcg_sock_consume(r, 12288) == 0);
  /* rcvbuf: SO_RCVBUF 1 gives 2304; a queue above it drops with -ENOBUFS. */
  CHECK(memcg_sock_set_rcvbuf(r, -1) == -EINVAL);
  CHECK(memcg_sock_set_rcvbuf(r, 1) == 0);
  CHECK(memcg_sock_get_info(r, &info) == 0);
  CHECK(info.rcvbuf == 2304);
  CHECK(memcg_sock_recv(r, 2000, 0) == 0);
  CHECK(memcg_sock_recv(r, 1000, 0) == 0); /* 2000 <= 2304 */
  CHECK(memcg_sock_recv(r, 10, 0) == -ENOBUFS);
  /* sndbuf: SO_SNDBUF 3000 gives 6000; a full queue would block. */
  CHECK(memcg_sock_set_sndbuf(w, 3000) == 0);
  CHECK(memcg_sock_send(w, 6000) == 0);
  CHECK(memcg_sock_send(w, 1) == -EAGAIN);
  CHECK(memcg_sock_get_info(w, &info) == 0);
  CHECK(info.sndbuf == 6000);
  CHECK(info.wmem_queued == 6000);
  /* The primitive for stacks with their own queues. */
  CHECK(memcg_sock_forced_mem_schedule(w, -1) == -EINVAL);
  CHECK(memcg_sock_forced_mem_schedule(w, 3 * 4096) == 0);
  CHECK(memcg_sock_get_info(w, &info) == 0);
  CHECK(info.forward_alloc >= 3 * 4096);
  CHECK(memcg_sock_set_rcvbuf(NULL, 1) == -EINVAL);
  CHECK(memcg_sock_forced_mem_schedule(NULL, 1) == -EINVAL);
  memcg_sock_destroy(r);
  memcg_sock_destroy(w);
  CHECK(memcg_proto_memory_allocated(p) == 0);
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

/* Where socket pages are charged: v1 the tcp counter alone, v2 the memory counter alone. */
static void test_socket_accounting(void) {
  char buf[64];
  memcg_group* g = NULL;
  memcg_sock* s = NULL;
  memcg_hierarchy* h = memcg_hierarchy_create();
  memcg_proto* p = memcg_proto_create(0);
  CHECK(memcg_hierarchy_socket_accounting(NULL) == -EINVAL);
  CHECK(memcg_hierarchy_set_socket_accounting(NULL, MEMCG_SOCKET_ACCOUNTING_V1) == -EINVAL);
  CHECK(memcg_hierarchy_socket_accounting(h) == MEMCG_SOCKET_ACCOUNTING_BOTH);
  CHECK(memcg_hierarchy_set_socket_accounting(h, (memcg_socket_accounting)3) == -EINVAL);
  CHECK(memcg_mkdir(h, "G", &g) == 0);
  CHECK(memcg_write(h, g, "memory.max", "8K") == 0);
  CHECK(memcg_sock_open(p, g, &s) == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V1) == -EBUSY);
  CHECK(memcg_sock_recv(s, 8192, 0) == -ENOMEM); /* both: memory.max binds */
  CHECK(memcg_sock_consume(s, 4096) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V1) == 0);
  CHECK(memcg_hierarchy_socket_accounting(h) == MEMCG_SOCKET_ACCOUNTING_V1);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_sock_recv(s, 12288, 0) == 0); /* v1: past memory.max */
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "16384") == 0);
  CHECK(memcg_sock_consume(s, 16384) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V2) == 0);
  CHECK(memcg_write(h, g, "memory.kmem.tcp.limit_in_bytes", "4K") == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0); /* v2: past the tcp limit */
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  CHECK(memcg_sock_consume(s, 8192) == 0);
  memcg_sock_destroy(s);
  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
}

int main(void) {
  char buf[256];
  memcg_group* a = NULL;
  memcg_group* b = NULL;
  memcg_group* c = NULL;
  memcg_sock* s = NULL;
  memcg_sock* t = NULL;
  memcg_sock_info info;
  memcg_window_advice adv;
  struct pressure_log log = {0, 0, -1};
  int64_t episodes = -1, total_ms = -1;
  memcg_hierarchy* h = memcg_hierarchy_create();
  memcg_proto* p = memcg_proto_create(0);

  test_null_handles();
  test_bad_give_backs();
  test_tcp_rules();
  CHECK(h != NULL);
  CHECK(p != NULL);
  CHECK(memcg_proto_create(-1) == NULL);

  /* Groups and control files. */
  CHECK(memcg_mkdir(h, "A", &a) == 0);
  CHECK(memcg_mkdir(h, "A", NULL) == -EEXIST);
  CHECK(memcg_mkdir(h, "X/Y", NULL) == -ENOENT);
  CHECK(memcg_mkdir(h, "A/B", &b) == 0);
  CHECK(memcg_find(h, "A/B") == b);
  CHECK(memcg_root(h) == memcg_find(h, "/"));
  CHECK(memcg_write(h, a, "memory.max", "1M") == 0);
  CHECK(memcg_write(h, a, "memory.max", "banana") == -EINVAL);
  CHECK(memcg_read(h, a, "memory.max", buf, sizeof buf) == 7);
  CHECK(strcmp(buf, "1048576") == 0);
  CHECK(memcg_read(h, a, "memory.max", buf, 4) == 7); /* cut, NUL-terminated */
  CHECK(strcmp(buf, "104") == 0);
  CHECK(memcg_read(h, a, "memory.events", buf, sizeof buf) > 0);
  CHECK(strncmp(buf, "low 0\n", 6) == 0);
  CHECK(memcg_read(h, a, "memory.nosuch", buf, sizeof buf) < 0);

  /* Charges (in C: a refused charge's reclaim puts C's sockets under vmpressure for 1 s). */
  CHECK(memcg_mkdir(h, "C", &c) == 0);
  CHECK(memcg_write(h, c, "memory.max", "1M") == 0);
  CHECK(memcg_charge(c, MEMCG_KIND_ANON, 10, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_charge(c, MEMCG_KIND_ANON, 1000, MEMCG_GFP_KERNEL) == -ENOMEM);
  CHECK(memcg_charge(c, (memcg_kind)42, 1, MEMCG_GFP_KERNEL) == -EINVAL);
  CHECK(memcg_uncharge(c, MEMCG_KIND_ANON, 11) == -EINVAL);
  CHECK(memcg_uncharge(c, MEMCG_KIND_ANON, 10) == 0);

  /* A protocol and sockets. */
  CHECK(memcg_proto_set_tcp_mem(p, 10, 5, 20) == -EINVAL);
  CHECK(memcg_proto_set_tcp_mem(p, 2, 4, 100) == 0);
  CHECK(memcg_proto_set_tcp_rmem(p, 8192, 4096, 16384) == -EINVAL);
  CHECK(memcg_proto_set_tcp_rmem(p, 4096, 131072, 6291456) == 0);
  CHECK(memcg_proto_set_tcp_wmem(p, 4096, 16384, 4194304) == 0);
  CHECK(memcg_proto_set_pressure_callback(p, on_pressure, &log) == 0);
  CHECK(memcg_sock_open(p, b, NULL) == -EINVAL);
  CHECK(memcg_sock_open(p, b, &s) == 0);
  CHECK(memcg_sock_open(p, NULL, &t) == 0);
  CHECK(memcg_proto_sockets_allocated(p) == 2);
  CHECK(memcg_sock_group(s) == b);
  CHECK(memcg_sock_group(t) == NULL);

  CHECK(memcg_sock_recv(s, 1500, 0) == 0);
  CHECK(memcg_sock_get_info(s, &info) == 0);
  CHECK(info.forward_alloc == 2596);
  CHECK(info.rmem_alloc == 1500);
  CHECK(info.rcvbuf == 131072);
  CHECK(info.sndbuf == 16384);
  CHECK(info.under_pressure == 0);
  CHECK(info.closed == 0);
  CHECK(memcg_proto_memory_allocated(p) == 1);
  CHECK(memcg_read(h, b, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "4096") == 0);
  CHECK(memcg_sock_consume(s, 1501) == -EINVAL);
  CHECK(memcg_sock_consume(s, 1500) == 0);
  CHECK(memcg_proto_memory_allocated(p) == 0);
  CHECK(memcg_sock_send(s, 5000) == 0);
  CHECK(memcg_sock_ack(s, 5001) == -EINVAL);
  CHECK(memcg_sock_ack(s, 5000) == 0);

  /* Pressure: 5 pages > tcp_mem pressure 4. */
  CHECK(memcg_sock_recv(t, 5 * 4096, 0) == 0);
  CHECK(memcg_proto_under_pressure(p) == 1);
  CHECK(log.enters == 1);
  CHECK(memcg_sock_consume(t, 5 * 4096) == 0);
  CHECK(memcg_proto_under_pressure(p) == 0);
  CHECK(log.leaves == 1);
  CHECK(log.last_ms >= 0);
  CHECK(memcg_proto_pressure_stats(p, &episodes, &total_ms) == 0);
  CHECK(episodes == 1);
  CHECK(total_ms >= 0);

  /* The primitives, as a stack that keeps its own queues uses them. */
  CHECK(memcg_sock_rmem_schedule(s, 3000, 0) == 1);
  CHECK(memcg_sock_mem_charge(s, 5000) == -EINVAL); /* more than scheduled */
  CHECK(memcg_sock_mem_charge(s, 3000) == 0);
  CHECK(memcg_sock_wmem_schedule(s, 100) == 1);
  CHECK(memcg_sock_mem_charge(s, 100) == 0);
  CHECK(memcg_sock_mem_uncharge(s, 3100) == 0);
  CHECK(memcg_sock_get_info(s, &info) == 0);
  CHECK(info.forward_alloc == 0);
  CHECK(memcg_sock_rmem_schedule(s, -1, 0) == -EINVAL);

  /* A receive at the group's limit is refused, forced it goes over. */
  CHECK(memcg_write(h, b, "memory.max", "4K") == 0);
  CHECK(memcg_sock_recv(s, 4096, 0) == 0 || memcg_sock_recv(s, 4096, 0) == -ENOMEM);
  CHECK(memcg_sock_recv(s, 8192, 0) == -ENOMEM);
  CHECK(memcg_sock_recv(s, 8192, 1) == 0);
  CHECK(memcg_sock_advice(s, 0, &adv) == -EINVAL);
  CHECK(memcg_sock_advice(s, 1460, &adv) == 0);
  CHECK(adv.rcv_window >= 0);
  CHECK(adv.snd_space >= 0);

  /* rmdir: the socket's memory is given back through the parent. */
  CHECK(memcg_rmdir(h, "A/B") == 0);
  CHECK(memcg_rmdir(h, "A/B") == -ENOENT);
  CHECK(memcg_sock_group(s) == a);

  /* Close, use after close, close twice. */
  CHECK(memcg_sock_close(s) == 0);
  CHECK(memcg_sock_close(s) == -EBADF);
  CHECK(memcg_sock_recv(s, 1, 0) == -EBADF);
  CHECK(memcg_sock_send(s, 1) == -EBADF);
  CHECK(memcg_sock_rmem_schedule(s, 1, 0) == -EBADF);
  CHECK(memcg_sock_mem_uncharge(s, 1) == -EBADF);
  CHECK(memcg_sock_get_info(s, &info) == 0);
  CHECK(info.closed == 1);
  memcg_sock_destroy(s);
  memcg_sock_destroy(t);
  CHECK(memcg_proto_sockets_allocated(p) == 0);
  CHECK(memcg_proto_memory_allocated(p) == 0);
  CHECK(memcg_read(h, a, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  CHECK(memcg_proto_set_pressure_callback(p, NULL, NULL) == 0);

  memcg_proto_destroy(p);
  memcg_hierarchy_destroy(h);
  test_socket_accounting();
  if (failures) {
    fprintf(stderr, "c_api_test: %d checks failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}
