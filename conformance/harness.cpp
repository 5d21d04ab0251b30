// Plumbing of the conformance harness (see harness.hpp).
#include "harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <linux/sockios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace conf {

env E;
std::vector<row> rows;

// ------------------------------------------------------------------------------------------
// files

std::optional<std::string> slurp(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string s;
  char b[4096];
  for (;;) {
    ssize_t n = ::read(fd, b, sizeof b);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    s.append(b, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return s;
}

int put(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t n = ::write(fd, value.data(), value.size());
  int e = n < 0 ? errno : 0;
  ::close(fd);
  return e;
}

std::string errno_name(int e) {
  switch (e) {
    case 0: return "ok";
    case EBUSY: return "EBUSY";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return "errno " + std::to_string(e);
  }
}

void msleep(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

std::string fmt(long long v) { return v == unlimited ? std::string("max") : std::to_string(v); }

// ------------------------------------------------------------------------------------------
// cleanup state: fixed arrays, so that the signal handler touches no allocator

namespace {
constexpr int max_groups = 64, max_agents = 16, path_len = 512;
char g_dirs[max_groups][path_len];
volatile sig_atomic_t g_ndirs = 0;
volatile pid_t g_agents[max_agents];
char g_files[4][path_len];
volatile sig_atomic_t g_nfiles = 0;

void remove_tree_raw(const char* dir) {  // depth-first rmdir of a stale tree (no allocation-free
  DIR* d = ::opendir(dir);               // requirement: only called outside signal handlers)
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (e->d_type != DT_DIR || !std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    std::string sub = std::string(dir) + "/" + e->d_name;
    remove_tree_raw(sub.c_str());
  }
  ::closedir(d);
  for (int i = 0; i < 50 && ::rmdir(dir) != 0 && errno == EBUSY; ++i) msleep(20);
}

void kill_and_remove(int keep = 0) noexcept {
  for (int i = 0; i < max_agents; ++i) {
    pid_t p = g_agents[i];
    if (p > 0) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
      g_agents[i] = 0;
    }
  }
  for (int i = 0; i < g_nfiles; ++i) ::unlink(g_files[i]);
  for (int i = g_ndirs - 1; i >= keep; --i) {
    // A group whose last task just exited may answer EBUSY for a moment.
    for (int t = 0; t < 100 && ::rmdir(g_dirs[i]) != 0 && errno == EBUSY; ++t) {
      struct timespec ts{0, 10 * 1000 * 1000};
      ::nanosleep(&ts, nullptr);
    }
  }
  g_ndirs = keep;
}

void on_signal(int sig) {
  kill_and_remove();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void remember_dir(const std::string& d) {
  if (g_ndirs >= max_groups || d.size() >= path_len) throw std::runtime_error("too many groups");
  std::snprintf(g_dirs[g_ndirs], path_len, "%s", d.c_str());
  g_ndirs = g_ndirs + 1;
}
void remember_agent(pid_t p) {
  for (int i = 0; i < max_agents; ++i)
    if (g_agents[i] == 0) { g_agents[i] = p; return; }
  ::kill(p, SIGKILL);
  throw std::runtime_error("too many agents");
}
void forget_agent(pid_t p) {
  for (int i = 0; i < max_agents; ++i)
    if (g_agents[i] == p) g_agents[i] = 0;
}
}  // namespace

void cleanup() noexcept { kill_and_remove(); }
int group_mark() noexcept { return g_ndirs; }
void remove_groups_since(int mark) noexcept { kill_and_remove(mark); }

void install_signal_cleanup() {
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGALRM}) ::sigaction(s, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  std::atexit([] { cleanup(); });
}

// ------------------------------------------------------------------------------------------
// environment

std::optional<env> setup_env(const std::string& prefix, const std::string& workdir, std::string& why) {
  env e;
  auto cg = slurp("/proc/self/cgroup");
  if (!cg) { why = "no /proc/self/cgroup"; return std::nullopt; }
  std::string v1path, v2path;
  bool have_v2_line = false;
  std::istringstream in(*cg);
  for (std::string line; std::getline(in, line);) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    std::istringstream cs(ctrls);
    for (std::string c; std::getline(cs, c, ',');)
      if (c == "memory") v1path = path;
    if (line.compare(0, 3, "0::") == 0) { have_v2_line = true; v2path = path; }
  }
  if (!v1path.empty() && access("/sys/fs/cgroup/memory/cgroup.procs", F_OK) == 0) {
    e.v2 = false;
    e.own = "/sys/fs/cgroup/memory" + (v1path == "/" ? std::string() : v1path);
  } else if (have_v2_line) {
    std::string root = access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0 &&
                               access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0
                           ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
    e.v2 = true;
    e.own = root + (v2path == "/" ? std::string() : v2path);
    auto sub = slurp(e.own + "/cgroup.subtree_control");
    if (!sub || sub->find("memory") == std::string::npos) {
      why = "cgroup v2 without the memory controller delegated below " + e.own +
            " (cgroup.subtree_control has no 'memory')";
      return std::nullopt;
    }
  } else {
    why = "no memory cgroup controller (neither a v1 memory hierarchy nor cgroup v2)";
    return std::nullopt;
  }
  if (access((e.own + "/cgroup.procs").c_str(), W_OK) != 0) {
    why = e.own + " is not writable (run as root, or with a delegated cgroup)";
    return std::nullopt;
  }
  // Stale groups of our prefix from runs that were killed: their owner pid is gone.
  if (DIR* d = ::opendir(e.own.c_str())) {
    std::vector<std::string> stale;
    while (dirent* de = ::readdir(d)) {
      std::string n = de->d_name;
      if (de->d_type != DT_DIR || n.rfind(prefix + "-", 0) != 0) continue;
      long pid = std::strtol(n.c_str() + prefix.size() + 1, nullptr, 10);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0 && pid != ::getpid()) continue;  // alive
      stale.push_back(e.own + "/" + n);
    }
    ::closedir(d);
    for (const auto& s : stale) {
      std::fprintf(stderr, "conformance: removing stale group %s\n", s.c_str());
      remove_tree_raw(s.c_str());
    }
  }
  e.base = e.own + "/" + prefix + "-" + std::to_string(::getpid());
  if (::mkdir(e.base.c_str(), 0755) != 0) {
    why = "cannot create " + e.base + ": " + std::strerror(errno);
    return std::nullopt;
  }
  remember_dir(e.base);
  if (e.v2 && put(e.base + "/cgroup.subtree_control", "+memory") != 0) {
    why = "cannot enable the memory controller below " + e.base;
    return std::nullopt;
  }
  // The page-cache file must live on a disk file system: tmpfs pages are shmem, not file cache.
  e.workdir = workdir;
  struct statfs sf{};
  if (::statfs(workdir.c_str(), &sf) != 0) {
    why = "cannot statfs " + workdir;
    return std::nullopt;
  }
  constexpr long tmpfs_magic = 0x01021994;
  if (sf.f_type == tmpfs_magic) e.workdir.clear();  // page-cache rows are skipped
  return e;
}

