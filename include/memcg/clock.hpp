// memcg/clock.hpp: time as a policy (docs/model.md, "Time is a policy").
//
// Contents:
//   clock_source          what the library reads time through: now_us() and sleep_us()
//   steady_clock_source   the real std::chrono::steady_clock (programs); sleeping really sleeps
//   virtual_clock         a clock that moves only when told to (the simulator, the tests);
//                         sleeping advances it
//   default_clock()       the process's steady_clock_source, used when none was set
//
// The library reads time on slow paths only: vmpressure's one-second socket-pressure hold,
// stall accounting (memory.pressure) and throttling at a throttle point. Charges never read it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace memcg {

inline constexpr std::int64_t usec_per_msec = 1000;
inline constexpr std::int64_t usec_per_sec = 1000 * 1000;

// Requires: now_us() is monotonic (never goes back) and safe to call from any thread.
// sleep_us() blocks the calling thread for `us` microseconds of this clock (a virtual clock
// advances instead).
class clock_source {
 public:
  virtual ~clock_source() = default;
  virtual std::int64_t now_us() const noexcept = 0;
  virtual void sleep_us(std::int64_t us) = 0;
};

class steady_clock_source final : public clock_source {
 public:
  std::int64_t now_us() const noexcept override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void sleep_us(std::int64_t us) override {
    if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
};

// Starts at 0. advance() and sleep_us() move it forward; it never goes back.
// Memory ordering: relaxed. The clock orders nothing; a reader that must see another thread's
// advance synchronizes with that thread some other way (a join, a lock).
class virtual_clock final : public clock_source {
 public:
  std::int64_t now_us() const noexcept override { return now_.load(std::memory_order_relaxed); }
  void sleep_us(std::int64_t us) override { advance(us); }
  void advance(std::int64_t us) noexcept {
    if (us > 0) now_.fetch_add(us, std::memory_order_relaxed);  // a clock reading: relaxed
  }
  std::int64_t now_ms() const noexcept { return now_us() / usec_per_msec; }

 private:
  std::atomic<std::int64_t> now_{0};
};

inline clock_source& default_clock() noexcept {
  static steady_clock_source c;
  return c;
}

}  // namespace memcg
