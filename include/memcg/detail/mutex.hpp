// memcg/detail/mutex.hpp: the control-path lock.
//
// absl::Mutex everywhere but under ThreadSanitizer: Debian's libabsl is not instrumented, so TSan
// cannot see its happens-before edges and reports false races on the data it guards. TSan builds
// use std::shared_mutex (pthread, which TSan intercepts). Same interface, same annotations.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "memcg/config.hpp"  // MEMCG_TSAN_BUILD

#include <new>

#ifdef MEMCG_TSAN_BUILD
#include <shared_mutex>
#endif

namespace memcg::detail {

class ABSL_LOCKABLE mutex {
 public:
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
  std::shared_mutex mu_;
#else
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.Lock(); }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.TryLock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.Unlock(); }
  void lock_shared() ABSL_SHARED_LOCK_FUNCTION() { mu_.ReaderLock(); }
  void unlock_shared() ABSL_UNLOCK_FUNCTION() { mu_.ReaderUnlock(); }

 private:
  absl::Mutex mu_;
#endif
};

class ABSL_SCOPED_LOCKABLE mutex_lock {
 public:
  explicit mutex_lock(mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->lock(); }
  ~mutex_lock() ABSL_UNLOCK_FUNCTION() { mu_->unlock(); }
  mutex_lock(const mutex_lock&) = delete;
  mutex_lock& operator=(const mutex_lock&) = delete;

 private:
  mutex* mu_;
};

class ABSL_SCOPED_LOCKABLE reader_lock {
 public:
  explicit reader_lock(mutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->lock_shared(); }
  ~reader_lock() ABSL_UNLOCK_FUNCTION() { mu_->unlock_shared(); }
  reader_lock(const reader_lock&) = delete;
  reader_lock& operator=(const reader_lock&) = delete;

 private:
  mutex* mu_;
};

}  // namespace memcg::detail
