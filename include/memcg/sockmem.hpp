// memcg/sockmem.hpp: the TCP-buffer-style socket memory pool (docs/model.md, "Sockets").
//
// Contents:
//   sk_mem_kind                     SK_MEM_RECV / SK_MEM_SEND
//   sock_min_sndbuf, sock_min_rcvbuf, sk_mem_pages()
//                                   SOCK_MIN_SNDBUF (4608), SOCK_MIN_RCVBUF (2304), the page
//                                   quantum
//   tcp_mem_sysctl, tcp_buf_sysctl  net.ipv4.tcp_mem (pages) and tcp_rmem / tcp_wmem (bytes)
//   basic_proto_pressure_listener   enter/leave callbacks of a protocol's pressure flag
//   basic_proto_memory<Sync>        one per protocol: tcp_mem limits, memory_allocated with
//                                   per-thread reserves, sockets_allocated, the pressure
//                                   flag with its counters (TCPMemoryPressures, ...Chrono)
//   basic_sock_memory<Sync>         one per socket: sk_forward_alloc, sk_rmem_alloc,
//                                   sk_wmem_queued, sk_rcvbuf, sk_sndbuf, the owning group's
//                                   handle; the kernel's socket operations, by their names
//   window_advice                   how much receive window a socket may advertise and how much it
//                                   may queue for sending, given its state, pressure and the
//                                   windows its group's other sockets promised
//   sk_payload_of(), sk_truesize_of()
//                                   memory bytes <-> payload bytes, given a per-segment overhead
//   set_room_callback(), sock_room_check(), sock_promised()
//                                   group-level window promises: the edge-triggered "room
//                                   available" callback of a group
//   detail::group_socket_pressure() a group's socket pressure: pressure.hpp's
//                                   under_socket_pressure() (vmpressure hold, tcp flag, kmem soft
//                                   limit, in the group or an ancestor)
//   proto_memory, sock_memory       the sync::atomic instantiations
//
// The decision procedure is __sk_mem_raise_allocated() of v6.7+ line by line (docs/model.md, "The
// raise decision"), with the model's differences ("Socket receives may be refused"): a receive
// charges its group without reclaim (gfp::noreclaim) and is refused at the group's limit; `forced`
// gives the kernel's GFP_ATOMIC behaviour (forced past memory.max). A send charges as the
// application (GFP_KERNEL: it may reclaim). Around it, TCP's own rules (docs/model.md, "TCP's own
// rules", measured on Linux 6.18): a receive is dropped while rmem_alloc > rcvbuf; a segment into
// an empty receive queue that would be dropped is charged past every limit
// (sk_forced_mem_schedule); a send blocks, charging nothing, while wmem_queued >= sndbuf
// (sk_stream_memory_free); a refused raise moderates sndbuf unless the program set it (SO_SNDBUF
// locks it).
//
// Threads: a socket's operations need its owner's lock (the kernel's socket lock): one thread
// at a time per socket; any thread may read its fields (relaxed, never torn). The protocol and
// the groups are shared by every thread and are lock-free on these paths.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <system_error>

#include "memcg/clock.hpp"
#include "memcg/config.hpp"
#include "memcg/context.hpp"
#include "memcg/detail/fault.hpp"
#include "memcg/group.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/pressure.hpp"
#include "memcg/sync.hpp"

namespace memcg {

enum class sk_mem_kind : std::uint8_t { recv, send };  // SK_MEM_RECV, SK_MEM_SEND

// SOCK_MIN_SNDBUF: the floor of sk_stream_moderate_sndbuf() and of SO_SNDBUF
// (2 * (2048 + sizeof(sk_buff))).
inline constexpr std::int64_t sock_min_sndbuf = 4608;
// SOCK_MIN_RCVBUF: the floor of SO_RCVBUF (2048 + sizeof(sk_buff)).
inline constexpr std::int64_t sock_min_rcvbuf = 2304;
// SK_MEMORY_PCPU_RESERVE: 1 MiB of memory_allocated per thread; the default in programs.
inline constexpr std::int64_t sk_memory_pcpu_reserve = std::int64_t{1} << (20 - page_shift);
// The largest size one operation accepts (bytes): beyond it, EINVAL (the kernel's sizes are int).
inline constexpr std::int64_t sk_max_op_size = std::int64_t{1} << 46;

// sk_mem_pages(): bytes to pages, rounding up.
constexpr std::int64_t sk_mem_pages(std::int64_t amt) noexcept {
  return (amt + page_size - 1) >> page_shift;
}

// net.ipv4.tcp_mem: [0] min, [1] pressure, [2] max, in pages (sk_prot_mem_limits()).
struct tcp_mem_sysctl {
  std::int64_t min = 188388;
  std::int64_t pressure = 251184;
  std::int64_t max = 376776;
};
// net.ipv4.tcp_rmem / tcp_wmem: [0] min (the minimum-buffer guarantee), [1] default (the initial
// sk_rcvbuf / sk_sndbuf), [2] max, in bytes.
struct tcp_buf_sysctl {
  std::int64_t min = 0;
  std::int64_t def = 0;
  std::int64_t max = 0;
};
inline constexpr tcp_buf_sysctl default_tcp_rmem{4096, 131072, 6291456};
inline constexpr tcp_buf_sysctl default_tcp_wmem{4096, 16384, 4194304};

template <sync_policy Sync>
class basic_proto_memory;
template <sync_policy Sync>
class basic_sock_memory;

// The callbacks of a protocol's pressure flag: tcp_enter_memory_pressure() and
// tcp_leave_memory_pressure(). Owned by the caller; registering one allocates nothing.
// Threads: called on the thread whose allocation changed the flag, with no library lock held,
// once per transition. A listener may read the protocol and the groups; it must not schedule
// memory on the socket whose operation is running.
template <sync_policy Sync>
class basic_proto_pressure_listener {
 public:
  virtual ~basic_proto_pressure_listener() = default;
  virtual void enter_memory_pressure(basic_proto_memory<Sync>& prot) noexcept = 0;
  // duration_ms: how long this pressure episode lasted, by the protocol's clock.
  virtual void leave_memory_pressure(basic_proto_memory<Sync>& prot,
                                     std::int64_t duration_ms) noexcept = 0;
};

namespace detail {

// The thread's slot index into a protocol's per-thread reserves (threads take indices in the
// order they first touch a protocol; the kernel's per-CPU counters, without preemption).
inline unsigned sock_shard_index() noexcept {
  static std::atomic<unsigned> next{0};
  // Relaxed: an index is only a spreading hint; any value is correct.
  static thread_local unsigned index = next.fetch_add(1, std::memory_order_relaxed);
  return index;
}

// A group's socket pressure: mem_cgroup_under_socket_pressure() (memcg/pressure.hpp): the
// vmpressure one-second hold on the hierarchy's clock, the v1 tcpmem pressure flag (set by a
// refused tcp charge) or kernel memory above its soft limit (docs/model.md, "Socket
// pressure"), in the group or any ancestor. The one place the socket layer asks.
template <sync_policy Sync>
bool group_socket_pressure(basic_group<Sync>& g) noexcept {
  return under_socket_pressure(g.hierarchy(), g);
}

}  // namespace detail

// One protocol's memory (struct proto's memory fields; docs/model.md, "Protocol memory").
// Invariants (at rest, single-thread or after every operation returned):
//   memory_allocated() == sum over open sockets of the pages they hold, i.e. sum of
//                         (forward_alloc + rmem_alloc + wmem_queued + stack_charged) / page_size
//   sockets_allocated() == sockets created and not yet closed
//   memory_allocated()  == global_ + sum of the per-thread reserves (each within +-reserve)
template <sync_policy Sync = sync::atomic>
class basic_proto_memory {
 public:
  using cell = typename Sync::template cell<std::int64_t>;
  using listener = basic_proto_pressure_listener<Sync>;

