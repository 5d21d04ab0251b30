// src/memcg_c.cpp: libmemcg-c, the C API of include/memcg/memcg.h over the header-only C++
// library. Only memcg_* symbols leave the shared library (cmake/memcg-c.map).
//
// Every entry point is noexcept in effect: allocations are nothrow or caught, and a caught
// exception becomes -ENOMEM. Refusals are recorded per thread for memcg_last_refusal().

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "memcg/clock.hpp"
#include "memcg/config.hpp"
#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/memcg.h"
#include "memcg/pressure.hpp"
#include "memcg/sockmem.hpp"

static_assert(MEMCG_VERSION_NUMBER ==
              MEMCG_VERSION_MAJOR * 10000 + MEMCG_VERSION_MINOR * 100 + MEMCG_VERSION_PATCH);

// ---- the handles ----

struct capi_clock {
  // A caller's clock: the C functions behind clock_source.
  struct callback final : memcg::clock_source {
    std::int64_t now_us() const noexcept override { return now(user); }
    void sleep_us(std::int64_t us) override { sleep(us, user); }
    memcg_clock_now_fn now = nullptr;
    memcg_clock_sleep_fn sleep = nullptr;
    void* user = nullptr;
  };
  memcg::virtual_clock virt;
  callback cb;
  bool is_virtual = true;
  memcg::clock_source* source() noexcept {
    return is_virtual ? static_cast<memcg::clock_source*>(&virt) : &cb;
  }
  const memcg::clock_source* source() const noexcept {
    return is_virtual ? static_cast<const memcg::clock_source*>(&virt) : &cb;
  }
};

struct capi_hierarchy {
  explicit capi_hierarchy(const memcg::hierarchy::options& o) : h(o) {}
  memcg::hierarchy h;
};

struct capi_proto final : memcg::proto_pressure_listener {
  explicit capi_proto(const memcg::proto_memory::options& o) : p(o) {}
  void enter_memory_pressure(memcg::proto_memory&) noexcept override { call(1, 0); }
  void leave_memory_pressure(memcg::proto_memory&, std::int64_t d) noexcept override { call(0, d); }
  void call(int entering, std::int64_t d) noexcept {
    // acquire: pairs with the release in memcg_proto_set_pressure_callback(): `user` is set.
    if (memcg_pressure_fn f = fn.load(std::memory_order_acquire))
      f(reinterpret_cast<memcg_proto*>(this), entering, d, user.load(std::memory_order_relaxed));
  }
  memcg::proto_memory p;
  std::atomic<memcg_pressure_fn> fn{nullptr};
  std::atomic<void*> user{nullptr};
};

struct capi_sock {
  capi_sock(memcg::proto_memory& p, memcg::group* g) noexcept : s(p, g) {}
  memcg::sock_memory s;
};
// The socket's state fits the caller's MEMCG_SOCK_SIZE bytes (memcg.h: sockets in the
// caller's storage).
static_assert(sizeof(capi_sock) <= MEMCG_SOCK_SIZE, "memcg_sock outgrew MEMCG_SOCK_SIZE (ABI)");
static_assert(alignof(capi_sock) <= MEMCG_SOCK_ALIGN,
              "memcg_sock needs more than MEMCG_SOCK_ALIGN");
static_assert(sizeof(memcg_sock_storage) == MEMCG_SOCK_SIZE &&
              alignof(memcg_sock_storage) >= MEMCG_SOCK_ALIGN);

struct capi_listener final : memcg::basic_pressure_listener<memcg::sync::atomic> {
  capi_listener(memcg::hierarchy& hh, memcg_group_pressure_fn f, void* u) noexcept
      : h(&hh), fn(f), user(u) {}
  void on_pressure(memcg::group& where, memcg::group& origin,
                   memcg::pressure_level level) override {
    fn(reinterpret_cast<memcg_group*>(&where), reinterpret_cast<memcg_group*>(&origin),
       static_cast<memcg_pressure_level>(level), user);
  }
  memcg::hierarchy* h;
  memcg_group_pressure_fn fn;
  void* user;
};

// The handles of memcg.h are these objects under their opaque C names (never defined, so that
// the library's ABI dump holds the public types only).
template <class H>
struct impl_of;
template <>
struct impl_of<memcg_clock> {
  using type = capi_clock;
};
template <>
struct impl_of<memcg_hierarchy> {
  using type = capi_hierarchy;
};
template <>
struct impl_of<memcg_proto> {
  using type = capi_proto;
};
template <>
struct impl_of<memcg_sock> {
  using type = capi_sock;
};
template <>
struct impl_of<memcg_listener> {
  using type = capi_listener;
};
// in() on the objects themselves (inside the entry points that made them): no cast.
template <>
struct impl_of<capi_clock> {
  using type = capi_clock;
};
template <>
struct impl_of<capi_hierarchy> {
  using type = capi_hierarchy;
};
template <>
struct impl_of<capi_proto> {
  using type = capi_proto;
};
template <>
struct impl_of<capi_sock> {
  using type = capi_sock;
};
template <>
struct impl_of<capi_listener> {
  using type = capi_listener;
};
template <class H>
auto* in(H* h) noexcept {
  using T = typename impl_of<std::remove_const_t<H>>::type;
  if constexpr (std::is_const_v<H>)
    return reinterpret_cast<const T*>(h);
  else
    return reinterpret_cast<T*>(h);
}
template <class H, class T>
H* out_handle(T* t) noexcept {
  return reinterpret_cast<H*>(t);
}

