// memcg/detail/mutex.hpp: the control-path lock.
//
// absl::Mutex everywhere but under ThreadSanitizer: Debian's libabsl is not instrumented, so TSan
// cannot see its happens-before edges and reports false races on the data it guards. TSan builds
// use std::shared_mutex (pthread, which TSan intercepts). Same interface, same annotations.
//
//   mutex          the lock (ABSL_GUARDED_BY(mu_) names it on the data it guards)
//   mutex_lock     holds it exclusively for a scope; reader_lock shared
//   condvar        waits on it: absl::CondVar, or std::condition_variable_any under TSan
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "memcg/config.hpp"  // MEMCG_TSAN_BUILD

#include <chrono>
#include <new>

#ifdef MEMCG_TSAN_BUILD
#include <condition_variable>
#include <shared_mutex>
#else
#include "absl/time/time.h"
#endif

namespace memcg::detail {

class condvar;

class ABSL_LOCKABLE mutex {
 public:
  // Constant initialization: a constinit registry reached from inside malloc needs no
  // constructor to run.
  constexpr mutex() noexcept
#ifndef MEMCG_TSAN_BUILD
      : mu_(absl::kConstInit)
#endif
  {
  }
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  // In the child of fork(2) only, where the forking thread is the only one: a fresh, unlocked
  // mutex in place of one the parent held across fork (pthread_atfork's prepare). Waiters queued
  // in the parent do not exist in the child; a fresh mutex forgets them (unlocking could wait
  // forever for a waiter caught half enqueued). absl::Mutex's debug deadlock detector still
  // counts the old one as held by this thread, so the child turns the detector off.
  void reset_after_fork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
#ifndef MEMCG_TSAN_BUILD
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
    ::new (&mu_) decltype(mu_)();
  }

#ifdef MEMCG_TSAN_BUILD
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  void lock_shared() ABSL_SHARED_LOCK_FUNCTION() { mu_.lock_shared(); }
  void unlock_shared() ABSL_UNLOCK_FUNCTION() { mu_.unlock_shared(); }

 private:
  friend class condvar;
  std::shared_mutex mu_;
#else
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.Lock(); }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.TryLock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.Unlock(); }
  void lock_shared() ABSL_SHARED_LOCK_FUNCTION() { mu_.ReaderLock(); }
  void unlock_shared() ABSL_UNLOCK_FUNCTION() { mu_.ReaderUnlock(); }

 private:
  friend class condvar;
  absl::Mutex mu_;
#endif
};

class [[nodiscard]] ABSL_SCOPED_LOCKABLE mutex_lock {
 public:
  [[nodiscard]] explicit mutex_lock(mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->lock(); }
  ~mutex_lock() ABSL_UNLOCK_FUNCTION() { mu_->unlock(); }
  mutex_lock(const mutex_lock&) = delete;
  mutex_lock& operator=(const mutex_lock&) = delete;

 private:
  mutex* mu_;
};

class [[nodiscard]] ABSL_SCOPED_LOCKABLE reader_lock {
 public:
  [[nodiscard]] explicit reader_lock(mutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->lock_shared(); }
  ~reader_lock() ABSL_UNLOCK_FUNCTION() { mu_->unlock_shared(); }
  reader_lock(const reader_lock&) = delete;
  reader_lock& operator=(const reader_lock&) = delete;

 private:
  mutex* mu_;
};

// Waits for a condition on data a detail::mutex guards. Wake-ups may be spurious: callers
// test their condition in a loop, with the mutex held.
class condvar {
 public:
  // Releases *mu, sleeps until notified, takes *mu again.
  void wait(mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
#ifdef MEMCG_TSAN_BUILD
    cv_.wait(*mu);
#else
    cv_.Wait(&mu->mu_);
#endif
  }
  // The same, but no later than `deadline`; false once the deadline has passed.
  bool wait_until(mutex* mu, std::chrono::steady_clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
#ifdef MEMCG_TSAN_BUILD
    return cv_.wait_until(*mu, deadline) == std::cv_status::no_timeout;
#else
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= left.zero()) return false;
    return !cv_.WaitWithTimeout(
        &mu->mu_, absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(left)));
#endif
  }
  void notify_one() noexcept {
#ifdef MEMCG_TSAN_BUILD
    cv_.notify_one();
#else
    cv_.Signal();
#endif
  }
  void notify_all() noexcept {
#ifdef MEMCG_TSAN_BUILD
    cv_.notify_all();
#else
    cv_.SignalAll();
#endif
  }
  // In the child of fork(2) only: the parent's waiters do not exist there.
  void reset_after_fork() noexcept { ::new (&cv_) decltype(cv_)(); }

 private:
#ifdef MEMCG_TSAN_BUILD
  std::condition_variable_any cv_;
#else
  absl::CondVar cv_;
#endif
};

// A deadline `timeout` from now on the steady clock, saturated (a huge timeout waits for ever).
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout) {
  using clock = std::chrono::steady_clock;
  auto now = clock::now();
  auto room = std::chrono::duration_cast<std::chrono::duration<double>>(clock::time_point::max() - now);
  if (std::chrono::duration<double>(timeout) >= room) return clock::time_point::max();
  return now + std::chrono::ceil<clock::duration>(timeout);
}

}  // namespace memcg::detail
