// The C API as lwip_groups.cpp was written against (memcg 0.1 before issue 16's rework), on the
// new one: force-included into lwip_groups.cpp only (CMakeLists.txt), until the lwIP port
// (ports/lwip) replaces that file. C++ overloads and macros: nothing here is part of memcg.h.
#pragma once
#include <cstdint>

#include "memcg/memcg.h"

inline memcg_hierarchy* memcg_hierarchy_create() {
  memcg_hierarchy* h = nullptr;
  return memcg_hierarchy_create(nullptr, &h) == 0 ? h : nullptr;
}
inline memcg_group* memcg_root(memcg_hierarchy* h) {
  memcg_group* g = nullptr;
  return memcg_root(h, &g) == 0 ? g : nullptr;
}
inline memcg_proto* memcg_proto_create(std::int64_t pcpu_reserve_pages) {
  memcg_proto_options o;
  memcg_proto_options_init(&o);
  o.pcpu_reserve_pages = pcpu_reserve_pages;
  memcg_proto* p = nullptr;
  return memcg_proto_create(&o, &p) == 0 ? p : nullptr;
}
inline memcg_proto_stats memcg_compat_proto_stats(const memcg_proto* p) {
  memcg_proto_stats s{};
  s.size = sizeof s;
  (void)memcg_proto_stats_get(p, &s);
  return s;
}
inline std::int64_t memcg_proto_memory_allocated(const memcg_proto* p) {
  return memcg_compat_proto_stats(p).memory_allocated;
}
inline std::int64_t memcg_proto_sockets_allocated(const memcg_proto* p) {
  return memcg_compat_proto_stats(p).sockets_allocated;
}
inline int memcg_proto_under_pressure(const memcg_proto* p) {
  return memcg_compat_proto_stats(p).under_pressure;
}
inline int memcg_proto_pressure_stats(const memcg_proto* p, std::int64_t* episodes,
                                      std::int64_t* total_ms) {
  memcg_proto_stats s = memcg_compat_proto_stats(p);
  if (episodes) *episodes = s.pressures;
  if (total_ms) *total_ms = s.pressure_ms;
  return 0;
}
inline int memcg_read(memcg_hierarchy* h, memcg_group* g, const char* file, char* buf, size_t len) {
  size_t n = 0;
  int e = memcg_read(h, g, file, buf, len, &n);
  return e ? e : static_cast<int>(n);
}
// The old structs had no size field: set it for the caller.
inline int memcg_compat_sock_advice(const memcg_sock* s, std::int64_t mss, memcg_window_advice* a) {
  a->size = sizeof *a;
  return (memcg_sock_advice)(s, mss, a);
}
inline int memcg_compat_sock_get_info(const memcg_sock* s, memcg_sock_info* i) {
  i->size = sizeof *i;
  return (memcg_sock_get_info)(s, i);
}
#define memcg_sock_advice(s, mss, a) memcg_compat_sock_advice(s, mss, a)
#define memcg_sock_get_info(s, i) memcg_compat_sock_get_info(s, i)
