/* test_memcg_lwip.c: the lwIP port from C99 alone, on lwIP's raw API (examples/lwip builds it
 * with -std=c99 -pedantic -Werror and runs it; examples/lwip/lwip_groups.cpp is the larger
 * bidirectional test on altcp). Two netifs on an in-memory wire, a virtual clock.
 *
 * One connection; the server's group is full and its receive queue not empty when the client
 * sends its last segment: data, the ACK of the server's data in flight, and its FIN. Checked:
 * the payload is refused (memory.max) but the ACK is taken (the server's send heap is freed);
 * the FIN is not taken before its data; once the group has room, data and FIN arrive, every byte
 * in order; the connection ends without a reset; then every counter is 0. And a connection
 * whose window its group's room held back is woken by the group's room callback once room
 * appears. Then a second connection whose window closed (its peer told 0) and whose reader's
 * group is full: the read reopens it by one segment, far under lwIP's own update threshold
 * (TCP_WND/4), and the window update must be on the wire in that call, not after the peer's
 * zero-window probe. Then a listener attached before tcp_listen() (the slot lwIP copies into the
 * listener must stay alive) accepts a connection charged to its group. Exit 0 on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwip/init.h"
#include "lwip/ip4.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"
#include "memcg/memcg.h"
#include "memcg_lwip.h"

static u32_t now_ms;
u32_t sys_now(void) { return now_ms; }

static int errors;
#define CHECK(cond, what)                                           \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "FAIL: %s (line %d)\n", what, __LINE__);     \
      ++errors;                                                     \
    }                                                               \
  } while (0)

/* ---- the wire: frames delivered one tick later ---- */

enum { WIRE_MAX = 1024 };
static struct {
  struct netif* to;
  u32_t at;
  u16_t len;
  unsigned char* bytes;
} wire[WIRE_MAX];
static unsigned wire_head, wire_tail;
static struct netif client_if, server_if;

static err_t wire_output(struct netif* from, struct pbuf* p, const ip4_addr_t* dst) {
  unsigned i = wire_tail % WIRE_MAX;
  (void)dst;
  if (wire_tail - wire_head == WIRE_MAX) return ERR_MEM;
  wire[i].to = from == &client_if ? &server_if : &client_if;
  wire[i].at = now_ms + 1;
  wire[i].len = p->tot_len;
  wire[i].bytes = (unsigned char*)malloc(p->tot_len);
  if (!wire[i].bytes) abort();
  pbuf_copy_partial(p, wire[i].bytes, p->tot_len, 0);
  ++wire_tail;
  return ERR_OK;
}

static void tick(void) {
  ++now_ms;
  while (wire_head != wire_tail && wire[wire_head % WIRE_MAX].at <= now_ms) {
    unsigned i = wire_head++ % WIRE_MAX;
    struct pbuf* p = memcg_lwip_rx_alloc(wire[i].len);
    if (!p) abort();
    pbuf_take(p, wire[i].bytes, wire[i].len);
    free(wire[i].bytes);
    memcg_lwip_netif_input(p, wire[i].to);
  }
  sys_check_timeouts();
  (void)memcg_lwip_wake(); /* what lwIP's timers freed */
}

static err_t netif_setup(struct netif* n) {
  n->output = wire_output;
  n->mtu = 1500;
  n->flags = NETIF_FLAG_UP | NETIF_FLAG_LINK_UP;
  return ERR_OK;
}

/* ---- the two ends ---- */

struct end {
  struct tcp_pcb* pcb;
  struct pbuf* held; /* received, not yet read */
  u32_t sent, verified;
  int fin, fin_sent, closed, err;
};
static struct end client, server;

static u8_t pattern(const struct end* from, u32_t i) {
  return (u8_t)((i * 131u) ^ (i >> 9) ^ (from == &client ? 0x5au : 0xa5u));
}

static void on_err(void* arg, err_t err) {
  struct end* e = (struct end*)arg;
  fprintf(stderr, "lwIP error %d\n", err);
  e->pcb = NULL;
  e->err = 1;
}

static err_t on_recv(void* arg, struct tcp_pcb* pcb, struct pbuf* p, err_t err) {
  struct end* e = (struct end*)arg;
  (void)pcb;
  (void)err;
  if (!p) e->fin = 1;
  else if (e->held) pbuf_cat(e->held, p);
  else e->held = p;
  return ERR_OK;
}

