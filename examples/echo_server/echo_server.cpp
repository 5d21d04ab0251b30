// echo_server: an epoll TCP echo server over real loopback sockets, with tenants as groups,
// charging its own receive and send buffers through the C API (memcg/memcg.h, libmemcg-c: a
// memcg_sock per connection), and a load generator in the same program. With --metrics-port it
// serves the hierarchy's Prometheus exposition (examples/metrics) on 127.0.0.1.
//
// Each tenant has its own listening port and group; every accepted connection gets a
// memcg_sock in its tenant's group. The server reads from a kernel socket only what its pool
// lets it charge (the window advice, then recv()): when a tenant is at its limit the server
// stops reading that tenant's connections, the kernel's buffers fill and TCP's own flow control
// slows that tenant's senders. Nothing is dropped, so every byte is echoed back.
// Bytes read are receive memory (rmem_alloc) until they move to the send queue (consume(), then
// send()), and send memory (wmem_queued) until the kernel took them (ack()).
//
// The load: tenants 1..3 send `normal_bytes` per connection; tenant 0 floods (`flood_bytes` per
// connection, in large writes) with a much smaller limit. Checks: every byte comes back in order
// and intact; tenant 0's memory never exceeds its limit (the report's `over`: bytes forced
// past it, must stay 0) and is refused often; the others never are; at the end every
// counter is zero. Exit 0 on success.
//
// Usage: echo_server [--quick] [--metrics-port=N [--metrics-linger]]
//   --metrics-port=N   serve GET /metrics (HTTP/1.0, Prometheus text format 0.0.4) on
//                      127.0.0.1:N from a thread of its own; 0 picks a free port. The address
//                      is printed first: "metrics: http://127.0.0.1:PORT/metrics".
//   --metrics-linger   after the load and its report, keep serving until stdin is closed.
//
// The hierarchy and the protocol are the C API's (memcg_hierarchy, memcg_proto) rather than the
// C++ ones: the exposition reads them through memcg.h, which has no handle for a hierarchy made
// in C++ (libmemcg-c owns its hierarchies, and its per-thread stocks are its own).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
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

#include "memcg/memcg.h"
#include "memcg_metrics.h"