  struct options {
    tcp_mem_sysctl mem{};
    tcp_buf_sysctl rmem = default_tcp_rmem;
    tcp_buf_sysctl wmem = default_tcp_wmem;
    // sysctl_mem_pcpu_rsv in pages: how far a thread's share may drift before it is folded into
    // the global word. 0 folds at once (the simulator). Reads always add every share.
    std::int64_t pcpu_reserve = sk_memory_pcpu_reserve;
    // The clock of pressure episodes (jiffies of the kernel, read in ms). nullptr: the process's
    // steady clock. Requires: it outlives the protocol.
    clock_source* clock = nullptr;
    // Bytes of forward allocation each socket keeps when it gives memory back, less what it
    // holds queued (as the kernel's sk_unused_reserved_mem() of SO_RESERVE_MEM, taken lazily
    // instead of charged up front; the kernel before v6.0 kept up to a page the same way). 0,
    // the default, is the v6.0+ rule: every whole page goes back at once. A socket that
    // empties its queue after each segment then raises and gives back a page per segment;
    // with one page kept it touches no shared word. The kept pages stay charged to the
    // protocol and the group (they are the socket's: memory.stat sock counts them, exact) and
    // come back at close; none are kept while the protocol is under pressure. 0..INT32_MAX.
    std::int64_t forward_keep = 0;
  };

  basic_proto_memory() : basic_proto_memory(options{}) {}
  explicit basic_proto_memory(const options& o)
      : reserve_(o.pcpu_reserve < 0 ? 0 : o.pcpu_reserve),
        clock_(o.clock ? o.clock : &default_clock()) {
    keep_.store_relaxed(std::clamp<std::int64_t>(o.forward_keep, 0, INT32_MAX));
    store_mem(o.mem);
    store_buf(rmem_, o.rmem);
    store_buf(wmem_, o.wmem);
  }
  basic_proto_memory(const basic_proto_memory&) = delete;
  basic_proto_memory& operator=(const basic_proto_memory&) = delete;

  // ---- sysctls (control path) ----
  // Requires: min <= pressure <= max, all >= 0; EINVAL (nothing changes) otherwise.
  // Memory ordering: each value is a relaxed word (READ_ONCE in the kernel): a decision racing
  // with a write may see old and new values mixed, as in the kernel.
  std::errc set_sysctl_mem(const tcp_mem_sysctl& m) noexcept {
    if (m.min < 0 || m.min > m.pressure || m.pressure > m.max || m.max > page_counter_max)
      return std::errc::invalid_argument;
    store_mem(m);
    return {};
  }
  // Requires: 0 <= min <= def <= max <= 2^31-1; EINVAL otherwise. New sockets start with def.
  std::errc set_sysctl_rmem(const tcp_buf_sysctl& b) noexcept {
    if (!valid_buf(b)) return std::errc::invalid_argument;
    store_buf(rmem_, b);
    return {};
  }
  std::errc set_sysctl_wmem(const tcp_buf_sysctl& b) noexcept {
    if (!valid_buf(b)) return std::errc::invalid_argument;
    store_buf(wmem_, b);
    return {};
  }
  // options::forward_keep. EINVAL (nothing changes) outside 0..INT32_MAX. A lower value takes
  // effect at each socket's next give-back.
  std::errc set_forward_keep(std::int64_t bytes) noexcept {
    if (bytes < 0 || bytes > INT32_MAX) return std::errc::invalid_argument;
    keep_.store_relaxed(bytes);  // relaxed: a setting read by each give-back on its own
    return {};
  }
  std::int64_t forward_keep() const noexcept { return keep_.load_relaxed(); }
  tcp_mem_sysctl sysctl_mem() const noexcept {
    return {mem_[0].load_relaxed(), mem_[1].load_relaxed(), mem_[2].load_relaxed()};
  }
  tcp_buf_sysctl sysctl_rmem() const noexcept { return load_buf(rmem_); }
  tcp_buf_sysctl sysctl_wmem() const noexcept { return load_buf(wmem_); }
  std::int64_t pcpu_reserve() const noexcept { return reserve_; }

  // ---- reads ----
  // sk_memory_allocated(), exact: the global word plus every thread's share (pages).
  // Memory ordering: relaxed loads; exact when no operation runs concurrently, otherwise off by
  // at most the operations in flight (and one reserve per thread folding at that instant).
  std::int64_t memory_allocated() const noexcept {
    std::int64_t sum = global_.load_relaxed();
    for (const shard& s : shards_) sum += s.fw_alloc.load_relaxed();
    return sum;
  }
  // True when the exact count is at most `pages`, known without reading other threads' shares:
  // each share stays within (-reserve, reserve), so the global word plus every share's bound
  // settles it. A decision taken on it is the decision the exact count gives.
  bool memory_allocated_surely_at_most(std::int64_t pages) const noexcept {
    if constexpr (nr_shards == 1) return memory_allocated() <= pages;
    std::int64_t g = global_.load_relaxed();
    return g <= pages - static_cast<std::int64_t>(nr_shards) * reserve_;
  }
  // proto_memory_allocated() as the kernel reads it: the global word only, lagging by up to one
  // reserve per thread (for comparison; no decision uses it).
  std::int64_t memory_allocated_global() const noexcept {
    return std::max<std::int64_t>(0, global_.load_relaxed());
  }
  // The largest |share| of any thread's reserve (a check of the bound above: always less than
  // pcpu_reserve(), 0 without a reserve).
  std::int64_t largest_share() const noexcept {
    std::int64_t m = 0;
    for (const shard& s : shards_) {
      std::int64_t v = s.fw_alloc.load_relaxed();
      m = std::max(m, v < 0 ? -v : v);
    }
    return m;
  }
  // sk_sockets_allocated_read_positive().
  std::int64_t sockets_allocated() const noexcept {
    std::int64_t sum = 0;
    for (const shard& s : shards_) sum += s.sockets.load_relaxed();
    return std::max<std::int64_t>(0, sum);
  }
  // sk_under_global_memory_pressure(): the protocol's flag.
  bool under_memory_pressure() const noexcept { return pressure_.load_relaxed() != 0; }
  // TCPMemoryPressures: episodes entered. TCPMemoryPressuresChrono: milliseconds spent in
  // finished episodes.
  std::int64_t memory_pressures() const noexcept { return pressures_.load_relaxed(); }
  std::int64_t memory_pressure_time_ms() const noexcept { return pressure_ms_.load_relaxed(); }
  // Allocations refused by the raise decision (trace_sock_exceed_buf_limit).
  std::int64_t exceeded() const noexcept { return exceeded_.load_relaxed(); }
  std::int64_t now_ms() const noexcept { return clock_->now_us() / usec_per_msec; }