// ------------------------------------------------------------------------------------------
// groups

std::string group::file(const std::string& v1) const {
  if (!E.v2) return dir + "/" + v1;
  static const std::map<std::string, std::string> v2names = {
      {"memory.limit_in_bytes", "memory.max"},
      {"memory.usage_in_bytes", "memory.current"},
      {"memory.max_usage_in_bytes", "memory.peak"},
      {"memory.soft_limit_in_bytes", "memory.low"},
  };
  auto it = v2names.find(v1);
  return dir + "/" + (it == v2names.end() ? v1 : it->second);
}

long long group::get(const std::string& v1) const {
  if (E.v2 && v1 == "memory.failcnt") {  // v2: the max events stand in for failcnt
    auto k = keyed("memory.events");
    auto it = k.find("max");
    return it == k.end() ? -1 : it->second;
  }
  auto s = slurp(file(v1));
  if (!s) return -1;
  if (s->rfind("max", 0) == 0) return unlimited;
  return std::strtoll(s->c_str(), nullptr, 10);
}

int group::set(const std::string& v1, const std::string& value) const { return put(file(v1), value); }

std::map<std::string, long long> group::keyed(const std::string& v1) const {
  std::map<std::string, long long> m;
  auto s = slurp(file(v1));
  if (!s) return m;
  std::istringstream in(*s);
  std::string k;
  long long v;
  while (in >> k >> v) m[k] = v;
  return m;
}

