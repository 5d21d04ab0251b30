/* memcg_metrics.h: every group's control files and the protocols' counters of a memcg
 * hierarchy in the Prometheus text exposition format 0.0.4, through the public C API alone
 * (memcg/memcg.h). C99; a scrape allocates (one snapshot of the groups), nothing else does.
 *
 * Families (each once, # HELP and # TYPE first, then its samples; one sample per live group,
 * labelled group="/" for the root and group="/A/B" below it):
 *   memcg_memory_{usage,max,high,low,min,soft_limit,peak}_bytes    gauges of the memory counter
 *   memcg_memory_failcnt_total                                     counter
 *   memcg_memory_kmem_{usage,max,soft_limit,peak}_bytes, memcg_memory_kmem_failcnt_total
 *   memcg_memory_kmem_tcp_{usage,max,peak}_bytes, memcg_memory_kmem_tcp_failcnt_total
 *   memcg_memory_events_total{event=...}, memcg_memory_events_local_total{event=...}
 *   memcg_memory_stat_bytes{kind=...} (the subtree), memcg_memory_stat_local_bytes{kind=...}
 *   memcg_memory_pressure_level (0 none .. 3 critical), memcg_socket_pressure (0/1)
 * and per protocol (label proto="NAME"):
 *   memcg_proto_memory_allocated_bytes, memcg_proto_sockets_allocated, memcg_proto_under_pressure,
 *   memcg_proto_pressures_total, memcg_proto_pressure_seconds_total, memcg_proto_exceeded_total,
 *   memcg_proto_mem_limit_bytes{threshold="min"|"pressure"|"max"} (tcp_mem)
 * A limit at "max" reads +Inf. Label values are escaped as the format says (\\, \", \n).
 *
 * Return values follow memcg.h: 0 or a negative errno. */
#ifndef MEMCG_METRICS_H
#define MEMCG_METRICS_H

#include <stddef.h>

#include "memcg/memcg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Receives the exposition in pieces (len bytes, not NUL-terminated). Returns 0 to go on;
 * anything else stops the rendering, which then returns that value. */
typedef int (*memcg_metrics_sink)(const char* data, size_t len, void* user);

/* A protocol to expose, under the label proto="name" (NULL name: "tcp"). */
typedef struct memcg_metrics_proto {
  const memcg_proto* proto;
  const char* name;
} memcg_metrics_proto;

/* The Prometheus content type of what memcg_metrics_write() renders. */
#define MEMCG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Renders every live group of h and the nr_protos protocols of protos (NULL if 0) to sink.
 * -EINVAL: h or sink NULL, protos NULL with nr_protos > 0, or a NULL proto; -ENOMEM; an error
 * of the C API; or what the sink returned. Nothing is written before the groups are read (a
 * failed snapshot writes nothing). */
int memcg_metrics_write(memcg_hierarchy* h, const memcg_metrics_proto* protos, size_t nr_protos,
                        memcg_metrics_sink sink, void* user);

/* The same into a malloc'ed NUL-terminated text: *out (free() it) and *out_len (if not NULL)
 * receive it on success. */
int memcg_metrics_render(memcg_hierarchy* h, const memcg_metrics_proto* protos, size_t nr_protos,
                         char** out, size_t* out_len);

/* Escapes s as a label value (\ to \\, " to \", newline to \n) into buf, NUL-terminated and cut
 * to len. Returns the length of the whole escaped text (compare with len, as snprintf). */
size_t memcg_metrics_escape(const char* s, char* buf, size_t len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MEMCG_METRICS_H */