  // The pressure listener (nullptr: none). Returns the previous one.
  // Requires: a listener outlives its registration and every operation that may call it.
  listener* set_pressure_listener(listener* l) noexcept {
    // acq_rel: pairs with the acquire load in enter/leave: the listener is fully built.
    return listener_.exchange(l, std::memory_order_acq_rel);
  }

  // ---- the flag ----
  // tcp_enter_memory_pressure(): set once; the first setter counts the episode and calls the
  // listener. Memory ordering: the CAS (acq_rel) elects one enterer per episode; pairs with the
  // exchange in leave_memory_pressure().
  void enter_memory_pressure() noexcept {
    if (under_memory_pressure()) return;
    std::int64_t val = now_ms();
    if (val == 0) val = -1;  // 0 means "not under pressure"
    std::int64_t expected = 0;
    if (!pressure_.cas_acq_rel(expected, val)) return;
    pressures_.fetch_add_relaxed(1);  // a statistic: relaxed
    if (listener* l = listener_.load(std::memory_order_acquire)) l->enter_memory_pressure(*this);
  }
  // tcp_leave_memory_pressure(): clears the flag; the clearer adds the episode's duration.
  void leave_memory_pressure() noexcept {
    if (!under_memory_pressure()) return;
    std::int64_t val = pressure_.exchange_acq_rel(0);  // pairs with enter's CAS
    if (!val) return;
    std::int64_t d = now_ms() - (val == -1 ? 0 : val);
    if (d < 0) d = 0;
    pressure_ms_.fetch_add_relaxed(d);  // a statistic: relaxed
    if (listener* l = listener_.load(std::memory_order_acquire)) l->leave_memory_pressure(*this, d);
  }

  // ---- memory_allocated, used by the sockets ----
  // sk_memory_allocated_add(): into the thread's share; folded into the global word when the
  // share would reach the reserve.
  void memory_allocated_add(std::int64_t amt) noexcept { share_add(my_shard(), amt); }
  // sk_memory_allocated_sub(): symmetric, folded when the share would reach -reserve.
  void memory_allocated_sub(std::int64_t amt) noexcept { share_add(my_shard(), -amt); }
  // sk_sockets_allocated_inc() / _dec().
  void sockets_allocated_inc() noexcept { my_shard().sockets.fetch_add_relaxed(1); }
  void sockets_allocated_dec() noexcept { my_shard().sockets.fetch_add_relaxed(-1); }

 private:
  static constexpr int nr_shards = Sync::concurrent ? 32 : 1;
  struct alignas(64) shard {
    cell fw_alloc;  // per_cpu_fw_alloc: pages not yet folded into global_
    cell sockets;   // this thread's part of sockets_allocated
  };

  shard& my_shard() noexcept {
    if constexpr (nr_shards == 1) return shards_[0];
    else return shards_[detail::sock_shard_index() % nr_shards];
  }
  // Adds d to a share, or folds the share and d into the global word when the share would
  // reach +-reserve. More threads than shards share one, so the share is only ever replaced by
  // a CAS from the value the decision was taken on: a fold never subtracts a value another
  // thread has changed meanwhile (a fetch_add then a subtraction of the stale sum left shares
  // past +-reserve, and memory_allocated_surely_at_most() then decided on a wrong bound).
  // Every share stays within (-reserve, reserve) at every instant. Lock-free: a CAS fails only
  // when a sharing thread's CAS succeeded.
  void share_add(shard& s, std::int64_t d) noexcept {
    if (reserve_ == 0) {  // no shares (the simulator): straight to the global word
      global_.fetch_add_relaxed(d);  // relaxed: the count is only ever summed
      return;
    }
    // Relaxed throughout: the words are only ever summed; the CAS orders nothing else.
    std::int64_t old = s.fw_alloc.load_relaxed();
    for (;;) {
      std::int64_t next = old + d;
      MEMCG_DELAY(sock_update);  // a sharing thread may move the share here
      if (next < reserve_ && next > -reserve_) {
        if (s.fw_alloc.cas_acq_rel(old, next)) return;  // (acq_rel: the only CAS a cell has)
        continue;  // `old` is the share's new value
      }
      // Fold: the global word first, so that a concurrent read (and the bound of
      // memory_allocated_surely_at_most) may count `next` twice for an instant, never miss it.
      global_.fetch_add_relaxed(next);
      if (s.fw_alloc.cas_acq_rel(old, 0)) return;
      global_.fetch_add_relaxed(-next);  // the share moved: undo, retry with its new value
    }
  }
  static bool valid_buf(const tcp_buf_sysctl& b) noexcept {
    return b.min >= 0 && b.min <= b.def && b.def <= b.max && b.max <= INT32_MAX;
  }
  void store_mem(const tcp_mem_sysctl& m) noexcept {
    mem_[0].store_relaxed(m.min);
    mem_[1].store_relaxed(m.pressure);
    mem_[2].store_relaxed(m.max);
  }
  static void store_buf(std::array<cell, 3>& a, const tcp_buf_sysctl& b) noexcept {
    a[0].store_relaxed(b.min);
    a[1].store_relaxed(b.def);
    a[2].store_relaxed(b.max);
  }
  static tcp_buf_sysctl load_buf(const std::array<cell, 3>& a) noexcept {
    return {a[0].load_relaxed(), a[1].load_relaxed(), a[2].load_relaxed()};
  }

  // Read-mostly first.
  std::array<cell, 3> mem_{};
  std::array<cell, 3> rmem_{};
  std::array<cell, 3> wmem_{};
  cell keep_;  // options::forward_keep
  std::int64_t reserve_;
  clock_source* clock_;
  std::atomic<listener*> listener_{nullptr};
  cell pressures_;
  cell pressure_ms_;
  cell exceeded_;
  // Written on pressure transitions only.
  alignas(64) cell pressure_;  // 0, or the ms the episode began (-1 for 0)
  alignas(64) cell global_;    // memory_allocated (pages)
  std::array<shard, nr_shards> shards_{};

