// lwip_groups: lwIP 2.1.3 (a TCP stack this project did not write) with its socket memory
// charged to memory groups through the memcg port (ports/lwip/memcg_lwip.h).
//
// Two netifs (a client host 10.0.0.1 and a server host 10.0.0.2) are joined by an in-memory wire
// with one tick (1 ms of a virtual clock) of latency and optional loss. The wire hands every
// frame to lwIP in a pbuf from memcg_lwip_rx_alloc, through memcg_lwip_netif_input; the port
// charges it to its socket when TCP keeps it. Connections are altcp connections of lwIP's tcp
// layer attached to the port: writes charge the lwIP heap they allocate, reads give window back
// through altcp_recved (the port opens only what the group can hold).
//
// Tenants on the server host are groups; each has several connections, and every connection
// moves `bytes` in BOTH directions, every byte checked, each side closing its direction right
// after its last write (so a FIN often rides on data). One tenant ("slow") reads slowly under a
// small memory.max: its sends and its receives both run at the limit. Checked:
//   - every byte arrives in order, and every connection ends with both FINs and no reset;
//   - a segment whose payload the port refused still delivers its ACK: after the frame, the
//     receiving pcb's lastack covers the frame's acknowledgement number (acks checked >= 1);
//   - at the end every counter is zero (sockets, protocol pages, group sock, lwIP heap, frames).
// Exit 0 on success.
//
// Usage: lwip_groups [--mb N] [--conns N] [--loss PPM] [--tcp-mem MIN PRESSURE]
#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "lwip/altcp.h"
#include "lwip/altcp_tcp.h"
#include "lwip/init.h"
#include "lwip/ip.h"
#include "lwip/ip4.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"
#include "memcg/memcg.h"
#include "memcg_lwip.h"

