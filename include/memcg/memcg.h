/* memcg/memcg.h: the C face of memcg, for C network stacks and for porting.
 *
 * Contents:
 *   memcg_hierarchy, memcg_group    the tree of groups: create, mkdir/rmdir, control files by
 *                                   name, charge/uncharge
 *   memcg_proto                     a protocol's socket memory (tcp_mem, memory_allocated,
 *                                   sockets_allocated, the pressure flag with a callback)
 *   memcg_sock                      a socket's memory: receive/consume/send/ack/close,
 *                                   SO_RCVBUF/SO_SNDBUF, the kernel's primitives (schedule,
 *                                   forced schedule, charge, uncharge) and window advice
 *
 * Handles are opaque. Every function that can fail returns 0 (or a count) on success and a
 * negative errno value on failure (-EINVAL, -ENOMEM, -ENOENT, -EEXIST, -EBUSY, -EBADF); a NULL
 * handle is -EINVAL, never a crash. Nothing here throws, and nothing calls back into the caller
 * except the pressure callback.
 *
 * The implementation is C++ (the library is header-only C++20): it is compiled in the one C++
 * translation unit that defines MEMCG_C_IMPLEMENTATION before including this header, or linked
 * from the static library target memcg::c.
 *
 * Threads: as the C++ API. Hierarchy, groups and protocols may be used from any thread; one
 * socket's operations need the owner's lock (one thread at a time per socket).
 */
#ifndef MEMCG_MEMCG_H
#define MEMCG_MEMCG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct memcg_hierarchy memcg_hierarchy;
typedef struct memcg_group memcg_group;
typedef struct memcg_proto memcg_proto;
typedef struct memcg_sock memcg_sock;

/* The kinds of charge (memory.stat keys). */
typedef enum memcg_kind {
  MEMCG_KIND_ANON = 0,
  MEMCG_KIND_FILE = 1,
  MEMCG_KIND_KMEM = 2,
  MEMCG_KIND_PAGETABLES = 3,
  MEMCG_KIND_SLAB_RECLAIMABLE = 4,
  MEMCG_KIND_SLAB_UNRECLAIMABLE = 5,
  MEMCG_KIND_SOCK = 6
} memcg_kind;

/* gfp flags of a charge (combine with |). */
enum {
  MEMCG_GFP_KERNEL = 0,
  MEMCG_GFP_NOFAIL = 1 << 0,
  MEMCG_GFP_HIGH = 1 << 1,
  MEMCG_GFP_NORECLAIM = 1 << 2,
  MEMCG_GFP_NORETRY = 1 << 3,
  MEMCG_GFP_RETRY_MAYFAIL = 1 << 4
};

enum { MEMCG_PAGE_SIZE = 4096 };

/* Where socket pages are charged (memcg_hierarchy_set_socket_accounting). */
typedef enum memcg_socket_accounting {
  MEMCG_SOCKET_ACCOUNTING_BOTH = 0, /* the memory and the tcp counter (the default) */
  MEMCG_SOCKET_ACCOUNTING_V1 = 1,   /* the tcp counter alone (cgroup v1) */
  MEMCG_SOCKET_ACCOUNTING_V2 = 2    /* the memory counter alone (cgroup v2) */
} memcg_socket_accounting;

/* ---- the hierarchy ---- */

/* A new hierarchy (charge batch 64 pages), or NULL when out of memory. */
memcg_hierarchy* memcg_hierarchy_create(void);
/* Frees the hierarchy. Requires: no socket of it is open, and no other call on it runs. */
void memcg_hierarchy_destroy(memcg_hierarchy* h);
/* The root group ("/"), or NULL for a NULL h. */
memcg_group* memcg_root(memcg_hierarchy* h);
/* The live group at path ("/" or "A/B"), or NULL. */
memcg_group* memcg_find(memcg_hierarchy* h, const char* path);
/* Creates a group; *out (if not NULL) receives it. -ENOENT: no parent; -EEXIST: taken. */
int memcg_mkdir(memcg_hierarchy* h, const char* path, memcg_group** out);
/* Removes a group without children; its charges and sockets become the parent's. */
int memcg_rmdir(memcg_hierarchy* h, const char* path);
/* Where socket pages are charged: -EBUSY while any group holds socket pages, -EINVAL for a
 * value out of range. Requires: no socket charge runs concurrently. */
