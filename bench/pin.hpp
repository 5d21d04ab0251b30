// bench/pin.hpp: pinning benchmark threads to CPUs, shared by every *_bench.cpp.
//
// docs/architecture.md, "Benchmarks": N threads on N different CPUs. Thread i goes to the i-th CPU this process may
// run on; with more threads than CPUs it wraps around (those runs show contention and time
// slicing, not scaling). Failure is ignored: the numbers are then merely noisier.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <cstddef>
#include <vector>

namespace memcg_bench {

// The CPUs this process may run on, read once before any benchmark pins the main thread.
inline const std::vector<int>& allowed_cpus() {
  static const std::vector<int> cpus = [] {
    std::vector<int> v;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
      for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) v.push_back(i);
    }
    return v;
  }();
  return cpus;
}
[[maybe_unused]] inline const bool cpus_read_early = !allowed_cpus().empty();

inline void pin_thread(int i) {
  const auto& cpus = allowed_cpus();
  if (cpus.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpus[static_cast<std::size_t>(i) % cpus.size()], &set);
  (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

}  // namespace memcg_bench