namespace {

static_assert(static_cast<int>(memcg::sock_accounting::both) == MEMCG_SOCKET_ACCOUNTING_BOTH &&
              static_cast<int>(memcg::sock_accounting::v1) == MEMCG_SOCKET_ACCOUNTING_V1 &&
              static_cast<int>(memcg::sock_accounting::v2) == MEMCG_SOCKET_ACCOUNTING_V2);
// memcg.h's copies of the C++ enumerations, value by value: a kind, flag or level added or
// moved on one side and not the other does not compile.
static_assert(static_cast<int>(memcg::kind::anon) == MEMCG_KIND_ANON &&
              static_cast<int>(memcg::kind::file) == MEMCG_KIND_FILE &&
              static_cast<int>(memcg::kind::kmem) == MEMCG_KIND_KMEM &&
              static_cast<int>(memcg::kind::pagetables) == MEMCG_KIND_PAGETABLES &&
              static_cast<int>(memcg::kind::slab_reclaimable) == MEMCG_KIND_SLAB_RECLAIMABLE &&
              static_cast<int>(memcg::kind::slab_unreclaimable) == MEMCG_KIND_SLAB_UNRECLAIMABLE &&
              static_cast<int>(memcg::kind::sock) == MEMCG_KIND_SOCK && memcg::nr_kinds == 7);
static_assert(static_cast<int>(memcg::counter_id::memory) == MEMCG_COUNTER_MEMORY &&
              static_cast<int>(memcg::counter_id::kmem) == MEMCG_COUNTER_KMEM &&
              static_cast<int>(memcg::counter_id::tcp) == MEMCG_COUNTER_TCP);
static_assert(static_cast<int>(memcg::pressure_level::none) == MEMCG_PRESSURE_NONE &&
              static_cast<int>(memcg::pressure_level::low) == MEMCG_PRESSURE_LOW &&
              static_cast<int>(memcg::pressure_level::medium) == MEMCG_PRESSURE_MEDIUM &&
              static_cast<int>(memcg::pressure_level::critical) == MEMCG_PRESSURE_CRITICAL);
static_assert(static_cast<int>(memcg::pressure_mode::no_passthrough) ==
                  MEMCG_PRESSURE_MODE_NO_PASSTHROUGH &&
              static_cast<int>(memcg::pressure_mode::hierarchy) == MEMCG_PRESSURE_MODE_HIERARCHY &&
              static_cast<int>(memcg::pressure_mode::local) == MEMCG_PRESSURE_MODE_LOCAL);
static_assert(static_cast<int>(memcg::event::oom_kill) == 4 && memcg::nr_events == 5);
static_assert(static_cast<int>(memcg::gfp::none) == MEMCG_GFP_KERNEL &&
              static_cast<int>(memcg::gfp::nofail) == MEMCG_GFP_NOFAIL &&
              static_cast<int>(memcg::gfp::high) == MEMCG_GFP_HIGH &&
              static_cast<int>(memcg::gfp::noreclaim) == MEMCG_GFP_NORECLAIM &&
              static_cast<int>(memcg::gfp::noretry) == MEMCG_GFP_NORETRY &&
              static_cast<int>(memcg::gfp::retry_mayfail) == MEMCG_GFP_RETRY_MAYFAIL);
static_assert(MEMCG_PAGE_SIZE == memcg::page_size);

int err(std::errc e) noexcept { return e == std::errc{} ? 0 : -static_cast<int>(e); }
memcg::group* grp(memcg_group* g) noexcept { return reinterpret_cast<memcg::group*>(g); }
memcg::group* grp(const memcg_group* g) noexcept {
  // Handles are non-const groups; const in the C signature only says the call reads.
  return reinterpret_cast<memcg::group*>(const_cast<memcg_group*>(g));
}
memcg_group* handle(memcg::group* g) noexcept { return reinterpret_cast<memcg_group*>(g); }
bool valid_kind(memcg_kind k) noexcept {
  return static_cast<int>(k) >= 0 && static_cast<int>(k) < memcg::nr_kinds;
}
// The kinds a group is charged directly: not sock, whose pages belong to sockets (a group
// cannot tell its own sock pages from its sockets', so an uncharge could take theirs).
bool group_kind(memcg_kind k) noexcept { return valid_kind(k) && k != MEMCG_KIND_SOCK; }

// An output struct: the caller's size says how much of it exists (see memcg.h).
template <class T>
int fill(T* out, T v) noexcept {
  if (!out || out->size < sizeof(T)) return -EINVAL;
  const std::size_t n = out->size;
  v.size = n;
  std::memcpy(static_cast<void*>(out), &v, sizeof(T));
  if (n > sizeof(T))
    std::memset(reinterpret_cast<unsigned char*>(out) + sizeof(T), 0, n - sizeof(T));
  return 0;
}
// An input struct: fields past the caller's size keep the defaults in *dst; bytes past ours
// must be zero (a caller built against a newer header asking for something we lack).
template <class T>
int read_options(const T* in, T* dst) noexcept {
  if (!in) return 0;
  const std::size_t n = in->size;
  if (n < sizeof(std::size_t)) return -EINVAL;
  const auto* bytes = reinterpret_cast<const unsigned char*>(in);
  for (std::size_t i = sizeof(T); i < n; ++i)
    if (bytes[i]) return -E2BIG;
  std::memcpy(static_cast<void*>(dst), in, std::min(n, sizeof(T)));
  dst->size = sizeof(T);
  return 0;
}
int text_out(const std::string& text, char* buf, std::size_t len, std::size_t* length) noexcept {
  if (len) {
    std::size_t n = std::min(text.size(), len - 1);
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
  }
  if (length) *length = text.size();
  return 0;
}

// ---- refusals ----

// The calling thread's latest refusal; written on refusal paths only.
thread_local memcg_refusal last_refusal{};

int refuse(int error, int source, memcg::group* g, std::int64_t nr_pages, std::int64_t limit,
           std::int64_t usage) noexcept {
  memcg_refusal& r = last_refusal;
  r.size = sizeof r;
  r.source = source;
  r.error = error;
  r.group = handle(g);
  r.nr_pages = nr_pages;
  r.limit = limit;
  r.usage = usage;
  return error;
}

const memcg::counter& counter_of(const memcg::group& g, memcg::counter_id c) noexcept {
  return c == memcg::counter_id::memory ? g.memory : c == memcg::counter_id::kmem ? g.kmem : g.tcp;
}

// A group charge's refusal: the charge path names the group and its counter.
int refuse_charge(const memcg::hierarchy::status& s, std::int64_t nr_pages) noexcept {
  if (s.error != std::errc::not_enough_memory || !s.over_limit)
    return refuse(err(s.error), MEMCG_REFUSAL_UNKNOWN, nullptr, nr_pages, -1, -1);
  const memcg::counter& c = counter_of(*s.over_limit, s.counter);
  const int source = s.counter == memcg::counter_id::memory ? MEMCG_REFUSAL_GROUP_LIMIT
                     : s.counter == memcg::counter_id::kmem ? MEMCG_REFUSAL_KMEM_LIMIT
                                                            : MEMCG_REFUSAL_TCP_LIMIT;
  return refuse(-ENOMEM, source, s.over_limit, nr_pages, c.max(), c.usage());
}

// A socket schedule of `size` bytes was refused (its state is as before the call). sockmem.hpp
// does not report which step of __sk_mem_raise_allocated() refused, so the steps are replayed
// on the counters as they are now, in the kernel's order: (A) the group (memory counters from
// the socket's group up, then tcp counters, as the socket accounting charges them), (D) the
// protocol's hard limit, (F) fairness under the protocol's pressure.
int refuse_sock(const memcg::sock_memory& s, std::int64_t size) noexcept {
  const std::int64_t delta = std::max<std::int64_t>(size - s.forward_alloc(), 0);
  const std::int64_t amt = memcg::sk_mem_pages(delta);
  if (memcg::group* g = s.memcg()) {
    const auto sa = g->hierarchy().socket_accounting();
    if (sa != memcg::sock_accounting::v1)
      for (memcg::group* m = g; m; m = m->parent())
        if (m->memory.max() - m->memory.usage() < amt)
          return refuse(-ENOMEM, MEMCG_REFUSAL_GROUP_LIMIT, m, amt, m->memory.max(),
                        m->memory.usage());
    if (sa != memcg::sock_accounting::v2)
      for (memcg::group* m = g; m; m = m->parent())
        if (m->tcp.max() - m->tcp.usage() < amt)
          return refuse(-ENOMEM, MEMCG_REFUSAL_TCP_LIMIT, m, amt, m->tcp.max(), m->tcp.usage());
  }
  const memcg::proto_memory& p = s.protocol();
  const std::int64_t max = p.sysctl_mem().max, allocated = p.memory_allocated();
  if (allocated + amt > max)
    return refuse(-ENOMEM, MEMCG_REFUSAL_PROTO_LIMIT, nullptr, amt, max, allocated);
  if (p.under_memory_pressure())
    return refuse(-ENOMEM, MEMCG_REFUSAL_FAIRNESS, nullptr, amt, max,
                  p.sockets_allocated() *
                      memcg::sk_mem_pages(s.wmem_queued() + s.rmem_alloc() + s.forward_alloc() +
                                          (amt << memcg::page_shift)));
  return refuse(-ENOMEM, MEMCG_REFUSAL_UNKNOWN, nullptr, amt, -1, -1);
}

// ---- room callbacks ----

// A C room callback behind the C++ one: the C++ group holds one (fn, user) pair, so user points
// at this record (immutable once published) and room_trampoline calls the C function with the
// group's handle. A replaced record may still be read by a firing on another thread, so records
// live until their hierarchy is destroyed; one per distinct (group, fn, user) set.
struct room_rec {
  const memcg::hierarchy* h;
  memcg::group* g;
  memcg_room_fn fn;
  void* user;
};
std::mutex room_recs_lock;  // the control path only (set, hierarchy destroy)
std::vector<std::unique_ptr<room_rec>> room_recs;

void room_trampoline(void* user, memcg::group* g) noexcept {
  const auto* r = static_cast<const room_rec*>(user);
  r->fn(handle(g), r->user);
}

void drop_room_recs(const memcg::hierarchy& h) noexcept {
  std::lock_guard<std::mutex> l(room_recs_lock);
  std::erase_if(room_recs, [&](const std::unique_ptr<room_rec>& r) { return r->h == &h; });
}

// The promise calls' bounds (sockmem.hpp: advice and promise_window require them).
bool valid_segment(std::int64_t mss, std::int64_t overhead) noexcept {
  static_assert(MEMCG_SOCK_MAX_SEGMENT == memcg::sk_max_segment);
  return mss >= 1 && mss <= memcg::sk_max_segment && overhead >= 0 &&
         overhead <= memcg::sk_max_segment;
}

int advice_out(const memcg::window_advice& a, memcg_window_advice* out) noexcept {
  memcg_window_advice w{};
  w.rcv_window = a.rcv_window;
  w.snd_space = a.snd_space;
  w.under_pressure = a.under_pressure ? 1 : 0;
  return fill(out, w);
}

}  // namespace