  friend class basic_sock_memory<Sync>;
};

// Window advice (under pressure TCP collapses queues, clamps windows, moderates sndbuf):
// what a stack should advertise and queue so that it backs off with its window instead of
// having segments dropped.
struct window_advice {
  std::int64_t rcv_window = 0;  // bytes of receive window it may advertise now
  std::int64_t snd_space = 0;   // bytes it may queue for sending now
  bool under_pressure = false;  // sk_under_memory_pressure()
};

// The largest segment size and per-segment overhead window advice accepts (bytes).
inline constexpr std::int64_t sk_max_segment = std::int64_t{1} << 30;

// Payload bytes that `bytes` of memory hold when each segment of up to `mss` payload bytes costs
// `overhead` bytes more (its truesize: headers, the buffer's bookkeeping). Whole segments, then
// what a last partial one holds beyond its overhead. Requires: 1 <= mss, 0 <= overhead.
constexpr std::int64_t sk_payload_of(std::int64_t bytes, std::int64_t mss,
                                     std::int64_t overhead) noexcept {
  if (bytes <= 0) return 0;
  if (overhead == 0) return bytes;
  const std::int64_t seg = mss + overhead;
  std::int64_t segs, rest;
  if (bytes <= UINT32_MAX && seg <= UINT32_MAX) {  // windows: a 32-bit division is cheaper
    const auto b = static_cast<std::uint32_t>(bytes), d = static_cast<std::uint32_t>(seg);
    segs = b / d;
    rest = b % d;
  } else {
    segs = bytes / seg;
    rest = bytes % seg;
  }
  return segs * mss + (rest > overhead ? rest - overhead : 0);
}
// The memory `payload` bytes take in segments of up to `mss` (the inverse bound:
// sk_payload_of(sk_truesize_of(p)) == p). Saturates at INT64_MAX. Requires as sk_payload_of.
constexpr std::int64_t sk_truesize_of(std::int64_t payload, std::int64_t mss,
                                      std::int64_t overhead) noexcept {
  if (payload <= 0) return 0;
  const std::int64_t segs = payload / mss + (payload % mss != 0);
  if (overhead != 0 && segs > (INT64_MAX - payload) / overhead) return INT64_MAX;
  return payload + segs * overhead;
}

namespace detail {

// a + b, saturating at INT64_MAX. Requires: a >= 0 (b of any sign).
constexpr std::int64_t sk_sat_add(std::int64_t a, std::int64_t b) noexcept {
  return b > 0 && a > INT64_MAX - b ? INT64_MAX : a + b;
}

// Room of one level for socket pages (pages): the counters the socket accounting charges;
// `parked`: pages the stocks hold for the socket's group (memcg_stock::parked_for(): a stock
// hit takes them without the counters, a refused charge drains them first).
template <sync_policy Sync>
std::int64_t sock_level_room(const basic_group<Sync>& m, sock_accounting sa,
                             std::int64_t parked) noexcept {
  std::int64_t pages = page_counter_max;
  if (sa != sock_accounting::v1)
    pages = std::min(pages, std::max(m.memory.max() - m.memory.usage(), parked));
  if (sa != sock_accounting::v2) pages = std::min(pages, m.tcp.max() - m.tcp.usage());
  return pages;
}

// A level's room (at least 0) less what its subtree's sockets promised, `own` excepted
// (bytes; may be negative: promises made before other charges took room). No overflow: a
// level's room is at most page_counter_max pages, and own <= promised (own is in every level's
// promises).
template <sync_policy Sync>
std::int64_t sock_unpromised(const basic_group<Sync>& m, sock_accounting sa, std::int64_t parked,
                             std::int64_t own = 0) noexcept {
  const std::int64_t b = std::max<std::int64_t>(0, sock_level_room(m, sa, parked)) * page_size;
  return b - (m.promises().promised.load_relaxed() - own);
}

// Fires m's room callback if m is armed: disarms it first (one firing per arming, whichever
// thread wins the CAS). The callback's pair is read under its sequence count; a read that
// races with set_room_callback() re-arms m instead (the next give-back fires it).
template <sync_policy Sync>
void sock_room_fire(basic_group<Sync>& m) noexcept {
  auto& p = m.promises();
  std::int64_t one = 1;
  if (!p.armed.cas_acq_rel(one, 0)) return;  // acq_rel: pairs with the arming exchange
  sock_rooms_armed.fetch_sub(1, std::memory_order_seq_cst);
  // Seq_cst loads (a sequence lock without fences, which TSan cannot follow): pair with
  // set_room_callback's seq_cst stores; s1 == s2 and even: no store to the pair in between.
  const std::int64_t s1 = p.seq.load_seq_cst();
  auto fn = p.fn.load_seq_cst();
  void* user = p.user.load_seq_cst();
  if ((s1 & 1) != 0 || p.seq.load_seq_cst() != s1) {
    if (p.armed.exchange_seq_cst(1) == 0) sock_rooms_armed.fetch_add(1, std::memory_order_seq_cst);
    return;
  }
  if (fn) fn(user, &m);
}

// Arms m: a socket below it was held back by its room. If room appeared meanwhile (a
// give-back that found nothing armed), fires at once.
template <sync_policy Sync>
void sock_room_arm(basic_group<Sync>& m) noexcept {
  auto& p = m.promises();
  if (p.armed.load_relaxed() != 0) return;
  // seq_cst: the exchange and the count, then a fence, before the re-read of the room; a
  // give-back updates the room (a promise: a seq_cst add; pages: the counters' locked
  // read-modify-writes, full barriers on x86 though relaxed in C++), then loads the count and
  // the flag seq_cst: either it sees the flag, or this re-read sees its room.
  if (p.armed.exchange_seq_cst(1) != 0) return;
  sock_rooms_armed.fetch_add(1, std::memory_order_seq_cst);
  fence_seq_cst();  // pairs with sock_room_check's loads
  if (sock_unpromised(m, m.hierarchy().socket_accounting(), 0) > 0) sock_room_fire(m);
}

// Adds delta bytes to the promises of g and every ancestor (O(depth), no loop over sockets).
template <sync_policy Sync>
void sock_promise_add(basic_group<Sync>* g, std::int64_t delta) noexcept {
  // seq_cst: a release is a give-back of room (see sock_room_arm).
  for (basic_group<Sync>* m = g; m; m = m->parent()) m->promises().promised.fetch_add_seq_cst(delta);
}

}  // namespace detail

// Room appeared for the sockets of g (a give-back, a limit raised, pages freed elsewhere):
// fires the room callback of g and of every ancestor that is armed and now has unpromised
// room. The socket operations call it on every give-back; a program calls it after changes
// the socket layer does not see (a limit write, other charges given back). Lock-free; reads
// one word while no group in the process is armed.
template <sync_policy Sync>
void sock_room_check(basic_group<Sync>& g) noexcept {
  if (detail::sock_rooms_armed.load(std::memory_order_seq_cst) == 0) return;  // see sock_room_arm
  const sock_accounting sa = g.hierarchy().socket_accounting();
  basic_group<Sync>* live = g.live();
  // Room as the advice of a socket of g sees it: the pages the stocks hold for g count (a
  // give-back at the limit parks them there, usage unchanged; a charge gets them back).
  const std::int64_t parked =
      sa != sock_accounting::v1 ? detail::memcg_stock<Sync>::parked_for(live) : 0;
  for (basic_group<Sync>* m = live; m; m = m->parent())
    if (m->promises().armed.load_seq_cst() != 0 && detail::sock_unpromised(*m, sa, parked) > 0)
      detail::sock_room_fire(*m);
}

// The "room available" callback of g: called as fn(user, &g) once each time room appears for
// g's subtree after a socket below g was held back by g's own room (its window was cut by g's
// limit less the windows other sockets promised), within the operation that gave the room back
// (or the next sock_room_check()). Edge-triggered: one call per held-back episode however many
// sockets were held back. fn = nullptr: none. Threads: fn runs on the thread whose socket
// operation gave room back, with no library lock held; it may advertise windows of other
// sockets (not the one whose operation is running) and must not throw. Requires: user stays
// valid until no socket operation in g's subtree runs after the callback was replaced.
// Lock-free for callers of fn; setters of one group serialize among themselves.
template <sync_policy Sync>
void set_room_callback(basic_group<Sync>& g,
                       typename basic_group<Sync>::sock_promises::room_fn fn,
                       void* user) noexcept {
  auto& p = g.promises();
  std::int64_t s;
  // Odd: a setter is writing (the control path: a short wait for another setter).
  while (((s = p.seq.fetch_or_seq_cst(1)) & 1) != 0) detail::cpu_relax();
  // Seq_cst: the odd count, the pair, the even count in one total order with the reader's
  // loads (pairs with sock_room_fire).
  p.fn.store_seq_cst(fn);
  p.user.store_seq_cst(user);
  p.seq.store_seq_cst(s + 2);
}
// Bytes (truesize) of receive window promised by the sockets of g's subtree, not yet received.
template <sync_policy Sync>
std::int64_t sock_promised(const basic_group<Sync>& g) noexcept {
  return g.promises().promised.load_relaxed();
}
// True while g owes a room callback (a socket below was held back, no room since).
template <sync_policy Sync>
bool sock_room_armed(const basic_group<Sync>& g) noexcept {
  return g.promises().armed.load_relaxed() != 0;
}

// One socket's memory state (the memory fields of struct sock).
// Invariants (between operations):
//   forward_alloc >= 0, rmem_alloc >= 0, wmem_queued >= 0, stack_charged >= 0
//   (forward_alloc + rmem_alloc + wmem_queued + stack_charged) % page_size == 0: the bytes it
//   holds, and those pages are charged to
//   the protocol's memory_allocated and (if the socket has a group) to the group's memory and
//   tcp counters, as kind sock
//   forward_alloc < page_size + unused keep after every uncharge (sk_mem_reclaim; the keep is
//   the protocol's forward_keep less what the socket holds queued, 0 by default)
//   promised() <= INT32_MAX is in the promises of its group and of every ancestor
// Requires: the operations of one socket run one at a time (its owner's lock).
template <sync_policy Sync = sync::atomic>
class basic_sock_memory {
 public:
  using proto = basic_proto_memory<Sync>;
  using group = basic_group<Sync>;
  using objcg = basic_objcg<Sync>;
  using cell = typename Sync::template cell<std::int64_t>;
  using buf_cell = typename Sync::template cell<std::int32_t>;

