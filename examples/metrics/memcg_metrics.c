/* memcg_metrics.c: the Prometheus text exposition of a memcg hierarchy (memcg_metrics.h).
 *
 * A scrape first takes a snapshot of every live group (the walk, then each group's typed
 * getters), then writes family by family: the format wants every family's samples together,
 * and a walk per family would both cost more and let a family see a group another missed. */
#include "memcg_metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- escaping ---- */

size_t memcg_metrics_escape(const char* s, char* buf, size_t len) {
  size_t n = 0;
  for (; s && *s; ++s) {
    char two[2];
    size_t k = 1;
    two[0] = *s;
    if (*s == '\\' || *s == '"') {
      two[0] = '\\';
      two[1] = *s;
      k = 2;
    } else if (*s == '\n') {
      two[0] = '\\';
      two[1] = 'n';
      k = 2;
    }
    /* Never half an escape in a cut text. */
    if (n + k < len) memcpy(buf + n, two, k);
    else if (n < len) len = n + 1; /* stop copying: later pieces must not fit either */
    n += k;
  }
  if (len) buf[n < len ? n : len - 1] = '\0';
  return n;
}

/* ---- a buffered writer in front of the sink ---- */

typedef struct writer {
  memcg_metrics_sink sink;
  void* user;
  int error; /* the first sink error; nothing more is written after it */
  size_t n;
  char buf[4096];
} writer;

static void flush(writer* w) {
  if (!w->error && w->n) w->error = w->sink(w->buf, w->n, w->user);
  w->n = 0;
}
static void put(writer* w, const char* s, size_t len) {
  if (w->error) return;
  if (w->n + len > sizeof w->buf) {
    flush(w);
    if (len > sizeof w->buf) {
      if (!w->error) w->error = w->sink(s, len, w->user);
      return;
    }
  }
  memcpy(w->buf + w->n, s, len);
  w->n += len;
}
static void puts_(writer* w, const char* s) { put(w, s, strlen(s)); }

static void header(writer* w, const char* name, const char* type, const char* help) {
  puts_(w, "# HELP ");
  puts_(w, name);
  puts_(w, " ");
  puts_(w, help); /* constant texts without backslash or newline: nothing to escape */
  puts_(w, "\n# TYPE ");
  puts_(w, name);
  puts_(w, " ");
  puts_(w, type);
  puts_(w, "\n");
}

/* `name{key="value"[,key2="value2"]} ` (values escaped already). */
static void sample_start(writer* w, const char* name, const char* key, const char* value,
                         const char* key2, const char* value2) {
  puts_(w, name);
  puts_(w, "{");
  puts_(w, key);
  puts_(w, "=\"");
  puts_(w, value);
  if (key2) {
    puts_(w, "\",");
    puts_(w, key2);
    puts_(w, "=\"");
    puts_(w, value2);
  }
  puts_(w, "\"} ");
}
static void value_int(writer* w, int64_t v) {
  char b[32];
  int k = snprintf(b, sizeof b, "%" PRId64 "\n", v);
  put(w, b, (size_t)k);
}
/* Milliseconds as seconds, exact. */
static void value_ms(writer* w, int64_t ms) {
  char b[48];
  int k = snprintf(b, sizeof b, "%" PRId64 ".%03d\n", ms / 1000, (int)(ms % 1000));
  put(w, b, (size_t)k);
}

/* A page counter at or above this is "max" (memcg.h: INT64_MAX / 4096 rounded down). */
#define PAGES_MAX (INT64_MAX / MEMCG_PAGE_SIZE)

static void value_pages(writer* w, int64_t pages, int is_limit) {
  if (is_limit && pages >= PAGES_MAX) puts_(w, "+Inf\n");
  else value_int(w, pages * MEMCG_PAGE_SIZE);
}

/* ---- the snapshot ---- */

enum { NR_KINDS = 7, NR_EVENTS = 5, NR_COUNTERS = 3 };

static const char* const kind_names[NR_KINDS] = {
    "anon", "file", "kmem", "pagetables", "slab_reclaimable", "slab_unreclaimable", "sock"};
static const char* const event_names[NR_EVENTS] = {"low", "high", "max", "oom", "oom_kill"};

typedef struct group_snap {
  char* label; /* "/" or "/A/B", escaped */
  memcg_counter_info c[NR_COUNTERS];
  int64_t kmem_soft_limit; /* pages */
  int64_t events[2][NR_EVENTS]; /* [0]: memory.events, [1]: memory.events.local */
  int64_t stat[2][NR_KINDS];    /* [0]: the subtree (memory.stat), [1]: the group alone */
  int pressure_level;
  int socket_pressure;
} group_snap;