int memcg_hierarchy_set_socket_accounting(memcg_hierarchy* h, memcg_socket_accounting a);
/* The current memcg_socket_accounting, or -EINVAL for a NULL h. */
int memcg_hierarchy_socket_accounting(const memcg_hierarchy* h);

/* `echo value > group/file`: the control files of memcg/control.hpp by their cgroupfs names. */
int memcg_write(memcg_hierarchy* h, memcg_group* g, const char* file, const char* value);
/* `cat group/file` into buf (NUL-terminated, cut to len): "VALUE" for a one-value file,
 * "KEY VALUE\n" lines for a keyed one. Returns the length of the whole text (as snprintf),
 * or a negative errno. */
int memcg_read(memcg_hierarchy* h, memcg_group* g, const char* file, char* buf, size_t len);

/* Charges nr_pages of kind to g (the charge path, with reclaim unless gfp says otherwise).
 * -ENOMEM: refused (nothing charged). MEMCG_KIND_SOCK is -EINVAL here: socket pages are
 * charged and given back through a memcg_sock. */
int memcg_charge(memcg_group* g, memcg_kind kind, int64_t nr_pages, unsigned gfp);
/* Gives back nr_pages of kind; -EINVAL (nothing changes) if nr_pages < 0, if g holds less of
 * it, or for MEMCG_KIND_SOCK. */
int memcg_uncharge(memcg_group* g, memcg_kind kind, int64_t nr_pages);

/* ---- a protocol ---- */

/* Called when the protocol enters (entering = 1, duration_ms = 0) or leaves (entering = 0,
 * duration_ms = the episode's length) memory pressure, on the thread whose allocation changed
 * it, with no library lock held. */
typedef void (*memcg_pressure_fn)(memcg_proto* p, int entering, int64_t duration_ms, void* user);

/* A protocol with the kernel's defaults (tcp_mem 188388 251184 376776 pages, tcp_rmem
 * 4096 131072 6291456, tcp_wmem 4096 16384 4194304) and a per-thread reserve of
 * memory_allocated of pcpu_reserve_pages (256 = 1 MiB in the kernel; reads are exact anyway).
 * NULL when out of memory or pcpu_reserve_pages < 0. */
memcg_proto* memcg_proto_create(int64_t pcpu_reserve_pages);
/* Requires: every socket of the protocol was destroyed. */
void memcg_proto_destroy(memcg_proto* p);
/* -EINVAL unless 0 <= min <= pressure <= max (pages). */
int memcg_proto_set_tcp_mem(memcg_proto* p, int64_t min, int64_t pressure, int64_t max);
/* -EINVAL unless 0 <= min <= def <= max (bytes). */
int memcg_proto_set_tcp_rmem(memcg_proto* p, int64_t min, int64_t def, int64_t max);
int memcg_proto_set_tcp_wmem(memcg_proto* p, int64_t min, int64_t def, int64_t max);
/* Pages allocated by every socket (exact), or -EINVAL. */
int64_t memcg_proto_memory_allocated(const memcg_proto* p);
/* Open sockets, or -EINVAL. */
int64_t memcg_proto_sockets_allocated(const memcg_proto* p);
/* 1 under pressure, 0 not, or -EINVAL. */
int memcg_proto_under_pressure(const memcg_proto* p);
/* Pressure episodes entered so far, and milliseconds spent in finished ones. */
int memcg_proto_pressure_stats(const memcg_proto* p, int64_t* episodes, int64_t* total_ms);
/* Sets (fn = NULL: removes) the pressure callback. */
int memcg_proto_set_pressure_callback(memcg_proto* p, memcg_pressure_fn fn, void* user);

/* ---- a socket ---- */

typedef struct memcg_sock_info {
  int64_t forward_alloc; /* sk_forward_alloc: bytes charged but unused */
  int64_t rmem_alloc;    /* sk_rmem_alloc: bytes received, not yet consumed */
  int64_t wmem_queued;   /* sk_wmem_queued: bytes queued, not yet acknowledged */
  int64_t rcvbuf;
  int64_t sndbuf;
  int under_pressure; /* the socket's group (or an ancestor) or its protocol */
  int closed;
} memcg_sock_info;