  // sk_alloc() + mem_cgroup_sk_alloc(): the socket belongs to g (nullptr: no group accounting)
  // for its lifetime; after g's rmdir, to its parent through g's handle. rcvbuf and sndbuf
  // start from the protocol's defaults. sockets_allocated is incremented.
  basic_sock_memory(proto& prot, group* g) noexcept
      : prot_(&prot), objcg_(g ? g->live()->objcg() : nullptr) {
    rcvbuf_.store_relaxed(static_cast<std::int32_t>(prot.sysctl_rmem().def));  // <= INT32_MAX
    sndbuf_.store_relaxed(static_cast<std::int32_t>(prot.sysctl_wmem().def));
    prot.sockets_allocated_inc();
  }
  ~basic_sock_memory() { (void)close(); }
  basic_sock_memory(const basic_sock_memory&) = delete;
  basic_sock_memory& operator=(const basic_sock_memory&) = delete;

  // ---- fields (relaxed reads, any thread) ----
  std::int64_t forward_alloc() const noexcept { return fwd_.load_relaxed(); }
  std::int64_t rmem_alloc() const noexcept { return rmem_.load_relaxed(); }
  std::int64_t wmem_queued() const noexcept { return wmem_.load_relaxed(); }
  // Bytes a stack took from the forward allocation with sk_mem_charge() and has not given back.
  std::int64_t stack_charged() const noexcept { return stack_.load_relaxed(); }
  std::int64_t rcvbuf() const noexcept { return rcvbuf_.load_relaxed(); }
  std::int64_t sndbuf() const noexcept { return sndbuf_.load_relaxed(); }
  bool closed() const noexcept { return (flags_.load_relaxed() & flag_closed) != 0; }
  // SOCK_SNDBUF_LOCK / SOCK_RCVBUF_LOCK: the program set the size (no moderation, no tuning).
  bool sndbuf_locked() const noexcept { return (flags_.load_relaxed() & flag_sndbuf_lock) != 0; }
  bool rcvbuf_locked() const noexcept { return (flags_.load_relaxed() & flag_rcvbuf_lock) != 0; }
  // Receive window (bytes of memory, truesize) promised by promise_window() and not received
  // since.
  std::int64_t promised() const noexcept { return promise_.load_relaxed(); }
  proto& protocol() const noexcept { return *prot_; }
  // The group charges reach now (the creator, or the live ancestor that adopted it).
  group* memcg() const noexcept { return objcg_ ? objcg_->memcg() : nullptr; }
  // The stack's own setting (autotuning, a clamp): not locked, clamped to [0, INT32_MAX] (rcvbuf)
  // and [SOCK_MIN_SNDBUF, INT32_MAX] (sndbuf). A program sets them with setsockopt_*().
  void set_rcvbuf(std::int64_t bytes) noexcept {
    rcvbuf_.store_relaxed(static_cast<std::int32_t>(std::clamp<std::int64_t>(bytes, 0, INT32_MAX)));
  }
  void set_sndbuf(std::int64_t bytes) noexcept {
    sndbuf_.store_relaxed(
        static_cast<std::int32_t>(std::clamp<std::int64_t>(bytes, sock_min_sndbuf, INT32_MAX)));
  }

  // sk_under_memory_pressure(): the group's (or an ancestor's) socket pressure, or the
  // protocol's flag.
  bool under_memory_pressure() const noexcept {
    group* g = memcg();
    if (g && detail::group_socket_pressure(*g)) return true;
    return prot_->under_memory_pressure();
  }

  // ---- the application's operations (each returns {} or an error; never throws) ----
  // Errors: EBADF after close; EINVAL for a negative or oversized size; ENOMEM when the raise
  // refused (a receive is then dropped, a send blocks); ENOBUFS when a receive is dropped for
  // rmem_alloc > rcvbuf; EAGAIN when a send would block for wmem_queued >= sndbuf. Nothing
  // changed on any error except the side effects a refusal has in the kernel (pressure flags,
  // failcnt, a moderated sndbuf).