typedef struct snapshot {
  memcg_hierarchy* h;
  memcg_group** groups;
  size_t nr, cap;
  group_snap* snaps;
  size_t nr_snaps;
} snapshot;

static int collect(memcg_group* g, void* user) {
  snapshot* s = (snapshot*)user;
  if (s->nr == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 16;
    memcg_group** p = (memcg_group**)realloc(s->groups, cap * sizeof *p);
    if (!p) return -ENOMEM;
    s->groups = p;
    s->cap = cap;
  }
  s->groups[s->nr++] = g;
  return 0;
}

static void events_of(const memcg_events* e, int64_t out[NR_EVENTS]) {
  out[0] = e->low;
  out[1] = e->high;
  out[2] = e->max;
  out[3] = e->oom;
  out[4] = e->oom_kill;
}

/* memory.kmem.soft_limit_in_bytes has no typed getter (memcg_group_counter's soft_limit is the
 * memory counter's): read the control file, "max" or bytes. */
static int kmem_soft_limit(memcg_hierarchy* h, memcg_group* g, int64_t* pages) {
  char text[32];
  size_t len = 0;
  int e = memcg_read(h, g, "memory.kmem.soft_limit_in_bytes", text, sizeof text, &len);
  if (e) return e;
  if (len >= sizeof text) return -EINVAL;
  if (strcmp(text, "max") == 0) {
    *pages = PAGES_MAX;
    return 0;
  }
  {
    char* end = NULL;
    long long v;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < 0) return -EINVAL;
    *pages = (int64_t)(v / MEMCG_PAGE_SIZE);
  }
  return 0;
}

static int snap_group(memcg_hierarchy* h, memcg_group* g, group_snap* s) {
  char path[256];
  char* big = NULL;
  const char* p = path;
  size_t len = 0, esc;
  int e, i, k;
  memcg_events ev;
  memcg_pressure_level level;

  if ((e = memcg_group_path(g, path, sizeof path, &len))) return e;
  if (len >= sizeof path) { /* a long path: read it again whole */
    big = (char*)malloc(len + 1);
    if (!big) return -ENOMEM;
    if ((e = memcg_group_path(g, big, len + 1, NULL))) {
      free(big);
      return e;
    }
    p = big;
  }
  if (strcmp(p, "/") == 0) p = ""; /* the root is "/", "A/B" is "/A/B" */
  esc = memcg_metrics_escape(p, NULL, 0);
  s->label = (char*)malloc(esc + 2);
  if (!s->label) {
    free(big);
    return -ENOMEM;
  }
  s->label[0] = '/';
  memcg_metrics_escape(p, s->label + 1, esc + 1);
  free(big);

  for (i = 0; i < NR_COUNTERS; ++i) {
    s->c[i].size = sizeof s->c[i];
    if ((e = memcg_group_counter(g, (memcg_counter)i, &s->c[i]))) return e;
  }
  if ((e = kmem_soft_limit(h, g, &s->kmem_soft_limit))) return e;
  for (i = 0; i < 2; ++i) {
    ev.size = sizeof ev;
    if ((e = memcg_group_events(g, i, &ev))) return e;
    events_of(&ev, s->events[i]);
  }
  for (i = 0; i < 2; ++i)
    for (k = 0; k < NR_KINDS; ++k)
      if ((e = memcg_group_stat(g, (memcg_kind)k, i == 0, &s->stat[i][k]))) return e;
  if ((e = memcg_group_pressure_level(g, &level))) return e;
  s->pressure_level = (int)level;
  return memcg_group_socket_pressure(g, &s->socket_pressure);
}

static void snapshot_free(snapshot* s) {
  size_t i;
  for (i = 0; i < s->nr_snaps; ++i) free(s->snaps[i].label);
  free(s->snaps);
  free(s->groups);
}

static int snapshot_take(memcg_hierarchy* h, snapshot* s) {
  size_t i;
  int e;
  memset(s, 0, sizeof *s);
  s->h = h;
  if ((e = memcg_for_each_group(h, NULL, collect, s))) return e;
  s->snaps = (group_snap*)calloc(s->nr ? s->nr : 1, sizeof *s->snaps);
  if (!s->snaps) return -ENOMEM;
  for (i = 0; i < s->nr; ++i) {
    int dead = 0;
    /* A group removed since the walk: its charges are its parent's now, and it reads so. */
    if ((e = memcg_group_dead(s->groups[i], &dead))) return e;
    if (dead) continue;
    e = snap_group(h, s->groups[i], &s->snaps[s->nr_snaps]);
    ++s->nr_snaps; /* its label (if any) is freed with the rest */
    if (e) return e;
  }
  return 0;
}