namespace {

std::uint32_t g_now = 0;

struct endpoint;

struct tenant {
  std::string name;
  memcg_group* g = nullptr;     // server host
  memcg_group* peer = nullptr;  // the client host's group for this tenant's peers
  std::int64_t read_per_tick = 0;  // 0: reads everything at once
  std::uint16_t port = 0;
  altcp_pcb* listener = nullptr;
  std::vector<endpoint*> servers, clients;
  std::uint32_t last_done = 0;
  std::int64_t peak_current = 0, limit = 0;
};

// One side of a connection: it sends `bytes` and receives its peer's.
struct endpoint {
  int id = 0;
  tenant* t = nullptr;
  bool server = false;
  endpoint* peer = nullptr;
  altcp_pcb* conn = nullptr;
  tcp_pcb* pcb = nullptr;  // conn's, while lwIP has it
  std::uint64_t bytes = 0;  // to send; it receives its peer's
  std::uint64_t sent = 0, verified = 0;
  std::deque<pbuf*> held;
  bool manual = false;  // driven by the edge phase, not the main loop
  bool shut_tx = false, fin = false, closed = false, err = false;
  std::uint64_t write_refused = 0;
};

std::vector<tenant*> g_tenants;
tenant* g_edge = nullptr;  // the edge phase's tenant (not in g_tenants)
std::vector<endpoint*> g_eps;
memcg_hierarchy* g_h = nullptr;
memcg_proto* g_proto = nullptr;
std::uint64_t g_bytes = 0;
std::uint64_t g_frames = 0, g_lost = 0;
std::uint64_t g_acks_checked = 0, g_fin_refused = 0;
std::uint32_t g_loss_ppm = 0;
constexpr std::uint32_t squeeze_after = 200;  // ms of virtual time into the main run
constexpr std::uint64_t edge_server_bytes = 1000;
std::uint64_t g_rng = 0x9e3779b97f4a7c15ull;
int g_errors = 0;
std::int64_t g_pressure_enter = 0, g_pressure_leave = 0;

void fail(const char* what, const endpoint* e) {
  std::fprintf(stderr, "FAIL: %s (endpoint %d%s of %s)\n", what, e ? e->id : -1,
               e ? (e->server ? " server" : " client") : "", e && e->t ? e->t->name.c_str() : "-");
  ++g_errors;
}

// The byte at offset i of the stream endpoint `id` sends.
inline std::uint8_t pattern(int id, std::uint64_t i) {
  return static_cast<std::uint8_t>((i * 131u) ^ (i >> 9) ^ static_cast<std::uint64_t>(id * 29));
}

std::int64_t read_value(memcg_group* g, const char* file, const char* key = nullptr) {
  char buf[4096];
  std::size_t n = 0;
  if (memcg_read(g_h, g, file, buf, sizeof buf, &n) != 0) return -1;
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

memcg_proto_stats proto_stats() {
  memcg_proto_stats s{};
  s.size = sizeof s;
  if (memcg_proto_stats_get(g_proto, &s) != 0) std::abort();
  return s;
}

memcg_sock_info sock_info(const tcp_pcb* pcb) {
  memcg_sock_info i{};
  i.size = sizeof i;
  if (memcg_sock_get_info(memcg_lwip_sock(pcb), &i) != 0) std::abort();
  return i;
}

memcg_lwip_stats port_stats() {
  memcg_lwip_stats s{};
  s.size = sizeof s;
  if (memcg_lwip_get_stats(&s) != 0) std::abort();
  return s;
}

// ---- the wire ----

struct queued {
  netif* to;
  std::uint32_t at;
  std::vector<unsigned char> bytes;
};
std::deque<queued> g_wire;
netif g_client_if, g_server_if;

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

std::uint32_t be32(const unsigned char* b) {
  return std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 | std::uint32_t{b[2]} << 8 | b[3];
}
std::uint16_t be16(const unsigned char* b) { return static_cast<std::uint16_t>(b[0] << 8 | b[1]); }

// The endpoint a frame from src_port to dst_port is for (ports are unique here: lwIP routes
// both hosts' frames through either netif, so the netif does not tell the host).
endpoint* endpoint_for(std::uint16_t src_port, std::uint16_t dst_port) {
  for (endpoint* e : g_eps)
    if (e->pcb && e->pcb->local_port == dst_port && e->pcb->remote_port == src_port)
      return e;
  return nullptr;
}

void wire_deliver() {
  while (!g_wire.empty() && g_wire.front().at <= g_now) {
    queued q = std::move(g_wire.front());
    g_wire.pop_front();
    const std::size_t len = q.bytes.size();
    const unsigned char* ip = q.bytes.data();
    const std::size_t ihl = (ip[0] & 15u) * 4u;
    const unsigned char* th = ip + ihl;
    const std::uint16_t sport = be16(th), dport = be16(th + 2);
    const std::uint32_t ackno = be32(th + 8);
    const std::uint8_t flags = th[13];
    const std::size_t payload = len - ihl - (th[12] >> 4) * 4u;
    // The receiving pcb before the frame: is the frame's ACK one it must process?
    endpoint* e = endpoint_for(sport, dport);
    bool ack_news = e && (flags & TCP_ACK) && TCP_SEQ_GT(ackno, e->pcb->lastack) &&
                    TCP_SEQ_LEQ(ackno, e->pcb->snd_nxt);
    const std::uint64_t refused_before = port_stats().rx_refused;

    // Most frames come in the port's pbufs; one in 8 as a driver's own PBUF_RAM pbuf, which
    // memcg_lwip_netif_input copies into one (so that it is charged too).
    static std::uint64_t delivered = 0;
    pbuf* p = ++delivered % 8 ? memcg_lwip_rx_alloc(static_cast<u16_t>(len))
                              : pbuf_alloc(PBUF_RAW, static_cast<u16_t>(len), PBUF_RAM);
    if (!p) std::abort();
    pbuf_take(p, ip, static_cast<u16_t>(len));
    memcg_lwip_netif_input(p, q.to);

    if (port_stats().rx_refused != refused_before) {
      if ((flags & TCP_FIN) && payload) ++g_fin_refused;
      // The payload was refused: the ACK it carried must have been processed all the same.
      if (ack_news && e->pcb) {
        ++g_acks_checked;
        if (TCP_SEQ_LT(e->pcb->lastack, ackno)) fail("ACK of a refused segment lost", e);
      }
    }
  }
}

err_t netif_setup(netif* n) {
  n->output = wire_output;
  n->mtu = 1500;
  n->flags = NETIF_FLAG_UP | NETIF_FLAG_LINK_UP;
  return ERR_OK;
}

// ---- the applications ----

void finish_if_done(endpoint* e) {
  if (e->closed || e->manual || !e->fin || !e->held.empty() || !e->shut_tx) return;
  const std::uint64_t expected = e->peer ? e->peer->bytes : 0;
  if (!e->conn) {
    // Both FINs were acknowledged before the application closed: lwIP freed the pcb
    // (ERR_CLSD); what it received is read all the same.
    if (e->verified != expected) fail("short stream", e);
    e->closed = true;
    if (e->peer && e->peer->closed) e->t->last_done = g_now;
    return;
  }
  // Close once our data and FIN are acknowledged: lwIP resets a LAST_ACK connection after
  // 2 * TCP_MSL (20 s here), and the slow tenant's peer may hold its window shut longer.
  if (!e->pcb || e->pcb->unsent || e->pcb->unacked) return;
  if (e->verified != expected) fail("short stream", e);
  altcp_arg(e->conn, nullptr);
  altcp_recv(e->conn, nullptr);
  altcp_err(e->conn, nullptr);
  // The port's close gives back any window it held back (lwIP resets a connection closed with
  // window outstanding).
  if (altcp_close(e->conn) != ERR_OK) fail("altcp_close", e);
  e->conn = nullptr;
  e->closed = true;
  if (e->peer && e->peer->closed) e->t->last_done = g_now;
}

void endpoint_read(endpoint* e) {
  if (e->manual) return;
  std::int64_t budget = e->server && e->t->read_per_tick ? e->t->read_per_tick : INT64_MAX;
  std::uint32_t consumed = 0;
  while (!e->held.empty() && budget > 0) {
    pbuf* p = e->held.front();
    e->held.pop_front();
    for (pbuf* q = p; q; q = q->next) {
      const auto* d = static_cast<const std::uint8_t*>(q->payload);
      for (u16_t i = 0; i < q->len; ++i)
        if (d[i] != pattern(e->peer ? e->peer->id : -1, e->verified + i)) {
          fail("byte mismatch", e);
          break;
        }
      e->verified += q->len;
    }
    budget -= p->tot_len;
    consumed += p->tot_len;
    pbuf_free(p);  // the port gives the frame's charge back
  }
  // No window update for connections that read nothing: a connection held back by its group's
  // room is woken by the group's room callback (through the port) when room appears.
  if (e->conn) {
    if (consumed) altcp_recved(e->conn, static_cast<u16_t>(std::min<std::uint32_t>(consumed, 0xffff)));
    if (consumed > 0xffff) altcp_recved(e->conn, static_cast<u16_t>(consumed - 0xffff));
  }
  finish_if_done(e);
}

void endpoint_send(endpoint* e) {
  if (e->manual || !e->conn || e->shut_tx || !e->pcb) return;
  if (e->pcb->state != ESTABLISHED && e->pcb->state != CLOSE_WAIT) return;
  static unsigned char buf[65536];
  while (e->sent < e->bytes) {
    std::uint64_t want = std::min<std::uint64_t>({e->bytes - e->sent, altcp_sndbuf(e->conn), 8 * TCP_MSS});
    if (want < TCP_MSS && want < e->bytes - e->sent) break;
    if (want == 0) break;
    for (std::uint64_t i = 0; i < want; ++i) buf[i] = pattern(e->id, e->sent + i);
    err_t r = altcp_write(e->conn, buf, static_cast<u16_t>(want), TCP_WRITE_FLAG_COPY);
    if (r != ERR_OK) {
      ++e->write_refused;  // the port refused the heap; nothing queued: write again later
      break;
    }
    e->sent += want;
  }
  if (e->sent == e->bytes) {
    // Our direction is done: the FIN goes with the last data still unsent.
    if (altcp_shutdown(e->conn, 0, 1) != ERR_OK) fail("altcp_shutdown", e);
    e->shut_tx = true;
  }
  altcp_output(e->conn);
}

err_t on_recv(void* arg, altcp_pcb* conn, pbuf* p, err_t) {
  endpoint* e = static_cast<endpoint*>(arg);
  if (!e) {
    if (p) {
      altcp_recved(conn, p->tot_len);
      pbuf_free(p);
    }
    return ERR_OK;
  }
  if (!p) {
    e->fin = true;
    return ERR_OK;
  }
  e->held.push_back(p);  // charged until read
  return ERR_OK;
}

void on_err(void* arg, err_t err) {
  endpoint* e = static_cast<endpoint*>(arg);
  if (!e) return;
  e->conn = nullptr;  // altcp freed it
  e->pcb = nullptr;
  if (err == ERR_CLSD && e->shut_tx) {
    e->fin = true;  // closed in both directions, without a reset
    return;
  }
  e->err = true;
  std::fprintf(stderr, "lwIP error %d\n", err);
  fail("connection aborted", e);
}

void setup(endpoint* e, altcp_pcb* conn) {
  e->conn = conn;
  e->pcb = static_cast<tcp_pcb*>(conn->state);
  altcp_arg(conn, e);
  altcp_recv(conn, on_recv);
  altcp_err(conn, on_err);
  g_eps.push_back(e);
}

void ext_destroyed(u8_t, void* data) {
  if (data) static_cast<endpoint*>(data)->pcb = nullptr;
}
const tcp_ext_arg_callbacks g_ext_callbacks = {ext_destroyed, nullptr};
u8_t g_ext_id = 0;

// The test's own slot on each pcb: tells the endpoint when lwIP frees its pcb.
void watch_pcb(endpoint* e) {
  tcp_ext_arg_set(e->pcb, g_ext_id, e);
  tcp_ext_arg_set_callbacks(e->pcb, g_ext_id, &g_ext_callbacks);
}

err_t on_accept(void* arg, altcp_pcb* conn, err_t err) {
  tenant* t = static_cast<tenant*>(arg);
  if (err != ERR_OK || !conn) return ERR_VAL;
  // The pcb has its socket (in the listener's group) since its SYN; altcp's write and recved
  // go through the port from now on.
  if (memcg_lwip_altcp_attach(conn, nullptr) != 0) fail("memcg_lwip_altcp_attach", nullptr);
  endpoint* e = new endpoint;
  e->id = static_cast<int>(g_eps.size());
  e->t = t;
  e->server = true;
  e->bytes = t == g_edge ? edge_server_bytes : g_bytes;
  e->manual = t == g_edge;
  setup(e, conn);
  watch_pcb(e);
  for (endpoint* k : t->clients)
    if (k->pcb && k->pcb->local_port == e->pcb->remote_port) {
      e->peer = k;
      k->peer = e;
    }
  t->servers.push_back(e);
  return ERR_OK;
}

err_t on_connected(void*, altcp_pcb*, err_t) { return ERR_OK; }

void on_pressure(memcg_proto*, int entering, int64_t, void*) {
  (entering ? g_pressure_enter : g_pressure_leave) += 1;
}

std::vector<tenant*> g_tenants_and_edge() {
  std::vector<tenant*> v = g_tenants;
  v.push_back(g_edge);
  return v;
}

void tick() {
  ++g_now;
  wire_deliver();
  sys_check_timeouts();
  memcg_lwip_wake();  // what lwIP's timers freed
}

void write_pattern(endpoint* e, std::uint64_t n, bool output = true) {
  unsigned char buf[4 * TCP_MSS];
  for (std::uint64_t i = 0; i < n; ++i) buf[i] = pattern(e->id, e->sent + i);
  if (altcp_write(e->conn, buf, static_cast<u16_t>(n), TCP_WRITE_FLAG_COPY) != ERR_OK)
    fail("edge: write", e);
  e->sent += n;
  if (output) altcp_output(e->conn);
}

// The edge, deterministic: the server's group is full and its receive queue not empty, and
// the client's next segment carries data, the ACK of the server's data in flight, and the
// client's FIN. The port refuses the payload; lwIP must still take the ACK (the server's sent
// data is freed), and the FIN must come again with the data once there is room.
void edge_phase() {
  tenant* t = g_edge;
  altcp_pcb* conn = altcp_tcp_new_ip_type(IPADDR_TYPE_V4);
  if (memcg_lwip_altcp_attach(conn, t->peer) != 0) return fail("edge: attach", nullptr);
  endpoint* c = new endpoint;
  c->id = static_cast<int>(g_eps.size());
  c->t = t;
  c->manual = true;
  setup(c, conn);
  watch_pcb(c);
  t->clients.push_back(c);
  ip4_addr_t ca, sa;
  IP4_ADDR(&ca, 10, 0, 0, 1);
  IP4_ADDR(&sa, 10, 0, 0, 2);
  altcp_bind(conn, &ca, 0);
  altcp_connect(conn, &sa, t->port, on_connected);
  for (int i = 0; i < 20 && !c->peer; ++i) tick();
  endpoint* s = c->peer;
  if (!s || c->pcb->state != ESTABLISHED) return fail("edge: no connection", c);
  // The server's receive queue holds a segment the application does not read yet (a refusal
  // needs a queue that is not empty).
  write_pattern(c, TCP_MSS);
  for (int i = 0; i < 3; ++i) tick();
  if (s->held.size() != 1) return fail("edge: first segment not held", s);
  // The server's data in flight (one segment: the client acknowledges it with its data).
  write_pattern(s, edge_server_bytes);
  const u32_t server_snd_nxt = s->pcb->snd_nxt;
  // What lwIP allocated for it (pbuf with headers, segment) is charged to the socket: its send
  // queue holds the heap, not only the payload.
  const memcg_sock_info sinfo = sock_info(s->pcb), cinfo = sock_info(c->pcb);
  if (sinfo.wmem_queued <= static_cast<std::int64_t>(edge_server_bytes) ||
      sinfo.wmem_queued + cinfo.wmem_queued != port_stats().tx_heap)
    fail("edge: the send heap is not what the socket charged", s);
  // Segments that use up the server socket's forward allocation, sent before the client has
  // the server's data (they carry the old ACK): the client's last segment then needs a page.
  const memcg_sock_info info = sock_info(s->pcb);
  const std::int64_t ts = memcg_lwip_rx_truesize(TCP_MSS + 40);
  if (info.forward_alloc >= ts) write_pattern(c, static_cast<std::uint64_t>(info.forward_alloc / ts) * TCP_MSS);
  tick();  // the server's data reaches the client, the client's segments the server
  if (c->held.size() != 1) return fail("edge: server data not at the client", c);
  // The server's group is full.
  std::int64_t fill = 0;
  while (memcg_charge(t->g, MEMCG_KIND_ANON, 1, MEMCG_GFP_NORECLAIM) == 0) ++fill;
  // The client's last segment: data, the ACK of the server's data and the client's FIN.
  write_pattern(c, TCP_MSS, false);  // the FIN joins it before it goes out
  c->bytes = c->sent;
  if (altcp_shutdown(c->conn, 0, 1) != ERR_OK) fail("edge: shutdown", c);
  c->shut_tx = true;
  altcp_output(c->conn);
  const memcg_lwip_stats before = port_stats();
  const std::uint64_t checked = g_acks_checked, fins = g_fin_refused;
  tick();  // at the server: refused
  const memcg_lwip_stats after = port_stats();
  if (after.rx_refused != before.rx_refused + 1 || g_fin_refused != fins + 1 ||
      after.rx_refused_by[MEMCG_REFUSAL_GROUP_LIMIT] != before.rx_refused_by[MEMCG_REFUSAL_GROUP_LIMIT] + 1)
    fail("edge: the data+FIN segment was not refused", s);
  if (g_acks_checked != checked + 1 || !s->pcb || s->pcb->lastack != server_snd_nxt)
    fail("edge: the ACK of the refused segment was lost", s);
  if (s->pcb && s->pcb->unacked) fail("edge: acknowledged data still queued", s);
  if (s->fin) fail("edge: a FIN behind refused data was taken", s);
  // Room again: the applications run as in the main loop; the client retransmits its data
  // and FIN.
  if (memcg_uncharge(t->g, MEMCG_KIND_ANON, fill) != 0) fail("edge: uncharge", nullptr);
  c->manual = s->manual = false;
  const std::uint32_t refused_at = g_now;
  for (int i = 0; i < 10000 && !(s->closed && c->closed) && !g_errors; ++i) {
    tick();
    for (endpoint* e : {c, s}) {
      endpoint_read(e);
      endpoint_send(e);
    }
  }
  if (!s->closed || !c->closed) fail("edge: the connection did not finish", s);
  std::printf("  edge: a data+FIN segment refused at memory.max (%" PRId64 " pages filled), its ACK "
              "taken; data and FIN again %.3f s later\n",
              fill, (t->last_done - refused_at) / 1000.0);
}

}  // namespace

extern "C" u32_t sys_now(void) { return g_now; }

namespace {
// The library's clock is lwIP's: vmpressure's one-second socket hold and tcp_mem's pressure
// episodes run on the same virtual time as the wire and the timers (on the real clock a hold
// would outlast the whole run, and the episodes would be measured in host time). Nothing here
// throttles (no memory.high); a sleep would move the simulation's time on.
std::int64_t clock_now_us(void*) { return static_cast<std::int64_t>(g_now) * 1000; }
void clock_sleep_us(std::int64_t us, void*) { g_now += static_cast<std::uint32_t>((us + 999) / 1000); }
}  // namespace

int main(int argc, char** argv) {
  double mb = 4;
  int conns_per = 4;
  int64_t tcp_min = 256, tcp_pressure = 384;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--mb" && i + 1 < argc) mb = std::atof(argv[++i]);
    else if (a == "--conns" && i + 1 < argc) conns_per = std::atoi(argv[++i]);
    else if (a == "--loss" && i + 1 < argc) g_loss_ppm = static_cast<std::uint32_t>(std::atoi(argv[++i]));
    else if (a == "--tcp-mem" && i + 2 < argc) {
      tcp_min = std::atoll(argv[++i]);
      tcp_pressure = std::atoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: lwip_groups [--mb N] [--conns N] [--loss PPM] [--tcp-mem MIN PRESSURE]\n");
      return 2;
    }
  }
  g_bytes = static_cast<std::uint64_t>(mb * 1024 * 1024);