group mkgroup(const std::string& rel) {
  group g{rel, E.base + "/" + rel};
  if (::mkdir(g.dir.c_str(), 0755) != 0)
    throw std::runtime_error("mkdir " + g.dir + ": " + std::strerror(errno));
  remember_dir(g.dir);
  if (E.v2) put(g.dir + "/cgroup.subtree_control", "+memory");
  return g;
}

// ------------------------------------------------------------------------------------------
// agents

namespace {

struct conn_info {
  long long rmem = 0, rcvbuf = 0, fwd = 0, wmem_queued = 0, sndbuf = 0, drops = 0, inq = 0, outq = 0;
};

conn_info meminfo(int fd) {
  conn_info c;
  std::uint32_t mi[SK_MEMINFO_VARS] = {};
  socklen_t len = sizeof mi;
  if (::getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mi, &len) == 0) {
    c.rmem = mi[SK_MEMINFO_RMEM_ALLOC];
    c.rcvbuf = mi[SK_MEMINFO_RCVBUF];
    c.fwd = mi[SK_MEMINFO_FWD_ALLOC];
    c.wmem_queued = mi[SK_MEMINFO_WMEM_QUEUED];
    c.sndbuf = mi[SK_MEMINFO_SNDBUF];
    c.drops = mi[SK_MEMINFO_DROPS];
  }
  int v = 0;
  if (::ioctl(fd, SIOCINQ, &v) == 0) c.inq = v;
  if (::ioctl(fd, SIOCOUTQ, &v) == 0) c.outq = v;
  return c;
}

// The agent's side: a small command interpreter. Everything it needs is allocated before it
// joins its group (setup), so its own charges after joining are the workload's.
struct agent_state {
  char* reserve = nullptr;
  long long reserve_len = 0, touched = 0;
  char* buf = nullptr;
  long long buf_len = 0;
  int file = -1;
  int listener = -1;
  std::vector<int> conns;
  std::vector<int> pipes;
  char reply[8192];
};

