// lwip_groups: lwIP 2.1.3 (a TCP stack this project did not write) with its socket memory
// charged to memory groups through memcg's C API (memcg/memcg.h).
//
// Two netifs (a client host 10.0.0.1 and a server host 10.0.0.2) are joined by an in-memory wire
// with one tick (1 ms of a virtual clock) of latency and optional loss. Every frame passes through
// our code: the wire copies it into a custom pbuf whose free callback gives its memory back (the
// skb destructor). lwIP's LWIP_HOOK_TCP_INPACKET_PCB charges a segment with payload to its socket
// (memcg_sock_recv) or drops it before it is acknowledged; the socket object sits in a tcp_ext_arg
// slot. The applications pace lwIP from the window advice: receivers give window back with
// tcp_recved only as far as the group can hold it; senders queue with tcp_write only what
// memcg_sock_send accepts (acknowledged bytes go back with memcg_sock_ack). lwIP's own heap
// (mem_clib_malloc/free) is tagged with the socket the application is working on and counted.
//
// Tenants on the server host are groups; each has several connections moving `bytes` each with
// every byte checked. One tenant ("slow") reads slowly under a small memory.max: it backs off
// through its window (segments dropped at the limit are counted: the goal is zero) while the
// others keep their throughput. The protocol's tcp_mem is small enough that pressure enters and
// leaves. At the end every counter is zero. Exit 0 on success.
//
// Usage: lwip_groups [--mb N] [--conns N] [--loss PPM] [--quick]
#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "lwip/init.h"
#include "lwip/ip.h"
#include "lwip/ip4.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"
#include "memcg/memcg.h"

