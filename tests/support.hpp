// tests/support.hpp: the few helpers every test of the group layer uses.
#pragma once

#include <doctest/doctest.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "memcg/hierarchy.hpp"

namespace memcg_test {

template <class P>
using hier = memcg::basic_hierarchy<P>;
template <class P>
using grp = memcg::basic_group<P>;

// mkdir that must succeed.
template <class P>
grp<P>& make(hier<P>& h, const char* path) {
  auto r = h.mkdir(path);
  REQUIRE(r);
  return *r.g;
}

// Stocks are per CPU in this build (else per thread): two threads use different stocks only
// when they run on different CPUs.
inline constexpr bool per_cpu_stocks = memcg::detail::per_cpu_stocks<memcg::sync::atomic>;

// The CPUs the process may run on, read at the first call (tests/main.cpp calls it before any
// test pins its thread).
inline const cpu_set_t& process_cpus() {
  static const cpu_set_t cpus = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) CPU_SET(0, &set);
    return set;
  }();
  return cpus;
}
[[maybe_unused]] inline const bool process_cpus_read_early = CPU_COUNT(&process_cpus()) > 0;

// The i-th CPU the process may run on; -1 if it may run on fewer.
inline int allowed_cpu(int i) {
  const cpu_set_t& set = process_cpus();
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set) && i-- == 0) return c;
  return -1;
}

// Every CPU the process may run on.
inline std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  for (int i = 0, c; (c = allowed_cpu(i)) >= 0; ++i) cpus.push_back(c);
  return cpus;
}

// Until stop: every 200 us, each of threads is moved to a CPU of cpus drawn at random (with
// sometimes_anywhere, one time in four to all of them). A flipper thread runs this so that the
// threads under test migrate while they work (more threads than CPUs: also preempted).
inline void flip_cpus(std::vector<std::thread>& threads, const std::vector<int>& cpus,
                      const std::atomic<bool>& stop, unsigned seed, bool sometimes_anywhere) {
  std::mt19937 rng(seed);
  // relaxed: a flag; the test's joins order the rest.
  while (!stop.load(std::memory_order_relaxed)) {
    for (auto& t : threads) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[rng() % cpus.size()], &set);
      if (sometimes_anywhere && rng() % 4 == 0)
        for (int c : cpus) CPU_SET(c, &set);
      (void)pthread_setaffinity_np(t.native_handle(), sizeof set, &set);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// Pins the calling thread to one CPU for its scope, then restores its mask: a test that needs
// two threads on two stocks pins them apart (per-CPU stocks); ok() is false if it could not.
class cpu_pin {
 public:
  explicit cpu_pin(int cpu) {
    if (cpu < 0 || sched_getaffinity(0, sizeof old_, &old_) != 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ok_ = sched_setaffinity(0, sizeof set, &set) == 0;
  }
  ~cpu_pin() {
    if (ok_) sched_setaffinity(0, sizeof old_, &old_);
  }
  cpu_pin(const cpu_pin&) = delete;
  cpu_pin& operator=(const cpu_pin&) = delete;
  bool ok() const { return ok_; }

 private:
  cpu_set_t old_{};
  bool ok_ = false;
};

}  // namespace memcg_test