  memcg_clock* clock = nullptr;
  if (memcg_clock_create(clock_now_us, clock_sleep_us, nullptr, &clock) != 0) return 1;
  memcg_hierarchy_options ho;
  memcg_hierarchy_options_init(&ho);
  ho.clock = clock;
  memcg_proto_options po;
  memcg_proto_options_init(&po);
  po.pcpu_reserve_pages = 0;
  po.clock = clock;
  if (memcg_hierarchy_create(&ho, &g_h) != 0 || memcg_proto_create(&po, &g_proto) != 0) return 1;
  // tcp_mem in pages: pressure above 1.5 MiB, back below 1 MiB, hard limit 32 MiB.
  memcg_proto_set_tcp_mem(g_proto, tcp_min, tcp_pressure, 8192);
  // (tcp_wmem stays the default: the port sizes each socket's sndbuf for TCP_SND_BUF.)
  memcg_proto_set_pressure_callback(g_proto, on_pressure, nullptr);
  memcg_mkdir(g_h, "server", nullptr);
  memcg_mkdir(g_h, "client", nullptr);
  const char* names[] = {"gold", "silver", "bronze", "slow"};
  for (int i = 0; i < 4; ++i) {
    tenant* t = new tenant;
    t->name = names[i];
    t->port = static_cast<std::uint16_t>(5000 + i);
    std::string sp = std::string("server/") + names[i], cp = std::string("client/") + names[i];
    if (memcg_mkdir(g_h, sp.c_str(), &t->g) != 0 || memcg_mkdir(g_h, cp.c_str(), &t->peer) != 0)
      return 1;
    if (i == 3) {
      t->limit = 320 << 10;
      memcg_write(g_h, t->g, "memory.max", std::to_string(t->limit).c_str());
      t->read_per_tick = 1024;  // about 1 MB/s of virtual time per connection (whole segments)
    }
    g_tenants.push_back(t);
  }
  g_edge = new tenant;
  g_edge->name = "edge";
  g_edge->port = 6000;
  if (memcg_mkdir(g_h, "server/edge", &g_edge->g) != 0 || memcg_mkdir(g_h, "client/edge", &g_edge->peer) != 0)
    return 1;
  g_edge->limit = 256 << 10;
  memcg_write(g_h, g_edge->g, "memory.max", std::to_string(g_edge->limit).c_str());