namespace {

constexpr std::uint32_t frame_magic = 0x6d656d63;  // "memc"
constexpr std::int64_t truesize_pad = 160;          // per-frame overhead charged beyond the data

struct conn;

// ---- the virtual clock and lwIP's heap ----

std::uint32_t g_now = 0;
conn* g_alloc_owner = nullptr;  // the socket the application is working on, if any
std::int64_t g_heap_live = 0, g_heap_allocs = 0, g_heap_tagged = 0;

struct alignas(16) heap_hdr {
  conn* owner;
  std::size_t size;
};

// ---- groups and connections ----

struct tenant {
  std::string name;
  memcg_group* g = nullptr;       // server host
  memcg_group* peer = nullptr;    // the client host's group for this tenant's peers
  bool slow = false;
  std::int64_t read_per_tick = 0;  // 0: reads everything at once
  std::uint16_t port = 0;
  tcp_pcb* listener = nullptr;
  std::vector<conn*> servers, clients;
  std::uint32_t first_done = 0, last_done = 0;
  std::int64_t peak_current = 0, limit = 0;
};

struct conn {
  int id = 0;
  tenant* t = nullptr;
  bool server = false;
  memcg_sock* sock = nullptr;
  tcp_pcb* pcb = nullptr;
  // client
  std::uint64_t sent = 0, acked = 0;
  bool closed = false;
  int peer_id = 0;
  // server
  std::uint64_t received = 0, verified = 0;
  std::deque<pbuf*> held;
  std::uint32_t credit = 0;  // received, window not yet given back
  bool fin = false, done = false;
  std::int64_t rx_charged = 0;
  std::uint64_t drops = 0, send_refused = 0, withheld = 0;
  std::int64_t heap_tagged = 0;
};

std::vector<tenant*> g_tenants;
std::vector<conn*> g_conns;
memcg_hierarchy* g_h = nullptr;
memcg_proto* g_proto = nullptr;
std::uint64_t g_bytes = 0;  // per connection
std::uint8_t g_ext_id = 0;
std::uint64_t g_drops = 0, g_uncharged_segments = 0, g_frames = 0, g_lost = 0;
std::int64_t g_frames_live = 0;
std::uint32_t g_loss_ppm = 0;
std::uint64_t g_rng = 0x9e3779b97f4a7c15ull;
int g_errors = 0;
int64_t g_pressure_enter = 0, g_pressure_leave = 0;

void fail(const char* what, const conn* c) {
  std::fprintf(stderr, "FAIL: %s (conn %d of %s)\n", what, c ? c->id : -1,
               c && c->t ? c->t->name.c_str() : "-");
  ++g_errors;
}

inline std::uint8_t pattern(int id, std::uint64_t i) {
  return static_cast<std::uint8_t>((i * 131u) ^ (i >> 9) ^ static_cast<std::uint64_t>(id * 29));
}

std::int64_t read_value(memcg_group* g, const char* file, const char* key = nullptr) {
  char buf[4096];
  if (memcg_read(g_h, g, file, buf, sizeof buf) < 0) return -1;
  if (!key) return std::strtoll(buf, nullptr, 10);
  std::size_t klen = std::strlen(key);
  for (char* line = buf; line && *line;) {
    if (std::strncmp(line, key, klen) == 0 && line[klen] == ' ')
      return std::strtoll(line + klen + 1, nullptr, 10);
    line = std::strchr(line, '\n');
    if (line) ++line;
  }
  return -1;
}

// ---- the wire ----

struct frame {
  pbuf_custom pc;  // first: a pbuf* is a frame*
  std::uint32_t magic;
  conn* owner;
  std::int64_t charged;
  std::size_t len;
  unsigned char data[];
};

struct queued {
  netif* to;
  std::uint32_t at;
  std::vector<unsigned char> bytes;
};
std::deque<queued> g_wire;
netif g_client_if, g_server_if;

void frame_free(pbuf* p) {
  frame* f = reinterpret_cast<frame*>(p);
  if (f->owner) {
    if (memcg_sock_consume(f->owner->sock, f->charged) != 0) fail("consume refused", f->owner);
    f->owner->rx_charged -= f->charged;
  }
  --g_frames_live;
  std::free(f);
}

err_t wire_output(netif* from, pbuf* p, const ip4_addr_t*) {
  ++g_frames;
  if (g_loss_ppm && p->tot_len > 40) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    if ((g_rng >> 33) % 1000000 < g_loss_ppm) {
      ++g_lost;
      return ERR_OK;
    }
  }
  queued q;
  q.to = from == &g_client_if ? &g_server_if : &g_client_if;
  q.at = g_now + 1;
  q.bytes.resize(p->tot_len);
  pbuf_copy_partial(p, q.bytes.data(), p->tot_len, 0);
  g_wire.push_back(std::move(q));
  return ERR_OK;
}

void wire_deliver() {
  while (!g_wire.empty() && g_wire.front().at <= g_now) {
    queued q = std::move(g_wire.front());
    g_wire.pop_front();
    std::size_t len = q.bytes.size();
    frame* f = static_cast<frame*>(std::malloc(sizeof(frame) + len));
    if (!f) std::abort();
    f->magic = frame_magic;
    f->owner = nullptr;
    f->charged = 0;
    f->len = len;
    std::memcpy(f->data, q.bytes.data(), len);
    f->pc.custom_free_function = frame_free;
    ++g_frames_live;
    pbuf* p = pbuf_alloced_custom(PBUF_RAW, static_cast<u16_t>(len), PBUF_REF, &f->pc, f->data,
                                  static_cast<u16_t>(len));
    if (q.to->input(p, q.to) != ERR_OK) pbuf_free(p);
  }
}

err_t netif_setup(netif* n) {
  n->output = wire_output;
  n->mtu = 1500;
  n->flags = NETIF_FLAG_UP | NETIF_FLAG_LINK_UP;
  return ERR_OK;
}

// ---- pacing from the window advice ----

// Payload bytes a window of `memory` bytes can hold (a segment costs its data plus headers and
// the frame's overhead).
std::int64_t payload_of(std::int64_t memory) {
  return memory * TCP_MSS / (TCP_MSS + 40 + truesize_pad + static_cast<std::int64_t>(sizeof(frame)));
}