  // A segment of `size` bytes (its truesize) arrives: tcp_data_queue()'s
  // tcp_try_rmem_schedule(), then skb_set_owner_r() (rmem_alloc and sk_mem_charge()). Dropped
  // (ENOBUFS) while rmem_alloc > rcvbuf, or (ENOMEM) when sk_rmem_schedule() is refused; but a
  // segment into an empty receive queue is never dropped: sk_forced_mem_schedule() charges it
  // past every limit, so a connection always makes progress (a tcp limit of 64K with 4
  // connections held 147456 bytes on Linux 6.18). `forced` charges the group as the kernel does
  // in softirq (GFP_ATOMIC: forced past memory.max) instead of refusing at its limit.
  std::errc recv(std::int64_t size, bool forced = false) noexcept {
    if (std::errc e = check(size); e != std::errc{}) return e;
    const bool over_rcvbuf = rmem_alloc() > rcvbuf();
    if (over_rcvbuf || !sk_rmem_schedule(size, forced)) {
      if (rmem_alloc() != 0)
        return over_rcvbuf ? std::errc::no_buffer_space : std::errc::not_enough_memory;
      sk_forced_mem_schedule(size);
    }
    rmem_.store_relaxed(rmem_alloc() + size);
    mem_charge(size);
    if (MEMCG_UNLIKELY(promised() != 0)) take_promise(size);
    return {};
  }
  // The application reads `size` received bytes: the skb destructor (rmem_alloc and
  // sk_mem_uncharge(), which gives whole pages back). EINVAL if fewer bytes are held.
  std::errc consume(std::int64_t size) noexcept {
    if (std::errc e = check(size); e != std::errc{}) return e;
    if (size > rmem_alloc()) return std::errc::invalid_argument;
    rmem_.store_relaxed(rmem_alloc() - size);
    mem_uncharge(size);
    return {};
  }
  // The application queues `size` bytes: tcp_sendmsg()'s sk_stream_memory_free() (EAGAIN,
  // nothing charged, while wmem_queued >= sndbuf: a non-blocking send would block), then
  // sk_wmem_schedule() (ENOMEM: refused; it moderated sndbuf) and sk_wmem_queued_add() and
  // sk_mem_charge(). A refused raise at or above sndbuf is forced through (the raise
  // decision), so a sender at its group's limit overshoots by about a send and then blocks.
  std::errc send(std::int64_t size) noexcept {
    if (std::errc e = check(size); e != std::errc{}) return e;
    if (wmem_queued() >= sndbuf()) return std::errc::resource_unavailable_try_again;
    if (!sk_wmem_schedule(size)) return std::errc::not_enough_memory;
    wmem_.store_relaxed(wmem_queued() + size);
    mem_charge(size);
    return {};
  }
  // The peer acknowledges `size` queued bytes (sk_wmem_free_skb()). EINVAL if fewer are queued.
  std::errc ack(std::int64_t size) noexcept {
    if (std::errc e = check(size); e != std::errc{}) return e;
    if (size > wmem_queued()) return std::errc::invalid_argument;
    wmem_.store_relaxed(wmem_queued() - size);
    mem_uncharge(size);
    return {};
  }
  // setsockopt(SO_RCVBUF): rcvbuf = max(2 * min(bytes, INT_MAX / 2), SOCK_MIN_RCVBUF), locked.
  // EBADF after close; EINVAL for a negative size or one above INT32_MAX (nothing changes).
  // net.core.rmem_max (the kernel's cap on `bytes`) is not modelled.
  std::errc setsockopt_rcvbuf(std::int64_t bytes) noexcept {
    if (std::errc e = check_buf(bytes); e != std::errc{}) return e;
    rcvbuf_.store_relaxed(static_cast<std::int32_t>(so_buf(bytes, sock_min_rcvbuf)));
    set_flag(flag_rcvbuf_lock);
    return {};
  }
  // setsockopt(SO_SNDBUF): sndbuf = max(2 * min(bytes, INT_MAX / 2), SOCK_MIN_SNDBUF), locked:
  // never moderated afterwards. Errors as setsockopt_rcvbuf (net.core.wmem_max not modelled).
  std::errc setsockopt_sndbuf(std::int64_t bytes) noexcept {
    if (std::errc e = check_buf(bytes); e != std::errc{}) return e;
    sndbuf_.store_relaxed(static_cast<std::int32_t>(so_buf(bytes, sock_min_sndbuf)));
    set_flag(flag_sndbuf_lock);
    return {};
  }

  // Everything the socket held goes back (queues purged, bytes a stack charged with
  // sk_mem_charge() and still owns, sk_mem_reclaim of every page), and sockets_allocated is
  // decremented. EBADF if already closed (nothing changes).
  std::errc close() noexcept {
    if (closed()) return std::errc::bad_file_descriptor;
    if (promised() != 0) set_promise(memcg(), 0);
    std::int64_t held = rmem_alloc() + wmem_queued() + stack_charged();
    rmem_.store_relaxed(0);
    wmem_.store_relaxed(0);
    stack_.store_relaxed(0);
    // Every page, the kept ones too; what stays is below a page and, by the invariant, zero.
    fwd_.store_relaxed(forward_alloc() + held);
    if (forward_alloc() >= page_size) sk_mem_reclaim_pages(forward_alloc());
    prot_->sockets_allocated_dec();
    set_flag(flag_closed);
    return {};
  }

  // Window advice: the receive window is what rcvbuf leaves, bounded by what the group (and
  // each ancestor) can still take without refusing less the windows the other sockets of each
  // level's subtree promised (promise_window()), and by the protocol's hard limit; under
  // pressure it shrinks to what is already forward-allocated (at least 2 * mss, so the
  // connection keeps moving). The send space is what sndbuf leaves, bounded the same way; under
  // pressure, by the moderated sndbuf (half of what is queued, at least SOCK_MIN_SNDBUF).
  // Both in payload bytes: each segment of up to mss bytes costs `overhead` more memory
  // (overhead 0: memory bytes, as rcvbuf counts them). Requires: 1 <= mss, 0 <= overhead,
  // both <= sk_max_segment (promise_window() checks them).
  window_advice advice(std::int64_t mss = 1460, std::int64_t overhead = 0) const noexcept {
    return calc_advice(mss, overhead).a;
  }

  // Advice that is also a promise: the receive window returned is held in the promises of the
  // socket's group and every ancestor (replacing the socket's previous promise) until segments
  // arrive (recv() takes their size from it), the next promise_window() or release_promise(),
  // or close. Sockets of one group advertising this way never promise together more than the
  // group's room: limit less usage, plus what they hold forward-allocated (one thread at a
  // time; concurrent promises in one group may exceed it by the windows decided at once). When
  // the window was cut by a group's room (below what rcvbuf and pressure allow), that group is
  // armed: its room callback (set_room_callback()) fires once when room appears. A socket
  // without a group promises nothing. O(depth) per call. EBADF after close; EINVAL (nothing
  // changes) for mss or overhead out of range.
  std::errc promise_window(std::int64_t mss, std::int64_t overhead, window_advice& out) noexcept {
    if (closed()) return std::errc::bad_file_descriptor;
    if (mss < 1 || mss > sk_max_segment || overhead < 0 || overhead > sk_max_segment)
      return std::errc::invalid_argument;
    advice_calc c = calc_advice(mss, overhead);
    group* g = memcg();
    if (g) {
      // The promise is the memory bound itself (not the payload's truesize): all of a cut
      // window's room is taken, so the group's unpromised room is <= 0 right after.
      std::int64_t want = std::min<std::int64_t>(c.rcv_mem, INT32_MAX);
      if (want != c.rcv_mem) c.a.rcv_window = sk_payload_of(want, mss, overhead);
      set_promise(g, want);
    }
    out = c.a;
    if (g && c.held_by) {
      MEMCG_DELAY(sock_promise_arm);  // room may come back here, before the group is armed
      detail::sock_room_arm(*c.held_by);
    }
    return {};
  }
  // Gives the socket's promise back (the stack closed its window). EBADF after close.
  std::errc release_promise() noexcept {
    if (closed()) return std::errc::bad_file_descriptor;
    if (promised() != 0) set_promise(memcg(), 0);
    return {};
  }

  // ---- the kernel's primitives, public for stacks that drive them directly ----

