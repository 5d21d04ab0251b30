// echo_server: an epoll TCP echo server over real loopback sockets, with tenants as groups,
// charging its own receive and send buffers through the socket pool (memcg/sockmem.hpp), and
// a load generator in the same program.
//
// Each tenant has its own listening port and group; every accepted connection gets a
// sock_memory in its tenant's group. The server reads from a kernel socket only what its pool
// lets it charge (the window advice, then recv()): when a tenant is at its limit the server
// stops reading that tenant's connections, the kernel's buffers fill and TCP's own flow control
// slows that tenant's senders. Nothing is dropped, so every byte is echoed back.
// Bytes read are receive memory (rmem_alloc) until they move to the send queue (consume(), then
// send()), and send memory (wmem_queued) until the kernel took them (ack()).
//
// The load: tenants 1..3 send `normal_bytes` per connection; tenant 0 floods (`flood_bytes` per
// connection, in large writes) with a much smaller limit. Checks: every byte comes back in order
// and intact; tenant 0's memory never exceeds its limit and is refused often; the others never
// are; at the end every counter is zero. Exit 0 on success.
//
// Usage: echo_server [--quick]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "memcg/control.hpp"
#include "memcg/hierarchy.hpp"
#include "memcg/sockmem.hpp"

namespace {

constexpr int nr_tenants = 4;
constexpr std::int64_t chunk = 64 * 1024;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "echo_server: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

// Small kernel buffers on both ends, so that the backlog of a flood sits in the server's own
// (accounted) queues rather than in the kernel's.
void set_small_buffers(int fd) {
  int v = 32 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
}

void set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL, 0);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

// The pattern byte at `offset` of connection `id`.
unsigned char pattern(std::uint32_t id, std::int64_t offset) {
  return static_cast<unsigned char>((offset * 131 + id * 7 + (offset >> 12)) & 0xff);
}

struct tenant {
  memcg::group* g = nullptr;
  int listen_fd = -1;
  std::uint16_t port = 0;
  std::int64_t limit = 0;
  std::int64_t peak = 0;          // highest memory.current seen (bytes)
  std::int64_t window_closed = 0; // reads held back: the window advice was 0 below rcvbuf
  std::int64_t refused = 0;       // reads held back: the schedule was refused
  std::int64_t blocked = 0;       // moves to the send queue refused
  std::int64_t bytes = 0;         // bytes echoed
};

// One server-side connection.
struct conn {
  int fd = -1;
  int t = 0;
  std::unique_ptr<memcg::sock_memory> mem;
  std::deque<char> rq;  // read, not yet queued for sending (rmem_alloc)
  std::deque<char> sq;  // queued for sending, not yet written (wmem_queued)
  bool eof = false;
  std::uint32_t events = 0;
};