/* ---- the families ---- */

/* A field of a group's counter, in pages (or a count). */
typedef struct counter_family {
  const char* name;
  const char* type;
  const char* help;
  int counter;   /* memcg_counter */
  size_t offset; /* of the int64_t field in memcg_counter_info */
  int pages;     /* 1: pages shown in bytes; 0: a count */
  int is_limit;  /* 1: "max" reads +Inf */
} counter_family;

#define FIELD(f) offsetof(memcg_counter_info, f)
static const counter_family counter_families[] = {
    {"memcg_memory_usage_bytes", "gauge",
     "Bytes charged to the group and its descendants (memory.current, memory.usage_in_bytes).",
     MEMCG_COUNTER_MEMORY, FIELD(usage), 1, 0},
    {"memcg_memory_max_bytes", "gauge",
     "The group's hard limit (memory.max, memory.limit_in_bytes); +Inf when max.",
     MEMCG_COUNTER_MEMORY, FIELD(max), 1, 1},
    {"memcg_memory_high_bytes", "gauge",
     "The group's throttling limit (memory.high); +Inf when max.", MEMCG_COUNTER_MEMORY,
     FIELD(high), 1, 1},
    {"memcg_memory_low_bytes", "gauge", "The group's best-effort protection (memory.low).",
     MEMCG_COUNTER_MEMORY, FIELD(low), 1, 1},
    {"memcg_memory_min_bytes", "gauge", "The group's hard protection (memory.min).",
     MEMCG_COUNTER_MEMORY, FIELD(min), 1, 1},
    {"memcg_memory_soft_limit_bytes", "gauge",
     "The group's soft limit (memory.soft_limit_in_bytes); +Inf when max.",
     MEMCG_COUNTER_MEMORY, FIELD(soft_limit), 1, 1},
    {"memcg_memory_peak_bytes", "gauge",
     "The highest usage since creation or reset (memory.peak, memory.max_usage_in_bytes).",
     MEMCG_COUNTER_MEMORY, FIELD(watermark), 1, 0},
    {"memcg_memory_failcnt_total", "counter",
     "Charges the memory counter refused at its limit (memory.failcnt).", MEMCG_COUNTER_MEMORY,
     FIELD(failcnt), 0, 0},
    {"memcg_memory_kmem_usage_bytes", "gauge",
     "Kernel-memory bytes charged (memory.kmem.usage_in_bytes).", MEMCG_COUNTER_KMEM,
     FIELD(usage), 1, 0},
    {"memcg_memory_kmem_max_bytes", "gauge",
     "The kernel-memory sub-limit (memory.kmem.limit_in_bytes); +Inf when max.",
     MEMCG_COUNTER_KMEM, FIELD(max), 1, 1},
    {"memcg_memory_kmem_peak_bytes", "gauge",
     "The highest kernel-memory usage (memory.kmem.max_usage_in_bytes).", MEMCG_COUNTER_KMEM,
     FIELD(watermark), 1, 0},
    {"memcg_memory_kmem_failcnt_total", "counter",
     "Charges the kernel-memory counter refused (memory.kmem.failcnt).", MEMCG_COUNTER_KMEM,
     FIELD(failcnt), 0, 0},
    {"memcg_memory_kmem_tcp_usage_bytes", "gauge",
     "Socket-buffer bytes charged (memory.kmem.tcp.usage_in_bytes).", MEMCG_COUNTER_TCP,
     FIELD(usage), 1, 0},
    {"memcg_memory_kmem_tcp_max_bytes", "gauge",
     "The socket-buffer sub-limit (memory.kmem.tcp.limit_in_bytes); +Inf when max.",
     MEMCG_COUNTER_TCP, FIELD(max), 1, 1},
    {"memcg_memory_kmem_tcp_peak_bytes", "gauge",
     "The highest socket-buffer usage (memory.kmem.tcp.max_usage_in_bytes).", MEMCG_COUNTER_TCP,
     FIELD(watermark), 1, 0},
    {"memcg_memory_kmem_tcp_failcnt_total", "counter",
     "Charges the socket-buffer counter refused (memory.kmem.tcp.failcnt).", MEMCG_COUNTER_TCP,
     FIELD(failcnt), 0, 0},
};
#undef FIELD

static int64_t field(const memcg_counter_info* c, size_t offset) {
  int64_t v;
  memcpy(&v, (const char*)c + offset, sizeof v);
  return v;
}