  lwip_init();
  if (memcg_lwip_init(g_proto) != 0) return 1;
  g_ext_id = tcp_ext_arg_alloc_id();
  ip4_addr_t ca, sa, mask, gw;
  IP4_ADDR(&ca, 10, 0, 0, 1);
  IP4_ADDR(&sa, 10, 0, 0, 2);
  IP4_ADDR(&mask, 255, 255, 255, 0);
  IP4_ADDR(&gw, 0, 0, 0, 0);
  netif_add(&g_client_if, &ca, &mask, &gw, nullptr, netif_setup, memcg_lwip_netif_input);
  netif_add(&g_server_if, &sa, &mask, &gw, nullptr, netif_setup, memcg_lwip_netif_input);
  netif_set_up(&g_client_if);
  netif_set_up(&g_server_if);

  for (tenant* t : g_tenants_and_edge()) {
    altcp_pcb* l = altcp_tcp_new_ip_type(IPADDR_TYPE_V4);
    altcp_bind(l, &sa, t->port);
    t->listener = altcp_listen(l);
    // After listen: accepted connections get sockets in the tenant's group from their SYN on.
    if (memcg_lwip_attach(static_cast<tcp_pcb*>(t->listener->state), t->g) != 0) return 1;
    altcp_arg(t->listener, t);
    altcp_accept(t->listener, on_accept);
  }
  // The deterministic edge first, then every tenant at once.
  const std::uint32_t loss = g_loss_ppm;
  g_loss_ppm = 0;  // the edge counts its frames
  edge_phase();
  g_loss_ppm = loss;
  const std::size_t edge_eps = g_eps.size();
  const std::uint32_t main_start = g_now;
  const std::uint32_t squeeze_at = main_start + squeeze_after;
  for (tenant* t : g_tenants)
    for (int k = 0; k < conns_per; ++k) {
      altcp_pcb* conn = altcp_tcp_new_ip_type(IPADDR_TYPE_V4);
      if (memcg_lwip_altcp_attach(conn, t->peer) != 0) return 1;
      endpoint* e = new endpoint;
      e->id = static_cast<int>(g_eps.size());
      e->t = t;
      e->bytes = g_bytes;
      setup(e, conn);
      watch_pcb(e);
      t->clients.push_back(e);
      altcp_bind(conn, &ca, 0);
      if (altcp_connect(conn, &sa, t->port, on_connected) != ERR_OK) fail("altcp_connect", e);
    }

