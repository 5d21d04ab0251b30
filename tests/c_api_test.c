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

/* Where socket pages are charged: v1 the tcp counter alone, v2 the memory counter alone. */
static void test_socket_accounting(void) {
  char buf[64];
  memcg_group* g = NULL;
  memcg_hierarchy* h = memcg_hierarchy_create();
  CHECK(memcg_hierarchy_socket_accounting(NULL) == -EINVAL);
  CHECK(memcg_hierarchy_set_socket_accounting(NULL, MEMCG_SOCKET_ACCOUNTING_V1) == -EINVAL);
  CHECK(memcg_hierarchy_socket_accounting(h) == MEMCG_SOCKET_ACCOUNTING_BOTH);
  CHECK(memcg_hierarchy_set_socket_accounting(h, (memcg_socket_accounting)3) == -EINVAL);
  CHECK(memcg_mkdir(h, "G", &g) == 0);
  CHECK(memcg_write(h, g, "memory.max", "8K") == 0);
  CHECK(memcg_charge(g, MEMCG_KIND_SOCK, 1, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V1) == -EBUSY);
  CHECK(memcg_uncharge(g, MEMCG_KIND_SOCK, 1) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V1) == 0);
  CHECK(memcg_hierarchy_socket_accounting(h) == MEMCG_SOCKET_ACCOUNTING_V1);
  CHECK(memcg_charge(g, MEMCG_KIND_SOCK, 4, MEMCG_GFP_KERNEL) == 0); /* past memory.max */
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "16384") == 0);
  CHECK(memcg_uncharge(g, MEMCG_KIND_SOCK, 4) == 0);
  CHECK(memcg_hierarchy_set_socket_accounting(h, MEMCG_SOCKET_ACCOUNTING_V2) == 0);
  CHECK(memcg_write(h, g, "memory.kmem.tcp.limit_in_bytes", "4K") == 0);
  CHECK(memcg_charge(g, MEMCG_KIND_SOCK, 2, MEMCG_GFP_KERNEL) == 0); /* past the tcp limit */
  CHECK(memcg_read(h, g, "memory.kmem.tcp.usage_in_bytes", buf, sizeof buf) > 0);
  CHECK(strcmp(buf, "0") == 0);
  CHECK(memcg_uncharge(g, MEMCG_KIND_SOCK, 2) == 0);
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