namespace {

constexpr int nr_tenants = 4;
constexpr std::int64_t chunk = 64 * 1024;
constexpr std::int64_t mss = 1460;  // the window advice's segment size (loopback's own is larger)

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

// A C API call that cannot fail here (valid handles and arguments): a failure is a bug.
void must(int rc, const char* what) {
  if (rc != 0) {
    std::fprintf(stderr, "echo_server: %s: %s\n", what, std::strerror(-rc));
    std::exit(2);
  }
}

memcg_sock_info info_of(const memcg_sock* s) {
  memcg_sock_info i{};
  i.size = sizeof i;
  must(memcg_sock_get_info(s, &i), "memcg_sock_get_info");
  return i;
}

std::int64_t usage_pages(const memcg_group* g, memcg_counter c) {
  memcg_counter_info i{};
  i.size = sizeof i;
  must(memcg_group_counter(g, c, &i), "memcg_group_counter");
  return i.usage;
}

struct sock_deleter {
  void operator()(memcg_sock* s) const noexcept { memcg_sock_destroy(s); }
};

struct tenant {
  memcg_group* g = nullptr;
  int listen_fd = -1;
  std::uint16_t port = 0;
  std::int64_t limit = 0;
  std::int64_t peak = 0;          // highest memory.current seen (bytes)
  std::int64_t window_closed = 0; // reads held back: the window advice was 0 below rcvbuf
  std::int64_t refused = 0;       // reads held back: the schedule was refused
  std::int64_t blocked = 0;       // moves to the send queue refused
  std::int64_t over = 0;          // the most bytes above memory.max after a forced re-charge
  std::int64_t bytes = 0;         // bytes echoed
};

// One server-side connection.
struct conn {
  int fd = -1;
  int t = 0;
  std::unique_ptr<memcg_sock, sock_deleter> mem;
  std::deque<char> rq;  // read, not yet queued for sending (rmem_alloc)
  std::deque<char> sq;  // queued for sending, not yet written (wmem_queued)
  bool eof = false;
  std::uint32_t events = 0;
};

class server {
 public:
  server(memcg_proto* prot, std::vector<tenant>& ts) : prot_(prot), ts_(ts) {
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
        std::int64_t cur = usage_pages(ts_[i].g, MEMCG_COUNTER_MEMORY) * MEMCG_PAGE_SIZE;
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
      memcg_sock* s = nullptr;
      must(memcg_sock_open(prot_, ts_[t].g, &s), "memcg_sock_open");
      c->mem.reset(s);
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
    memcg_sock* s = c.mem.get();
    while (!c.eof) {
      memcg_window_advice a{};
      a.size = sizeof a;
      must(memcg_sock_advice(s, mss, &a), "memcg_sock_advice");
      std::int64_t want = std::min<std::int64_t>(a.rcv_window, chunk);
      if (want <= 0) {
        memcg_sock_info i = info_of(s);
        if (i.rmem_alloc < i.rcvbuf) ++t.window_closed;  // not just rcvbuf: memory
        break;
      }
      if (memcg_sock_rmem_schedule(s, want, 0) != 0) {  // the group is at its limit: leave it
        ++t.refused;                                     // in the kernel
        break;
      }
      ssize_t r = read(c.fd, buf, static_cast<std::size_t>(want));
      if (r <= 0) {
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) die("read");
        if (r == 0) c.eof = true;
        // Nothing came: give the scheduled pages back (sk_mem_uncharge of nothing is
        // sk_mem_reclaim: the forward allocation's whole pages).
        must(memcg_sock_mem_uncharge(s, 0), "memcg_sock_mem_uncharge");
        break;
      }
      // Charge what arrived (it fits: scheduled above) and queue it.
      if (memcg_sock_recv(s, r, 0) != 0) {
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
      must(memcg_sock_consume(s, n), "memcg_sock_consume");
      if (memcg_sock_send(s, n) != 0) {
        must(memcg_sock_recv(s, n, /*forced=*/1), "memcg_sock_recv forced");
        ++t.blocked;
        // Forced: usage can pass memory.max here and only here (every other charge is checked
        // against it), so the highest excess is measured right after.
        std::int64_t cur = usage_pages(t.g, MEMCG_COUNTER_MEMORY) * MEMCG_PAGE_SIZE;
        t.over = std::max(t.over, cur - t.limit);
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
      must(memcg_sock_ack(s, w), "memcg_sock_ack");
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
        must(memcg_sock_close(c.mem.get()), "memcg_sock_close");
        close(c.fd);
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }

  memcg_proto* prot_;
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

// GET /metrics over HTTP/1.0 on 127.0.0.1, one request per connection, from a thread of its
// own: each scrape renders the hierarchy and the protocol through memcg_metrics (the C API).
class metrics_server {
 public:
  metrics_server(memcg_hierarchy* h, memcg_proto* p, std::uint16_t port) : h_(h), p_(p) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) die("metrics socket");
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) die("metrics bind");
    if (listen(fd_, 16) < 0) die("metrics listen");
    socklen_t len = sizeof a;
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) < 0) die("getsockname");
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~metrics_server() {
    // release: pairs with the acquire in run(); the loop wakes within its poll timeout.
    stop_.store(true, std::memory_order_release);
    thread_.join();
    close(fd_);
  }
  std::uint16_t port() const { return port_; }
  // Scrapes begun. seq_cst: pairs with the increment in serve().
  std::int64_t scrapes() const { return scrapes_.load(std::memory_order_seq_cst); }