static void write_groups(writer* w, const snapshot* s) {
  size_t f, i;
  int k;
  for (f = 0; f < sizeof counter_families / sizeof counter_families[0]; ++f) {
    const counter_family* cf = &counter_families[f];
    header(w, cf->name, cf->type, cf->help);
    for (i = 0; i < s->nr_snaps; ++i) {
      int64_t v = field(&s->snaps[i].c[cf->counter], cf->offset);
      sample_start(w, cf->name, "group", s->snaps[i].label, NULL, NULL);
      if (cf->pages) value_pages(w, v, cf->is_limit);
      else value_int(w, v);
    }
    /* The kmem soft limit sits after the kmem counter's limit, as in cgroupfs. */
    if (strcmp(cf->name, "memcg_memory_kmem_max_bytes") == 0) {
      static const char name[] = "memcg_memory_kmem_soft_limit_bytes";
      header(w, name, "gauge",
             "The kernel-memory soft limit (memory.kmem.soft_limit_in_bytes); +Inf when max.");
      for (i = 0; i < s->nr_snaps; ++i) {
        sample_start(w, name, "group", s->snaps[i].label, NULL, NULL);
        value_pages(w, s->snaps[i].kmem_soft_limit, 1);
      }
    }
  }
  {
    static const char* const names[2] = {"memcg_memory_events_total",
                                         "memcg_memory_events_local_total"};
    static const char* const helps[2] = {
        "Memory events in the group and its descendants (memory.events).",
        "Memory events in the group itself (memory.events.local)."};
    int local;
    for (local = 0; local < 2; ++local) {
      header(w, names[local], "counter", helps[local]);
      for (i = 0; i < s->nr_snaps; ++i)
        for (k = 0; k < NR_EVENTS; ++k) {
          sample_start(w, names[local], "group", s->snaps[i].label, "event", event_names[k]);
          value_int(w, s->snaps[i].events[local][k]);
        }
    }
  }
  {
    static const char* const names[2] = {"memcg_memory_stat_bytes",
                                         "memcg_memory_stat_local_bytes"};
    static const char* const helps[2] = {
        "Bytes of each kind charged to the group and its descendants (memory.stat).",
        "Bytes of each kind charged to the group itself (memory.stat.local)."};
    int local;
    for (local = 0; local < 2; ++local) {
      header(w, names[local], "gauge", helps[local]);
      for (i = 0; i < s->nr_snaps; ++i)
        for (k = 0; k < NR_KINDS; ++k) {
          sample_start(w, names[local], "group", s->snaps[i].label, "kind", kind_names[k]);
          value_pages(w, s->snaps[i].stat[local][k], 0);
        }
    }
  }
  header(w, "memcg_memory_pressure_level", "gauge",
         "The latest vmpressure level of the group (memory.pressure_level): 0 none, 1 low, "
         "2 medium, 3 critical.");
  for (i = 0; i < s->nr_snaps; ++i) {
    sample_start(w, "memcg_memory_pressure_level", "group", s->snaps[i].label, NULL, NULL);
    value_int(w, s->snaps[i].pressure_level);
  }
  header(w, "memcg_socket_pressure", "gauge",
         "1 while sockets charged to the group are under memory pressure, else 0.");
  for (i = 0; i < s->nr_snaps; ++i) {
    sample_start(w, "memcg_socket_pressure", "group", s->snaps[i].label, NULL, NULL);
    value_int(w, s->snaps[i].socket_pressure);
  }
}

/* ---- the protocols ---- */

typedef struct proto_snap {
  char* label;
  memcg_proto_stats st;
  int64_t mem[3]; /* tcp_mem, pages */
} proto_snap;

enum {
  P_ALLOCATED,
  P_SOCKETS,
  P_UNDER,
  P_PRESSURES,
  P_PRESSURE_SECONDS,
  P_EXCEEDED,
  P_MEM,
  NR_PROTO_FAMILIES
};
static const struct {
  const char* name;
  const char* type;
  const char* help;
} proto_families[NR_PROTO_FAMILIES] = {
    {"memcg_proto_memory_allocated_bytes", "gauge",
     "Bytes allocated by every socket of the protocol (memory_allocated, pages in bytes)."},
    {"memcg_proto_sockets_allocated", "gauge", "Open sockets of the protocol."},
    {"memcg_proto_under_pressure", "gauge",
     "1 while the protocol is under memory pressure (above tcp_mem pressure), else 0."},
    {"memcg_proto_pressures_total", "counter",
     "Memory-pressure episodes the protocol entered (TCPMemoryPressures)."},
    {"memcg_proto_pressure_seconds_total", "counter",
     "Seconds spent in finished memory-pressure episodes (TCPMemoryPressuresChrono)."},
    {"memcg_proto_exceeded_total", "counter",
     "Socket allocations the protocol refused (sock_exceed_buf_limit)."},
    {"memcg_proto_mem_limit_bytes", "gauge",
     "The protocol's memory thresholds (tcp_mem: min, pressure, max), in bytes."},
};