typedef struct memcg_window_advice {
  int64_t rcv_window; /* bytes of receive window it may advertise now */
  int64_t snd_space;  /* bytes it may queue for sending now */
  int under_pressure;
} memcg_window_advice;

/* A socket of protocol p owned by group g (NULL: charged to the protocol only) for its
 * lifetime; *out receives it. -ENOMEM when out of memory. */
int memcg_sock_open(memcg_proto* p, memcg_group* g, memcg_sock** out);
/* Gives back everything and frees the socket (a closed socket is only freed). */
void memcg_sock_destroy(memcg_sock* s);
/* A segment of size bytes arrives (TCP's rules): -ENOBUFS: the queue holds more than rcvbuf
 * (drop it); -ENOMEM: refused (drop it); but a segment into an empty receive queue is always
 * taken, charged past every limit. forced: charge the group as the kernel's softirq does (past
 * memory.max). */
int memcg_sock_recv(memcg_sock* s, int64_t size, int forced);
/* The application read size received bytes; -EINVAL (nothing changes) if fewer are held. */
int memcg_sock_consume(memcg_sock* s, int64_t size);
/* The application queues size bytes; -EAGAIN: the send queue holds sndbuf or more (it would
 * block; nothing charged); -ENOMEM: refused (block; sndbuf moderated unless set). */
int memcg_sock_send(memcg_sock* s, int64_t size);
/* The peer acknowledged size queued bytes; -EINVAL (nothing changes) if fewer are queued. */
int memcg_sock_ack(memcg_sock* s, int64_t size);
/* Gives back everything; -EBADF if already closed. Every later call on s is -EBADF. */
int memcg_sock_close(memcg_sock* s);
/* setsockopt(SO_RCVBUF / SO_SNDBUF): the buffer becomes twice bytes, at least 2304 (rcvbuf) or
 * 4608 (sndbuf), and is locked (a locked sndbuf is never moderated). -EINVAL (nothing changes)
 * unless 0 <= bytes <= INT32_MAX. */
int memcg_sock_set_rcvbuf(memcg_sock* s, int64_t bytes);
int memcg_sock_set_sndbuf(memcg_sock* s, int64_t bytes);
/* The kernel's primitives: sk_rmem_schedule / sk_wmem_schedule (1 allowed, 0 refused),
 * sk_mem_charge, sk_mem_uncharge (with sk_mem_reclaim). For stacks that keep rmem/wmem
 * themselves. memcg_sock_mem_charge takes bytes of the forward allocation (-EINVAL if fewer
 * are scheduled); memcg_sock_mem_uncharge gives back bytes taken so (-EINVAL, nothing changes,
 * if fewer were). Close gives back whatever is still taken. */
int memcg_sock_rmem_schedule(memcg_sock* s, int64_t size, int forced);
int memcg_sock_wmem_schedule(memcg_sock* s, int64_t size);
/* sk_forced_mem_schedule: size bytes forward-allocated past every limit (the segment into an
 * empty receive queue). */
int memcg_sock_forced_mem_schedule(memcg_sock* s, int64_t size);
int memcg_sock_mem_charge(memcg_sock* s, int64_t size);
int memcg_sock_mem_uncharge(memcg_sock* s, int64_t size);
int memcg_sock_get_info(const memcg_sock* s, memcg_sock_info* out);
/* Window advice for a segment size of mss bytes. */
int memcg_sock_advice(const memcg_sock* s, int64_t mss, memcg_window_advice* out);
/* The group the socket charges now (its creator, or the ancestor that adopted it), or NULL. */
memcg_group* memcg_sock_group(const memcg_sock* s);

#ifdef __cplusplus
} /* extern "C" */
#endif

/* ------------------------------------------------------------------------------------------ */
/* The implementation (C++ only).                                                             */

#ifdef MEMCG_C_IMPLEMENTATION
#ifndef __cplusplus
#error "MEMCG_C_IMPLEMENTATION must be defined in a C++ translation unit"
#endif

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>
#include <system_error>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/sockmem.hpp"

struct memcg_hierarchy {
  memcg::hierarchy h;
};