/* Reads and checks what is held (the port gives the frames' charge back); returns the bytes. */
static u32_t read_data(struct end* e, const struct end* from) {
  struct pbuf* q;
  u32_t n = 0;
  if (!e->held) return 0;
  for (q = e->held; q; q = q->next) {
    const u8_t* d = (const u8_t*)q->payload;
    u16_t i;
    for (i = 0; i < q->len; ++i) CHECK(d[i] == pattern(from, e->verified + n + i), "byte mismatch");
    n += q->len;
  }
  e->verified += n;
  pbuf_free(e->held); /* the port gives the frames' charge back */
  e->held = NULL;
  return n;
}

/* Reads; the window goes back through the port. */
static void read_all(struct end* e, const struct end* from) {
  u32_t n = read_data(e, from);
  if (n && e->pcb) memcg_lwip_recved(e->pcb, n);
}

static void write_n(struct end* e, u32_t n, int output) {
  static u8_t buf[4 * TCP_MSS];
  u32_t i;
  for (i = 0; i < n; ++i) buf[i] = pattern(e, e->sent + i);
  CHECK(memcg_lwip_write(e->pcb, buf, (u16_t)n, TCP_WRITE_FLAG_COPY) == ERR_OK, "write");
  e->sent += n;
  if (output) tcp_output(e->pcb);
}

/* The window of the last frame on the wire from the server to the client since `from` (a
 * wire index), or -1 if the server sent nothing. Frames are IPv4 packets; windows are not
 * scaled. */
static long server_window_since(unsigned from) {
  long wnd = -1;
  unsigned k;
  for (k = from; k != wire_tail; ++k) {
    unsigned i = k % WIRE_MAX;
    const unsigned char* b = wire[i].bytes;
    unsigned ihl = (unsigned)(b[0] & 0x0f) * 4u;
    if (wire[i].to != &client_if || wire[i].len < ihl + 20u || b[9] != 6 /* TCP */) continue;
    wnd = (long)((unsigned)b[ihl + 14] << 8 | b[ihl + 15]);
  }
  return wnd;
}

static err_t on_accept(void* arg, struct tcp_pcb* pcb, err_t err) {
  (void)arg;
  if (err != ERR_OK || !pcb) return ERR_VAL;
  server.pcb = pcb;
  tcp_arg(pcb, &server);
  tcp_recv(pcb, on_recv);
  tcp_err(pcb, on_err);
  return ERR_OK;
}

static err_t on_connected(void* arg, struct tcp_pcb* pcb, err_t err) {
  (void)arg;
  (void)pcb;
  (void)err;
  return ERR_OK;
}

/* The window the peer was last told (from what it sent to the right edge announced). */
static u32_t told(const struct tcp_pcb* pcb) {
  return TCP_SEQ_GT(pcb->rcv_ann_right_edge, pcb->rcv_nxt) ? pcb->rcv_ann_right_edge - pcb->rcv_nxt
                                                           : 0;
}

static memcg_lwip_stats port_stats(void) {
  memcg_lwip_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  if (memcg_lwip_get_stats(&s) != 0) abort();
  return s;
}

static memcg_sock_info sock_info(const struct tcp_pcb* pcb) {
  memcg_sock_info i;
  memset(&i, 0, sizeof i);
  i.size = sizeof i;
  if (memcg_sock_get_info(memcg_lwip_sock(pcb), &i) != 0) abort();
  return i;
}

/* Connects `client` (charged to cg) to the listener on sa:port; false (a message printed)
 * without an accepted server connection that has a socket. */
static int connect_client(memcg_group* cg, const ip4_addr_t* ca, const ip4_addr_t* sa, u16_t port,
                          const char* what) {
  int i;
  client.pcb = tcp_new();
  CHECK(memcg_lwip_attach(client.pcb, cg) == 0, what);
  tcp_arg(client.pcb, &client);
  tcp_recv(client.pcb, on_recv);
  tcp_err(client.pcb, on_err);
  tcp_bind(client.pcb, ca, 0);
  tcp_connect(client.pcb, sa, port, on_connected);
  for (i = 0; i < 20 && !server.pcb; ++i) tick();
  if (!server.pcb || !memcg_lwip_sock(server.pcb)) {
    fprintf(stderr, "FAIL: %s: no accepted connection with a socket\n", what);
    return 0;
  }
  return 1;
}

/* Both ends read until the client sent everything, then the client shuts its side and each end
 * closes on the other's FIN; checks that every byte the client sent arrived, with no reset. */
