/* The Prometheus renderer (memcg_metrics.h) on a tiny hierarchy built through the C API: the
 * exact text (tiny.prom), label escaping, a sink's error, bad arguments.
 *
 * Usage: test_memcg_metrics EXPECTED.prom        compare
 *        test_memcg_metrics --print              print the tiny tree's exposition */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memcg_metrics.h"

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/* The group whose name needs every escape of a label value. */
static const char weird[] = "A/q\"u\\o\nte";

typedef struct tree {
  memcg_clock* clock;
  memcg_hierarchy* h;
  memcg_proto* p;
  memcg_sock* s;
} tree;

/* root, A (memory.max 1 MiB, memory.high 512 KiB, kmem limit 128 KiB, kmem soft limit 96 KiB)
 * and A/q"u\o<newline>te
 * (memory.low 64 KiB, tcp limit 64 KiB); 10 anon pages in A, 3 file and 2 kmem pages in the
 * other, one refused charge; a protocol (tcp_mem 1 2 100) with a socket of the weird group that
 * went through one pressure episode of 1.5 s, one refused receive, and holds one page. */
static void build(tree* t) {
  memcg_hierarchy_options o;
  memcg_proto_options po;
  memcg_group *a = NULL, *q = NULL;

  CHECK(memcg_clock_create_virtual(&t->clock) == 0);
  memcg_hierarchy_options_init(&o);
  o.charge_batch = 1; /* no stock: the counters read exactly what was charged */
  o.clock = t->clock;
  CHECK(memcg_hierarchy_create(&o, &t->h) == 0);
  CHECK(memcg_mkdir(t->h, "A", &a) == 0);
  CHECK(memcg_mkdir(t->h, weird, &q) == 0);
  CHECK(memcg_mkdir(t->h, "B", NULL) == 0); /* removed: not in the exposition */
  CHECK(memcg_rmdir(t->h, "B") == 0);
  CHECK(memcg_write(t->h, a, "memory.max", "1048576") == 0);
  CHECK(memcg_write(t->h, a, "memory.high", "524288") == 0);
  CHECK(memcg_write(t->h, a, "memory.kmem.limit_in_bytes", "131072") == 0);
  CHECK(memcg_write(t->h, a, "memory.kmem.soft_limit_in_bytes", "98304") == 0);
  CHECK(memcg_write(t->h, q, "memory.low", "65536") == 0);
  CHECK(memcg_write(t->h, q, "memory.kmem.tcp.limit_in_bytes", "65536") == 0);
  CHECK(memcg_charge(a, MEMCG_KIND_ANON, 10, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_charge(q, MEMCG_KIND_FILE, 3, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_charge(q, MEMCG_KIND_KMEM, 2, MEMCG_GFP_KERNEL) == 0);
  CHECK(memcg_charge(q, MEMCG_KIND_ANON, 300, MEMCG_GFP_NORECLAIM) == -ENOMEM);

  memcg_proto_options_init(&po);
  po.clock = t->clock;
  CHECK(memcg_proto_create(&po, &t->p) == 0);
  CHECK(memcg_proto_set_tcp_mem(t->p, 1, 2, 100) == 0);
  CHECK(memcg_sock_open(t->p, q, &t->s) == 0);
  CHECK(memcg_sock_recv(t->s, 3 * 4096, 0) == 0); /* 3 pages > tcp_mem pressure: an episode */
  CHECK(memcg_clock_advance(t->clock, 1500 * 1000) == 0);
  CHECK(memcg_sock_consume(t->s, 3 * 4096) == 0); /* 0 pages: it ends, 1.5 s long */
  CHECK(memcg_sock_recv(t->s, 4096, 0) == 0);
  CHECK(memcg_sock_recv(t->s, 16 * 4096, 0) == -ENOMEM); /* the tcp sub-limit refuses */
}

static void destroy(tree* t) {
  memcg_sock_destroy(t->s);
  memcg_proto_destroy(t->p);
  memcg_hierarchy_destroy(t->h);
  memcg_clock_destroy(t->clock);
}

static char* slurp(const char* path) {
  FILE* f = fopen(path, "rb");
  char* text;
  long n;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  text = (char*)malloc((size_t)n + 1);
  if (text && fread(text, 1, (size_t)n, f) != (size_t)n) {
    free(text);
    text = NULL;
  }
  if (text) text[n] = '\0';
  fclose(f);
  return text;
}

/* The first line where a and b differ, for the failure message. */
static void show_difference(const char* got, const char* want) {
  int line = 1;
  const char *g = got, *w = want;
  while (*g && *g == *w) {
    if (*g == '\n') {
      ++line;
      got = g + 1;
      want = w + 1;
    }
    ++g;
    ++w;
  }
  fprintf(stderr, "first difference at line %d:\n  got:  %.*s\n  want: %.*s\n", line,
          (int)strcspn(got, "\n"), got, (int)strcspn(want, "\n"), want);
}

static void test_escape(void) {
  char buf[16];
  CHECK(memcg_metrics_escape("plain", buf, sizeof buf) == 5 && strcmp(buf, "plain") == 0);
  CHECK(memcg_metrics_escape("a\"b\\c\nd", buf, sizeof buf) == 10);
  CHECK(strcmp(buf, "a\\\"b\\\\c\\nd") == 0);
  /* Cut: never half an escape, always terminated. */
  CHECK(memcg_metrics_escape("ab\"c", buf, 4) == 5 && strcmp(buf, "ab") == 0);
  CHECK(memcg_metrics_escape("ab\"c", buf, 5) == 5 && strcmp(buf, "ab\\\"") == 0);
  CHECK(memcg_metrics_escape("x", NULL, 0) == 1);
  CHECK(memcg_metrics_escape("", buf, sizeof buf) == 0 && buf[0] == '\0');
}

static int calls;
static int fail_second(const char* data, size_t len, void* user) {
  (void)data;
  (void)len;
  (void)user;
  return ++calls == 2 ? 42 : 0;
}
static int count_bytes(const char* data, size_t len, void* user) {
  (void)data;
  *(size_t*)user += len;
  return 0;
}

static void test_arguments(const tree* t) {
  memcg_metrics_proto none = {NULL, "tcp"};
  memcg_metrics_proto one = {NULL, NULL};
  char* text = NULL;
  size_t n = 0, len = 0;
  one.proto = t->p;
  CHECK(memcg_metrics_write(NULL, NULL, 0, count_bytes, &n) == -EINVAL);
  CHECK(memcg_metrics_write(t->h, NULL, 0, NULL, NULL) == -EINVAL);
  CHECK(memcg_metrics_write(t->h, NULL, 1, count_bytes, &n) == -EINVAL);
  CHECK(memcg_metrics_write(t->h, &none, 1, count_bytes, &n) == -EINVAL);
  CHECK(n == 0); /* nothing written on a bad argument */
  CHECK(memcg_metrics_render(t->h, &one, 1, NULL, NULL) == -EINVAL);
  /* A sink's error stops the rendering and comes back. */
  calls = 0;
  CHECK(memcg_metrics_write(t->h, &one, 1, fail_second, NULL) == 42);
  CHECK(calls == 2);
  /* The sink sees the same bytes as the text; the proto name defaults to "tcp". */
  CHECK(memcg_metrics_write(t->h, &one, 1, count_bytes, &n) == 0);
  CHECK(memcg_metrics_render(t->h, &one, 1, &text, &len) == 0);
  CHECK(text && len == n && strlen(text) == len);
  CHECK(text && strstr(text, "memcg_proto_sockets_allocated{proto=\"tcp\"} 1\n") != NULL);
  free(text);
  /* No protocol: the protocol families are still declared, without samples. */
  CHECK(memcg_metrics_render(t->h, NULL, 0, &text, NULL) == 0);
  CHECK(text && strstr(text, "# TYPE memcg_proto_exceeded_total counter\n") != NULL);
  CHECK(text && strstr(text, "memcg_proto_exceeded_total{") == NULL);
  free(text);
}

int main(int argc, char** argv) {
  tree t;
  memcg_metrics_proto protos[1];
  char *text = NULL, *want;
  size_t len = 0;
  if (argc != 2) {
    fprintf(stderr, "usage: %s EXPECTED.prom | --print\n", argv[0]);
    return 2;
  }
  build(&t);
  protos[0].proto = t.p;
  protos[0].name = "tcp";
  CHECK(memcg_metrics_render(t.h, protos, 1, &text, &len) == 0);
  if (strcmp(argv[1], "--print") == 0) {
    fputs(text, stdout);
    free(text);
    destroy(&t);
    return failures ? 1 : 0;
  }
  want = slurp(argv[1]);
  CHECK(want != NULL);
  if (want && text && strcmp(text, want) != 0) {
    show_difference(text, want);
    ++failures;
  }
  free(want);
  free(text);
  test_escape();
  test_arguments(&t);
  destroy(&t);
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("memcg_metrics: all checks passed\n");
  return failures ? 1 : 0;
}