struct memcg_proto final : memcg::proto_pressure_listener {
  explicit memcg_proto(const memcg::proto_memory::options& o) : p(o) {}
  void enter_memory_pressure(memcg::proto_memory&) noexcept override { call(1, 0); }
  void leave_memory_pressure(memcg::proto_memory&, std::int64_t d) noexcept override { call(0, d); }
  void call(int entering, std::int64_t d) noexcept {
    // acquire: pairs with the release in memcg_proto_set_pressure_callback(): `user` is set.
    if (memcg_pressure_fn f = fn.load(std::memory_order_acquire))
      f(this, entering, d, user.load(std::memory_order_relaxed));
  }
  memcg::proto_memory p;
  std::atomic<memcg_pressure_fn> fn{nullptr};
  std::atomic<void*> user{nullptr};
};

struct memcg_sock {
  memcg_sock(memcg::proto_memory& p, memcg::group* g) : s(p, g) {}
  memcg::sock_memory s;
};

namespace memcg::detail {
inline int c_err(std::errc e) noexcept { return e == std::errc{} ? 0 : -static_cast<int>(e); }
inline memcg::group* c_group(memcg_group* g) noexcept {
  return reinterpret_cast<memcg::group*>(g);
}
inline memcg_group* c_handle(memcg::group* g) noexcept {
  return reinterpret_cast<memcg_group*>(g);
}
inline bool c_kind(memcg_kind k) noexcept {
  return static_cast<int>(k) >= 0 && static_cast<int>(k) < memcg::nr_kinds;
}
static_assert(static_cast<int>(memcg::sock_accounting::both) == MEMCG_SOCKET_ACCOUNTING_BOTH &&
              static_cast<int>(memcg::sock_accounting::v1) == MEMCG_SOCKET_ACCOUNTING_V1 &&
              static_cast<int>(memcg::sock_accounting::v2) == MEMCG_SOCKET_ACCOUNTING_V2);
// The kinds a group is charged directly: not sock, whose pages belong to sockets (a group
// cannot tell its own sock pages from its sockets', so an uncharge could take theirs).
inline bool c_group_kind(memcg_kind k) noexcept { return c_kind(k) && k != MEMCG_KIND_SOCK; }
}  // namespace memcg::detail