  const std::uint32_t limit_ms = 600000;
  std::int64_t peak_allocated = 0;
  auto all_done = [&] {
    for (endpoint* e : g_eps)
      if (!e->closed && !e->err) return false;
    return g_eps.size() == edge_eps + 2 * g_tenants.size() * static_cast<std::size_t>(conns_per);
  };
  while (!all_done() && g_now < limit_ms && !g_errors) {
    ++g_now;
    if (g_now == squeeze_at) {
      // The operator lowers the slow tenant's memory.max below what it holds: windows it
      // already promised now exceed its room, and segments in flight are refused.
      tenant* t = g_tenants.back();
      t->limit = read_value(t->g, "memory.current");
      memcg_write(g_h, t->g, "memory.max", std::to_string(t->limit).c_str());
    }
    wire_deliver();
    sys_check_timeouts();
    memcg_lwip_wake();
    for (endpoint* e : g_eps) {
      endpoint_read(e);
      endpoint_send(e);
    }
    for (tenant* t : g_tenants)
      t->peak_current = std::max(t->peak_current, read_value(t->g, "memory.current"));
    peak_allocated = std::max(peak_allocated, proto_stats().memory_allocated);
  }
  std::uint32_t transfer_ms = g_now - main_start;
  // Let FIN handshakes and TIME_WAIT run out, then close the listeners.
  while ((tcp_active_pcbs || tcp_tw_pcbs || !g_wire.empty()) && g_now < limit_ms + 60000) {
    ++g_now;
    wire_deliver();
    sys_check_timeouts();
  }
  for (tenant* t : g_tenants_and_edge()) altcp_close(t->listener);
  if (tcp_active_pcbs || tcp_tw_pcbs) fail("pcbs left", nullptr);
  if (!all_done()) {
    fail("transfers did not finish", nullptr);
    int shown = 0;
    for (endpoint* e : g_eps)
      if (!e->closed && shown++ < 8)
        std::fprintf(stderr, "  endpoint %d %s: sent %" PRIu64 " verified %" PRIu64
                     " held %zu shut_tx %d fin %d state %d withheld %u rcv_wnd %d sndbuf %u\n",
                     e->id, e->server ? "server" : "client", e->sent, e->verified, e->held.size(),
                     e->shut_tx, e->fin, e->pcb ? static_cast<int>(e->pcb->state) : -1,
                     e->pcb ? memcg_lwip_withheld(e->pcb) : 0u, e->pcb ? static_cast<int>(e->pcb->rcv_wnd) : -1,
                     e->pcb ? memcg_lwip_sndbuf(e->pcb) : 0u);
    shown = 0;
    for (endpoint* e : g_eps)
      if (!e->closed && e->pcb && shown++ < 8) {
        const memcg_sock_info in = sock_info(e->pcb);
        std::fprintf(stderr, "  ep %d fwd %lld rmem %lld wmem %lld rcvbuf %lld sndbuf %lld pressure %d unacked %d unsent %d snd_wnd %d\n", e->id,
                     (long long)in.forward_alloc, (long long)in.rmem_alloc, (long long)in.wmem_queued, (long long)in.rcvbuf, (long long)in.sndbuf, in.under_pressure, e->pcb->unacked != nullptr, e->pcb->unsent != nullptr, (int)e->pcb->snd_wnd);
      }
  }

