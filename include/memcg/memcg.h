/* memcg/memcg.h: the C face of memcg (libmemcg-c), for C network stacks and for porting.
 *
 * Contents:
 *   version                         MEMCG_VERSION_* (this header), memcg_version() (the library)
 *   conventions                     return values, output structs, refusals (memcg_refusal)
 *   memcg_clock                     the time the library reads: a virtual clock or the caller's
 *   memcg_hierarchy, memcg_group    the tree of groups: create, mkdir/rmdir, walk, control files
 *                                   by name, typed statistics, charge/uncharge, charge batch,
 *                                   socket accounting, pressure listeners
 *   memcg_proto                     a protocol's socket memory (tcp_mem, memory_allocated,
 *                                   sockets_allocated, the pressure flag with a callback)
 *   memcg_sock                      a socket's memory, allocated (memcg_sock_open) or in the
 *                                   caller's storage (memcg_sock_init, MEMCG_SOCK_SIZE):
 *                                   receive/consume/send/ack/close, SO_RCVBUF/SO_SNDBUF, the
 *                                   kernel's primitives and window advice
 *   window promises                 group-level receive windows: promise, release, the
 *                                   group's "room available" callback; forward_keep
 *
 * Conventions.
 *   - Every function that can fail returns 0 on success or a negative errno value (-EINVAL,
 *     -ENOMEM, -ENOENT, -EEXIST, -EBUSY, -EBADF, -ENOBUFS, -EAGAIN, -E2BIG); results come back
 *     through out-parameters, which are written only on success. A NULL handle or a NULL
 *     required pointer is -EINVAL, never a crash; on -EINVAL nothing changes. Functions that
 *     return something else cannot fail (memcg_version(), the destroy calls).
 *   - Output structs start with `size_t size`, which the caller sets to sizeof(the struct) it
 *     was compiled with. The library fills the fields that fit in that size and zeroes the
 *     bytes past its own struct; a size smaller than this header's first version of the struct
 *     is -EINVAL. Input structs (options) start with `size` too: fields past a caller's smaller
 *     size take their defaults; bytes past the library's struct must be zero (-E2BIG if not).
 *   - A refusal (-ENOMEM from a charge, a receive, a send or a schedule; -ENOBUFS and -EAGAIN
 *     from a socket's buffer limits) records who refused in the calling thread's
 *     memcg_last_refusal(), until the thread's next refusal.
 *   - Nothing here throws or aborts, and nothing calls back into the caller except the callbacks
 *     the caller registered (pressure, clock, group walks).
 *
 * The library is C++20 inside (libmemcg-c links Abseil and libstdc++ privately); this header is
 * plain C99.
 *
 * Threads: as the C++ API. Hierarchy, groups and protocols may be used from any thread; one
 * socket's operations need the owner's lock (one thread at a time per socket).
 */
#ifndef MEMCG_MEMCG_H
#define MEMCG_MEMCG_H

#include <stddef.h>
#include <stdint.h>

/* The version of this header; memcg_version() returns the library's as
 * MEMCG_VERSION_MAJOR * 10000 + MINOR * 100 + PATCH (the same value as MEMCG_VERSION_NUMBER). */