extern "C" {

int memcg_version(void) { return MEMCG_VERSION_NUMBER; }

int memcg_last_refusal(memcg_refusal* out) {
  if (!out || out->size < sizeof(memcg_refusal)) return -EINVAL;
  if (last_refusal.source == MEMCG_REFUSAL_NONE) return -ENOENT;
  return fill(out, last_refusal);
}

// ---- the clock ----

int memcg_clock_create_virtual(memcg_clock** out) {
  if (!out) return -EINVAL;
  auto* c = new (std::nothrow) capi_clock();
  if (!c) return -ENOMEM;
  *out = out_handle<memcg_clock>(c);
  return 0;
}
int memcg_clock_create(memcg_clock_now_fn now_us, memcg_clock_sleep_fn sleep_us, void* user,
                       memcg_clock** out) {
  if (!now_us || !sleep_us || !out) return -EINVAL;
  auto* c = new (std::nothrow) capi_clock();
  if (!c) return -ENOMEM;
  in(c)->is_virtual = false;
  in(c)->cb.now = now_us;
  in(c)->cb.sleep = sleep_us;
  in(c)->cb.user = user;
  *out = out_handle<memcg_clock>(c);
  return 0;
}
void memcg_clock_destroy(memcg_clock* c) { delete in(c); }
int memcg_clock_advance(memcg_clock* c, int64_t us) {
  if (!c || !in(c)->is_virtual || us < 0) return -EINVAL;
  in(c)->virt.advance(us);
  return 0;
}
int memcg_clock_now(const memcg_clock* c, int64_t* out_us) {
  if (!c || !out_us) return -EINVAL;
  *out_us = in(c)->source()->now_us();
  return 0;
}

// ---- the hierarchy ----

void memcg_hierarchy_options_init(memcg_hierarchy_options* o) {
  if (!o) return;
  *o = memcg_hierarchy_options{};
  o->size = sizeof *o;
  o->charge_batch = memcg::default_charge_batch;
  o->socket_accounting = MEMCG_SOCKET_ACCOUNTING_BOTH;
}
int memcg_hierarchy_create(const memcg_hierarchy_options* o, memcg_hierarchy** out) {
  if (!out) return -EINVAL;
  memcg_hierarchy_options opt;
  memcg_hierarchy_options_init(&opt);
  if (int e = read_options(o, &opt)) return e;
  if (opt.charge_batch < 1 || opt.charge_batch > 1024) return -EINVAL;
  if (opt.socket_accounting < MEMCG_SOCKET_ACCOUNTING_BOTH ||
      opt.socket_accounting > MEMCG_SOCKET_ACCOUNTING_V2)
    return -EINVAL;
  try {
    memcg::hierarchy::options ho;
    ho.charge_batch = opt.charge_batch;
    ho.recursive_protection = opt.recursive_protection != 0;
    ho.socket_accounting = static_cast<memcg::sock_accounting>(opt.socket_accounting);
    auto* h = new capi_hierarchy(ho);
    if (opt.clock) in(h)->h.set_clock(in(opt.clock)->source());
    *out = out_handle<memcg_hierarchy>(h);
    return 0;
  } catch (...) {
    return -ENOMEM;
  }
}
void memcg_hierarchy_destroy(memcg_hierarchy* h) {
  if (!h) return;
  drop_room_recs(in(h)->h);
  delete in(h);
}
int memcg_root(memcg_hierarchy* h, memcg_group** out) {
  if (!h || !out) return -EINVAL;
  *out = handle(&in(h)->h.root());
  return 0;
}
int memcg_find(memcg_hierarchy* h, const char* path, memcg_group** out) {
  if (!h || !path || !out) return -EINVAL;
  try {
    memcg::group* g = in(h)->h.find(path);
    if (!g) return -ENOENT;
    *out = handle(g);
    return 0;
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_mkdir(memcg_hierarchy* h, const char* path, memcg_group** out) {
  if (!h || !path) return -EINVAL;
  try {
    auto r = in(h)->h.mkdir(path);
    if (!r) return err(r.error);
    if (out) *out = handle(r.g);
    return 0;
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_rmdir(memcg_hierarchy* h, const char* path) {
  if (!h || !path) return -EINVAL;
  try {
    return err(in(h)->h.rmdir(path));
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_for_each_group(memcg_hierarchy* h, memcg_group* from, memcg_group_fn fn, void* user) {
  if (!h || !fn) return -EINVAL;
  memcg::group* r = from ? grp(from) : &in(h)->h.root();
  if (&r->hierarchy() != &in(h)->h) return -EINVAL;
  std::vector<memcg::group*> all;
  try {
    all = in(h)->h.preorder(*r->live());
  } catch (...) {
    return -ENOMEM;
  }
  for (memcg::group* g : all)
    if (int rc = fn(handle(g), user)) return rc;
  return 0;
}
int memcg_hierarchy_set_charge_batch(memcg_hierarchy* h, int64_t nr_pages) {
  if (!h) return -EINVAL;
  try {
    return err(in(h)->h.set_charge_batch(nr_pages));
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_hierarchy_charge_batch(const memcg_hierarchy* h, int64_t* out) {
  if (!h || !out) return -EINVAL;
  *out = in(h)->h.charge_batch();
  return 0;
}
int memcg_hierarchy_set_socket_accounting(memcg_hierarchy* h, memcg_socket_accounting a) {
  if (!h) return -EINVAL;
  const int v = static_cast<int>(a);
  if (v < MEMCG_SOCKET_ACCOUNTING_BOTH || v > MEMCG_SOCKET_ACCOUNTING_V2) return -EINVAL;
  try {
    return err(in(h)->h.set_socket_accounting(static_cast<memcg::sock_accounting>(v)));
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_hierarchy_socket_accounting(const memcg_hierarchy* h, memcg_socket_accounting* out) {
  if (!h || !out) return -EINVAL;
  *out = static_cast<memcg_socket_accounting>(in(h)->h.socket_accounting());
  return 0;
}
int memcg_hierarchy_set_clock(memcg_hierarchy* h, memcg_clock* c) {
  if (!h) return -EINVAL;
  in(h)->h.set_clock(c ? in(c)->source() : nullptr);
  return 0;
}
int memcg_write(memcg_hierarchy* h, memcg_group* g, const char* file, const char* value) {
  if (!h || !g || !file || !value || &grp(g)->hierarchy() != &in(h)->h) return -EINVAL;
  try {
    const int rc = err(memcg::write_control(in(h)->h, *grp(g), file, value));
    if (rc == 0) memcg::sock_room_check(*grp(g));  // a limit raised: held-back windows
    return rc;
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_read(memcg_hierarchy* h, memcg_group* g, const char* file, char* buf, size_t len,
               size_t* length) {
  if (!h || !g || !file || (!buf && len) || &grp(g)->hierarchy() != &in(h)->h) return -EINVAL;
  try {
    memcg::control_value v = memcg::read_control(in(h)->h, *grp(g), file);
    if (!v) return err(v.error);
    std::string text;
    for (const auto& [key, value] : v.entries) {
      if (key.empty())
        text += value;
      else
        text += key + " " + value + "\n";
    }
    return text_out(text, buf, len, length);
  } catch (...) {
    return -ENOMEM;
  }
}

// ---- a group ----

int memcg_group_path(const memcg_group* g, char* buf, size_t len, size_t* length) {
  if (!g || (!buf && len)) return -EINVAL;
  return text_out(grp(g)->path(), buf, len, length);
}
int memcg_group_parent(const memcg_group* g, memcg_group** out) {
  if (!g || !out) return -EINVAL;
  *out = handle(grp(g)->parent());
  return 0;
}
int memcg_group_dead(const memcg_group* g, int* out) {
  if (!g || !out) return -EINVAL;
  *out = grp(g)->dead() ? 1 : 0;
  return 0;
}
int memcg_charge(memcg_group* g, memcg_kind kind, int64_t nr_pages, unsigned gfp) {
  if (!g || !group_kind(kind) || (gfp & ~31u)) return -EINVAL;
  memcg::group& m = *grp(g);
  auto s = m.hierarchy().try_charge(m, static_cast<memcg::kind>(kind), nr_pages,
                                    static_cast<memcg::gfp>(gfp));
  if (MEMCG_LIKELY(s)) return 0;
  if (s.error != std::errc::not_enough_memory) return err(s.error);
  return refuse_charge(s, nr_pages);
}
int memcg_uncharge(memcg_group* g, memcg_kind kind, int64_t nr_pages) {
  if (!g || !group_kind(kind)) return -EINVAL;
  memcg::group& m = *grp(g);
  try {
    const int rc = err(m.hierarchy().uncharge(m, static_cast<memcg::kind>(kind), nr_pages));
    if (rc == 0) memcg::sock_room_check(m);  // pages given back: held-back windows
    return rc;
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_group_counter(const memcg_group* g, memcg_counter c, memcg_counter_info* out) {
  if (!g || static_cast<int>(c) < 0 || static_cast<int>(c) > MEMCG_COUNTER_TCP) return -EINVAL;
  const memcg::counter& k = counter_of(*grp(g), static_cast<memcg::counter_id>(c));
  memcg_counter_info i{};
  i.usage = k.usage();
  i.max = k.max();
  i.failcnt = k.failcnt();
  i.watermark = k.watermark();
  i.high = k.high();
  i.low = k.low();
  i.min = k.min();
  i.soft_limit = k.soft_limit();
  return fill(out, i);
}
int memcg_group_events(const memcg_group* g, int local, memcg_events* out) {
  if (!g) return -EINVAL;
  const memcg::group& m = *grp(g);
  auto ev = [&](memcg::event e) { return local ? m.events_local(e) : m.events(e); };
  memcg_events e{};
  e.low = ev(memcg::event::low);
  e.high = ev(memcg::event::high);
  e.max = ev(memcg::event::max);
  e.oom = ev(memcg::event::oom);
  e.oom_kill = ev(memcg::event::oom_kill);
  return fill(out, e);
}
int memcg_group_stat(memcg_group* g, memcg_kind kind, int subtree, int64_t* out_pages) {
  if (!g || !valid_kind(kind) || !out_pages) return -EINVAL;
  memcg::group& m = *grp(g);
  try {
    const auto k = static_cast<memcg::kind>(kind);
    *out_pages = subtree ? m.hierarchy().stat(m, k) : m.hierarchy().stat_local(m, k);
    return 0;
  } catch (...) {
    return -ENOMEM;
  }
}

// ---- group pressure ----

int memcg_group_pressure_listen(memcg_group* g, memcg_pressure_level level,
                                memcg_pressure_mode mode, memcg_group_pressure_fn fn, void* user,
                                memcg_listener** out) {
  if (!g || !fn || !out) return -EINVAL;
  if (static_cast<int>(level) < MEMCG_PRESSURE_NONE ||
      static_cast<int>(level) > MEMCG_PRESSURE_CRITICAL ||
      static_cast<int>(mode) < MEMCG_PRESSURE_MODE_NO_PASSTHROUGH ||
      static_cast<int>(mode) > MEMCG_PRESSURE_MODE_LOCAL)
    return -EINVAL;
  memcg::group& m = *grp(g);
  auto* l = new (std::nothrow) capi_listener(m.hierarchy(), fn, user);
  if (!l) return -ENOMEM;
  try {
    m.hierarchy().pressure().register_pressure(*l, *m.live(),
                                               static_cast<memcg::pressure_level>(level),
                                               static_cast<memcg::pressure_mode>(mode));
  } catch (...) {
    delete l;
    return -ENOMEM;
  }
  *out = out_handle<memcg_listener>(l);
  return 0;
}
void memcg_listener_destroy(memcg_listener* l) {
  if (!l) return;
  try {
    in(l)->h->pressure().unregister(*in(l));
  } catch (...) {
    // std::mutex::lock failing (EDEADLK / EINVAL) is a broken program; nothing to undo.
  }
  delete in(l);
}
int memcg_group_pressure_level(const memcg_group* g, memcg_pressure_level* out) {
  if (!g || !out) return -EINVAL;
  *out = static_cast<memcg_pressure_level>(grp(g)->live()->pressure_state()->level());
  return 0;
}
int memcg_group_pressure_emit(memcg_group* g, memcg_pressure_level level) {
  if (!g || static_cast<int>(level) < MEMCG_PRESSURE_NONE ||
      static_cast<int>(level) > MEMCG_PRESSURE_CRITICAL)
    return -EINVAL;
  memcg::group& m = *grp(g)->live();
  try {
    m.hierarchy().pressure().emit(m, static_cast<memcg::pressure_level>(level));
    return 0;
  } catch (...) {
    return -ENOMEM;
  }
}
int memcg_group_socket_pressure(const memcg_group* g, int* out) {
  if (!g || !out) return -EINVAL;
  memcg::group& m = *grp(g);
  *out = memcg::under_socket_pressure(m.hierarchy(), m) ? 1 : 0;
  return 0;
}

// ---- a protocol ----

void memcg_proto_options_init(memcg_proto_options* o) {
  if (!o) return;
  *o = memcg_proto_options{};
  o->size = sizeof *o;
  o->pcpu_reserve_pages = memcg::sk_memory_pcpu_reserve;
}
int memcg_proto_create(const memcg_proto_options* o, memcg_proto** out) {
  if (!out) return -EINVAL;
  memcg_proto_options opt;
  memcg_proto_options_init(&opt);
  if (int e = read_options(o, &opt)) return e;
  if (opt.pcpu_reserve_pages < 0) return -EINVAL;
  memcg::proto_memory::options po;
  po.pcpu_reserve = opt.pcpu_reserve_pages;
  po.clock = opt.clock ? in(opt.clock)->source() : nullptr;
  auto* p = new (std::nothrow) capi_proto(po);
  if (!p) return -ENOMEM;
  in(p)->p.set_pressure_listener(p);
  *out = out_handle<memcg_proto>(p);
  return 0;
}
void memcg_proto_destroy(memcg_proto* p) {
  if (!p) return;
  in(p)->p.set_pressure_listener(nullptr);
  delete in(p);
}
int memcg_proto_set_tcp_mem(memcg_proto* p, int64_t min, int64_t pressure, int64_t max) {
  return p ? err(in(p)->p.set_sysctl_mem({min, pressure, max})) : -EINVAL;
}
int memcg_proto_set_tcp_rmem(memcg_proto* p, int64_t min, int64_t def, int64_t max) {
  return p ? err(in(p)->p.set_sysctl_rmem({min, def, max})) : -EINVAL;
}
int memcg_proto_set_tcp_wmem(memcg_proto* p, int64_t min, int64_t def, int64_t max) {
  return p ? err(in(p)->p.set_sysctl_wmem({min, def, max})) : -EINVAL;
}
int memcg_proto_tcp_mem(const memcg_proto* p, int64_t out[3]) {
  if (!p || !out) return -EINVAL;
  const memcg::tcp_mem_sysctl m = in(p)->p.sysctl_mem();
  out[0] = m.min;
  out[1] = m.pressure;
  out[2] = m.max;
  return 0;
}
int memcg_proto_tcp_rmem(const memcg_proto* p, int64_t out[3]) {
  if (!p || !out) return -EINVAL;
  const memcg::tcp_buf_sysctl b = in(p)->p.sysctl_rmem();
  out[0] = b.min;
  out[1] = b.def;
  out[2] = b.max;
  return 0;
}
int memcg_proto_tcp_wmem(const memcg_proto* p, int64_t out[3]) {
  if (!p || !out) return -EINVAL;
  const memcg::tcp_buf_sysctl b = in(p)->p.sysctl_wmem();
  out[0] = b.min;
  out[1] = b.def;
  out[2] = b.max;
  return 0;
}
int memcg_proto_stats_get(const memcg_proto* p, memcg_proto_stats* out) {
  if (!p) return -EINVAL;
  memcg_proto_stats s{};
  s.memory_allocated = in(p)->p.memory_allocated();
  s.sockets_allocated = in(p)->p.sockets_allocated();
  s.pressures = in(p)->p.memory_pressures();
  s.pressure_ms = in(p)->p.memory_pressure_time_ms();
  s.exceeded = in(p)->p.exceeded();
  s.under_pressure = in(p)->p.under_memory_pressure() ? 1 : 0;
  return fill(out, s);
}
int memcg_proto_set_pressure_callback(memcg_proto* p, memcg_pressure_fn fn, void* user) {
  if (!p) return -EINVAL;
  // Never called with a half-set pair: the function is cleared, the pointer set, then the
  // function published (release; pairs with the acquire in memcg_proto::call()).
  in(p)->fn.store(nullptr, std::memory_order_relaxed);
  in(p)->user.store(user, std::memory_order_relaxed);
  in(p)->fn.store(fn, std::memory_order_release);
  return 0;
}

// ---- a socket ----

int memcg_sock_open(memcg_proto* p, memcg_group* g, memcg_sock** out) {
  if (!p || !out) return -EINVAL;
  auto* s = new (std::nothrow) capi_sock(in(p)->p, grp(g));
  if (!s) return -ENOMEM;
  *out = out_handle<memcg_sock>(s);
  return 0;
}
void memcg_sock_destroy(memcg_sock* s) { delete in(s); }
int memcg_sock_init(void* storage, size_t size, memcg_proto* p, memcg_group* g, memcg_sock** out) {
  if (!storage || !p || !out || size < MEMCG_SOCK_SIZE ||
      reinterpret_cast<std::uintptr_t>(storage) % MEMCG_SOCK_ALIGN != 0)
    return -EINVAL;
  *out = out_handle<memcg_sock>(::new (storage) capi_sock(in(p)->p, grp(g)));
  return 0;
}
void memcg_sock_fini(memcg_sock* s) {
  if (s) in(s)->~capi_sock();
}
int memcg_sock_recv(memcg_sock* s, int64_t size, int forced) {
  if (!s) return -EINVAL;
  const std::errc e = in(s)->s.recv(size, forced != 0);
  if (MEMCG_LIKELY(e == std::errc{})) return 0;
  if (e == std::errc::not_enough_memory) return refuse_sock(in(s)->s, size);
  if (e == std::errc::no_buffer_space)
    return refuse(-ENOBUFS, MEMCG_REFUSAL_RCVBUF, nullptr, 0, in(s)->s.rcvbuf(),
                  in(s)->s.rmem_alloc());
  return err(e);
}
int memcg_sock_consume(memcg_sock* s, int64_t size) {
  return s ? err(in(s)->s.consume(size)) : -EINVAL;
}
int memcg_sock_send(memcg_sock* s, int64_t size) {
  if (!s) return -EINVAL;
  const std::errc e = in(s)->s.send(size);
  if (MEMCG_LIKELY(e == std::errc{})) return 0;
  if (e == std::errc::not_enough_memory) return refuse_sock(in(s)->s, size);
  if (e == std::errc::resource_unavailable_try_again)
    return refuse(-EAGAIN, MEMCG_REFUSAL_SNDBUF, nullptr, 0, in(s)->s.sndbuf(),
                  in(s)->s.wmem_queued());
  return err(e);
}
int memcg_sock_ack(memcg_sock* s, int64_t size) { return s ? err(in(s)->s.ack(size)) : -EINVAL; }
int memcg_sock_close(memcg_sock* s) { return s ? err(in(s)->s.close()) : -EINVAL; }
int memcg_sock_set_rcvbuf(memcg_sock* s, int64_t bytes) {
  return s ? err(in(s)->s.setsockopt_rcvbuf(bytes)) : -EINVAL;
}
int memcg_sock_set_sndbuf(memcg_sock* s, int64_t bytes) {
  return s ? err(in(s)->s.setsockopt_sndbuf(bytes)) : -EINVAL;
}
int memcg_sock_tune_rcvbuf(memcg_sock* s, int64_t bytes) {
  if (!s) return -EINVAL;
  if (in(s)->s.closed()) return -EBADF;
  in(s)->s.set_rcvbuf(bytes);
  return 0;
}
int memcg_sock_tune_sndbuf(memcg_sock* s, int64_t bytes) {
  if (!s) return -EINVAL;
  if (in(s)->s.closed()) return -EBADF;
  in(s)->s.set_sndbuf(bytes);
  return 0;
}
namespace {
int check_schedule(const memcg_sock* s, int64_t size) noexcept {
  if (!s) return -EINVAL;
  if (in(s)->s.closed()) return -EBADF;
  if (size < 0 || size > memcg::sk_max_op_size) return -EINVAL;
  return 0;
}
}  // namespace
int memcg_sock_rmem_schedule(memcg_sock* s, int64_t size, int forced) {
  if (int e = check_schedule(s, size)) return e;
  return in(s)->s.sk_rmem_schedule(size, forced != 0) ? 0 : refuse_sock(in(s)->s, size);
}
int memcg_sock_wmem_schedule(memcg_sock* s, int64_t size) {
  if (int e = check_schedule(s, size)) return e;
  return in(s)->s.sk_wmem_schedule(size) ? 0 : refuse_sock(in(s)->s, size);
}
int memcg_sock_forced_mem_schedule(memcg_sock* s, int64_t size) {
  if (int e = check_schedule(s, size)) return e;
  in(s)->s.sk_forced_mem_schedule(size);
  return 0;
}
int memcg_sock_mem_charge(memcg_sock* s, int64_t size) {
  return s ? err(in(s)->s.sk_mem_charge(size)) : -EINVAL;
}
int memcg_sock_mem_uncharge(memcg_sock* s, int64_t size) {
  return s ? err(in(s)->s.sk_mem_uncharge(size)) : -EINVAL;
}
int memcg_sock_get_info(const memcg_sock* s, memcg_sock_info* out) {
  if (!s) return -EINVAL;
  memcg_sock_info i{};
  i.forward_alloc = in(s)->s.forward_alloc();
  i.rmem_alloc = in(s)->s.rmem_alloc();
  i.wmem_queued = in(s)->s.wmem_queued();
  i.stack_charged = in(s)->s.stack_charged();
  i.rcvbuf = in(s)->s.rcvbuf();
  i.sndbuf = in(s)->s.sndbuf();
  i.under_pressure = in(s)->s.under_memory_pressure() ? 1 : 0;
  i.closed = in(s)->s.closed() ? 1 : 0;
  i.rcvbuf_locked = in(s)->s.rcvbuf_locked() ? 1 : 0;
  i.sndbuf_locked = in(s)->s.sndbuf_locked() ? 1 : 0;
  return fill(out, i);
}
int memcg_sock_advice(const memcg_sock* s, int64_t mss, memcg_window_advice* out) {
  return memcg_sock_window_advice(s, mss, 0, out);
}
int memcg_sock_group(const memcg_sock* s, memcg_group** out) {
  if (!s || !out) return -EINVAL;
  *out = handle(in(s)->s.memcg());
  return 0;
}

// ---- group-level window promises ----

int memcg_sock_window_advice(const memcg_sock* s, int64_t mss, int64_t overhead,
                             memcg_window_advice* out) {
  if (!s || !valid_segment(mss, overhead) || !out || out->size < sizeof(memcg_window_advice))
    return -EINVAL;
  return advice_out(in(s)->s.advice(mss, overhead), out);
}
int memcg_sock_promise_window(memcg_sock* s, int64_t mss, int64_t overhead,
                              memcg_window_advice* out) {
  // The output is checked first: -EINVAL must leave the promise as it was.
  if (!s || !out || out->size < sizeof(memcg_window_advice)) return -EINVAL;
  memcg::window_advice a;
  if (int e = err(in(s)->s.promise_window(mss, overhead, a))) return e;
  return advice_out(a, out);
}
int memcg_sock_release_promise(memcg_sock* s) {
  return s ? err(in(s)->s.release_promise()) : -EINVAL;
}
int memcg_sock_promised(const memcg_sock* s, int64_t* out) {
  if (!s || !out) return -EINVAL;
  *out = in(s)->s.promised();
  return 0;
}
int memcg_group_set_room_callback(memcg_group* g, memcg_room_fn fn, void* user) {
  if (!g) return -EINVAL;
  memcg::group& m = *grp(g);
  if (!fn) {
    memcg::set_room_callback(m, nullptr, nullptr);
    return 0;
  }
  room_rec* r = nullptr;
  try {
    std::lock_guard<std::mutex> l(room_recs_lock);
    for (const auto& x : room_recs)
      if (x->g == &m && x->fn == fn && x->user == user) r = x.get();
    if (!r) {
      room_recs.push_back(std::make_unique<room_rec>(room_rec{&m.hierarchy(), &m, fn, user}));
      r = room_recs.back().get();
    }
  } catch (...) {
    return -ENOMEM;
  }
  memcg::set_room_callback(m, room_trampoline, r);
  return 0;
}
int memcg_group_room_check(memcg_group* g) {
  if (!g) return -EINVAL;
  memcg::sock_room_check(*grp(g));
  return 0;
}
int memcg_group_promised(const memcg_group* g, int64_t* out) {
  if (!g || !out) return -EINVAL;
  *out = memcg::sock_promised(*grp(g));
  return 0;
}
int memcg_group_room_armed(const memcg_group* g, int* out) {
  if (!g || !out) return -EINVAL;
  *out = memcg::sock_room_armed(*grp(g)) ? 1 : 0;
  return 0;
}
int memcg_payload_of(int64_t bytes, int64_t mss, int64_t overhead, int64_t* out) {
  if (!valid_segment(mss, overhead) || !out) return -EINVAL;
  *out = memcg::sk_payload_of(bytes, mss, overhead);
  return 0;
}
int memcg_truesize_of(int64_t payload, int64_t mss, int64_t overhead, int64_t* out) {
  if (!valid_segment(mss, overhead) || !out) return -EINVAL;
  *out = memcg::sk_truesize_of(payload, mss, overhead);
  return 0;
}
int memcg_proto_set_forward_keep(memcg_proto* p, int64_t bytes) {
  return p ? err(in(p)->p.set_forward_keep(bytes)) : -EINVAL;
}
int memcg_proto_forward_keep(const memcg_proto* p, int64_t* out) {
  if (!p || !out) return -EINVAL;
  *out = in(p)->p.forward_keep();
  return 0;
}

}  // extern "C"
