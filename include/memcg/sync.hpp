// memcg/sync.hpp: the sync policies a counter (and everything above it) is templated over.
//
// Contents:
//   sync::single_thread  plain integers: deterministic, the teaching policy and the test oracle
//   sync::atomic         lock-free atomics (the default): page_counter since v3.19
//   sync::spinlocked     a spinlock per counter level, as the 2011 res_counter had
//   sync::null           accounting off: every charge succeeds and costs nothing (!CONFIG_MEMCG)
//   sync_policy          the concept a policy satisfies
//   detail::asymmetric_fence_light / _heavy
//                        the two sides of an asymmetric fence (membarrier(2)), used by stocks
//   detail::fence_seq_cst
//                        a sequentially consistent fence (ThreadSanitizer builds: see there)
//
// Every shared word goes through a named operation of the policy's `cell` (load_relaxed,
// add_return_acq_rel, store_release, ...) so that a grep for `_release` lists every publishing
// point, as mimalloc's atomic.h does.
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "memcg/config.hpp"
#include "memcg/detail/rseq.hpp"

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#endif

#include "memcg/detail/fault.hpp"

namespace memcg {
namespace detail {

// std::atomic_thread_fence(seq_cst). ThreadSanitizer does not model fences (g++ warns: -Wtsan);
// in its builds a seq_cst read-modify-write of one shared word stands in, which TSan does
// model (it orders the fencing threads among themselves, as the fences do).
inline void fence_seq_cst() noexcept {
#if defined(MEMCG_TSAN_BUILD)
  static constinit std::atomic<int> word{0};
  word.fetch_add(0, std::memory_order_seq_cst);  // seq_cst: the fence it stands for
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// A word touched by one thread only (or under an external lock). Same interface as atomic_cell.
template <class T>
class plain_cell {
 public:
  constexpr plain_cell() noexcept = default;
  constexpr explicit plain_cell(T v) noexcept : v_(v) {}
  T load_relaxed() const noexcept { return v_; }
  T load_acquire() const noexcept { return v_; }
  T load_seq_cst() const noexcept { return v_; }
  void store_relaxed(T v) noexcept { v_ = v; }
  void store_release(T v) noexcept { v_ = v; }
  void store_seq_cst(T v) noexcept { v_ = v; }
  T add_return_acq_rel(T d) noexcept { return v_ += d; }
  T add_return_seq_cst(T d) noexcept { return v_ += d; }
  T sub_return_acq_rel(T d) noexcept { return v_ -= d; }
  T fetch_add_relaxed(T d) noexcept { T old = v_; v_ += d; return old; }
  T fetch_add_seq_cst(T d) noexcept { return fetch_add_relaxed(d); }
  T exchange_acq_rel(T v) noexcept { T old = v_; v_ = v; return old; }
  T exchange_seq_cst(T v) noexcept { return exchange_acq_rel(v); }
  T fetch_or_seq_cst(T v) noexcept { T old = v_; v_ = old | v; return old; }
  bool cas_acq_rel(T& expected, T desired) noexcept {
    if (v_ != expected) { expected = v_; return false; }
    v_ = desired;
    return true;
  }

 private:
  T v_{};
};

// A word shared between threads. The caller names the order at every use site.
template <class T>
class atomic_cell {
 public:
  constexpr atomic_cell() noexcept = default;
  constexpr explicit atomic_cell(T v) noexcept : v_(v) {}
  T load_relaxed() const noexcept { return v_.load(std::memory_order_relaxed); }
  T load_acquire() const noexcept { return v_.load(std::memory_order_acquire); }
  T load_seq_cst() const noexcept { return v_.load(std::memory_order_seq_cst); }
  void store_relaxed(T v) noexcept { v_.store(v, std::memory_order_relaxed); }
  void store_release(T v) noexcept { v_.store(v, std::memory_order_release); }
  void store_seq_cst(T v) noexcept { v_.store(v, std::memory_order_seq_cst); }
  T add_return_acq_rel(T d) noexcept { return v_.fetch_add(d, std::memory_order_acq_rel) + d; }
  T add_return_seq_cst(T d) noexcept { return v_.fetch_add(d, std::memory_order_seq_cst) + d; }
  T sub_return_acq_rel(T d) noexcept { return v_.fetch_sub(d, std::memory_order_acq_rel) - d; }
  T fetch_add_relaxed(T d) noexcept { return v_.fetch_add(d, std::memory_order_relaxed); }
  T fetch_add_seq_cst(T d) noexcept { return v_.fetch_add(d, std::memory_order_seq_cst); }
  T exchange_acq_rel(T v) noexcept { return v_.exchange(v, std::memory_order_acq_rel); }
  T exchange_seq_cst(T v) noexcept { return v_.exchange(v, std::memory_order_seq_cst); }
  T fetch_or_seq_cst(T v) noexcept { return v_.fetch_or(v, std::memory_order_seq_cst); }
  bool cas_acq_rel(T& expected, T desired) noexcept {
    return v_.compare_exchange_strong(expected, desired, std::memory_order_acq_rel,
                                      std::memory_order_relaxed);
  }

 private:
  std::atomic<T> v_{};
};

struct no_lock {
  void lock() noexcept {}
  void unlock() noexcept {}
};

// A spin-wait hint to the CPU.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Test-and-test-and-set lock, as the 2011 res_counter's spinlock_t (without IRQ masking).
class spinlock {
 public:
  void lock() noexcept {
    // Acquire pairs with the release in unlock(): the holder's writes are visible to us.
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) cpu_relax();
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

template <class Lock>
class [[nodiscard]] lock_guard {
 public:
  explicit lock_guard(Lock& l) noexcept : l_(l) { l_.lock(); }
  ~lock_guard() { l_.unlock(); }
  lock_guard(const lock_guard&) = delete;
  lock_guard& operator=(const lock_guard&) = delete;

 private:
  Lock& l_;
};

// The asymmetric fence. The frequent side (a thread touching its own stock) issues only a
// compiler barrier; the rare side (a thread draining other stocks) issues membarrier(2),
// which runs a full barrier on every CPU running a thread of this process. Where membarrier is
// not available the stocks are off (memcg/stock.hpp): every charge takes the counters.
// Where glibc registers rseq and the kernel has the RSEQ command, the fence also restarts every
// sibling's restartable sequence (the page fast paths with MEMCG_STOCK_RSEQ).
enum class membarrier_state : int { unknown = 0, unavailable = 1, expedited = 2, expedited_rseq = 3 };

inline std::atomic<int>& membarrier_state_word() noexcept {
  static std::atomic<int> state{static_cast<int>(membarrier_state::unknown)};
  return state;
}

inline membarrier_state membarrier_probe() noexcept {
  auto& s = membarrier_state_word();
  // Relaxed: the state only ever moves unknown -> final value, and every final value is safe.
  int cur = s.load(std::memory_order_relaxed);
  if (cur != static_cast<int>(membarrier_state::unknown)) return static_cast<membarrier_state>(cur);
  auto st = membarrier_state::unavailable;
#if defined(__linux__) && defined(SYS_membarrier)
  long mask = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (mask > 0 && (mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0) {
    st = membarrier_state::expedited;
#if MEMCG_HAVE_SYS_RSEQ
    // Registered whether or not this translation unit compiled rseq fast paths: the fence then
    // restarts them in any that did.
    if (__rseq_size != 0 && (mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0)
      st = membarrier_state::expedited_rseq;
#endif
  }
#endif
  // seq_cst: every thread that reads the state afterwards may rely on the registrations.
  s.store(static_cast<int>(st));
  return st;
}
// The fence can pair with a compiler barrier.
inline bool membarrier_init() noexcept { return membarrier_probe() >= membarrier_state::expedited; }
// The fence also restarts restartable sequences.
inline bool membarrier_restarts_rseq() noexcept {
  return membarrier_probe() == membarrier_state::expedited_rseq;
}

// Errors of a registered membarrier(2) command that say nothing about the registration: the
// kernel could not allocate its CPU mask (ENOMEM), or the call was interrupted (EINTR, EAGAIN).
// Anything else (EINVAL, EPERM from a seccomp filter installed later, ENOSYS) will not pass.
constexpr bool membarrier_error_transient(int err) noexcept {
#if defined(__linux__)
  return err == ENOMEM || err == EINTR || err == EAGAIN;
#else
  (void)err;
  return false;
#endif
}

#if defined(__linux__) && defined(SYS_membarrier)
// One membarrier(2) call; -1 with errno set on failure. Test builds may fail it (ENOMEM).
inline long membarrier_call(int cmd) noexcept {
  if (MEMCG_FAULT(membarrier, &cmd)) {
    errno = ENOMEM;
    return -1;
  }
  return syscall(SYS_membarrier, cmd, 0, 0);
}

[[noreturn]] inline void membarrier_fatal(int err) noexcept {
  const char* why = err == EPERM    ? "EPERM: a seccomp filter or policy forbids it now"
                    : err == EINVAL ? "EINVAL: the command registered at start is refused"
                    : err == ENOSYS ? "ENOSYS: the system call is blocked now"
                                    : "an error that will not pass";
  std::fprintf(stderr,
               "memcg: membarrier(2) failed after registration (errno %d, %s); a drain cannot "
               "fence the stocks of other threads\n",
               err, why);
  std::abort();
}
#endif

// The drainer's side: pairs with the compiler barrier of a per-thread stock's enter() on every
// other thread, and restarts every running restartable sequence (the per-CPU stocks' hits). A transient error is retried until the fence
// succeeds (a drain that went on without it would race the owners): a few yields, then sleeps
// from 1 us doubling to 1 ms. Errors that cannot pass abort with their name. errno is kept.
inline void asymmetric_fence_heavy() noexcept {
  fence_seq_cst();
#if defined(__linux__) && defined(SYS_membarrier)
  auto st = static_cast<membarrier_state>(membarrier_state_word().load(std::memory_order_relaxed));
  if (st < membarrier_state::expedited) return;  // no stock is on
  int cmd = st == membarrier_state::expedited_rseq ? MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ
                                                   : MEMBARRIER_CMD_PRIVATE_EXPEDITED;
  const int saved_errno = errno;  // the callers (malloc in the shim) must not see ours
  if (MEMCG_LIKELY(membarrier_call(cmd) == 0)) return;
  long sleep_ns = 1000;
  for (int tries = 0;; ++tries) {
    int err = errno;
    if (!membarrier_error_transient(err)) membarrier_fatal(err);
    if (tries < 4) {
      sched_yield();
    } else {
      timespec ts{0, sleep_ns};
      (void)nanosleep(&ts, nullptr);  // EINTR: retry sooner, harmless
      if (sleep_ns < 1000000) sleep_ns *= 2;
    }
    if (membarrier_call(cmd) == 0) break;
  }
  errno = saved_errno;
#endif
}

}  // namespace detail

namespace sync {

// Deterministic, no atomics at all: one thread at a time.
struct single_thread {
  template <class T>
  using cell = detail::plain_cell<T>;
  using lock_type = detail::no_lock;
  static constexpr const char* name = "single_thread";
  static constexpr bool concurrent = false;
  static constexpr bool locked = false;
  static constexpr bool accounting = true;
  static constexpr int stock_slots = 1;  // the kernel's single-slot stock (until 2025)
};

// Lock-free: speculative add per level, as page_counter_try_charge().
struct atomic {
  template <class T>
  using cell = detail::atomic_cell<T>;
  using lock_type = detail::no_lock;
  static constexpr const char* name = "atomic";
  static constexpr bool concurrent = true;
  static constexpr bool locked = false;
  static constexpr bool accounting = true;
  static constexpr int stock_slots = 4;
};

// One spinlock per counter level; the check and the add happen under it (res_counter, 2011).
// Words stay atomic so that readers need no lock, as res_counter_read_u64() on 64-bit.
struct spinlocked {
  template <class T>
  using cell = detail::atomic_cell<T>;
  using lock_type = detail::spinlock;
  static constexpr const char* name = "spinlocked";
  static constexpr bool concurrent = true;
  static constexpr bool locked = true;
  static constexpr bool accounting = true;
  static constexpr int stock_slots = 4;
};

// Accounting compiled out: the baseline that shows what accounting costs.
struct null {
  template <class T>
  using cell = detail::plain_cell<T>;
  using lock_type = detail::no_lock;
  static constexpr const char* name = "null";
  static constexpr bool concurrent = true;
  static constexpr bool locked = false;
  static constexpr bool accounting = false;
  static constexpr int stock_slots = 1;
};

}  // namespace sync

template <class C>
concept sync_cell = requires(C c, const C cc, std::int64_t v, std::int64_t& e) {
  { cc.load_relaxed() } -> std::same_as<std::int64_t>;
  { cc.load_acquire() } -> std::same_as<std::int64_t>;
  c.store_relaxed(v);
  c.store_release(v);
  { c.add_return_acq_rel(v) } -> std::same_as<std::int64_t>;
  { c.sub_return_acq_rel(v) } -> std::same_as<std::int64_t>;
  { c.fetch_add_relaxed(v) } -> std::same_as<std::int64_t>;
  { c.fetch_add_seq_cst(v) } -> std::same_as<std::int64_t>;
  { cc.load_seq_cst() } -> std::same_as<std::int64_t>;
  c.store_seq_cst(v);
  { c.exchange_acq_rel(v) } -> std::same_as<std::int64_t>;
  { c.cas_acq_rel(e, v) } -> std::same_as<bool>;
};

template <class L>
concept sync_lock = requires(L l) {
  l.lock();
  l.unlock();
};

template <class P>
concept sync_policy = sync_cell<typename P::template cell<std::int64_t>> &&
                      sync_lock<typename P::lock_type> && requires {
                        { P::name } -> std::convertible_to<const char*>;
                        { P::concurrent } -> std::convertible_to<bool>;
                        { P::locked } -> std::convertible_to<bool>;
                        { P::accounting } -> std::convertible_to<bool>;
                        { P::stock_slots } -> std::convertible_to<int>;
                      };

static_assert(sync_policy<sync::single_thread>);
static_assert(sync_policy<sync::atomic>);
static_assert(sync_policy<sync::spinlocked>);
static_assert(sync_policy<sync::null>);

}  // namespace memcg