#ifndef MEMCG_VERSION_MAJOR
#define MEMCG_VERSION_MAJOR 0
#define MEMCG_VERSION_MINOR 1
#define MEMCG_VERSION_PATCH 0
#endif
#define MEMCG_VERSION_NUMBER \
  (MEMCG_VERSION_MAJOR * 10000 + MEMCG_VERSION_MINOR * 100 + MEMCG_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

typedef struct memcg_hierarchy memcg_hierarchy;
typedef struct memcg_group memcg_group;
typedef struct memcg_proto memcg_proto;
typedef struct memcg_sock memcg_sock;
typedef struct memcg_clock memcg_clock;
typedef struct memcg_listener memcg_listener;

/* The library's version (MEMCG_VERSION_NUMBER of the build it came from). */
int memcg_version(void);

/* ---- refusals ---- */

/* Who refused. */
typedef enum memcg_refusal_source {
  MEMCG_REFUSAL_NONE = 0,        /* no refusal on this thread yet */
  MEMCG_REFUSAL_GROUP_LIMIT = 1, /* a group's memory counter: memory.max (v1 limit_in_bytes) */
  MEMCG_REFUSAL_KMEM_LIMIT = 2,  /* a group's kmem sub-limit (memory.kmem.limit_in_bytes) */
  MEMCG_REFUSAL_TCP_LIMIT = 3,   /* a group's tcp sub-limit (memory.kmem.tcp.limit_in_bytes) */
  MEMCG_REFUSAL_PROTO_LIMIT = 4, /* the protocol's hard limit, tcp_mem[2] */
  MEMCG_REFUSAL_FAIRNESS = 5,    /* the protocol is under pressure (above tcp_mem[1]) and this
                                    socket holds more than its share of tcp_mem[2] */
  MEMCG_REFUSAL_RCVBUF = 6,      /* -ENOBUFS: the receive queue holds more than rcvbuf */
  MEMCG_REFUSAL_SNDBUF = 7,      /* -EAGAIN: the send queue holds sndbuf or more */
  MEMCG_REFUSAL_UNKNOWN = 8      /* a socket refusal whose limit no longer shows (a concurrent
                                    uncharge made room between the refusal and its diagnosis) */
} memcg_refusal_source;

typedef struct memcg_refusal {
  size_t size;          /* the caller sets sizeof(memcg_refusal) */
  int source;           /* memcg_refusal_source */
  int error;            /* what the call returned (-ENOMEM, -ENOBUFS, -EAGAIN) */
  memcg_group* group;   /* GROUP/KMEM/TCP_LIMIT: the group whose counter refused; else NULL */
  int64_t nr_pages;     /* pages asked (a socket: the pages its schedule needed) */
  int64_t limit;        /* the refusing limit in pages (counter max, tcp_mem[2]); bytes for
                           RCVBUF/SNDBUF; -1 when unknown */
  int64_t usage;        /* its usage right after the refusal (pages; bytes for RCVBUF/SNDBUF) */
} memcg_refusal;

/* The calling thread's latest refusal. -ENOENT (out untouched) if this thread has had none.
 * Group refusals (memcg_charge) are exact: the charge path reports the group and counter.
 * Socket refusals are diagnosed right after the refused call from the counters: the lowest
 * group (then counter: memory before tcp) without room for the pages, else tcp_mem[2], else
 * fairness under the protocol's pressure; MEMCG_REFUSAL_UNKNOWN if none shows any more. */
int memcg_last_refusal(memcg_refusal* out);

/* ---- the clock ---- */

/* A caller's clock: now_us is monotonic microseconds, safe from any thread; sleep_us blocks the
 * caller us microseconds of that clock (or advances it). */
typedef int64_t (*memcg_clock_now_fn)(void* user);
typedef void (*memcg_clock_sleep_fn)(int64_t us, void* user);

/* A virtual clock at 0 that moves only through memcg_clock_advance() (and sleeps). */
int memcg_clock_create_virtual(memcg_clock** out);
/* The caller's clock (both functions required). */
int memcg_clock_create(memcg_clock_now_fn now_us, memcg_clock_sleep_fn sleep_us, void* user,
                       memcg_clock** out);
/* Requires: no hierarchy or protocol uses it any more. */
void memcg_clock_destroy(memcg_clock* c);
/* -EINVAL for a caller's clock or us < 0. */
int memcg_clock_advance(memcg_clock* c, int64_t us);
int memcg_clock_now(const memcg_clock* c, int64_t* out_us);

/* ---- the hierarchy ---- */

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

typedef struct memcg_hierarchy_options {
  size_t size;                 /* sizeof(memcg_hierarchy_options) */
  int64_t charge_batch;        /* pages a stock pre-charges (default 64; >= 1) */
  int socket_accounting;       /* memcg_socket_accounting (default BOTH) */
  int recursive_protection;    /* memory_recursiveprot (default 0) */
  memcg_clock* clock;          /* NULL: the steady clock; must outlive the hierarchy */
} memcg_hierarchy_options;

/* Sets o to the defaults (o->size = sizeof *o). */
void memcg_hierarchy_options_init(memcg_hierarchy_options* o);
/* A new hierarchy (o NULL: the defaults). -ENOMEM; -EINVAL for an option out of range. */
int memcg_hierarchy_create(const memcg_hierarchy_options* o, memcg_hierarchy** out);
/* Frees the hierarchy. Requires: no socket of it is open, no listener of it is registered, and
 * no other call on it runs. */
void memcg_hierarchy_destroy(memcg_hierarchy* h);
/* The root group ("/"). */
int memcg_root(memcg_hierarchy* h, memcg_group** out);
/* The live group at path ("/" or "A/B"); -ENOENT if there is none. */
int memcg_find(memcg_hierarchy* h, const char* path, memcg_group** out);
/* Creates a group; *out (if not NULL) receives it. -ENOENT: no parent; -EEXIST: taken;
 * -EINVAL: a bad path (empty component, ".", "..", the root). */
int memcg_mkdir(memcg_hierarchy* h, const char* path, memcg_group** out);
/* Removes a group without children (-EBUSY otherwise); its charges and sockets become the
 * parent's. Its handle stays valid (it reads as dead) until the hierarchy is destroyed. */
int memcg_rmdir(memcg_hierarchy* h, const char* path);
/* Calls fn(g, user) for every live group of the subtree of from (NULL: the root), pre-order,
 * from first, children in creation order. fn returns 0 to go on; anything else stops the walk,
 * and the walk returns it. The walk is a snapshot taken first: fn may mkdir and rmdir (a group
 * removed meanwhile is still visited, dead; one made meanwhile is not). -EINVAL if from is
 * another hierarchy's group. */
typedef int (*memcg_group_fn)(memcg_group* g, void* user);
int memcg_for_each_group(memcg_hierarchy* h, memcg_group* from, memcg_group_fn fn, void* user);

/* Pages a stock pre-charges per counter walk (memcg's MEMCG_CHARGE_BATCH, 64). */
int memcg_hierarchy_set_charge_batch(memcg_hierarchy* h, int64_t nr_pages);
int memcg_hierarchy_charge_batch(const memcg_hierarchy* h, int64_t* out);
/* Where socket pages are charged: -EBUSY while any group holds socket pages, -EINVAL for a
 * value out of range. Requires: no socket charge runs concurrently. */
int memcg_hierarchy_set_socket_accounting(memcg_hierarchy* h, memcg_socket_accounting a);
int memcg_hierarchy_socket_accounting(const memcg_hierarchy* h, memcg_socket_accounting* out);
/* The clock of the hierarchy's pressure (vmpressure's socket hold, stall time, throttling);
 * NULL: the steady clock. Requires: c outlives the hierarchy or is replaced first. */
int memcg_hierarchy_set_clock(memcg_hierarchy* h, memcg_clock* c);

/* `echo value > group/file`: the control files of memcg/control.hpp by their cgroupfs names. */
int memcg_write(memcg_hierarchy* h, memcg_group* g, const char* file, const char* value);
/* `cat group/file` into buf (NUL-terminated, cut to len): "VALUE" for a one-value file,
 * "KEY VALUE\n" lines for a keyed one. *length (if not NULL) receives the length of the whole
 * text (a cut text is not an error: compare it with len). */
int memcg_read(memcg_hierarchy* h, memcg_group* g, const char* file, char* buf, size_t len,
               size_t* length);

/* ---- a group ---- */

/* The group's path ("/" or "A/B") into buf, as memcg_read. */
int memcg_group_path(const memcg_group* g, char* buf, size_t len, size_t* length);
/* The parent (NULL for the root). */
int memcg_group_parent(const memcg_group* g, memcg_group** out);
/* 1 once the group was removed (its charges then reach its live ancestor), else 0. */
int memcg_group_dead(const memcg_group* g, int* out);

/* Charges nr_pages of kind to g (the charge path, with reclaim unless gfp says otherwise).
 * -ENOMEM: refused (nothing charged; memcg_last_refusal() says which group and counter).
 * -EINVAL: nr_pages < 0, an unknown gfp bit, or MEMCG_KIND_SOCK (socket pages are charged and
 * given back through a memcg_sock). */
int memcg_charge(memcg_group* g, memcg_kind kind, int64_t nr_pages, unsigned gfp);
/* Gives back nr_pages of kind; -EINVAL (nothing changes) if nr_pages < 0, if g holds less of
 * it, or for MEMCG_KIND_SOCK. */
int memcg_uncharge(memcg_group* g, memcg_kind kind, int64_t nr_pages);

/* A group's three page counters. kmem and tcp are sub-limits: their pages are also in memory. */
typedef enum memcg_counter {
  MEMCG_COUNTER_MEMORY = 0,
  MEMCG_COUNTER_KMEM = 1,
  MEMCG_COUNTER_TCP = 2
} memcg_counter;

typedef struct memcg_counter_info {
  size_t size;        /* sizeof(memcg_counter_info) */
  int64_t usage;      /* pages */
  int64_t max;        /* pages (INT64_MAX / 4096 rounded down: "max") */
  int64_t failcnt;    /* refusals by this counter */
  int64_t watermark;  /* the highest usage (memory.peak / max_usage_in_bytes) */
  int64_t high;       /* memory.high (memory counter; max for the others) */
  int64_t low;        /* memory.low */
  int64_t min;        /* memory.min */
  int64_t soft_limit; /* v1 soft_limit_in_bytes */
} memcg_counter_info;

int memcg_group_counter(const memcg_group* g, memcg_counter c, memcg_counter_info* out);

/* memory.events (local = 0: the group and its descendants; 1: memory.events.local). */
typedef struct memcg_events {
  size_t size; /* sizeof(memcg_events) */
  int64_t low;
  int64_t high;
  int64_t max;
  int64_t oom;
  int64_t oom_kill;
} memcg_events;

int memcg_group_events(const memcg_group* g, int local, memcg_events* out);

/* memory.stat: pages of kind charged to g alone (subtree = 0) or to its whole subtree (1).
 * Exact: every thread's unflushed statistics are folded first (a slow call). */
int memcg_group_stat(memcg_group* g, memcg_kind kind, int subtree, int64_t* out_pages);

/* ---- group pressure ---- */

typedef enum memcg_pressure_level {
  MEMCG_PRESSURE_NONE = 0,
  MEMCG_PRESSURE_LOW = 1,
  MEMCG_PRESSURE_MEDIUM = 2,
  MEMCG_PRESSURE_CRITICAL = 3
} memcg_pressure_level;

/* cgroup.event_control's modes: NO_PASSTHROUGH (default: the nearest listening ancestor of the
 * group whose reclaim computed the level), HIERARCHY (every listening ancestor), LOCAL (only
 * levels computed in the listener's own group). */
typedef enum memcg_pressure_mode {
  MEMCG_PRESSURE_MODE_NO_PASSTHROUGH = 0,
  MEMCG_PRESSURE_MODE_HIERARCHY = 1,
  MEMCG_PRESSURE_MODE_LOCAL = 2
} memcg_pressure_mode;

/* Called with the group it was registered on (where), the group whose reclaim computed the
 * level (origin), and the level, on the thread whose reclaim produced it, with no library lock
 * held. It may read and write control files, and destroy other listeners; not its own. It may
 * not charge the group whose pressure it handles. */
typedef void (*memcg_group_pressure_fn)(memcg_group* where, memcg_group* origin,
                                        memcg_pressure_level level, void* user);

/* Registers fn for every vmpressure window of g at level or above (NONE counts as LOW). */
int memcg_group_pressure_listen(memcg_group* g, memcg_pressure_level level,
                                memcg_pressure_mode mode, memcg_group_pressure_fn fn, void* user,
                                memcg_listener** out);
/* Unregisters (returns once no other thread is calling it) and frees the listener. Required
 * before the hierarchy is destroyed. */
void memcg_listener_destroy(memcg_listener* l);
/* The latest level computed for g. */
int memcg_group_pressure_level(const memcg_group* g, memcg_pressure_level* out);
/* Computes a level for g as a finished vmpressure window would (medium and critical hold socket
 * pressure for a second of the hierarchy's clock) and delivers it: for stacks that model
 * reclaim of their own. */
int memcg_group_pressure_emit(memcg_group* g, memcg_pressure_level level);
/* 1 if sockets charged to g are under pressure (the vmpressure hold, the v1 tcp flag, kmem over
 * its soft limit, in g or an ancestor), else 0. */
int memcg_group_socket_pressure(const memcg_group* g, int* out);

/* ---- a protocol ---- */

/* Called when the protocol enters (entering = 1, duration_ms = 0) or leaves (entering = 0,
 * duration_ms = the episode's length) memory pressure, on the thread whose allocation changed
 * it, with no library lock held. */
typedef void (*memcg_pressure_fn)(memcg_proto* p, int entering, int64_t duration_ms, void* user);

typedef struct memcg_proto_options {
  size_t size;                /* sizeof(memcg_proto_options) */
  int64_t pcpu_reserve_pages; /* a thread's share of memory_allocated before it folds (256 =
                                 1 MiB, the kernel's; reads are exact anyway); >= 0 */
  memcg_clock* clock;         /* of pressure episodes; NULL: the steady clock; must outlive p */
} memcg_proto_options;

void memcg_proto_options_init(memcg_proto_options* o);
/* A protocol with the kernel's defaults (tcp_mem 188388 251184 376776 pages, tcp_rmem
 * 4096 131072 6291456, tcp_wmem 4096 16384 4194304). o NULL: the defaults. */
int memcg_proto_create(const memcg_proto_options* o, memcg_proto** out);
/* Requires: every socket of the protocol was destroyed or finished. */
void memcg_proto_destroy(memcg_proto* p);
/* -EINVAL unless 0 <= min <= pressure <= max (pages). */
int memcg_proto_set_tcp_mem(memcg_proto* p, int64_t min, int64_t pressure, int64_t max);
/* -EINVAL unless 0 <= min <= def <= max (bytes). */
int memcg_proto_set_tcp_rmem(memcg_proto* p, int64_t min, int64_t def, int64_t max);
int memcg_proto_set_tcp_wmem(memcg_proto* p, int64_t min, int64_t def, int64_t max);
/* out[0..2]: min, pressure, max (pages) / min, default, max (bytes). */
int memcg_proto_tcp_mem(const memcg_proto* p, int64_t out[3]);
int memcg_proto_tcp_rmem(const memcg_proto* p, int64_t out[3]);
int memcg_proto_tcp_wmem(const memcg_proto* p, int64_t out[3]);

typedef struct memcg_proto_stats {
  size_t size;               /* sizeof(memcg_proto_stats) */
  int64_t memory_allocated;  /* pages allocated by every socket (exact) */
  int64_t sockets_allocated; /* open sockets */
  int64_t pressures;         /* pressure episodes entered (TCPMemoryPressures) */
  int64_t pressure_ms;       /* milliseconds in finished episodes (TCPMemoryPressuresChrono) */
  int64_t exceeded;          /* allocations refused (sock_exceed_buf_limit) */
  int under_pressure;        /* 1 while under pressure */
} memcg_proto_stats;

int memcg_proto_stats_get(const memcg_proto* p, memcg_proto_stats* out);
/* Sets (fn = NULL: removes) the pressure callback. */
int memcg_proto_set_pressure_callback(memcg_proto* p, memcg_pressure_fn fn, void* user);

/* ---- a socket ---- */

/* A socket's state in the caller's storage (the stack's PCB): at least MEMCG_SOCK_SIZE bytes
 * aligned to MEMCG_SOCK_ALIGN (memcg_sock_storage has both). */
#define MEMCG_SOCK_SIZE 64
#define MEMCG_SOCK_ALIGN 8
typedef union memcg_sock_storage {
  unsigned char bytes[MEMCG_SOCK_SIZE];
  int64_t align_; /* MEMCG_SOCK_ALIGN */
  void* align_p_;
} memcg_sock_storage;

typedef struct memcg_sock_info {
  size_t size;           /* sizeof(memcg_sock_info) */
  int64_t forward_alloc; /* sk_forward_alloc: bytes charged but unused */
  int64_t rmem_alloc;    /* sk_rmem_alloc: bytes received, not yet consumed */
  int64_t wmem_queued;   /* sk_wmem_queued: bytes queued, not yet acknowledged */
  int64_t stack_charged; /* bytes taken by memcg_sock_mem_charge, not given back */
  int64_t rcvbuf;
  int64_t sndbuf;
  int under_pressure; /* the socket's group (or an ancestor) or its protocol */
  int closed;
  int rcvbuf_locked; /* set by memcg_sock_set_rcvbuf (SOCK_RCVBUF_LOCK) */
  int sndbuf_locked; /* set by memcg_sock_set_sndbuf: never moderated */
} memcg_sock_info;

typedef struct memcg_window_advice {
  size_t size;        /* sizeof(memcg_window_advice) */
  int64_t rcv_window; /* bytes of receive window it may advertise now */
  int64_t snd_space;  /* bytes it may queue for sending now */
  int under_pressure;
} memcg_window_advice;

/* A socket of protocol p owned by group g (NULL: charged to the protocol only) for its
 * lifetime, allocated; *out receives it. -ENOMEM when out of memory. */
int memcg_sock_open(memcg_proto* p, memcg_group* g, memcg_sock** out);
/* Gives back everything and frees a socket of memcg_sock_open (a closed one is only freed). */
void memcg_sock_destroy(memcg_sock* s);
/* The same socket built in storage (size bytes, MEMCG_SOCK_ALIGN-aligned; -EINVAL if smaller
 * than MEMCG_SOCK_SIZE or misaligned). Allocates nothing; *out points into storage. */
int memcg_sock_init(void* storage, size_t size, memcg_proto* p, memcg_group* g, memcg_sock** out);
/* Gives back everything and ends a socket of memcg_sock_init; the storage is the caller's again. */
void memcg_sock_fini(memcg_sock* s);

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
/* The stack's own setting (receive-buffer autotuning, a clamp): bytes as they are, clamped to
 * [0, INT32_MAX] (rcvbuf) or [4608, INT32_MAX] (sndbuf), not locked (sndbuf stays moderated
 * under pressure). -EBADF if closed. */
int memcg_sock_tune_rcvbuf(memcg_sock* s, int64_t bytes);
int memcg_sock_tune_sndbuf(memcg_sock* s, int64_t bytes);
/* The kernel's primitives, for stacks that keep rmem/wmem themselves: sk_rmem_schedule and
 * sk_wmem_schedule (0: the forward allocation covers size bytes; -ENOMEM: refused),
 * sk_forced_mem_schedule (past every limit: the segment into an empty receive queue),
 * sk_mem_charge (takes bytes of the forward allocation; -EINVAL if fewer are scheduled) and
 * sk_mem_uncharge with sk_mem_reclaim (gives back bytes taken so; -EINVAL, nothing changes, if
 * fewer were). Close gives back whatever is still taken. */
int memcg_sock_rmem_schedule(memcg_sock* s, int64_t size, int forced);
int memcg_sock_wmem_schedule(memcg_sock* s, int64_t size);
int memcg_sock_forced_mem_schedule(memcg_sock* s, int64_t size);
int memcg_sock_mem_charge(memcg_sock* s, int64_t size);
int memcg_sock_mem_uncharge(memcg_sock* s, int64_t size);
int memcg_sock_get_info(const memcg_sock* s, memcg_sock_info* out);
/* Window advice for a segment size of mss bytes (1..MEMCG_SOCK_MAX_SEGMENT): memory bytes, as
 * memcg_sock_window_advice with overhead 0. */
int memcg_sock_advice(const memcg_sock* s, int64_t mss, memcg_window_advice* out);
/* The group the socket charges now (its creator, or the ancestor that adopted it; NULL for a
 * socket without a group). */
int memcg_sock_group(const memcg_sock* s, memcg_group** out);

/* ---- group-level window promises ---- */

/* The largest segment size and per-segment overhead the calls below accept (bytes). */
#define MEMCG_SOCK_MAX_SEGMENT ((int64_t)1 << 30)

/* Window advice in payload bytes for segments of up to mss payload bytes that each cost
 * overhead bytes more memory (headers, the buffer's bookkeeping: what the stack charges for a
 * full segment, less mss). The room of the socket's group and of every ancestor is less what
 * the other sockets of each level's subtree promised (memcg_sock_promise_window).
 * memcg_sock_advice(s, mss, out) is this call with overhead 0. -EINVAL unless
 * 1 <= mss <= MEMCG_SOCK_MAX_SEGMENT and 0 <= overhead <= MEMCG_SOCK_MAX_SEGMENT. */
int memcg_sock_window_advice(const memcg_sock* s, int64_t mss, int64_t overhead,
                             memcg_window_advice* out);
/* The advice, held as a promise: the receive window returned (its memory, at most INT32_MAX
 * bytes) is in the promises of the socket's group and every ancestor, replacing the socket's
 * previous promise, until segments arrive (each takes its size from it), the next call, a
 * release or the close. Sockets of one group advertising this way never promise together more
 * than the group's room (one thread at a time). When the group's room (or an ancestor's) cut
 * the window, that group is armed: its room callback runs once when room appears. A socket
 * without a group promises nothing. -EBADF after close; -EINVAL as memcg_sock_window_advice
 * (nothing changes). */
int memcg_sock_promise_window(memcg_sock* s, int64_t mss, int64_t overhead,
                              memcg_window_advice* out);
/* Gives the socket's promise back (the stack closed its window). -EBADF after close. */
int memcg_sock_release_promise(memcg_sock* s);
/* Bytes (memory) the socket promised and has not received. */
int memcg_sock_promised(const memcg_sock* s, int64_t* out);

/* Called as fn(g, user) with the group it was set on, once each time room appears for g's
 * subtree after a socket below g was held back by g's own room, on the thread whose socket
 * operation (or memcg_group_room_check, memcg_write, memcg_uncharge) gave the room back, with
 * no library lock held. Edge-triggered: one call per held-back episode, however many sockets
 * were held back. It may promise windows of other sockets, not of the socket whose operation
 * runs (a stack defers its window updates to the end of that operation). */
typedef void (*memcg_room_fn)(memcg_group* g, void* user);
/* Sets (fn NULL: removes) g's room callback. user must stay valid until no socket operation in
 * g's subtree runs after the callback was replaced. The library keeps a small record per
 * distinct (g, fn, user) set, freed with the hierarchy. -ENOMEM (nothing changes). */
int memcg_group_set_room_callback(memcg_group* g, memcg_room_fn fn, void* user);
/* Room may have appeared for g's sockets (a change the socket layer does not see): runs the
 * room callbacks of g and of every armed ancestor that now has room. memcg_write and
 * memcg_uncharge call it for their group. */
int memcg_group_room_check(memcg_group* g);
/* Bytes (memory) promised by the sockets of g's subtree, not yet received. */
int memcg_group_promised(const memcg_group* g, int64_t* out);
/* 1 while g owes a room callback (a socket below was held back, no room since), else 0. */
int memcg_group_room_armed(const memcg_group* g, int* out);

/* Payload bytes that `bytes` of memory hold in segments of up to mss payload bytes costing
 * overhead bytes more each (whole segments, then what a last one holds beyond its overhead),
 * and the inverse: the memory `payload` bytes take (saturating at INT64_MAX). -EINVAL unless
 * 1 <= mss <= MEMCG_SOCK_MAX_SEGMENT and 0 <= overhead <= MEMCG_SOCK_MAX_SEGMENT. */
int memcg_payload_of(int64_t bytes, int64_t mss, int64_t overhead, int64_t* out);
int memcg_truesize_of(int64_t payload, int64_t mss, int64_t overhead, int64_t* out);

/* Bytes of forward allocation each socket keeps when it gives memory back, less what it holds
 * queued (SO_RESERVE_MEM's rule; 0, the default: every whole page goes back at once). A socket
 * that empties its queue after each segment then touches no shared counter per segment.
 * -EINVAL (nothing changes) unless 0 <= bytes <= INT32_MAX. */
int memcg_proto_set_forward_keep(memcg_proto* p, int64_t bytes);
int memcg_proto_forward_keep(const memcg_proto* p, int64_t* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MEMCG_MEMCG_H */