static void write_protos(writer* w, const proto_snap* ps, size_t n) {
  static const char* const thresholds[3] = {"min", "pressure", "max"};
  int f, k;
  size_t i;
  for (f = 0; f < NR_PROTO_FAMILIES; ++f) {
    const char* name = proto_families[f].name;
    header(w, name, proto_families[f].type, proto_families[f].help);
    for (i = 0; i < n; ++i) {
      const memcg_proto_stats* st = &ps[i].st;
      if (f == P_MEM) {
        for (k = 0; k < 3; ++k) {
          sample_start(w, name, "proto", ps[i].label, "threshold", thresholds[k]);
          value_pages(w, ps[i].mem[k], 0);
        }
        continue;
      }
      sample_start(w, name, "proto", ps[i].label, NULL, NULL);
      switch (f) {
        case P_ALLOCATED: value_pages(w, st->memory_allocated, 0); break;
        case P_SOCKETS: value_int(w, st->sockets_allocated); break;
        case P_UNDER: value_int(w, st->under_pressure); break;
        case P_PRESSURES: value_int(w, st->pressures); break;
        case P_PRESSURE_SECONDS: value_ms(w, st->pressure_ms); break;
        default: value_int(w, st->exceeded); break;
      }
    }
  }
}

/* ---- entry points ---- */

int memcg_metrics_write(memcg_hierarchy* h, const memcg_metrics_proto* protos, size_t nr_protos,
                        memcg_metrics_sink sink, void* user) {
  snapshot s;
  proto_snap* ps = NULL;
  writer* w = NULL;
  size_t i;
  int e;
  if (!h || !sink || (!protos && nr_protos)) return -EINVAL;
  for (i = 0; i < nr_protos; ++i)
    if (!protos[i].proto) return -EINVAL;

  e = snapshot_take(h, &s);
  if (!e && nr_protos) {
    ps = (proto_snap*)calloc(nr_protos, sizeof *ps);
    if (!ps) e = -ENOMEM;
  }
  for (i = 0; !e && i < nr_protos; ++i) {
    const char* name = protos[i].name ? protos[i].name : "tcp";
    size_t len = memcg_metrics_escape(name, NULL, 0);
    ps[i].label = (char*)malloc(len + 1);
    if (!ps[i].label) {
      e = -ENOMEM;
      break;
    }
    memcg_metrics_escape(name, ps[i].label, len + 1);
    ps[i].st.size = sizeof ps[i].st;
    if ((e = memcg_proto_stats_get(protos[i].proto, &ps[i].st))) break;
    e = memcg_proto_tcp_mem(protos[i].proto, ps[i].mem);
  }
  if (!e) {
    w = (writer*)malloc(sizeof *w); /* 4 KiB: not on the caller's stack */
    if (!w) e = -ENOMEM;
  }
  if (!e) {
    w->sink = sink;
    w->user = user;
    w->error = 0;
    w->n = 0;
    write_groups(w, &s);
    write_protos(w, ps, nr_protos);
    flush(w);
    e = w->error;
  }
  free(w);
  if (ps)
    for (i = 0; i < nr_protos; ++i) free(ps[i].label);
  free(ps);
  snapshot_free(&s);
  return e;
}

typedef struct text_buf {
  char* p;
  size_t n, cap;
} text_buf;

static int append(const char* data, size_t len, void* user) {
  text_buf* t = (text_buf*)user;
  if (t->n + len + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 8192;
    char* p;
    while (cap < t->n + len + 1) cap *= 2;
    p = (char*)realloc(t->p, cap);
    if (!p) return -ENOMEM;
    t->p = p;
    t->cap = cap;
  }
  memcpy(t->p + t->n, data, len);
  t->n += len;
  t->p[t->n] = '\0';
  return 0;
}

int memcg_metrics_render(memcg_hierarchy* h, const memcg_metrics_proto* protos, size_t nr_protos,
                         char** out, size_t* out_len) {
  text_buf t = {NULL, 0, 0};
  int e;
  if (!out) return -EINVAL;
  e = memcg_metrics_write(h, protos, nr_protos, append, &t);
  if (!e && !t.p) e = append("", 0, &t); /* an empty text is still a string */
  if (e) {
    free(t.p);
    return e;
  }
  *out = t.p;
  if (out_len) *out_len = t.n;
  return 0;
}