void grant_window(conn* c) {
  if (!c->pcb || c->credit == 0) return;
  memcg_window_advice a{};
  memcg_sock_advice(c->sock, TCP_MSS, &a);
  // The group's room is shared by its connections: subtract every window already open.
  std::int64_t open = 0;
  for (conn* s : c->t->servers)
    if (s->pcb && !s->done) open += s->pcb->rcv_wnd;
  std::int64_t allowed = payload_of(a.rcv_window) - open;
  // Slack for page rounding of each socket's forward allocation.
  allowed -= 2 * MEMCG_PAGE_SIZE;
  if (allowed < c->credit) ++c->withheld;  // backing off through the window
  if (allowed <= 0) return;
  std::int64_t grant = std::min<std::int64_t>(c->credit, allowed);
  if (grant < TCP_MSS && grant < c->credit) return;  // no silly windows
  tcp_recved(c->pcb, static_cast<u16_t>(grant));
  c->credit -= static_cast<std::uint32_t>(grant);
}

void server_read(conn* c) {
  std::int64_t budget = c->t->read_per_tick ? c->t->read_per_tick : INT64_MAX;
  while (!c->held.empty() && budget > 0) {
    pbuf* p = c->held.front();
    c->held.pop_front();
    for (pbuf* q = p; q; q = q->next) {
      const auto* d = static_cast<const std::uint8_t*>(q->payload);
      for (u16_t i = 0; i < q->len; ++i)
        if (d[i] != pattern(c->peer_id, c->verified + i)) {
          fail("byte mismatch", c);
          break;
        }
      c->verified += q->len;
    }
    budget -= p->tot_len;
    pbuf_free(p);
  }
  grant_window(c);
  if (c->fin && c->held.empty() && !c->done && c->pcb) {
    if (c->verified != g_bytes) fail("short stream", c);
    if (c->credit) tcp_recved(c->pcb, static_cast<u16_t>(c->credit));  // else tcp_close sends RST
    c->credit = 0;
    if (c->pcb->rcv_wnd != TCP_WND) fail("window withheld at close", c);
    tcp_arg(c->pcb, nullptr);
    tcp_recv(c->pcb, nullptr);
    if (tcp_close(c->pcb) != ERR_OK) fail("tcp_close", c);
    c->done = true;
    tenant* t = c->t;
    if (!t->first_done) t->first_done = g_now;
    t->last_done = g_now;
  }
}

void client_send(conn* c) {
  if (!c->pcb || c->closed) return;
  if (c->sent < g_bytes && c->pcb->state == ESTABLISHED) {
    memcg_window_advice a{};
    memcg_sock_advice(c->sock, TCP_MSS, &a);
    std::int64_t want = std::min<std::int64_t>(
        {static_cast<std::int64_t>(g_bytes - c->sent), static_cast<std::int64_t>(tcp_sndbuf(c->pcb)),
         static_cast<std::int64_t>(a.snd_space), std::int64_t{65535}});
    if (want >= TCP_MSS || (want > 0 && want == static_cast<std::int64_t>(g_bytes - c->sent))) {
      if (memcg_sock_send(c->sock, want) != 0) {
        ++c->send_refused;
      } else {
        static unsigned char buf[65536];
        for (std::int64_t i = 0; i < want; ++i) buf[i] = pattern(c->id, c->sent + i);
        g_alloc_owner = c;
        err_t e = tcp_write(c->pcb, buf, static_cast<u16_t>(want), TCP_WRITE_FLAG_COPY);
        if (e == ERR_OK) {
          c->sent += want;
          tcp_output(c->pcb);
        } else {
          memcg_sock_ack(c->sock, want);  // not queued after all
          ++c->send_refused;
        }
        g_alloc_owner = nullptr;
      }
    }
  }
  if (c->sent == g_bytes && c->acked == g_bytes) {
    tcp_arg(c->pcb, nullptr);
    tcp_sent(c->pcb, nullptr);
    if (tcp_close(c->pcb) != ERR_OK) fail("tcp_close", c);
    c->closed = true;
  }
}

