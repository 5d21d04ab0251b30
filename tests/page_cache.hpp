// tests/page_cache.hpp: the page cache of tests and benchmarks. A group's file pages, charged by
// fill() in chunks and given back oldest first when reclaim scans it. No doctest here: benchmarks
// include it too.
//
// count() and scan() may run on another thread's reclaim: the queue has its own lock, never held
// across a charge (a charge may reclaim, and so scan this very cache).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <system_error>

#include "memcg/hierarchy.hpp"
#include "memcg/reclaim.hpp"

namespace memcg_test {

template <class S>
class page_cache final : public memcg::basic_reclaimer<S> {
 public:
  // Registers itself on g; the destructor unregisters and gives back every page it holds.
  page_cache(memcg::basic_hierarchy<S>& h, memcg::basic_group<S>& g) : h_(h), g_(g) {
    h.register_reclaimer(g, *this);
  }
  ~page_cache() override {
    h_.unregister_reclaimer(*this);
    h_.uncharge_unchecked(g_, memcg::kind::file, held());
  }
  page_cache(const page_cache&) = delete;
  page_cache& operator=(const page_cache&) = delete;

  // Charges nr_pages in chunks of `chunk` (0: one chunk); returns the first refusal (or success).
  std::errc fill(std::int64_t nr_pages, std::int64_t chunk = 0) {
    if (chunk <= 0) chunk = nr_pages;
    for (std::int64_t done = 0; done < nr_pages;) {
      std::int64_t n = std::min(chunk, nr_pages - done);
      auto s = h_.try_charge(g_, memcg::kind::file, n);
      if (!s) return s.error;
      std::lock_guard<std::mutex> l(mu_);
      chunks_.push_back(n);
      held_ += n;
      done += n;
    }
    return {};
  }
  std::int64_t held() const {
    std::lock_guard<std::mutex> l(mu_);
    return held_;
  }
  // Scans that reached the cache (the filter allowed file pages).
  std::int64_t scans() const { return scans_.load(std::memory_order_relaxed); }  // a statistic

  std::int64_t count(memcg::reclaim_filter f) noexcept override {
    if (!memcg::filter_allows(f, memcg::kind::file)) return 0;
    std::lock_guard<std::mutex> l(mu_);
    return held_;
  }
  std::int64_t scan(std::int64_t nr_pages, memcg::reclaim_filter f) override {
    if (!memcg::filter_allows(f, memcg::kind::file)) return 0;
    scans_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    std::lock_guard<std::mutex> l(mu_);
    std::int64_t freed = 0;
    while (freed < nr_pages && !chunks_.empty()) {
      std::int64_t n = std::min(chunks_.front(), nr_pages - freed);
      h_.uncharge_unchecked(g_, memcg::kind::file, n);
      if ((chunks_.front() -= n) == 0) chunks_.pop_front();
      held_ -= n;
      freed += n;
    }
    return freed;
  }

 private:
  memcg::basic_hierarchy<S>& h_;
  memcg::basic_group<S>& g_;
  mutable std::mutex mu_;
  std::deque<std::int64_t> chunks_;
  std::int64_t held_ = 0;
  std::atomic<std::int64_t> scans_{0};
};

}  // namespace memcg_test