static void finish(const char* what) {
  u32_t i;
  for (i = 0; i < 20000 && !(server.closed && client.closed); ++i) {
    tick();
    read_all(&server, &client);
    read_all(&client, &server);
    if (server.verified == client.sent && !client.fin_sent && client.pcb) {
      CHECK(tcp_shutdown(client.pcb, 0, 1) == ERR_OK, what);
      client.fin_sent = 1;
    }
    if (server.fin && !server.closed && server.pcb) {
      CHECK(memcg_lwip_close(server.pcb) == ERR_OK, what);
      server.closed = 1;
    }
    if (client.fin && !client.closed && client.pcb) {
      CHECK(memcg_lwip_close(client.pcb) == ERR_OK, what);
      client.closed = 1;
    }
  }
  CHECK(server.verified == client.sent && !server.err && !client.err, what);
}

int main(void) {
  memcg_hierarchy* h;
  memcg_proto* proto;
  memcg_group *sg, *cg;
  memcg_proto_stats ps;
  memcg_lwip_stats before, after;
  memcg_sock_info si;
  ip4_addr_t ca, sa, mask, gw;
  struct tcp_pcb* l;
  u32_t server_snd_nxt, i, checked;
  long reopen_wnd = -1;
  int64_t fill = 0, sock_pages = -1, seg;

  if (memcg_hierarchy_create(NULL, &h) != 0 || memcg_proto_create(NULL, &proto) != 0) return 1;
  if (memcg_mkdir(h, "server", &sg) != 0 || memcg_mkdir(h, "client", &cg) != 0) return 1;
  if (memcg_write(h, sg, "memory.max", "262144") != 0) return 1;
  lwip_init();
  if (memcg_lwip_init(proto) != 0) return 1;
  IP4_ADDR(&ca, 10, 0, 0, 1);
  IP4_ADDR(&sa, 10, 0, 0, 2);
  IP4_ADDR(&mask, 255, 255, 255, 0);
  IP4_ADDR(&gw, 0, 0, 0, 0);
  netif_add(&client_if, &ca, &mask, &gw, NULL, netif_setup, memcg_lwip_netif_input);
  netif_add(&server_if, &sa, &mask, &gw, NULL, netif_setup, memcg_lwip_netif_input);
  netif_set_up(&client_if);
  netif_set_up(&server_if);

  l = tcp_new();
  tcp_bind(l, &sa, 7000);
  l = tcp_listen(l);
  CHECK(memcg_lwip_attach(l, sg) == 0, "attach the listener"); /* after tcp_listen */
  tcp_accept(l, on_accept);
  if (!connect_client(cg, &ca, &sa, 7000, "the client")) return 1;

  /* The port sized the send buffer for what lwIP queues (TCP_SND_BUF in heap), unlocked. */
  si = sock_info(server.pcb);
  CHECK(si.sndbuf > TCP_SND_BUF && !si.sndbuf_locked, "sndbuf sized for TCP_SND_BUF");
  /* A segment the server does not read yet: a refusal needs a queue that is not empty. */
  write_n(&client, TCP_MSS, 1);
  for (i = 0; i < 3; ++i) tick();
  CHECK(server.held != NULL, "first segment held");
  /* The server's data in flight; its heap is the socket's send queue. */
  write_n(&server, 1000, 1);
  server_snd_nxt = server.pcb->snd_nxt;
  si = sock_info(server.pcb);
  CHECK(si.wmem_queued > 1000 &&
            si.wmem_queued + sock_info(client.pcb).wmem_queued == port_stats().tx_heap,
        "send heap charged");
  /* Segments that use up the server socket's forward allocation (old ACK), so that the last
   * one needs a page. */
  seg = memcg_lwip_rx_truesize(TCP_MSS + 40);
  if (si.forward_alloc >= seg) write_n(&client, (u32_t)(si.forward_alloc / seg) * TCP_MSS, 1);
  tick();
  CHECK(client.held != NULL, "server data at the client");
  while (memcg_charge(sg, MEMCG_KIND_ANON, 1, MEMCG_GFP_NORECLAIM) == 0) ++fill;
  /* Data, the ACK of the server's data, and the FIN on one segment. */
  write_n(&client, TCP_MSS, 0);
  CHECK(tcp_shutdown(client.pcb, 0, 1) == ERR_OK, "shutdown");
  tcp_output(client.pcb);
  before = port_stats();
  tick();
  after = port_stats();
  CHECK(after.rx_refused == before.rx_refused + 1 && after.rx_trimmed == before.rx_trimmed + 1 &&
            after.rx_fin_deferred == before.rx_fin_deferred + 1,
        "the data+FIN segment refused and trimmed");
  CHECK(after.rx_refused_by[MEMCG_REFUSAL_GROUP_LIMIT] ==
            before.rx_refused_by[MEMCG_REFUSAL_GROUP_LIMIT] + 1,
        "refused by memory.max");
  CHECK(server.pcb && server.pcb->lastack == server_snd_nxt && !server.pcb->unacked,
        "the ACK of the refused segment taken");
  CHECK(sock_info(server.pcb).wmem_queued == 0, "the acknowledged send heap given back");
  CHECK(!server.fin, "no FIN before its data");

  /* A connection held back by its group's room is woken by the group's room callback: the
   * server reads while its group is full; its window stays shut (held back, the group armed).
   * Room appears (an uncharge): the port opens the window in its next call, without a call
   * on that connection. */
  {
    u32_t n = read_data(&server, &client);
    int armed = 0;
    int64_t more = 0;
    while (memcg_charge(sg, MEMCG_KIND_ANON, 1, MEMCG_GFP_NORECLAIM) == 0) ++more;
    fill += more;
    CHECK(n > 0 && memcg_lwip_recved(server.pcb, n) == 0, "the read's window held back");
    CHECK(memcg_lwip_withheld(server.pcb) == n, "the whole read held back");
    CHECK(memcg_group_room_armed(sg, &armed) == 0 && armed, "the server's group armed");
    before = port_stats();
    CHECK(memcg_uncharge(sg, MEMCG_KIND_ANON, fill) == 0, "uncharge");
    after = port_stats();
    CHECK(after.room_callbacks == before.room_callbacks + 1 &&
              after.room_woken == before.room_woken + 1,
          "the group's room callback woke the held-back connection");
    CHECK(memcg_lwip_withheld(server.pcb) == n, "woken: its window update waits for a port call");
    CHECK(memcg_lwip_wake() == n, "the port call opened the window");
    CHECK(memcg_lwip_withheld(server.pcb) == 0 && port_stats().room_opened == after.room_opened + 1,
          "nothing held back any more");
  }

  /* Room again (above): both ends read; the client retransmits data and FIN. */
  for (i = 0; i < 20000 && !(server.closed && client.closed) && !errors; ++i) {
    tick();
    read_all(&server, &client);
    read_all(&client, &server);
    if (server.fin && !server.closed && server.pcb) {
      CHECK(memcg_lwip_close(server.pcb) == ERR_OK, "server close");
      server.closed = 1;
    }
    if (client.fin && !client.closed && client.pcb && !client.pcb->unacked && !client.pcb->unsent) {
      CHECK(memcg_lwip_close(client.pcb) == ERR_OK, "client close");
      client.closed = 1;
    }
  }
  CHECK(server.verified == client.sent && client.verified == server.sent, "every byte arrived");
  CHECK(!server.err && !client.err, "no reset");
  while ((tcp_active_pcbs || tcp_tw_pcbs || wire_head != wire_tail) && i++ < 200000) tick();
  checked = server.verified + client.verified;

  /* A closed window reopened by a small grant is announced at once (Linux announces a window
   * that at least doubles what the peer knows; lwIP alone waits for an inflation of
   * TCP_WND/4). The client sends more than a window; the server reads nothing until the
   * window is shut and the client stalls on it, then reads with its group full: the port
   * opens one segment (an empty receive queue always takes one). */
  memset(&client, 0, sizeof client);
  memset(&server, 0, sizeof server);
  if (!connect_client(cg, &ca, &sa, 7000, "the second client")) return 1;
  for (i = 0; i < TCP_WND / TCP_MSS + 4; i += 4) write_n(&client, 4 * TCP_MSS, 1);
  for (i = 0; i < 400; ++i) tick(); /* under the first zero-window probe (3 slow ticks) */
  CHECK(server.pcb->rcv_wnd == 0 && told(server.pcb) == 0, "the server's window shut");
  CHECK(client.pcb->snd_wnd == 0 && client.pcb->unsent, "the client stalled on it");
  {
    u32_t n = read_data(&server, &client), got;
    u32_t client_nxt = client.pcb->snd_nxt;
    unsigned mark;
    int64_t more = 0;
    long wnd;
    while (memcg_charge(sg, MEMCG_KIND_ANON, 1, MEMCG_GFP_NORECLAIM) == 0) ++more;
    mark = wire_tail;
    got = memcg_lwip_recved(server.pcb, n);
    CHECK(got >= TCP_MSS && got < TCP_WND_UPDATE_THRESHOLD, "a grant under lwIP's threshold");
    wnd = server_window_since(mark);
    CHECK(wnd >= TCP_MSS, "the reopened window announced in the same call");
    reopen_wnd = wnd;
    for (i = 0; i < 3 && client.pcb->snd_nxt == client_nxt; ++i) tick();
    CHECK(client.pcb->snd_nxt != client_nxt, "the client sends again at once");
    CHECK(memcg_uncharge(sg, MEMCG_KIND_ANON, more) == 0, "uncharge");
  }
  finish("the second connection: its bytes arrived, no reset");
  checked += server.verified;
  for (i = 0; (tcp_active_pcbs || tcp_tw_pcbs || wire_head != wire_tail) && i < 200000; ++i) tick();

  /* A listener attached before tcp_listen(), which copies the pcb's slot into the listener and
   * frees the pcb: the slot becomes the listener's (it was freed under the listener before), and
   * the connections it accepts are charged to its group. A pcb attached and closed unused
   * leaves no slot after the next port call. Then the listener closes while its accepted
   * connection lives on. */
  {
    struct tcp_pcb* early = tcp_new();
    struct tcp_pcb* unused = tcp_new();
    int64_t conns = port_stats().conns;
    int64_t pages = 0;
    CHECK(memcg_lwip_attach(unused, cg) == 0, "attach a pcb that is never used");
    CHECK(tcp_close(unused) == ERR_OK, "close it");
    tcp_bind(early, &sa, 7001);
    CHECK(memcg_lwip_attach(early, sg) == 0, "attach before tcp_listen");
    early = tcp_listen(early);
    tcp_accept(early, on_accept);
    (void)memcg_lwip_wake();
    CHECK(port_stats().conns == conns + 1, "the listener's slot alive, the unused pcb's gone");
    memset(&client, 0, sizeof client);
    memset(&server, 0, sizeof server);
    if (!connect_client(cg, &ca, &sa, 7001, "the client of a listener attached early")) return 1;
    write_n(&client, 2 * TCP_MSS, 1);
    for (i = 0; i < 3; ++i) tick();
    CHECK(server.held && memcg_group_stat(sg, MEMCG_KIND_SOCK, 1, &pages) == 0 && pages > 0,
          "the accepted connection charges the listener's group");
    CHECK(tcp_close(early) == ERR_OK, "close the listener");
    CHECK(port_stats().conns == conns + 2, "the listener's slot gone, both connections' alive");
    finish("the connection of a listener attached early: its bytes arrived, no reset");
    checked += server.verified;
  }
  for (i = 0; (tcp_active_pcbs || tcp_tw_pcbs || wire_head != wire_tail) && i < 200000; ++i) tick();
  (void)memcg_lwip_wake();
  tcp_close(l);
  CHECK(!tcp_active_pcbs && !tcp_tw_pcbs, "every pcb gone");

  after = port_stats();
  CHECK(after.conns == 0 && after.rx_frames == 0 && after.heap == 0 && after.tx_heap == 0,
        "the port holds nothing");
  CHECK(after.rx_uncharged == 0, "nothing kept uncharged");
  memset(&ps, 0, sizeof ps);
  ps.size = sizeof ps;
  CHECK(memcg_proto_stats_get(proto, &ps) == 0 && ps.memory_allocated == 0 &&
            ps.sockets_allocated == 0,
        "the protocol holds nothing");
  CHECK(memcg_group_stat(sg, MEMCG_KIND_SOCK, 1, &sock_pages) == 0 && sock_pages == 0,
        "the server's group holds no sock pages");
  printf("test_memcg_lwip: %u bytes checked, %llu pages filled, window reopened to %ld at once, "
         "%llu segments charged, %llu refused: %s\n",
         (unsigned)checked, (unsigned long long)fill, reopen_wnd,
         (unsigned long long)after.rx_charged, (unsigned long long)after.rx_refused,
         errors ? "FAILED" : "ok");
  memcg_proto_destroy(proto);
  memcg_hierarchy_destroy(h);
  return errors ? 1 : 0;
}