// ---- lwIP callbacks ----

void ext_destroyed(u8_t, void* data) {
  if (data) static_cast<conn*>(data)->pcb = nullptr;
}
const tcp_ext_arg_callbacks g_ext_callbacks = {ext_destroyed, nullptr};

void on_err(void* arg, err_t err) {
  conn* c = static_cast<conn*>(arg);
  if (!c) return;
  c->pcb = nullptr;
  std::fprintf(stderr, "lwIP error %d\n", err);
  fail("connection aborted", c);
}

err_t on_sent(void* arg, tcp_pcb*, u16_t len) {
  conn* c = static_cast<conn*>(arg);
  if (!c) return ERR_OK;
  std::uint64_t n = std::min<std::uint64_t>(len, c->sent - c->acked);
  if (n && memcg_sock_ack(c->sock, static_cast<int64_t>(n)) != 0) fail("ack refused", c);
  c->acked += n;
  return ERR_OK;
}

err_t on_recv(void* arg, tcp_pcb* pcb, pbuf* p, err_t) {
  conn* c = static_cast<conn*>(arg);
  if (!c) {
    if (p) {
      tcp_recved(pcb, p->tot_len);
      pbuf_free(p);
    }
    return ERR_OK;
  }
  if (!p) {
    c->fin = true;
    return ERR_OK;
  }
  // The data now sits in the socket's receive queue (charged until the application reads it):
  // as in the kernel, the window may reopen at once, as far as the advice allows.
  c->received += p->tot_len;
  c->credit += p->tot_len;
  c->held.push_back(p);
  grant_window(c);
  return ERR_OK;
}

conn* new_conn(tenant* t, bool server, tcp_pcb* pcb) {
  conn* c = new conn;
  c->id = static_cast<int>(g_conns.size());
  c->t = t;
  c->server = server;
  c->pcb = pcb;
  if (memcg_sock_open(g_proto, server ? t->g : t->peer, &c->sock) != 0) std::abort();
  tcp_arg(pcb, c);
  tcp_err(pcb, on_err);
  tcp_ext_arg_set(pcb, g_ext_id, c);
  tcp_ext_arg_set_callbacks(pcb, g_ext_id, &g_ext_callbacks);
  g_conns.push_back(c);
  return c;
}

err_t on_accept(void* arg, tcp_pcb* pcb, err_t err) {
  tenant* t = static_cast<tenant*>(arg);
  if (err != ERR_OK || !pcb) return ERR_VAL;
  conn* c = new_conn(t, true, pcb);
  // Which client is this? The one whose local port matches.
  for (conn* k : t->clients)
    if (k->pcb && k->pcb->local_port == pcb->remote_port) c->peer_id = k->id;
  tcp_recv(pcb, on_recv);
  t->servers.push_back(c);
  return ERR_OK;
}

err_t on_connected(void*, tcp_pcb*, err_t) { return ERR_OK; }

void on_pressure(memcg_proto*, int entering, int64_t, void*) {
  (entering ? g_pressure_enter : g_pressure_leave) += 1;
}

}  // namespace

// ---- lwIP's hooks and port functions (declared in lwipopts.h) ----