  memcg_lwip_stats st = port_stats();
  std::uint64_t total = 0;
  std::printf("lwIP %s, %zu connections, %.1f MiB each way, loss %u ppm, TCP_WND %d\n",
              LWIP_VERSION_STRING, g_eps.size() / 2, mb, g_loss_ppm, TCP_WND);
  for (tenant* t : g_tenants) {
    std::uint64_t up = 0, down = 0, refused = 0;
    for (endpoint* e : t->servers) up += e->verified, refused += e->write_refused;
    for (endpoint* e : t->clients) down += e->verified, refused += e->write_refused;
    total += up + down;
    double secs = t->last_done ? (t->last_done - main_start) / 1000.0 : 0.0;
    std::printf("  %-7s %2zu conns  %6.1f MiB up %6.1f MiB down checked  writes refused %4" PRIu64
                "  done at %7.3f s virtual  peak memory.current %" PRId64 " B%s\n",
                t->name.c_str(), t->servers.size(), up / 1048576.0, down / 1048576.0, refused, secs,
                t->peak_current, t->limit ? (" of memory.max " + std::to_string(t->limit)).c_str() : "");
    if (t->servers.size() != static_cast<std::size_t>(conns_per)) fail("missing connections", nullptr);
    // Tenants without a limit keep their throughput (about 0.5 s of virtual time without loss):
    // pressure backs them off through their windows, it does not stall them.
    if (!g_loss_ppm && !t->limit && secs > 5.0) fail("a tenant without a limit stalled", nullptr);
  }
  int64_t episodes = 0, pressure_ms = 0;
  episodes = proto_stats().pressures;
  pressure_ms = proto_stats().pressure_ms;
  std::printf("  total %.1f MiB checked; frames %" PRIu64 " (lost on the wire %" PRIu64 ")\n",
              total / 1048576.0, g_frames, g_lost);
  std::printf("  port: %" PRIu64 " segments charged, %" PRIu64 " refused (%" PRIu64 " trimmed, %" PRIu64
              " header re-fed, %" PRIu64 " with a FIN), %" PRIu64 " uncharged, %" PRIu64
              " copied; %" PRIu64 " heap allocations refused to writes\n",
              st.rx_charged, st.rx_refused, st.rx_trimmed, st.rx_reinjected, st.rx_fin_deferred,
              st.rx_uncharged, st.rx_copied, st.tx_refused);
  std::printf("  out-of-order queues pruned for in-sequence data: %" PRIu64 "\n", st.rx_ooseq_pruned);
  std::printf("  group room callbacks %" PRIu64 ": %" PRIu64 " held-back connections woken, %" PRIu64
              " opened window; %" PRIu64 " woken when pressure ended\n",
              st.room_callbacks, st.room_woken, st.room_opened, st.pressure_woken);
  std::printf("  refused by: memory.max %" PRIu64 ", tcp limit %" PRIu64 ", tcp_mem %" PRIu64
              ", fairness %" PRIu64 ", rcvbuf %" PRIu64 ", unknown %" PRIu64 "\n",
              st.rx_refused_by[MEMCG_REFUSAL_GROUP_LIMIT], st.rx_refused_by[MEMCG_REFUSAL_TCP_LIMIT],
              st.rx_refused_by[MEMCG_REFUSAL_PROTO_LIMIT], st.rx_refused_by[MEMCG_REFUSAL_FAIRNESS],
              st.rx_refused_by[MEMCG_REFUSAL_RCVBUF], st.rx_refused_by[MEMCG_REFUSAL_UNKNOWN]);
  std::printf("  ACKs of refused segments checked: %" PRIu64 "; data+FIN segments refused: %" PRIu64 "\n",
              g_acks_checked, g_fin_refused);
  std::printf("  tcp pressure: %" PRId64 " episodes (%" PRId64 " entered, %" PRId64
              " left), %" PRId64 " ms in total (virtual clock); peak memory_allocated %" PRId64 " pages\n",
              episodes, g_pressure_enter, g_pressure_leave, pressure_ms, peak_allocated);
  std::printf("  virtual time: transfers %.3f s, until every pcb was gone %.3f s\n",
              transfer_ms / 1000.0, (g_now - main_start) / 1000.0);