extern "C" {

memcg_hierarchy* memcg_hierarchy_create(void) { return new (std::nothrow) memcg_hierarchy(); }
void memcg_hierarchy_destroy(memcg_hierarchy* h) { delete h; }
memcg_group* memcg_root(memcg_hierarchy* h) {
  return h ? memcg::detail::c_handle(&h->h.root()) : nullptr;
}
memcg_group* memcg_find(memcg_hierarchy* h, const char* path) {
  if (!h || !path) return nullptr;
  try {
    return memcg::detail::c_handle(h->h.find(path));
  } catch (...) {
    return nullptr;
  }
}
int memcg_mkdir(memcg_hierarchy* h, const char* path, memcg_group** out) {
  if (!h || !path) return -EINVAL;
  try {
    auto r = h->h.mkdir(path);
    if (!r) return memcg::detail::c_err(r.error);
    if (out) *out = memcg::detail::c_handle(r.g);
    return 0;
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_rmdir(memcg_hierarchy* h, const char* path) {
  if (!h || !path) return -EINVAL;
  try {
    return memcg::detail::c_err(h->h.rmdir(path));
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_hierarchy_set_socket_accounting(memcg_hierarchy* h, memcg_socket_accounting a) {
  if (!h) return -EINVAL;
  const int v = static_cast<int>(a);
  if (v < MEMCG_SOCKET_ACCOUNTING_BOTH || v > MEMCG_SOCKET_ACCOUNTING_V2) return -EINVAL;
  try {
    return memcg::detail::c_err(h->h.set_socket_accounting(static_cast<memcg::sock_accounting>(v)));
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_hierarchy_socket_accounting(const memcg_hierarchy* h) {
  return h ? static_cast<int>(h->h.socket_accounting()) : -EINVAL;
}
int memcg_write(memcg_hierarchy* h, memcg_group* g, const char* file, const char* value) {
  if (!h || !g || !file || !value) return -EINVAL;
  try {
    return memcg::detail::c_err(memcg::write_control(h->h, *memcg::detail::c_group(g), file, value));
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_read(memcg_hierarchy* h, memcg_group* g, const char* file, char* buf, size_t len) {
  if (!h || !g || !file || (!buf && len)) return -EINVAL;
  try {
    memcg::control_value v = memcg::read_control(h->h, *memcg::detail::c_group(g), file);
    if (!v) return memcg::detail::c_err(v.error);
    std::string text;
    for (const auto& [key, value] : v.entries) {
      if (key.empty()) text += value;
      else text += key + " " + value + "\n";
    }
    if (len) {
      std::size_t n = text.size() < len - 1 ? text.size() : len - 1;
      std::memcpy(buf, text.data(), n);
      buf[n] = '\0';
    }
    return static_cast<int>(text.size());
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_charge(memcg_group* g, memcg_kind kind, int64_t nr_pages, unsigned gfp) {
  if (!g || !memcg::detail::c_group_kind(kind)) return -EINVAL;
  memcg::group& grp = *memcg::detail::c_group(g);
  auto s = grp.hierarchy().try_charge(grp, static_cast<memcg::kind>(kind), nr_pages,
                                      static_cast<memcg::gfp>(gfp & 31u));
  return memcg::detail::c_err(s.error);
}
int memcg_uncharge(memcg_group* g, memcg_kind kind, int64_t nr_pages) {
  if (!g || !memcg::detail::c_group_kind(kind)) return -EINVAL;
  memcg::group& grp = *memcg::detail::c_group(g);
  try {
    return memcg::detail::c_err(
        grp.hierarchy().uncharge(grp, static_cast<memcg::kind>(kind), nr_pages));
  } catch (...) {
    return -ENOMEM;
  }
}

memcg_proto* memcg_proto_create(int64_t pcpu_reserve_pages) {
  if (pcpu_reserve_pages < 0) return nullptr;
  memcg::proto_memory::options o;
  o.pcpu_reserve = pcpu_reserve_pages;
  auto* p = new (std::nothrow) memcg_proto(o);
  if (p) p->p.set_pressure_listener(p);
  return p;
}
void memcg_proto_destroy(memcg_proto* p) {
  if (!p) return;
  p->p.set_pressure_listener(nullptr);
  delete p;
}
int memcg_proto_set_tcp_mem(memcg_proto* p, int64_t min, int64_t pressure, int64_t max) {
  if (!p) return -EINVAL;
  return memcg::detail::c_err(p->p.set_sysctl_mem({min, pressure, max}));
}
int memcg_proto_set_tcp_rmem(memcg_proto* p, int64_t min, int64_t def, int64_t max) {
  if (!p) return -EINVAL;
  return memcg::detail::c_err(p->p.set_sysctl_rmem({min, def, max}));
}
int memcg_proto_set_tcp_wmem(memcg_proto* p, int64_t min, int64_t def, int64_t max) {
  if (!p) return -EINVAL;
  return memcg::detail::c_err(p->p.set_sysctl_wmem({min, def, max}));
}
int64_t memcg_proto_memory_allocated(const memcg_proto* p) {
  return p ? p->p.memory_allocated() : -EINVAL;
}
int64_t memcg_proto_sockets_allocated(const memcg_proto* p) {
  return p ? p->p.sockets_allocated() : -EINVAL;
}
int memcg_proto_under_pressure(const memcg_proto* p) {
  return p ? (p->p.under_memory_pressure() ? 1 : 0) : -EINVAL;
}
int memcg_proto_pressure_stats(const memcg_proto* p, int64_t* episodes, int64_t* total_ms) {
  if (!p) return -EINVAL;
  if (episodes) *episodes = p->p.memory_pressures();
  if (total_ms) *total_ms = p->p.memory_pressure_time_ms();
  return 0;
}
int memcg_proto_set_pressure_callback(memcg_proto* p, memcg_pressure_fn fn, void* user) {
  if (!p) return -EINVAL;
  // Never called with a half-set pair: the function is cleared, the pointer set, then the
  // function published (release; pairs with the acquire in memcg_proto::call()).
  p->fn.store(nullptr, std::memory_order_relaxed);
  p->user.store(user, std::memory_order_relaxed);
  p->fn.store(fn, std::memory_order_release);
  return 0;
}

int memcg_sock_open(memcg_proto* p, memcg_group* g, memcg_sock** out) {
  if (!p || !out) return -EINVAL;
  auto* s = new (std::nothrow) memcg_sock(p->p, memcg::detail::c_group(g));
  if (!s) return -ENOMEM;
  *out = s;
  return 0;
}
void memcg_sock_destroy(memcg_sock* s) { delete s; }
int memcg_sock_recv(memcg_sock* s, int64_t size, int forced) {
  return s ? memcg::detail::c_err(s->s.recv(size, forced != 0)) : -EINVAL;
}
int memcg_sock_consume(memcg_sock* s, int64_t size) {
  return s ? memcg::detail::c_err(s->s.consume(size)) : -EINVAL;
}
int memcg_sock_send(memcg_sock* s, int64_t size) {
  return s ? memcg::detail::c_err(s->s.send(size)) : -EINVAL;
}
int memcg_sock_ack(memcg_sock* s, int64_t size) {
  return s ? memcg::detail::c_err(s->s.ack(size)) : -EINVAL;
}
int memcg_sock_close(memcg_sock* s) { return s ? memcg::detail::c_err(s->s.close()) : -EINVAL; }
int memcg_sock_set_rcvbuf(memcg_sock* s, int64_t bytes) {
  return s ? memcg::detail::c_err(s->s.setsockopt_rcvbuf(bytes)) : -EINVAL;
}
int memcg_sock_set_sndbuf(memcg_sock* s, int64_t bytes) {
  return s ? memcg::detail::c_err(s->s.setsockopt_sndbuf(bytes)) : -EINVAL;
}
int memcg_sock_rmem_schedule(memcg_sock* s, int64_t size, int forced) {
  if (!s) return -EINVAL;
  if (s->s.closed()) return -EBADF;
  if (size < 0 || size > memcg::sk_max_op_size) return -EINVAL;
  return s->s.sk_rmem_schedule(size, forced != 0) ? 1 : 0;
}
int memcg_sock_wmem_schedule(memcg_sock* s, int64_t size) {
  if (!s) return -EINVAL;
  if (s->s.closed()) return -EBADF;
  if (size < 0 || size > memcg::sk_max_op_size) return -EINVAL;
  return s->s.sk_wmem_schedule(size) ? 1 : 0;
}
int memcg_sock_forced_mem_schedule(memcg_sock* s, int64_t size) {
  if (!s) return -EINVAL;
  if (s->s.closed()) return -EBADF;
  if (size < 0 || size > memcg::sk_max_op_size) return -EINVAL;
  s->s.sk_forced_mem_schedule(size);
  return 0;
}
int memcg_sock_mem_charge(memcg_sock* s, int64_t size) {
  return s ? memcg::detail::c_err(s->s.sk_mem_charge(size)) : -EINVAL;
}
int memcg_sock_mem_uncharge(memcg_sock* s, int64_t size) {
  return s ? memcg::detail::c_err(s->s.sk_mem_uncharge(size)) : -EINVAL;
}
int memcg_sock_get_info(const memcg_sock* s, memcg_sock_info* out) {
  if (!s || !out) return -EINVAL;
  out->forward_alloc = s->s.forward_alloc();
  out->rmem_alloc = s->s.rmem_alloc();
  out->wmem_queued = s->s.wmem_queued();
  out->rcvbuf = s->s.rcvbuf();
  out->sndbuf = s->s.sndbuf();
  out->under_pressure = s->s.under_memory_pressure() ? 1 : 0;
  out->closed = s->s.closed() ? 1 : 0;
  return 0;
}
int memcg_sock_advice(const memcg_sock* s, int64_t mss, memcg_window_advice* out) {
  if (!s || !out || mss <= 0) return -EINVAL;
  memcg::window_advice a = s->s.advice(mss);
  out->rcv_window = a.rcv_window;
  out->snd_space = a.snd_space;
  out->under_pressure = a.under_pressure ? 1 : 0;
  return 0;
}
memcg_group* memcg_sock_group(const memcg_sock* s) {
  return s ? memcg::detail::c_handle(s->s.memcg()) : nullptr;
}

}  // extern "C"

#endif /* MEMCG_C_IMPLEMENTATION */
#endif /* MEMCG_MEMCG_H */