extern "C" {

u32_t sys_now(void) { return g_now; }

void* memcg_lwip_malloc(size_t size) {
  auto* h = static_cast<heap_hdr*>(std::malloc(sizeof(heap_hdr) + size));
  if (!h) return nullptr;
  h->owner = g_alloc_owner;
  h->size = size;
  g_heap_live += static_cast<std::int64_t>(size);
  ++g_heap_allocs;
  if (h->owner) {
    h->owner->heap_tagged += static_cast<std::int64_t>(size);
    g_heap_tagged += static_cast<std::int64_t>(size);
  }
  return h + 1;
}
void* memcg_lwip_calloc(size_t count, size_t size) {
  void* p = memcg_lwip_malloc(count * size);
  if (p) std::memset(p, 0, count * size);
  return p;
}
void memcg_lwip_free(void* p) {
  if (!p) return;
  heap_hdr* h = static_cast<heap_hdr*>(p) - 1;
  g_heap_live -= static_cast<std::int64_t>(h->size);
  if (h->owner) h->owner->heap_tagged -= static_cast<std::int64_t>(h->size);
  std::free(h);
}

// Charges a segment with payload to its socket, or drops it (before it is acknowledged).
signed char memcg_lwip_inpacket(struct tcp_pcb* pcb, struct tcp_hdr*, unsigned short,
                                unsigned short, unsigned char*, struct pbuf* p) {
  if (!pcb || pcb->state == LISTEN || !p || p->tot_len == 0) return ERR_OK;
  conn* c = static_cast<conn*>(tcp_ext_arg_get(pcb, g_ext_id));
  if (!c || !(p->flags & PBUF_FLAG_IS_CUSTOM) ||
      reinterpret_cast<frame*>(p)->magic != frame_magic) {
    ++g_uncharged_segments;
    return ERR_OK;
  }
  frame* f = reinterpret_cast<frame*>(p);
  if (f->owner) return ERR_OK;
  std::int64_t truesize = static_cast<std::int64_t>(sizeof(frame) + f->len) + truesize_pad;
  if (memcg_sock_recv(c->sock, truesize, 0) != 0) {
    ++c->drops;
    ++g_drops;
    return ERR_MEM;
  }
  f->owner = c;
  f->charged = truesize;
  c->rx_charged += truesize;
  return ERR_OK;
}

// Out-of-order data may hold what the socket may still advertise (at least one segment).
unsigned int memcg_lwip_ooseq_limit(const struct tcp_pcb* pcb) {
  conn* c = static_cast<conn*>(tcp_ext_arg_get(pcb, g_ext_id));
  if (!c) return TCP_WND;
  memcg_window_advice a{};
  memcg_sock_advice(c->sock, TCP_MSS, &a);
  std::int64_t lim = std::max<std::int64_t>(payload_of(a.rcv_window), TCP_MSS);
  return static_cast<unsigned int>(std::min<std::int64_t>(lim, TCP_WND));
}

}  // extern "C"