  // sk_rmem_schedule(): delta = size - sk_forward_alloc; true if delta <= 0 or
  // __sk_mem_schedule(delta, SK_MEM_RECV) succeeds.
  bool sk_rmem_schedule(std::int64_t size, bool forced = false) noexcept {
    std::int64_t delta = size - forward_alloc();
    return delta <= 0 || sk_mem_schedule(delta, sk_mem_kind::recv, forced);
  }
  // sk_wmem_schedule().
  bool sk_wmem_schedule(std::int64_t size) noexcept {
    std::int64_t delta = size - forward_alloc();
    return delta <= 0 || sk_mem_schedule(delta, sk_mem_kind::send, false);
  }
  // sk_forced_mem_schedule(): the pages `size` needs beyond the forward allocation, charged past
  // every limit: the protocol's (no raise decision, no pressure change) and the group's (nofail;
  // a refusing tcp counter still sets the group's tcp pressure). Requires: size >= 0.
  void sk_forced_mem_schedule(std::int64_t size) noexcept {
    std::int64_t delta = size - forward_alloc();
    if (delta <= 0) return;
    std::int64_t amt = sk_mem_pages(delta);
    fwd_.store_relaxed(forward_alloc() + (amt << page_shift));
    prot_->memory_allocated_add(amt);
    if (group* memcg = this->memcg())
      (void)memcg->hierarchy().try_charge(*memcg, kind::sock, amt, GFP_NOWAIT | gfp::nofail);
  }
  // sk_mem_charge() for a stack that keeps its own queues: `size` bytes of the forward
  // allocation become the stack's (fwd -= size, stack_charged += size). EBADF after close;
  // EINVAL (nothing changes) for a negative size or more than is forward-allocated (schedule
  // first).
  std::errc sk_mem_charge(std::int64_t size) noexcept {
    if (std::errc e = check(size); e != std::errc{}) return e;
    if (size > forward_alloc()) return std::errc::invalid_argument;
    stack_.store_relaxed(stack_charged() + size);
    mem_charge(size);
    return {};
  }
  // sk_mem_uncharge() for such a stack: gives back `size` of the bytes it charged (fwd += size,
  // then sk_mem_reclaim()). EBADF after close; EINVAL (nothing changes) for a negative size or
  // more than the stack charged: the kernel trusts its callers, a library cannot (an uncharge of
  // bytes the socket never charged would take pages from the protocol and the group that other
  // sockets hold).
  std::errc sk_mem_uncharge(std::int64_t size) noexcept {
    if (std::errc e = check(size); e != std::errc{}) return e;
    if (size > stack_charged()) return std::errc::invalid_argument;
    stack_.store_relaxed(stack_charged() - size);
    mem_uncharge(size);
    return {};
  }
  // sk_mem_reclaim(): gives back whole pages of what is forward-allocated beyond the unused
  // keep (sk_unused_reserved_mem(): the protocol's forward_keep less what the socket holds
  // queued; none under the protocol's pressure), when that is at least a page.
  void sk_mem_reclaim() noexcept {
    std::int64_t fwd = forward_alloc();
    if (fwd < page_size) return;
    if (std::int64_t keep = prot_->forward_keep(); MEMCG_UNLIKELY(keep != 0)) {
      if (!prot_->under_memory_pressure())
        fwd -= std::max<std::int64_t>(0, keep - rmem_alloc() - wmem_queued() - stack_charged());
      if (fwd < page_size) return;
    }
    sk_mem_reclaim_pages(fwd);
  }

  // __sk_mem_schedule(): fwd += pages of size; __sk_mem_raise_allocated(); undo on refusal.
  bool sk_mem_schedule(std::int64_t size, sk_mem_kind k, bool forced = false) noexcept {
    std::int64_t amt = sk_mem_pages(size);
    fwd_.store_relaxed(forward_alloc() + (amt << page_shift));
    bool ok = sk_mem_raise_allocated(size, amt, k, forced);
    if (!ok) fwd_.store_relaxed(forward_alloc() - (amt << page_shift));
    return ok;
  }

  // sk_stream_moderate_sndbuf(): sndbuf = max(min(sndbuf, wmem_queued / 2), SOCK_MIN_SNDBUF),
  // unless the program set sndbuf (SOCK_SNDBUF_LOCK).
  void sk_stream_moderate_sndbuf() noexcept {
    if (sndbuf_locked()) return;
    std::int64_t v = std::min(sndbuf(), wmem_queued() >> 1);
    sndbuf_.store_relaxed(static_cast<std::int32_t>(std::max(v, sock_min_sndbuf)));  // <= sndbuf
  }

 private:
  // __sk_mem_raise_allocated() (v6.7+; docs/model.md, "The raise decision"), step by step.
  bool sk_mem_raise_allocated(std::int64_t size, std::int64_t amt, sk_mem_kind k,
                              bool forced = false) noexcept {
    proto& prot = *prot_;
    group* memcg = this->memcg();
    bool charged = false;
    tcp_mem_sysctl limit;
    std::int64_t allocated;

    prot.memory_allocated_add(amt);
    limit = prot.sysctl_mem();
    // The exact count, or a value known to give the same decision: when the global word alone
    // proves allocated <= min, branch (B) is taken whatever the shares hold (no cross-thread
    // reads on the common path).
    allocated = prot.memory_allocated_surely_at_most(limit.min) ? limit.min
                                                                 : prot.memory_allocated();
    // (A) the group: a receive may not reclaim (refused at the limit) unless forced as the
    // kernel's softirq charge; a send charges as the application and may reclaim.
    if (memcg) {
      gfp flags = k == sk_mem_kind::recv ? (forced ? GFP_ATOMIC : GFP_NOWAIT) : GFP_KERNEL;
      if (!memcg->hierarchy().try_charge(*memcg, kind::sock, amt, flags)) goto suppress;
      charged = true;
    }
    // (B) under the minimum: leave pressure.
    if (allocated <= limit.min) {
      prot.leave_memory_pressure();
      return true;
    }
    // (C) above the pressure threshold: enter pressure.
    if (allocated > limit.pressure) prot.enter_memory_pressure();
    // (D) above the hard limit: refuse (except the forced send below).
    if (allocated > limit.max) goto suppress;
    // (E) the minimum-buffer guarantee, under pressure but not above the hard limit.
    if (k == sk_mem_kind::recv) {
      if (rmem_alloc() < prot.sysctl_rmem().min) return true;
    } else {
      if (wmem_queued() < prot.sysctl_wmem().min) return true;  // a stream socket
    }
    // (F) fairness under the protocol's (global) pressure: allowed while this socket's pages,
    // times the number of sockets, stay below the hard limit.
    if (!prot.under_memory_pressure()) return true;
    if (limit.max > prot.sockets_allocated() *
                        sk_mem_pages(wmem_queued() + rmem_alloc() + forward_alloc()))
      return true;
  suppress:
    if (k == sk_mem_kind::send) {
      sk_stream_moderate_sndbuf();
      // "Fail only if socket is _under_ its sndbuf": a socket at or above it gets its pages.
      if (wmem_queued() + size >= sndbuf()) {
        if (memcg && !charged)
          (void)memcg->hierarchy().try_charge(*memcg, kind::sock, amt, GFP_KERNEL | gfp::nofail);
        return true;
      }
    }
    prot.exceeded_.fetch_add_relaxed(1);  // trace_sock_exceed_buf_limit: a statistic
    prot.memory_allocated_sub(amt);
    if (charged) memcg->hierarchy().uncharge_unchecked(*memcg, kind::sock, amt);
    return false;
  }