bool write_all(int fd, const char* p, std::size_t n) {
  while (n) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void agent_reply(int fd, agent_state& st, const char* fmtstr, ...) __attribute__((format(printf, 3, 4)));
void agent_reply(int fd, agent_state& st, const char* fmtstr, ...) {
  va_list ap;
  va_start(ap, fmtstr);
  int n = std::vsnprintf(st.reply, sizeof st.reply - 1, fmtstr, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > static_cast<int>(sizeof st.reply) - 2) n = static_cast<int>(sizeof st.reply) - 2;
  st.reply[n] = '\n';
  write_all(fd, st.reply, static_cast<std::size_t>(n) + 1);
}

[[noreturn]] void agent_main(int fd, const agent_setup& s) {
  agent_state st;
  // Pin to one CPU: one per-CPU stock, the same every step.
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  ::sched_setaffinity(0, sizeof set, &set);
  if (s.anon_reserve > 0) {
    st.reserve_len = s.anon_reserve;
    void* p = ::mmap(nullptr, static_cast<std::size_t>(s.anon_reserve), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) ::_exit(3);
    ::madvise(p, static_cast<std::size_t>(s.anon_reserve), MADV_NOHUGEPAGE);
    st.reserve = static_cast<char*>(p);
    // A read fault maps the zero page: the page tables exist now, no anon page is charged yet.
    volatile char sink = 0;
    for (long long o = 0; o < s.anon_reserve; o += page) sink = sink + st.reserve[o];
  }
  if (s.buffer > 0) {
    st.buf_len = s.buffer;
    st.buf = static_cast<char*>(::malloc(static_cast<std::size_t>(s.buffer)));
    if (!st.buf) ::_exit(3);
    std::memset(st.buf, 'x', static_cast<std::size_t>(s.buffer));
  }
  st.conns.reserve(64);
  st.pipes.reserve(256);
  write_all(fd, "ready\n", 6);
  std::string in;
  in.reserve(4096);
  char b[512];
  for (;;) {
    auto nl = in.find('\n');
    if (nl == std::string::npos) {
      ssize_t n = ::read(fd, b, sizeof b);
      if (n <= 0) ::_exit(0);
      in.append(b, static_cast<std::size_t>(n));
      continue;
    }
    std::string line = in.substr(0, nl);
    in.erase(0, nl + 1);
    char cmd[64] = {};
    long long a1 = 0, a2 = 0, a3 = 0;
    std::sscanf(line.c_str(), "%63s %lld %lld %lld", cmd, &a1, &a2, &a3);
    std::string c = cmd;
    if (c == "exit") {
      ::_exit(0);
    } else if (c == "anon") {  // write-touch a1 more bytes of the reserve, a page at a time
      long long end = std::min(st.reserve_len, st.touched + a1);
      for (; st.touched < end; st.touched += page) st.reserve[st.touched] = 1;
      agent_reply(fd, st, "ok %lld", st.touched);
    } else if (c == "file_open") {  // an unlinked file in the work directory
      std::string path = line.substr(line.find(' ') + 1);
      st.file = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (st.file >= 0) ::unlink(path.c_str());
      agent_reply(fd, st, st.file >= 0 ? "ok" : "err open %d", errno);
    } else if (c == "file_write") {  // a1 bytes in pieces of a2
      long long done = 0;
      while (done < a1) {
        long long n = std::min(a2, a1 - done);
        ssize_t w = ::write(st.file, st.buf, static_cast<std::size_t>(n));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += w;
      }
      agent_reply(fd, st, done == a1 ? "ok %lld" : "err short %lld", done);
    } else if (c == "file_fsync") {
      agent_reply(fd, st, ::fsync(st.file) == 0 ? "ok" : "err fsync");
    } else if (c == "tcp_listen") {
      st.listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof a;
      if (::bind(st.listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::listen(st.listener, 64) != 0 ||
          ::getsockname(st.listener, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        agent_reply(fd, st, "err listen %d", errno);
      } else {
        agent_reply(fd, st, "ok %d", ntohs(a.sin_port));
      }
    } else if (c == "tcp_accept") {  // a1 connections, nonblocking afterwards
      int got = 0;
      for (; got < a1; ++got) {
        int s2 = ::accept4(st.listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (s2 < 0) break;
        st.conns.push_back(s2);
      }
      agent_reply(fd, st, got == a1 ? "ok %d" : "err accepted %d", got);
    } else if (c == "tcp_connect") {  // a1 = port, a2 = connections (TCP_NODELAY: one write, one segment)
      int got = 0;
      for (; got < a2; ++got) {
        int s2 = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(a1));
        int one = 1;
        ::setsockopt(s2, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (::connect(s2, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) { ::close(s2); break; }
        ::fcntl(s2, F_SETFL, ::fcntl(s2, F_GETFL) | O_NONBLOCK);
        st.conns.push_back(s2);
      }
      agent_reply(fd, st, got == a2 ? "ok %d" : "err connected %d", got);
    } else if (c == "tcp_send") {  // a1 writes of a2 bytes round-robin, each conn (no waiting)
      long long sent = 0;
      for (long long i = 0; i < a1; ++i)
        for (int s2 : st.conns) {
          ssize_t w = ::send(s2, st.buf, static_cast<std::size_t>(a2), MSG_DONTWAIT);
          if (w > 0) sent += w;
        }
      agent_reply(fd, st, "ok %lld", sent);
    } else if (c == "tcp_blast") {
      // Writes of a1 bytes round-robin on every connection until none made progress for a2 ms;
      // replies the bytes each took and whether its last write saw EAGAIN.
      std::vector<long long> bytes(st.conns.size(), 0);
      std::vector<int> again(st.conns.size(), 0);
      auto last = std::chrono::steady_clock::now();
      for (;;) {
        bool progress = false;
        for (std::size_t i = 0; i < st.conns.size(); ++i) {
          ssize_t w = ::send(st.conns[i], st.buf, static_cast<std::size_t>(a1), MSG_DONTWAIT);
          if (w > 0) { bytes[i] += w; progress = true; again[i] = 0; }
          else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) again[i] = 1;
        }
        auto now = std::chrono::steady_clock::now();
        if (progress) last = now;
        else if (now - last > std::chrono::milliseconds(a2)) break;
        else ::usleep(2000);
      }
      std::string r = "ok";
      for (std::size_t i = 0; i < bytes.size(); ++i)
        r += " " + std::to_string(bytes[i]) + ":" + std::to_string(again[i]);
      agent_reply(fd, st, "%s", r.c_str());
    } else if (c == "tcp_meminfo") {
      std::string r = "ok";
      for (int s2 : st.conns) {
        conn_info ci = meminfo(s2);
        r += " " + std::to_string(ci.rmem) + "," + std::to_string(ci.rcvbuf) + "," +
             std::to_string(ci.fwd) + "," + std::to_string(ci.wmem_queued) + "," +
             std::to_string(ci.sndbuf) + "," + std::to_string(ci.drops) + "," +
             std::to_string(ci.inq) + "," + std::to_string(ci.outq);
      }
      agent_reply(fd, st, "%s", r.c_str());
    } else if (c == "tcp_read_all") {
      long long total = 0;
      for (int s2 : st.conns)
        for (;;) {
          ssize_t n = ::recv(s2, st.buf, static_cast<std::size_t>(std::min<long long>(st.buf_len, 65536)),
                             MSG_DONTWAIT);
          if (n <= 0) break;
          total += n;
        }
      agent_reply(fd, st, "ok %lld", total);
    } else if (c == "tcp_close") {
      for (int s2 : st.conns) ::close(s2);
      st.conns.clear();
      if (st.listener >= 0) ::close(st.listener);
      st.listener = -1;
      agent_reply(fd, st, "ok");
    } else if (c == "pipes") {  // a1 pipes, a2 bytes written into each (pipe buffers: kernel memory)
      long long total = 0;
      for (long long i = 0; i < a1; ++i) {
        int p[2];
        if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) break;
        st.pipes.push_back(p[0]);
        st.pipes.push_back(p[1]);
        long long done = 0;
        while (done < a2) {
          ssize_t w = ::write(p[1], st.buf, static_cast<std::size_t>(std::min(a2 - done, st.buf_len)));
          if (w <= 0) break;
          done += w;
        }
        total += done;
      }
      agent_reply(fd, st, "ok %lld", total);
    } else {
      agent_reply(fd, st, "err unknown %s", cmd);
    }
  }
}

}  // namespace

std::optional<std::string> agent::call(const std::string& cmd) {
  std::string l = cmd + "\n";
  if (!write_all(fd, l.data(), l.size())) return std::nullopt;
  for (;;) {
    auto nl = buffered.find('\n');
    if (nl != std::string::npos) {
      std::string r = buffered.substr(0, nl);
      buffered.erase(0, nl + 1);
      return r;
    }
    char b[4096];
    ssize_t n = ::read(fd, b, sizeof b);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    buffered.append(b, static_cast<std::size_t>(n));
  }
}

int agent::reap() {
  int status = 0;
  if (pid > 0) {
    ::waitpid(pid, &status, 0);
    forget_agent(pid);
    pid = -1;
  }
  if (fd >= 0) ::close(fd);
  fd = -1;
  return status;
}

void agent::stop() {
  if (pid > 0) {
    call("exit");
    reap();
  }
}

agent spawn(const group& g, const agent_setup& s) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::runtime_error("socketpair");
  std::fflush(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the harness
    if (::getppid() != parent) ::_exit(1);
    ::close(sv[0]);
    agent_main(sv[1], s);
  }
  ::close(sv[1]);
  remember_agent(pid);
  agent a;
  a.pid = pid;
  a.fd = sv[0];
  char b[8];
  std::size_t got = 0;
  while (got < 6) {
    ssize_t n = ::read(a.fd, b + got, 6 - got);
    if (n <= 0) throw std::runtime_error("agent did not start");
    got += static_cast<std::size_t>(n);
  }
  if (int e = put(g.dir + "/cgroup.procs", std::to_string(pid)); e != 0)
    throw std::runtime_error("cannot move the agent into " + g.dir + ": " + std::strerror(e));
  return a;
}

// ------------------------------------------------------------------------------------------
// memcg-sim

namespace {
std::string g_sim_path, g_transcript_dir;
constexpr const char* sync_cmd = "read / memory.current";
}  // namespace

void set_sim_path(const std::string& p) { g_sim_path = p; }
void set_transcript_dir(const std::string& d) { g_transcript_dir = d; }

sim::sim(std::string n) : name(std::move(n)) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::execl(g_sim_path.c_str(), g_sim_path.c_str(), "-", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  to_ = in[1];
  from_ = out[0];
}

sim::~sim() {
  if (to_ >= 0) ::close(to_);
  if (from_ >= 0) ::close(from_);
  if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
  if (!g_transcript_dir.empty()) save(g_transcript_dir);
}

std::optional<std::string> sim::getline_() {
  for (;;) {
    auto nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string r = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      return r;
    }
    char b[65536];
    ssize_t n = ::read(from_, b, sizeof b);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    buf_.append(b, static_cast<std::size_t>(n));
  }
}