class server {
 public:
  server(memcg::hierarchy& h, memcg::proto_memory& prot, std::vector<tenant>& ts)
      : h_(h), prot_(prot), ts_(ts) {
    ep_ = epoll_create1(0);
    if (ep_ < 0) die("epoll_create1");
    for (int i = 0; i < nr_tenants; ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = static_cast<std::uint64_t>(i);  // < nr_tenants: a listening socket
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, ts_[i].listen_fd, &ev) < 0) die("epoll_ctl");
    }
  }
  ~server() { close(ep_); }

  void run(const std::atomic<bool>& stop) {
    epoll_event evs[64];
    while (!stop.load(std::memory_order_acquire) || !conns_.empty()) {
      int n = epoll_wait(ep_, evs, 64, 10);
      if (n < 0 && errno != EINTR) die("epoll_wait");
      for (int i = 0; i < n; ++i) {
        std::uint64_t key = evs[i].data.u64;
        if (key < nr_tenants) accept_all(static_cast<int>(key));
        else if (conn* c = find(key)) serve(*c);
      }
      // Connections held back by their tenant's limit get another chance each round: memory
      // freed by other connections of the tenant may let them read again.
      for (auto& [id, c] : conns_) serve(*c);
      reap();
      for (int i = 0; i < nr_tenants; ++i) {
        std::int64_t cur = ts_[i].g->memory.usage() * memcg::page_size;
        if (cur > ts_[i].peak) ts_[i].peak = cur;
      }
    }
  }

 private:
  conn* find(std::uint64_t key) {
    for (auto& [id, c] : conns_)
      if (id == key) return c.get();
    return nullptr;
  }

  void accept_all(int t) {
    for (;;) {
      int fd = accept4(ts_[t].listen_fd, nullptr, nullptr, SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        die("accept4");
      }
      auto c = std::make_unique<conn>();
      set_small_buffers(fd);
      c->fd = fd;
      c->t = t;
      c->mem = std::make_unique<memcg::sock_memory>(prot_, ts_[t].g);
      std::uint64_t key = next_key_++;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = key;
      c->events = EPOLLIN;
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
      conns_.emplace_back(key, std::move(c));
    }
  }

  void serve(conn& c) {
    tenant& t = ts_[c.t];
    char buf[chunk];
    // 1. Read what the pool lets us charge.
    while (!c.eof) {
      memcg::window_advice a = c.mem->advice();
      std::int64_t want = std::min<std::int64_t>(a.rcv_window, chunk);
      if (want <= 0) {
        if (c.mem->rmem_alloc() < c.mem->rcvbuf()) ++t.window_closed;  // not just rcvbuf: memory
        break;
      }
      if (!c.mem->sk_rmem_schedule(want)) {  // the group is at its limit: leave it in the kernel
        ++t.refused;
        break;
      }
      ssize_t r = read(c.fd, buf, static_cast<std::size_t>(want));
      if (r <= 0) {
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) die("read");
        if (r == 0) c.eof = true;
        c.mem->sk_mem_reclaim();  // nothing came: give the scheduled pages back
        break;
      }
      // Charge what arrived (it fits: scheduled above) and queue it.
      if (c.mem->recv(r) != std::errc{}) {
        std::fprintf(stderr, "echo_server: a scheduled receive was refused\n");
        std::exit(1);
      }
      c.rq.insert(c.rq.end(), buf, buf + r);
    }
    // 2. Move received bytes to the send queue: consumed first (their pages go back), then
    //    sent (charged again), so a full group can always move what it holds. Should the send
    //    be refused all the same, the bytes go back to the receive queue, forced.
    while (!c.rq.empty()) {
      std::int64_t n = std::min<std::int64_t>(static_cast<std::int64_t>(c.rq.size()), chunk);
      (void)c.mem->consume(n);
      if (c.mem->send(n) != std::errc{}) {
        (void)c.mem->recv(n, /*forced=*/true);
        ++t.blocked;
        break;
      }
      c.sq.insert(c.sq.end(), c.rq.begin(), c.rq.begin() + n);
      c.rq.erase(c.rq.begin(), c.rq.begin() + n);
    }
    // 3. Write; the kernel took it: acknowledged.
    while (!c.sq.empty()) {
      std::size_t n = std::min<std::size_t>(c.sq.size(), sizeof buf);
      std::copy(c.sq.begin(), c.sq.begin() + static_cast<std::ptrdiff_t>(n), buf);
      ssize_t w = write(c.fd, buf, n);
      if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        die("write");
      }
      c.sq.erase(c.sq.begin(), c.sq.begin() + w);
      (void)c.mem->ack(w);
      t.bytes += w;
    }
    // 4. Wait for what can make progress.
    std::uint32_t want_ev = (c.eof ? 0u : EPOLLIN) | (c.sq.empty() ? 0u : EPOLLOUT);
    if (want_ev != c.events) {
      epoll_event ev{};
      ev.events = want_ev;
      ev.data.u64 = key_of(c);
      if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev) < 0) die("epoll_ctl mod");
      c.events = want_ev;
    }
  }

  std::uint64_t key_of(const conn& c) const {
    for (const auto& [id, p] : conns_)
      if (p.get() == &c) return id;
    return 0;
  }

  void reap() {
    for (auto it = conns_.begin(); it != conns_.end();) {
      conn& c = *it->second;
      if (c.eof && c.rq.empty() && c.sq.empty()) {
        (void)c.mem->close();
        close(c.fd);
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }

  memcg::hierarchy& h_;
  memcg::proto_memory& prot_;
  std::vector<tenant>& ts_;
  int ep_ = -1;
  std::uint64_t next_key_ = nr_tenants;
  std::vector<std::pair<std::uint64_t, std::unique_ptr<conn>>> conns_;
};

// One tenant's load: `nconn` connections, each sending `total` pattern bytes in writes of
// `wsize` and checking every byte that comes back. Returns false on a mismatch.
// `window` caps the bytes in flight per connection (sent, not yet echoed); 0: no cap (a flood).
bool client(std::uint16_t port, int tenant_id, int nconn, std::int64_t total, std::int64_t wsize,
            std::int64_t window, std::atomic<std::int64_t>& done_bytes) {
  struct cc {
    int fd;
    std::uint32_t id;
    std::int64_t sent = 0, got = 0;
  };
  int ep = epoll_create1(0);
  std::vector<cc> cs;
  for (int i = 0; i < nconn; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    set_small_buffers(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("connect");
    set_nonblocking(fd);
    cs.push_back({fd, static_cast<std::uint32_t>(tenant_id * 1000 + i)});
  }
  for (std::size_t i = 0; i < cs.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  std::vector<unsigned char> buf(static_cast<std::size_t>(std::max<std::int64_t>(wsize, chunk)));
  std::size_t finished = 0;
  bool ok = true;
  epoll_event evs[64];
  while (finished < cs.size() && ok) {
    int n = epoll_wait(ep, evs, 64, 1000);
    for (int k = 0; k < n; ++k) {
      cc& c = cs[evs[k].data.u64];
      if ((evs[k].events & EPOLLOUT) && c.sent < total) {
        std::int64_t m = std::min(wsize, total - c.sent);
        if (window) m = std::min(m, window - (c.sent - c.got));
        for (std::int64_t j = 0; j < m; ++j) buf[j] = pattern(c.id, c.sent + j);
        ssize_t w = m > 0 ? write(c.fd, buf.data(), static_cast<std::size_t>(m)) : 0;
        if (w > 0) c.sent += w;
        if (c.sent == total) {
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = evs[k].data.u64;
          epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        }
      }
      if (evs[k].events & EPOLLIN) {
        ssize_t r;
        while ((r = read(c.fd, buf.data(), buf.size())) > 0) {
          for (ssize_t j = 0; j < r; ++j)
            if (buf[j] != pattern(c.id, c.got + j)) ok = false;
          c.got += r;
          done_bytes.fetch_add(r, std::memory_order_relaxed);
        }
        if (c.got == total) {
          shutdown(c.fd, SHUT_WR);  // EOF to the server: it closes its side
          epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
          ++finished;
        }
      }
    }
  }
  for (cc& c : cs) close(c.fd);
  close(ep);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int nconn = quick ? 4 : 8;
  const std::int64_t normal_bytes = quick ? 256 * 1024 : 2 * 1024 * 1024;
  const std::int64_t flood_bytes = quick ? 2 * 1024 * 1024 : 16 * 1024 * 1024;

  memcg::hierarchy h;
  memcg::proto_memory prot;
  std::vector<tenant> ts(nr_tenants);
  for (int i = 0; i < nr_tenants; ++i) {
    std::string path = "tenant" + std::to_string(i);
    ts[i].g = h.mkdir(path).g;
    ts[i].limit = i == 0 ? 256 * 1024 : 4 * 1024 * 1024;  // tenant0 floods with a small limit
    if (memcg::write_control(h, *ts[i].g, "memory.max", std::to_string(ts[i].limit)) != std::errc{})
      die("memory.max");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("bind");
    if (listen(fd, 128) < 0) die("listen");
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ts[i].listen_fd = fd;
    ts[i].port = ntohs(a.sin_port);
  }

  std::atomic<bool> stop{false};
  server srv(h, prot, ts);
  std::thread server_thread([&] { srv.run(stop); });

  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  std::vector<char> ok(nr_tenants, 0);
  std::vector<double> secs(nr_tenants, 0);
  std::vector<std::atomic<std::int64_t>> got(nr_tenants);
  for (int i = 0; i < nr_tenants; ++i) {
    clients.emplace_back([&, i] {
      auto s = std::chrono::steady_clock::now();
      ok[i] = client(ts[i].port, i, nconn, i == 0 ? flood_bytes : normal_bytes,
                     i == 0 ? 256 * 1024 : 16 * 1024, i == 0 ? 0 : 64 * 1024, got[i]);
      secs[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
    });
  }
  for (auto& c : clients) c.join();
  stop.store(true, std::memory_order_release);
  server_thread.join();
  double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  bool pass = true;
  std::printf("%-8s %10s %12s %10s %8s %8s %8s %8s %s\n", "tenant", "limit", "echoed", "peak",
              "closed", "refused", "blocked", "secs", "intact");
  for (int i = 0; i < nr_tenants; ++i) {
    std::int64_t expect = nconn * (i == 0 ? flood_bytes : normal_bytes);
    bool intact = ok[i] && got[i].load() == expect && ts[i].bytes == expect;
    std::printf("tenant%d  %10lld %12lld %10lld %8lld %8lld %8lld %8.2f %s\n", i,
                static_cast<long long>(ts[i].limit), static_cast<long long>(ts[i].bytes),
                static_cast<long long>(ts[i].peak), static_cast<long long>(ts[i].window_closed),
                static_cast<long long>(ts[i].refused),
                static_cast<long long>(ts[i].blocked), secs[i], intact ? "yes" : "NO");
    if (!intact) pass = false;
    if (ts[i].peak > ts[i].limit) pass = false;  // held at its limit
    if (i > 0 && ts[i].window_closed + ts[i].refused + ts[i].blocked > 0) pass = false;  // unaffected
    close(ts[i].listen_fd);
  }
  if (ts[0].window_closed + ts[0].refused == 0) {
    std::printf("the flooding tenant was never held back\n");
    pass = false;
  }
  h.drain_stocks(nullptr);
  for (int i = 0; i < nr_tenants; ++i)
    if (ts[i].g->memory.usage() != 0 || ts[i].g->tcp.usage() != 0) pass = false;
  if (prot.memory_allocated() != 0 || prot.sockets_allocated() != 0) pass = false;
  std::printf("total %.2f s; protocol memory_allocated %lld pages, sockets %lld: %s\n", total_s,
              static_cast<long long>(prot.memory_allocated()),
              static_cast<long long>(prot.sockets_allocated()), pass ? "PASS" : "FAIL");
  return pass ? 0 : 1;
}