  // __sk_mem_reduce_allocated(): the pages leave the protocol and the group; the protocol
  // leaves pressure when it falls below its minimum.
  void sk_mem_reduce_allocated(std::int64_t amount) noexcept {
    proto& prot = *prot_;
    prot.memory_allocated_sub(amount);
    if (group* memcg = this->memcg()) {
      memcg->hierarchy().uncharge_unchecked(*memcg, kind::sock, amount);
      sock_room_check(*memcg);  // room appeared: a held-back group's callback
    }
    if (prot.under_memory_pressure() && prot.memory_allocated() < prot.sysctl_mem().min)
      prot.leave_memory_pressure();
  }

  static constexpr std::uint8_t flag_closed = 1;
  static constexpr std::uint8_t flag_sndbuf_lock = 2;  // SOCK_SNDBUF_LOCK
  static constexpr std::uint8_t flag_rcvbuf_lock = 4;  // SOCK_RCVBUF_LOCK
  void set_flag(std::uint8_t f) noexcept {
    flags_.store_relaxed(static_cast<std::uint8_t>(flags_.load_relaxed() | f));
  }
  // sk_mem_charge() / sk_mem_uncharge() of the kernel, unchecked: the callers checked.
  void mem_charge(std::int64_t size) noexcept { fwd_.store_relaxed(forward_alloc() - size); }
  void mem_uncharge(std::int64_t size) noexcept {
    fwd_.store_relaxed(forward_alloc() + size);
    sk_mem_reclaim();
  }
  std::errc check_buf(std::int64_t bytes) const noexcept {
    if (closed()) return std::errc::bad_file_descriptor;
    if (bytes < 0 || bytes > INT32_MAX) return std::errc::invalid_argument;
    return {};
  }
  static std::int64_t so_buf(std::int64_t bytes, std::int64_t floor) noexcept {
    return std::max(2 * std::min<std::int64_t>(bytes, INT32_MAX / 2), floor);  // <= INT32_MAX - 1
  }
  std::errc check(std::int64_t size) const noexcept {
    if (closed()) return std::errc::bad_file_descriptor;
    if (size < 0 || size > sk_max_op_size) return std::errc::invalid_argument;
    return {};
  }
  // __sk_mem_reclaim(): whole pages of `amount` bytes.
  void sk_mem_reclaim_pages(std::int64_t amount) noexcept {
    std::int64_t pages = amount >> page_shift;
    fwd_.store_relaxed(forward_alloc() - (pages << page_shift));
    sk_mem_reduce_allocated(pages);
  }
  // Bytes one schedule can still be given beyond the forward allocation, for a socket that
  // promised `own`: the protocol's hard limit, and at every level up the tree the counters the
  // socket accounting charges (the memory counters, or the pages parked for the group in the
  // stocks, whichever is larger: a stock hit skips the counters) less what the level's sockets
  // promised, own promise excepted; negative when the others' promises exceed
  // a level's room (then even the forward allocation is not for a new promise: promises
  // outstanding never exceed limit - usage plus what the sockets hold forward-allocated).
  // `bound`: the level that gave the minimum (nullptr: the protocol).
  struct room_scan {
    std::int64_t bytes;
    group* bound;
  };
  room_scan scan_room(std::int64_t own) const noexcept {
    room_scan r{std::clamp<std::int64_t>(prot_->sysctl_mem().max - prot_->memory_allocated(), 0,
                                         page_counter_max) * page_size,  // no overflow
                nullptr};
    if (group* g = memcg()) {
      const sock_accounting sa = g->hierarchy().socket_accounting();
      const std::int64_t parked =
          sa != sock_accounting::v1 ? detail::memcg_stock<Sync>::parked_for(g) : 0;
      for (group* m = g; m; m = m->parent()) {
        const std::int64_t b = detail::sock_unpromised(*m, sa, parked, own);
        if (b < r.bytes) r = {b, m};
      }
    }
    return r;
  }
  struct advice_calc {
    window_advice a;
    std::int64_t rcv_mem;  // the receive window in memory bytes
    group* held_by;        // the level whose room cut it below rcvbuf's (and pressure's) bound
  };
  advice_calc calc_advice(std::int64_t mss, std::int64_t overhead) const noexcept {
    advice_calc c{};
    window_advice& a = c.a;
    a.under_pressure = under_memory_pressure();
    std::int64_t fwd = forward_alloc(), rmem = rmem_alloc(), wmem = wmem_queued();
    room_scan r = scan_room(promised());
    std::int64_t room = detail::sk_sat_add(fwd, r.bytes);
    std::int64_t rcv = std::max<std::int64_t>(0, rcvbuf() - rmem);
    std::int64_t snd = std::max<std::int64_t>(0, sndbuf() - wmem);
    if (a.under_pressure) {
      rcv = std::min(rcv, std::max(fwd, 2 * mss));
      std::int64_t moderated =
          sndbuf_locked() ? sndbuf() : std::max(std::min(sndbuf(), wmem / 2), sock_min_sndbuf);
      snd = std::min(snd, std::max<std::int64_t>(0, moderated - wmem));
    }
    c.rcv_mem = std::max<std::int64_t>(0, std::min(rcv, room));
    c.held_by = room < rcv ? r.bound : nullptr;
    a.rcv_window = sk_payload_of(c.rcv_mem, mss, overhead);
    a.snd_space = sk_payload_of(std::max<std::int64_t>(0, std::min(snd, room)), mss, overhead);
    return c;
  }
  // The socket's promise becomes n bytes, in g and every ancestor. A smaller one gives room
  // back.
  void set_promise(group* g, std::int64_t n) noexcept {
    const std::int64_t delta = n - promised();
    if (delta == 0) return;
    promise_.store_relaxed(static_cast<std::int32_t>(n));  // n <= INT32_MAX
    if (!g) return;
    detail::sock_promise_add(g, delta);
    if (delta < 0) sock_room_check(*g);
  }
  // A received segment of `size` bytes takes its size from the promise: the memory it was
  // promised is now charged.
  MEMCG_NOINLINE void take_promise(std::int64_t size) noexcept {
    const std::int64_t d = std::min(promised(), size);
    promise_.store_relaxed(static_cast<std::int32_t>(promised() - d));
    if (group* g = memcg()) detail::sock_promise_add(g, -d);
  }

  proto* prot_;
  objcg* objcg_;
  cell fwd_{};    // sk_forward_alloc (bytes)
  cell rmem_{};   // sk_rmem_alloc
  cell wmem_{};   // sk_wmem_queued
  cell stack_{};  // bytes charged by a stack through sk_mem_charge()
  buf_cell rcvbuf_{};  // sk_rcvbuf (int in the kernel)
  buf_cell sndbuf_{};  // sk_sndbuf
  buf_cell promise_{};  // bytes promised by promise_window(), not yet received
  typename Sync::template cell<std::uint8_t> flags_{};  // flag_*: written by the owner only
};

static_assert(sizeof(basic_sock_memory<sync::atomic>) <= 64, "a socket's state fits a cache line");
static_assert(sizeof(basic_sock_memory<sync::single_thread>) <= 64);

using proto_memory = basic_proto_memory<sync::atomic>;
using sock_memory = basic_sock_memory<sync::atomic>;
using proto_pressure_listener = basic_proto_pressure_listener<sync::atomic>;

}  // namespace memcg