std::vector<std::string> sim::run(const std::vector<std::string>& cmds) {
  std::vector<std::string> out;
  if (dead) return out;
  // Chunks small enough that what memcg-sim prints meanwhile fits in the pipe.
  constexpr std::size_t chunk = 200;
  for (std::size_t i = 0; i < cmds.size(); i += chunk) {
    std::string text;
    for (std::size_t j = i; j < std::min(cmds.size(), i + chunk); ++j) {
      text += cmds[j] + "\n";
      transcript.push_back(cmds[j]);
      ++line_;
    }
    text += std::string(sync_cmd) + "\n";
    ++line_;
    if (!write_all(to_, text.data(), text.size())) { dead = true; return out; }
    for (;;) {
      auto l = getline_();
      if (!l) { dead = true; return out; }
      if (l->rfind("/ memory.current ", 0) == 0) break;
      if (l->rfind("-:", 0) == 0) syntax_errors.push_back(*l);
      else if (l->rfind("error: ", 0) == 0) errors.push_back(*l);
      else if (l->rfind("drop ", 0) == 0 || l->rfind("block ", 0) == 0 || l->rfind("throttle ", 0) == 0)
        events.push_back(*l);
      out.push_back(*l);
    }
  }
  return out;
}

std::optional<long long> sim::read(const std::string& target, const std::string& file,
                                   const std::string& key) {
  auto out = run1("read " + target + " " + file);
  std::string want = target + " " + file + " " + (key.empty() ? "" : key + " ");
  for (const auto& l : out) {
    if (l.rfind(want, 0) != 0) continue;
    std::string v = l.substr(want.size());
    if (v == "max") return unlimited;
    char* end = nullptr;
    long long x = std::strtoll(v.c_str(), &end, 10);
    if (end && *end == '\0' && !v.empty()) return x;
  }
  return std::nullopt;
}