int main(int argc, char** argv) {
  double mb = 10;
  int conns_per = 4;
  int64_t tcp_min = 128, tcp_pressure = 192;
  g_loss_ppm = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mb" && i + 1 < argc) mb = std::atof(argv[++i]);
    else if (a == "--conns" && i + 1 < argc) conns_per = std::atoi(argv[++i]);
    else if (a == "--loss" && i + 1 < argc) g_loss_ppm = static_cast<std::uint32_t>(std::atoi(argv[++i]));
    else if (a == "--quick") mb = 2;
    else if (a == "--tcp-mem" && i + 2 < argc) {
      tcp_min = std::atoll(argv[++i]);
      tcp_pressure = std::atoll(argv[++i]);
    }
    else {
      std::fprintf(stderr, "usage: lwip_groups [--mb N] [--conns N] [--loss PPM] [--quick]\n");
      return 2;
    }
  }
  g_bytes = static_cast<std::uint64_t>(mb * 1024 * 1024);

  g_h = memcg_hierarchy_create();
  g_proto = memcg_proto_create(0);
  // tcp_mem in pages: pressure above 768 KiB, back below 512 KiB, hard limit 32 MiB.
  memcg_proto_set_tcp_mem(g_proto, tcp_min, tcp_pressure, 8192);
  memcg_proto_set_pressure_callback(g_proto, on_pressure, nullptr);
  memcg_mkdir(g_h, "server", nullptr);
  memcg_mkdir(g_h, "client", nullptr);
  const char* names[] = {"gold", "silver", "bronze", "slow"};
  for (int i = 0; i < 4; ++i) {
    tenant* t = new tenant;
    t->name = names[i];
    t->slow = i == 3;
    t->port = static_cast<std::uint16_t>(5000 + i);
    std::string sp = std::string("server/") + names[i], cp = std::string("client/") + names[i];
    if (memcg_mkdir(g_h, sp.c_str(), &t->g) != 0 || memcg_mkdir(g_h, cp.c_str(), &t->peer) != 0)
      return 1;
    if (t->slow) {
      t->limit = 320 << 10;
      memcg_write(g_h, t->g, "memory.max", std::to_string(t->limit).c_str());
      t->read_per_tick = 1024;  // about 1.4 MB/s of virtual time per connection (whole segments)
    }
    g_tenants.push_back(t);
  }

  lwip_init();
  g_ext_id = tcp_ext_arg_alloc_id();
  ip4_addr_t ca, sa, mask, gw;
  IP4_ADDR(&ca, 10, 0, 0, 1);
  IP4_ADDR(&sa, 10, 0, 0, 2);
  IP4_ADDR(&mask, 255, 255, 255, 0);
  IP4_ADDR(&gw, 0, 0, 0, 0);
  netif_add(&g_client_if, &ca, &mask, &gw, nullptr, netif_setup, ip4_input);
  netif_add(&g_server_if, &sa, &mask, &gw, nullptr, netif_setup, ip4_input);
  netif_set_up(&g_client_if);
  netif_set_up(&g_server_if);

  for (tenant* t : g_tenants) {
    tcp_pcb* l = tcp_new();
    tcp_bind(l, &sa, t->port);
    t->listener = tcp_listen(l);  // frees l: arguments go on the listening pcb
    tcp_arg(t->listener, t);
    tcp_accept(t->listener, on_accept);
  }
  for (tenant* t : g_tenants)
    for (int k = 0; k < conns_per; ++k) {
      tcp_pcb* p = tcp_new();
      conn* c = new_conn(t, false, p);
      tcp_sent(p, on_sent);
      tcp_recv(p, on_recv);
      t->clients.push_back(c);
      tcp_bind(p, &ca, 0);
      if (tcp_connect(p, &sa, t->port, on_connected) != ERR_OK) fail("tcp_connect", c);
    }

  const std::uint32_t limit_ms = 600000;
  std::int64_t peak_allocated = 0;
  auto all_done = [&] {
    for (conn* c : g_conns)
      if (c->server ? !c->done : !c->closed) return false;
    return true;
  };
  while (!all_done() && g_now < limit_ms && !g_errors) {
    ++g_now;
    wire_deliver();
    sys_check_timeouts();
    for (conn* c : g_conns) (c->server ? server_read : client_send)(c);
    for (tenant* t : g_tenants) t->peak_current = std::max(t->peak_current, read_value(t->g, "memory.current"));
    peak_allocated = std::max(peak_allocated, memcg_proto_memory_allocated(g_proto));
  }
  std::uint32_t transfer_ms = g_now;
  // Let FIN handshakes and TIME_WAIT run out, then close the listeners.
  while ((tcp_active_pcbs || tcp_tw_pcbs || !g_wire.empty()) && g_now < limit_ms + 60000) {
    ++g_now;
    wire_deliver();
    sys_check_timeouts();
  }
  for (tenant* t : g_tenants) tcp_close(t->listener);
  if (tcp_active_pcbs || tcp_tw_pcbs) fail("pcbs left", nullptr);
  if (!all_done()) fail("transfers did not finish", nullptr);

  // Report.
  std::uint64_t total = 0;
  std::printf("lwIP %s, %zu connections, %.1f MiB each, loss %u ppm, TCP_WND %d\n",
              LWIP_VERSION_STRING, g_conns.size() / 2, mb, g_loss_ppm, TCP_WND);
  for (tenant* t : g_tenants) {
    std::uint64_t bytes = 0, drops = 0, withheld = 0;
    for (conn* c : t->servers) {
      bytes += c->verified;
      drops += c->drops;
      withheld += c->withheld;
    }
    total += bytes;
    double secs = t->last_done / 1000.0;
    std::printf("  %-7s %2zu conns  %6.1f MiB checked  drops %" PRIu64 "  window withheld %6" PRIu64
                "  done at %6.3f s virtual  (%.1f MiB/s)  peak memory.current %" PRId64
                " B%s\n",
                t->name.c_str(), t->servers.size(), bytes / 1048576.0, drops, withheld, secs,
                secs > 0 ? bytes / 1048576.0 / secs : 0.0, t->peak_current,
                t->limit ? (" of memory.max " + std::to_string(t->limit)).c_str() : "");
    if (t->servers.size() != static_cast<std::size_t>(conns_per)) fail("missing connections", nullptr);
  }
  int64_t episodes = 0, pressure_ms = 0;
  memcg_proto_pressure_stats(g_proto, &episodes, &pressure_ms);
  std::printf("  total %.1f MiB checked, drops at the limit %" PRIu64 ", frames %" PRIu64
              " (lost on the wire %" PRIu64 "), uncharged segments %" PRIu64 "\n",
              total / 1048576.0, g_drops, g_frames, g_lost, g_uncharged_segments);
  std::printf("  tcp pressure: %" PRId64 " episodes (%" PRId64 " entered, %" PRId64
              " left), %" PRId64 " ms in total (library clock); peak memory_allocated %" PRId64 " pages\n",
              episodes, g_pressure_enter, g_pressure_leave, pressure_ms, peak_allocated);
  std::printf("  virtual time: transfers %.3f s, until every pcb was gone %.3f s\n",
              transfer_ms / 1000.0, g_now / 1000.0);
  std::printf("  lwIP heap: %" PRId64 " allocations, %" PRId64 " bytes tagged with a socket, %" PRId64
              " bytes live at the end\n",
              g_heap_allocs, g_heap_tagged, g_heap_live);

  // Every counter back to zero.
  for (conn* c : g_conns) {
    memcg_sock_info info{};
    memcg_sock_get_info(c->sock, &info);
    if (info.rmem_alloc || info.wmem_queued || c->rx_charged || !c->held.empty())
      fail("socket still holds memory", c);
    if (c->heap_tagged) fail("lwIP heap still tagged to the socket", c);
    if (memcg_sock_close(c->sock) != 0) fail("memcg_sock_close", c);
    memcg_sock_destroy(c->sock);
  }
  if (g_frames_live) fail("frames live", nullptr);
  if (g_heap_live) fail("lwIP heap not empty", nullptr);
  if (memcg_proto_memory_allocated(g_proto) != 0) fail("memory_allocated not zero", nullptr);
  if (memcg_proto_sockets_allocated(g_proto) != 0) fail("sockets_allocated not zero", nullptr);
  if (memcg_proto_under_pressure(g_proto) != 0) fail("still under pressure", nullptr);
  if (episodes < 1 || g_pressure_leave != g_pressure_enter) fail("pressure did not enter and leave", nullptr);
  for (tenant* t : g_tenants)
    for (memcg_group* g : {t->g, t->peer}) {
      std::int64_t sock = read_value(g, "memory.stat", "sock");
      if (sock != 0) fail("group's sock charge not zero", nullptr);
    }
  std::int64_t root_sock = read_value(memcg_root(g_h), "memory.stat", "sock");
  std::printf("  at the end: memory_allocated %" PRId64 ", sockets %" PRId64
              ", root sock %" PRId64 ", live frames %" PRId64 "\n",
              memcg_proto_memory_allocated(g_proto), memcg_proto_sockets_allocated(g_proto),
              root_sock, g_frames_live);
  if (root_sock != 0) fail("root sock not zero", nullptr);
  if (g_drops != 0) std::printf("  NOTE: %" PRIu64 " segments dropped at the limit\n", g_drops);
  for (conn* c : g_conns) delete c;
  for (tenant* t : g_tenants) delete t;
  memcg_proto_destroy(g_proto);
  memcg_hierarchy_destroy(g_h);
  std::printf(g_errors ? "FAILED (%d errors)\n" : "ok\n", g_errors);
  return g_errors ? 1 : 0;
}
