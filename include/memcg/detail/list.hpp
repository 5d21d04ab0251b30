// memcg/detail/list.hpp: the intrusive doubly linked list, written once.
//
// A node type T has pointer members `next_` and `prev_` (T* each, null when unlinked) and
// befriends detail::list_ops. A list is a head pointer, and a tail pointer where appending must
// not walk. Every function requires the list's lock (the caller's).
#pragma once

namespace memcg::detail {

struct list_ops {
  template <class T>
  static void push_front(T*& head, T& n) noexcept {
    n.prev_ = nullptr;
    n.next_ = head;
    if (head) head->prev_ = &n;
    head = &n;
  }
  // Appends with a tail pointer (constant time).
  template <class T>
  static void push_back(T*& head, T*& tail, T& n) noexcept {
    n.next_ = nullptr;
    n.prev_ = tail;
    if (tail) tail->next_ = &n;
    else head = &n;
    tail = &n;
  }
  // Appends without one: walks the list (short lists only).
  template <class T>
  static void push_back(T*& head, T& n) noexcept {
    T* tail = head;
    while (tail && tail->next_) tail = tail->next_;
    push_back(head, tail, n);
  }
  // Requires: n is on the list whose head (and tail, if it keeps one) are given.
  template <class T>
  static void unlink(T*& head, T& n, T** tail = nullptr) noexcept {
    if (n.prev_) n.prev_->next_ = n.next_;
    else head = n.next_;
    if (n.next_) n.next_->prev_ = n.prev_;
    else if (tail) *tail = n.prev_;
    n.next_ = n.prev_ = nullptr;
  }
};

}  // namespace memcg::detail
