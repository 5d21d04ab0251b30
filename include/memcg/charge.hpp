// memcg/charge.hpp: a charge as an object.
//
// Contents:
//   basic_charge<Owner, Tag>   move-only RAII guard: owns nr_pages charged to an owner; gives
//                              them back when it dies unless release() hands them over
//   charge_result<Guard, F>    a guard or an error (ENOMEM with the refusing F, or EINVAL)
//   counter_charge<Sync>       the guard over a basic_counter
//   try_charge(counter, n)     try_charge that returns a guard
//
// Owner requirements: `owner->uncharge(nr_pages)` (Tag empty) or `owner->uncharge(tag, nr_pages)`,
// both noexcept. The guard is two words plus the tag; it never allocates and never throws.
#pragma once

#include <cstdint>
#include <system_error>
#include <type_traits>
#include <utility>

#include "memcg/config.hpp"
#include "memcg/counter.hpp"

namespace memcg {

struct no_tag {
  friend constexpr bool operator==(no_tag, no_tag) noexcept { return true; }
};

template <class Owner, class Tag = no_tag>
class [[nodiscard]] basic_charge {
 public:
  constexpr basic_charge() noexcept = default;
  // Adopts nr_pages already charged to owner (the caller hands its ownership to the guard).
  constexpr basic_charge(Owner* owner, std::int64_t nr_pages, Tag tag = Tag{}) noexcept
      : owner_(nr_pages > 0 ? owner : nullptr), nr_pages_(owner ? nr_pages : 0), tag_(tag) {
    if (!owner_) nr_pages_ = 0;
  }
  basic_charge(basic_charge&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)),
        nr_pages_(std::exchange(other.nr_pages_, 0)),
        tag_(other.tag_) {}
  basic_charge& operator=(basic_charge&& other) noexcept {
    if (this != &other) {
      reset();
      owner_ = std::exchange(other.owner_, nullptr);
      nr_pages_ = std::exchange(other.nr_pages_, 0);
      tag_ = other.tag_;
    }
    return *this;
  }
  basic_charge(const basic_charge&) = delete;
  basic_charge& operator=(const basic_charge&) = delete;
  ~basic_charge() { reset(); }

  std::int64_t size() const noexcept { return nr_pages_; }
  Owner* owner() const noexcept { return owner_; }
  const Tag& tag() const noexcept { return tag_; }
  explicit operator bool() const noexcept { return nr_pages_ > 0; }

  // Gives the pages back now; the guard is empty afterwards. Safe on an empty guard.
  void reset() noexcept {
    if (owner_ && nr_pages_ > 0) {
      if constexpr (std::is_empty_v<Tag>)
        (void)owner_->uncharge(nr_pages_);
      else
        (void)owner_->uncharge(tag_, nr_pages_);
    }
    owner_ = nullptr;
    nr_pages_ = 0;
  }

  // Hands the pages over to the caller: they stay charged and the guard forgets them.
  // Returns how many; 0 on an empty (moved-from or already released) guard.
  std::int64_t release() noexcept {
    owner_ = nullptr;
    return std::exchange(nr_pages_, 0);
  }

  // Moves nr_pages out into a new guard of the same owner. Asking for more than the guard holds
  // (or a negative count) returns an empty guard and changes nothing.
  basic_charge split(std::int64_t nr_pages) noexcept {
    if (nr_pages <= 0 || nr_pages > nr_pages_) return basic_charge{};
    nr_pages_ -= nr_pages;
    basic_charge part(owner_, nr_pages, tag_);
    if (nr_pages_ == 0) owner_ = nullptr;
    return part;
  }

  // Takes over the pages of other if both belong to the same owner and tag (or one is empty).
  // Returns false and changes nothing otherwise.
  bool merge(basic_charge&& other) noexcept {
    if (!other) return true;
    if (!*this) {
      *this = std::move(other);
      return true;
    }
    if (other.owner_ != owner_ || !(other.tag_ == tag_)) return false;
    nr_pages_ += other.release();
    return true;
  }

 private:
  Owner* owner_ = nullptr;
  std::int64_t nr_pages_ = 0;
  [[no_unique_address]] Tag tag_{};
};

// A charge guard, or why there is none.
template <class Guard, class Failed>
class [[nodiscard]] charge_result {
 public:
  charge_result(Guard guard) noexcept : guard_(std::move(guard)) {}  // NOLINT: implicit
  charge_result(std::errc error, Failed* failed) noexcept : error_(error), failed_(failed) {}

  explicit operator bool() const noexcept { return error_ == std::errc{}; }
  std::errc error() const noexcept { return error_; }
  // The lowest level that refused (ENOMEM only), nullptr otherwise.
  Failed* failed() const noexcept { return failed_; }
  Guard& value() noexcept { return guard_; }
  Guard take() noexcept { return std::move(guard_); }

 private:
  Guard guard_{};
  std::errc error_{};
  Failed* failed_ = nullptr;
};

template <sync_policy Sync>
using counter_charge = basic_charge<basic_counter<Sync>>;

// try_charge() that returns a guard owning the pages on success.
template <sync_policy Sync>
charge_result<counter_charge<Sync>, basic_counter<Sync>> try_charge(basic_counter<Sync>& c,
                                                                    std::int64_t nr_pages) noexcept {
  basic_counter<Sync>* fail = nullptr;
  std::errc err = c.try_charge(nr_pages, &fail);
  if (MEMCG_UNLIKELY(err != std::errc{})) return {err, fail};
  return counter_charge<Sync>(&c, nr_pages);
}

// A forced charge that returns a guard.
template <sync_policy Sync>
charge_result<counter_charge<Sync>, basic_counter<Sync>> force_charge(basic_counter<Sync>& c,
                                                                      std::int64_t nr_pages) noexcept {
  std::errc err = c.charge(nr_pages);
  if (MEMCG_UNLIKELY(err != std::errc{})) return {err, nullptr};
  return counter_charge<Sync>(&c, nr_pages);
}

}  // namespace memcg