 private:
  void run() {
    while (!stop_.load(std::memory_order_acquire)) {  // pairs with the release in the destructor
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, 50) <= 0) continue;
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval tv{2, 0};  // a stuck client cannot hold the thread
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      serve(c);
      close(c);
    }
  }

  // Reads the request head (up to its blank line, at most 8 KiB) and answers it.
  void serve(int c) {
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos) {
      if (req.size() > 8192) return reply(c, "431 Request Header Fields Too Large", "text/plain",
                                         "request too large\n");
      ssize_t r = read(c, buf, sizeof buf);
      if (r <= 0) return;
      req.append(buf, static_cast<std::size_t>(r));
    }
    std::string line = req.substr(0, req.find_first_of("\r\n"));
    std::size_t sp1 = line.find(' '), sp2 = line.find(' ', sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos)
      return reply(c, "400 Bad Request", "text/plain", "bad request\n");
    std::string method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (target.substr(0, target.find('?')) != "/metrics")
      return reply(c, "404 Not Found", "text/plain", "only /metrics is here\n");
    if (method != "GET" && method != "HEAD")
      return reply(c, "405 Method Not Allowed", "text/plain", "GET /metrics\n");
    memcg_metrics_proto proto{p_, "tcp"};
    char* text = nullptr;
    std::size_t len = 0;
    // Counted before it reads anything (the load's checks ask whether a scrape ran alongside);
    // seq_cst: the total order with the main thread's read of it after the load.
    scrapes_.fetch_add(1, std::memory_order_seq_cst);
    if (int e = memcg_metrics_render(h_, &proto, 1, &text, &len); e != 0) {
      std::string why = std::string("memcg_metrics_render: ") + std::strerror(-e) + "\n";
      return reply(c, "500 Internal Server Error", "text/plain", why);
    }
    reply(c, "200 OK", MEMCG_METRICS_CONTENT_TYPE, std::string(text, len), method == "HEAD");
    std::free(text);
  }

  static void reply(int c, const char* status, const char* type, const std::string& body,
                    bool head_only = false) {
    std::string out = std::string("HTTP/1.0 ") + status + "\r\nContent-Type: " + type +
                      "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n";
    if (!head_only) out += body;
    for (std::size_t done = 0; done < out.size();) {
      ssize_t w = send(c, out.data() + done, out.size() - done, MSG_NOSIGNAL);
      if (w <= 0) return;  // the client left (or timed out): nothing to tell it
      done += static_cast<std::size_t>(w);
    }
  }

  memcg_hierarchy* h_;
  memcg_proto* p_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> scrapes_{0};
  std::thread thread_;
};

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: echo_server [--quick] [--metrics-port=N [--metrics-linger]]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, linger = false;
  long metrics_port = -1;  // -1: no metrics
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--quick") == 0) {
      quick = true;
    } else if (std::strncmp(a, "--metrics-port=", 15) == 0) {
      char* end = nullptr;
      errno = 0;
      metrics_port = std::strtol(a + 15, &end, 10);
      if (errno || end == a + 15 || *end || metrics_port < 0 || metrics_port > 65535) usage();
    } else if (std::strcmp(a, "--metrics-linger") == 0) {
      linger = true;
    } else {
      usage();
    }
  }
  if (linger && metrics_port < 0) usage();
  const int nconn = quick ? 4 : 8;
  const std::int64_t normal_bytes = quick ? 256 * 1024 : 2 * 1024 * 1024;
  const std::int64_t flood_bytes = quick ? 2 * 1024 * 1024 : 16 * 1024 * 1024;

  memcg_hierarchy* h = nullptr;
  memcg_proto* prot = nullptr;
  must(memcg_hierarchy_create(nullptr, &h), "memcg_hierarchy_create");
  must(memcg_proto_create(nullptr, &prot), "memcg_proto_create");
  std::vector<tenant> ts(nr_tenants);
  for (int i = 0; i < nr_tenants; ++i) {
    std::string path = "tenant" + std::to_string(i);
    must(memcg_mkdir(h, path.c_str(), &ts[i].g), "memcg_mkdir");
    ts[i].limit = i == 0 ? 256 * 1024 : 4 * 1024 * 1024;  // tenant0 floods with a small limit
    must(memcg_write(h, ts[i].g, "memory.max", std::to_string(ts[i].limit).c_str()),
         "memory.max");
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

  std::unique_ptr<metrics_server> metrics;
  if (metrics_port >= 0) {
    metrics = std::make_unique<metrics_server>(h, prot, static_cast<std::uint16_t>(metrics_port));
    std::printf("metrics: http://127.0.0.1:%u/metrics\n", static_cast<unsigned>(metrics->port()));
    std::fflush(stdout);
  }

  std::atomic<bool> stop{false};
  server srv(prot, ts);
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
  // A scrape reads memory.stat without taking any thread's stock, so scraped or not, nothing
  // forces a tenant past its limit (before, a read took the stocks: tests/stock_proof_test.cpp).
  std::printf("%-8s %10s %12s %10s %8s %8s %8s %8s %8s %s\n", "tenant", "limit", "echoed",
              "peak", "closed", "refused", "blocked", "over", "secs", "intact");
  for (int i = 0; i < nr_tenants; ++i) {
    std::int64_t expect = nconn * (i == 0 ? flood_bytes : normal_bytes);
    bool intact = ok[i] && got[i].load() == expect && ts[i].bytes == expect;
    std::printf("tenant%d  %10lld %12lld %10lld %8lld %8lld %8lld %8lld %8.2f %s\n", i,
                static_cast<long long>(ts[i].limit), static_cast<long long>(ts[i].bytes),
                static_cast<long long>(ts[i].peak), static_cast<long long>(ts[i].window_closed),
                static_cast<long long>(ts[i].refused), static_cast<long long>(ts[i].blocked),
                static_cast<long long>(ts[i].over), secs[i], intact ? "yes" : "NO");
    if (!intact) pass = false;
    if (ts[i].over > 0) pass = false;               // nothing forced past the limit
    if (ts[i].peak > ts[i].limit) pass = false;     // held at its limit
    if (i > 0 && ts[i].window_closed + ts[i].refused + ts[i].blocked > 0) pass = false;  // unaffected
    close(ts[i].listen_fd);
  }
  // Held back: its window closed, a schedule refused, or a send refused (its bytes went back to
  // the receive queue). Which one depends on where the stocks parked its pages: the advice counts
  // them as room, so with the pages parked the window stays open and the send is refused.
  if (ts[0].window_closed + ts[0].refused + ts[0].blocked == 0) {
    std::printf("the flooding tenant was never held back\n");
    pass = false;
  }
  // Every stock gives its pre-charged pages back (a new charge batch drains them).
  std::int64_t batch = 0;
  must(memcg_hierarchy_charge_batch(h, &batch), "memcg_hierarchy_charge_batch");
  must(memcg_hierarchy_set_charge_batch(h, batch), "memcg_hierarchy_set_charge_batch");
  for (int i = 0; i < nr_tenants; ++i)
    if (usage_pages(ts[i].g, MEMCG_COUNTER_MEMORY) != 0 ||
        usage_pages(ts[i].g, MEMCG_COUNTER_TCP) != 0)
      pass = false;
  memcg_proto_stats ps{};
  ps.size = sizeof ps;
  must(memcg_proto_stats_get(prot, &ps), "memcg_proto_stats_get");
  if (ps.memory_allocated != 0 || ps.sockets_allocated != 0) pass = false;
  std::printf("total %.2f s; protocol memory_allocated %lld pages, sockets %lld: %s\n", total_s,
              static_cast<long long>(ps.memory_allocated),
              static_cast<long long>(ps.sockets_allocated), pass ? "PASS" : "FAIL");
  std::fflush(stdout);
  if (linger) {
    // Scrapes read the final state until the caller closes stdin.
    std::printf("metrics: lingering until stdin is closed\n");
    std::fflush(stdout);
    char b[256];
    while (read(0, b, sizeof b) > 0) {
    }
  }
  if (metrics) {
    std::printf("metrics: %lld scrapes\n", static_cast<long long>(metrics->scrapes()));
    metrics.reset();  // stops its thread before the hierarchy goes
  }
  memcg_proto_destroy(prot);
  memcg_hierarchy_destroy(h);
  return pass ? 0 : 1;
}
