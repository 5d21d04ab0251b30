// examples/page_cache.hpp: an example reclaimer, the page cache of one group. The examples,
// memcg-sim, the tests and the benchmarks all use this one (it is no part of the library: the
// library never owns the memory it reclaims, it asks a program's reclaimers).
//
// Contents:
//   page_cache<Sync>   file pages and reclaimable slab of one group in one queue, charged by
//                      fill() (or recorded by add() after the program charged them), given back
//                      oldest first when reclaim scans it; remove() and adopt() for programs
//                      that uncharge or rmdir themselves (memcg-sim)
//
// Threads: count() and scan() may run on another thread's reclaim. The queue has its own lock,
// never held across a charge (a charge may reclaim, and so scan this very cache).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <iterator>
#include <mutex>
#include <system_error>

#include "memcg/hierarchy.hpp"
#include "memcg/reclaim.hpp"

namespace memcg_example {

template <memcg::sync_policy S>
class page_cache : public memcg::basic_reclaimer<S> {
 public:
  // Registers itself on g; the destructor unregisters and gives back every page it holds.
  // Pages are uncharged through g's handle (objcg): after rmdir they leave the group that
  // holds them then, as the kernel's reparented page cache does.
  page_cache(memcg::basic_hierarchy<S>& h, memcg::basic_group<S>& g) : h_(h), objcg_(g.objcg()) {
    h.register_reclaimer(g, *this);
  }
  ~page_cache() override {
    h_.unregister_reclaimer(*this);
    give_back();
  }
  page_cache(const page_cache&) = delete;
  page_cache& operator=(const page_cache&) = delete;

  // Charges nr_pages of k (file or slab_reclaimable) in chunks of `chunk` (0: one chunk), each
  // chunk a queue entry; returns the first refusal (or success).
  std::errc fill(std::int64_t nr_pages, std::int64_t chunk = 0, memcg::kind k = memcg::kind::file) {
    if (chunk <= 0) chunk = nr_pages;
    for (std::int64_t done = 0; done < nr_pages;) {
      std::int64_t n = std::min(chunk, nr_pages - done);
      auto s = h_.try_charge(*objcg_->memcg(), k, n);
      if (!s) return s.error;
      add(k, n);
      done += n;
    }
    return {};
  }
  // Records nr_pages of k the program charged itself. `seq` orders entries for adopt().
  void add(memcg::kind k, std::int64_t nr_pages, std::uint64_t seq = 0) {
    std::lock_guard<std::mutex> l(mu_);
    q_.push_back({seq, k, nr_pages});
  }
  // Forgets the oldest nr_pages of k (the program uncharged them itself), as a program
  // dropping cache drops what it has held longest.
  void remove(memcg::kind k, std::int64_t nr_pages) {
    std::lock_guard<std::mutex> l(mu_);
    take(
        nr_pages, [k](memcg::kind e) { return e == k; }, false);
  }
  // rmdir: the removed group's pages become this cache's, merged by `seq` so that reclaim
  // still takes the oldest first. `child` is left empty.
  void adopt(page_cache& child) {
    std::scoped_lock l(mu_, child.mu_);
    std::deque<entry> merged;
    std::merge(q_.begin(), q_.end(), child.q_.begin(), child.q_.end(), std::back_inserter(merged),
               [](const entry& a, const entry& b) { return a.seq < b.seq; });
    q_ = std::move(merged);
    child.q_.clear();
  }
  // Uncharges every page it holds.
  void give_back() {
    std::lock_guard<std::mutex> l(mu_);
    take(
        INT64_MAX, [](memcg::kind) { return true; }, true);
  }

  std::int64_t held() const {
    std::lock_guard<std::mutex> l(mu_);
    std::int64_t n = 0;
    for (const entry& e : q_) n += e.pages;
    return n;
  }
  std::int64_t held(memcg::kind k) const {
    std::lock_guard<std::mutex> l(mu_);
    std::int64_t n = 0;
    for (const entry& e : q_)
      if (e.k == k) n += e.pages;
    return n;
  }
  // Times reclaim asked this cache to free pages.
  std::int64_t scans() const { return scans_.load(std::memory_order_relaxed); }  // a statistic

  std::int64_t count(memcg::reclaim_filter f) noexcept override {
    std::lock_guard<std::mutex> l(mu_);
    std::int64_t n = 0;
    for (const entry& e : q_)
      if (memcg::filter_allows(f, e.k)) n += e.pages;
    return n;
  }
  std::int64_t scan(std::int64_t nr_pages, memcg::reclaim_filter f) override {
    scans_.fetch_add(1, std::memory_order_relaxed);  // a statistic
    std::lock_guard<std::mutex> l(mu_);
    return take(
        nr_pages, [f](memcg::kind k) { return memcg::filter_allows(f, k); }, true);
  }

 protected:
  // Reclaim took `pages` of kind k from this cache (called with its lock held): a hook for
  // programs that report what reclaim freed (memcg-sim's --explain).
  virtual void on_reclaimed(memcg::kind, std::int64_t) {}

 private:
  struct entry {
    std::uint64_t seq;
    memcg::kind k;
    std::int64_t pages;
  };

  // Takes up to nr_pages of the kinds `pick` accepts off the queue, oldest first, uncharging
  // them if `uncharge` (inside reclaim those uncharges go straight to the counters). Called
  // with mu_ held.
  template <class Pick>
  std::int64_t take(std::int64_t nr_pages, Pick pick, bool uncharge) {
    std::int64_t taken = 0;
    for (auto it = q_.begin(); it != q_.end() && taken < nr_pages;) {
      if (!pick(it->k)) {
        ++it;
        continue;
      }
      std::int64_t n = std::min(nr_pages - taken, it->pages);
      if (uncharge) {
        (void)objcg_->uncharge(it->k, n);
        on_reclaimed(it->k, n);
      }
      it->pages -= n;
      taken += n;
      it = it->pages == 0 ? q_.erase(it) : it + 1;
    }
    return taken;
  }

  memcg::basic_hierarchy<S>& h_;
  memcg::basic_objcg<S>* objcg_;
  mutable std::mutex mu_;
  std::deque<entry> q_;
  std::atomic<std::int64_t> scans_{0};
};

}  // namespace memcg_example