bool sim::has(const std::vector<std::string>& out, const std::string& what) {
  return std::any_of(out.begin(), out.end(), [&](const std::string& l) { return l.rfind(what, 0) == 0; });
}

void sim::save(const std::string& dir) const {
  std::ofstream f(dir + "/" + name + ".scn");
  f << "# generated by conformance/ from the kernel run's measured sizes; replay: memcg-sim "
    << name << ".scn\n";
  for (const auto& l : transcript) f << l << "\n";
}

// ------------------------------------------------------------------------------------------
// rows

namespace {
std::string opt(std::optional<long long> v) { return v ? fmt(*v) : std::string("n/a"); }
}  // namespace

void add_abs(const std::string& what, std::optional<long long> k, std::optional<long long> o,
             long long tol, const std::string& note) {
  row r{what, opt(k), opt(o), tol == 0 ? "exact" : "±" + std::to_string(tol), false, note};
  r.agree = k && o && std::llabs(*k - *o) <= tol;
  rows.push_back(r);
}

void add_rel(const std::string& what, std::optional<long long> k, std::optional<long long> o,
             double pct, const std::string& note) {
  char t[32];
  std::snprintf(t, sizeof t, "±%g%%", pct);
  row r{what, opt(k), opt(o), t, false, note};
  r.agree = k && o && std::fabs(static_cast<double>(*k - *o)) <= std::fabs(static_cast<double>(*k)) * pct / 100.0;
  rows.push_back(r);
}

void add_same(const std::string& what, const std::string& k, const std::string& o, const std::string& note) {
  rows.push_back(row{what, k, o, "same", k == o, note});
}

void add_divergence(const std::string& what, const std::string& k, const std::string& o,
                    bool kernel_as_listed, bool ours_as_listed, const std::string& note) {
  rows.push_back(row{what, k, o, "divergence", kernel_as_listed && ours_as_listed, note});
}

void print_table() {
  std::printf("| what | kernel | ours | tolerance | result |\n|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    std::string result = r.tolerance == "divergence" ? (r.agree ? "differs, on purpose" : "DIFFER")
                                                      : (r.agree ? "agree" : "DIFFER");
    std::printf("| %s | %s | %s | %s | %s%s%s |\n", r.what.c_str(), r.kernel.c_str(), r.ours.c_str(),
                r.tolerance.c_str(), result.c_str(), r.note.empty() ? "" : ": ", r.note.c_str());
  }
}

}  // namespace conf