  // Every counter back to zero: the port destroyed each socket when its pcb and its last pbuf
  // and heap block were gone.
  for (endpoint* e : g_eps)
    if (!e->held.empty()) fail("pbufs still held", e);
  if (st.conns || st.rx_frames || st.heap || st.tx_heap) {
    std::printf("  port at the end: conns %" PRId64 ", frames %" PRId64 ", heap %" PRId64 ", send heap %" PRId64 "\n",
                st.conns, st.rx_frames, st.heap, st.tx_heap);
    fail("the port still holds memory", nullptr);
  }
  if (proto_stats().memory_allocated != 0) fail("memory_allocated not zero", nullptr);
  if (proto_stats().sockets_allocated != 0) fail("sockets_allocated not zero", nullptr);
  if (proto_stats().under_pressure != 0) fail("still under pressure", nullptr);
  if (episodes < 1 || g_pressure_leave != g_pressure_enter) fail("pressure did not enter and leave", nullptr);
  for (tenant* t : g_tenants_and_edge())
    for (memcg_group* g : {t->g, t->peer})
      if (read_value(g, "memory.stat", "sock") != 0) fail("group's sock charge not zero", nullptr);
  memcg_group* root = nullptr;
  memcg_root(g_h, &root);
  std::int64_t root_sock = read_value(root, "memory.stat", "sock");
  if (root_sock != 0) fail("root sock not zero", nullptr);
  // The limit was reached in both directions and the refusal path ran.
  if (st.rx_refused == 0 || g_acks_checked == 0) fail("no segment refused with an ACK to check", nullptr);
  if (st.rx_uncharged != 0) fail("segments kept uncharged", nullptr);
  if (st.rx_copied == 0) fail("no frame came in a pbuf of the driver's own", nullptr);
  // Held-back connections are woken only by their group's room callback (no loop over them).
  if (st.room_opened == 0) fail("no held-back connection was woken by its group's room callback", nullptr);
  for (endpoint* e : g_eps) delete e;
  for (tenant* t : g_tenants_and_edge()) delete t;
  memcg_proto_destroy(g_proto);
  memcg_hierarchy_destroy(g_h);
  memcg_clock_destroy(clock);
  std::printf(g_errors ? "FAILED (%d errors)\n" : "ok\n", g_errors);
  return g_errors ? 1 : 0;
}
