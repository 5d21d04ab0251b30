/* memcg_lwip.c: the lwIP port (memcg_lwip.h). C99; compiled with lwIP and the stack's
 * lwipopts.h. Checked against lwIP 2.1.3: the refusal path depends on what tcp_input() does
 * around LWIP_HOOK_TCP_INPACKET_PCB (see memcg_lwip_inpacket). */
#include "lwip/opt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lwip/inet_chksum.h"
#include "lwip/init.h"
#include "lwip/ip.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/prot/tcp.h"
#include "lwip/tcp.h"
#if LWIP_ALTCP
#include "lwip/altcp.h"
#include "lwip/priv/altcp_priv.h"
#endif
#include "memcg_lwip.h"

#if !LWIP_TCP || LWIP_TCP_PCB_NUM_EXT_ARGS < 1
#error "memcg_lwip: needs LWIP_TCP and LWIP_TCP_PCB_NUM_EXT_ARGS >= 1 (the connection slot)"
#endif
#if !LWIP_SUPPORT_CUSTOM_PBUF
#error "memcg_lwip: needs LWIP_SUPPORT_CUSTOM_PBUF (received frames are custom pbufs)"
#endif
#if LWIP_VERSION_MAJOR != 2 || LWIP_VERSION_MINOR != 1
#warning "memcg_lwip: the refusal path was checked against lwIP 2.1's tcp_input(); check it"
#endif

/* The allocator behind received frames, connection slots and (through mem_clib_malloc) lwIP's
 * heap. */
#ifndef MEMCG_LWIP_SYS_MALLOC
#define MEMCG_LWIP_SYS_MALLOC malloc
#define MEMCG_LWIP_SYS_FREE free
#endif

struct memcg_lwip_room;

/* A connection slot: the memcg socket of one pcb (or a listener's group). It lives while its
 * pcb, a charged pbuf or a charged heap block does: received data the application still holds
 * is given back to the socket after lwIP freed the pcb. */
struct memcg_lwip_conn {
  memcg_sock_storage storage; /* the socket's state (memcg_sock_init): no allocation of its own */
  memcg_sock* sock;     /* NULL for a listener */
  memcg_group* group;   /* the group it was attached to (a listener's: of the connections it
                           accepts) */
  struct tcp_pcb* pcb;  /* NULL once lwIP freed it */
  uint32_t refs;        /* the pcb, each charged pbuf, each charged heap block */
  uint32_t withheld;    /* bytes consumed whose window is not yet given back */
  /* Held back: on the wait list of the group whose room callback wakes it (or on the list of
   * connections woken, whose window updates run at the end of the port's current call). */
  struct memcg_lwip_room* waits_on;
  struct memcg_lwip_conn *wait_prev, *wait_next;
  int woken_by_room; /* on the woken list by a group's room callback (else by pressure's end) */
  /* Parked: its pcb was freed in state CLOSED with nothing charged, which is what tcp_listen()
   * does to the pcb it replaces after copying the pcb's ext args into the listener. Kept, as a
   * listener's slot (no socket), until a listener is found holding it or none is (park_sweep). */
  struct memcg_lwip_conn* park_next;
  int parked;
};

/* A group whose room callback the port set: the connections its room holds back. One per group
 * of an attached socket or listener, and per ancestor (a parent's limit holds back too); they
 * live for the process. */
struct memcg_lwip_room {
  memcg_group* group;
  struct memcg_lwip_conn* head;
  struct memcg_lwip_room* next;
};

static memcg_proto* s_proto;
static u8_t s_ext_id;
static int s_ready;
static struct memcg_lwip_conn* s_tx_owner; /* the socket a write is allocating for */
static int s_reinjecting;
static memcg_lwip_stats s_stats;
static struct memcg_lwip_room* s_rooms; /* every group's record */
static struct memcg_lwip_room s_woken;  /* connections woken, their window update not yet run */
static struct memcg_lwip_room s_pressure; /* held back by memory pressure (no group's room) */
static int s_waking;                     /* the window updates of woken connections run */
static struct memcg_lwip_conn* s_parked; /* slots that may be a new listener's (park()) */

/* ---- held-back connections ---- */

static void wait_remove(struct memcg_lwip_conn* c) {
  struct memcg_lwip_room* r = c->waits_on;
  if (!r) return;
  if (c->wait_prev) c->wait_prev->wait_next = c->wait_next;
  else r->head = c->wait_next;
  if (c->wait_next) c->wait_next->wait_prev = c->wait_prev;
  c->waits_on = NULL;
  c->wait_prev = c->wait_next = NULL;
}

static void wait_add(struct memcg_lwip_room* r, struct memcg_lwip_conn* c) {
  if (c->waits_on == r) return;
  wait_remove(c);
  c->waits_on = r;
  c->wait_prev = NULL;
  c->wait_next = r->head;
  if (r->head) r->head->wait_prev = c;
  r->head = c;
}

/* The room callback (memcg_group_set_room_callback): room appeared for the group, after a
 * connection below it was held back. It runs inside the library's give-back (maybe inside the
 * operation of a socket it would wake, maybe inside lwIP's input): it only moves the group's
 * held-back connections to the woken list, O(1) per connection; their window updates run at
 * the end of the port call that gave the room back (memcg_lwip_wake). */
static void on_room(memcg_group* g, void* user) {
  struct memcg_lwip_room* r = (struct memcg_lwip_room*)user;
  LWIP_UNUSED_ARG(g);
  while (r->head) {
    struct memcg_lwip_conn* c = r->head;
    wait_add(&s_woken, c); /* unlinks it from r */
    c->woken_by_room = 1;
    ++s_stats.room_woken;
  }
  ++s_stats.room_callbacks;
}

static struct memcg_lwip_room* room_of(const memcg_group* g) {
  struct memcg_lwip_room* r;
  for (r = s_rooms; r; r = r->next)
    if (r->group == g) return r;
  return NULL;
}

/* Records (and room callbacks) for g and every ancestor. The callback is set again for a group
 * already recorded: a group made at the address of a removed hierarchy's needs it. */
static int rooms_watch(memcg_group* g) {
  while (g) {
    struct memcg_lwip_room* r = room_of(g);
    int rc;
    if (!r) {
      r = (struct memcg_lwip_room*)MEMCG_LWIP_SYS_MALLOC(sizeof *r);
      if (!r) return -ENOMEM;
      r->group = g;
      r->head = NULL;
      r->next = s_rooms;
      s_rooms = r;
    }
    if ((rc = memcg_group_set_room_callback(g, on_room, r)) != 0) return rc;
    if (memcg_group_parent(g, &g) != 0) break;
  }
  return 0;
}

static int under_pressure(struct memcg_lwip_conn* c) {
  memcg_sock_info info;
  info.size = sizeof info;
  return memcg_sock_get_info(c->sock, &info) == 0 && info.under_pressure;
}

/* A connection whose window update left window held back: it waits on the lowest group of its
 * socket's ancestry whose room callback is owed (armed). That group, or a lower one with room
 * enough, is what cut its window. None armed: under memory pressure (the window clamped to
 * what is forward-allocated), it waits for the pressure to end; else (the protocol's hard
 * limit) its own reads move it. */
static void wait_for_room(struct memcg_lwip_conn* c) {
  memcg_group* g = NULL;
  int armed;
  if (memcg_sock_group(c->sock, &g) == 0)
    for (; g; (void)memcg_group_parent(g, &g))
      if (memcg_group_room_armed(g, &armed) == 0 && armed) {
        struct memcg_lwip_room* r = room_of(g);
        if (r) {
          wait_add(r, c);
          return;
        }
      }
  if (under_pressure(c)) wait_add(&s_pressure, c);
  else wait_remove(c);
}

/* Pressure ended for the connection held back last (the list's head): every connection held
 * back by pressure is woken (one still under its group's pressure goes back on the list). One
 * check per port call while the list is not empty. */
static void pressure_check(void) {
  struct memcg_lwip_conn* c = s_pressure.head;
  if (!c || under_pressure(c)) return;
  while ((c = s_pressure.head) != NULL) {
    wait_add(&s_woken, c);
    c->woken_by_room = 0;
    ++s_stats.pressure_woken;
  }
}

static u32_t update_window(struct memcg_lwip_conn* c);

static void park_sweep(void);

uint32_t memcg_lwip_wake(void) {
  u32_t opened = 0;
  int round;
  if (s_waking) return 0;
  park_sweep();
  pressure_check();
  if (!s_woken.head) return 0;
  s_waking = 1;
  /* Updates may give room back and wake more; two rounds, then the next port call. */
  for (round = 0; round < 2 && s_woken.head; ++round) {
    struct memcg_lwip_room batch = s_woken;
    struct memcg_lwip_conn* c;
    s_woken.head = NULL;
    for (c = batch.head; c; c = c->wait_next) c->waits_on = &batch;
    while ((c = batch.head) != NULL) {
      u32_t n;
      wait_remove(c);
      if (!c->pcb || !c->sock) continue;
      n = update_window(c);
      opened += n;
      if (n && c->woken_by_room) ++s_stats.room_opened;
    }
  }
  s_waking = 0;
  return opened;
}

/* ---- connection slots ---- */

static void conn_put(struct memcg_lwip_conn* c) {
  if (--c->refs != 0) return;
  if (c->sock) memcg_sock_fini(c->sock);
  --s_stats.conns;
  MEMCG_LWIP_SYS_FREE(c);
}

static struct memcg_lwip_conn* conn_of(const struct tcp_pcb* pcb) {
  if (!s_ready || !pcb) return NULL;
  return (struct memcg_lwip_conn*)tcp_ext_arg_get(pcb, s_ext_id);
}

static u32_t window_room(struct memcg_lwip_conn* c);

/* ---- slots of pcbs that became listeners ----
 * tcp_listen() makes a new listening pcb, copies the old pcb's ext args (our slot pointer and
 * its callbacks) into it and frees the old pcb, which calls slot_destroyed(). A slot attached
 * before tcp_listen() would be freed there while the listener still points at it. So a slot
 * whose pcb is freed in state CLOSED with nothing charged (never connected, or reset with
 * nothing held) is parked instead: its socket closed, itself kept as a listener's slot of the
 * group it was attached to. The listener's first SYN (slot_passive_open) or the next port call
 * that sweeps (memcg_lwip_attach, memcg_lwip_wake) adopts it if a listener holds it, and frees it
 * otherwise. */

static void park(struct memcg_lwip_conn* c) {
  memcg_sock_fini(c->sock);
  c->sock = NULL;
  --s_stats.conns;  /* counted again if a listener adopts it */
  c->parked = 1;
  c->park_next = s_parked;
  s_parked = c;
}

static void unpark(struct memcg_lwip_conn* c) {
  struct memcg_lwip_conn** p = &s_parked;
  while (*p != c) p = &(*p)->park_next;
  *p = c->park_next;
  c->park_next = NULL;
  c->parked = 0;
}

/* c, parked, is the slot of the listener lpcb: a listener's slot again. */
static void adopt_listener(struct memcg_lwip_conn* c, struct tcp_pcb_listen* lpcb) {
  unpark(c);
  c->pcb = (struct tcp_pcb*)lpcb;
  ++s_stats.conns;
}

static void park_sweep(void) {
  while (s_parked) {
    struct memcg_lwip_conn* c = s_parked;
    struct tcp_pcb_listen* lpcb;
    for (lpcb = tcp_listen_pcbs.listen_pcbs; lpcb; lpcb = lpcb->next)
      if (lpcb->ext_args[s_ext_id].data == c) break;
    if (lpcb) {
      adopt_listener(c, lpcb);
    } else {
      unpark(c);
      MEMCG_LWIP_SYS_FREE(c);
    }
  }
}

static void slot_destroyed(u8_t id, void* data) {
  struct memcg_lwip_conn* c = (struct memcg_lwip_conn*)data;
  int may_be_listening;
  LWIP_UNUSED_ARG(id);
  if (!c) return;
  if (c->parked) { /* a listener closed before any port call adopted its slot */
    unpark(c);
    MEMCG_LWIP_SYS_FREE(c);
    return;
  }
  /* The pcb is still readable: lwIP frees it after the callbacks. */
  may_be_listening = c->sock && c->refs == 1 && c->pcb && c->pcb->state == CLOSED;
  c->pcb = NULL;
  c->withheld = 0;
  wait_remove(c);
  /* No window any more: the promise goes back (received data still held stays charged). */
  if (c->sock) (void)memcg_sock_release_promise(c->sock);
  if (may_be_listening) park(c);
  else conn_put(c);
}

static err_t slot_passive_open(u8_t id, struct tcp_pcb_listen* lpcb, struct tcp_pcb* cpcb);
static int64_t tx_bytes_of(int64_t payload);
static int64_t rx_bytes_of(int64_t payload);

static const struct tcp_ext_arg_callbacks s_slot_callbacks = {slot_destroyed, slot_passive_open};

static int conn_open(struct tcp_pcb* pcb, memcg_group* g, int listener) {
  struct memcg_lwip_conn* c;
  int rc;
  if (tcp_ext_arg_get(pcb, s_ext_id)) return -EEXIST;
  c = (struct memcg_lwip_conn*)MEMCG_LWIP_SYS_MALLOC(sizeof *c);
  if (!c) return -ENOMEM;
  memset(c, 0, sizeof *c);
  c->pcb = pcb;
  c->refs = 1;
  c->group = g;
  if (!listener) {
    if ((rc = memcg_sock_init(&c->storage, sizeof c->storage, s_proto, g, &c->sock)) != 0) {
      MEMCG_LWIP_SYS_FREE(c);
      return rc;
    }
    /* The send buffer is what lwIP is configured to queue (TCP_SND_BUF), in the heap it takes:
     * the stack's own setting, not locked (still moderated under pressure). */
    (void)memcg_sock_tune_sndbuf(c->sock, tx_bytes_of(TCP_SND_BUF));
    /* The receive buffer is the memory of lwIP's whole window (TCP_WND in full segments): the
     * bound of what the connection promises. Then its first window is promised. */
    (void)memcg_sock_tune_rcvbuf(c->sock, rx_bytes_of(TCP_WND));
    (void)window_room(c);
  }
  ++s_stats.conns;
  tcp_ext_arg_set(pcb, s_ext_id, c);
  tcp_ext_arg_set_callbacks(pcb, s_ext_id, &s_slot_callbacks);
  return 0;
}

/* A connection from a listener's SYN: a socket in the listener's group before any data. */
static err_t slot_passive_open(u8_t id, struct tcp_pcb_listen* lpcb, struct tcp_pcb* cpcb) {
  struct memcg_lwip_conn* l = (struct memcg_lwip_conn*)lpcb->ext_args[id].data;
  if (!l) return ERR_OK;
  if (l->parked) adopt_listener(l, lpcb); /* attached before tcp_listen() */
  return conn_open(cpcb, l->group, 0) == 0 ? ERR_OK : ERR_MEM;
}

int memcg_lwip_init(memcg_proto* proto) {
  if (!proto) return -EINVAL;
  if (s_ready) return -EBUSY;
  s_ext_id = tcp_ext_arg_alloc_id();
  if (s_ext_id >= LWIP_TCP_PCB_NUM_EXT_ARGS) return -ENOSPC;
  s_proto = proto;
  s_ready = 1;
  return 0;
}

int memcg_lwip_attach(struct tcp_pcb* pcb, memcg_group* g) {
  int rc;
  if (!s_ready || !pcb) return -EINVAL;
  park_sweep();
  if (tcp_ext_arg_get(pcb, s_ext_id)) return -EEXIST;
  if ((rc = rooms_watch(g)) != 0) return rc;
  return conn_open(pcb, g, pcb->state == LISTEN);
}

memcg_sock* memcg_lwip_sock(const struct tcp_pcb* pcb) {
  struct memcg_lwip_conn* c = conn_of(pcb);
  return c ? c->sock : NULL;
}

int memcg_lwip_get_stats(memcg_lwip_stats* out) {
  size_t size;
  if (!out || out->size < sizeof *out) return -EINVAL;
  size = out->size;
  *out = s_stats;
  out->size = size;
  return 0;
}

/* ---- received frames ---- */

/* A frame: the pbuf, the socket it is charged to, then the payload; one allocation. */
struct rx_frame {
  struct pbuf_custom pc; /* first: a pbuf* of ours is an rx_frame* */
  struct memcg_lwip_conn* owner;
  uint32_t truesize;
};
#define RX_HDR LWIP_MEM_ALIGN_SIZE(sizeof(struct rx_frame))

int64_t memcg_lwip_rx_truesize(uint16_t len) { return (int64_t)(RX_HDR + len); }

static void rx_free(struct pbuf* p) {
  struct rx_frame* f = (struct rx_frame*)p;
  if (f->owner) {
    /* The application (or lwIP) let go of the data: the receive queue gives it back. */
    (void)memcg_sock_consume(f->owner->sock, f->truesize);
    conn_put(f->owner);
  }
  --s_stats.rx_frames;
  MEMCG_LWIP_SYS_FREE(f);
}

static struct rx_frame* rx_of(struct pbuf* p) {
  if (!(p->flags & PBUF_FLAG_IS_CUSTOM)) return NULL;
  if (((struct pbuf_custom*)p)->custom_free_function != rx_free) return NULL;
  return (struct rx_frame*)p;
}

struct pbuf* memcg_lwip_rx_alloc(uint16_t len) {
  struct rx_frame* f = (struct rx_frame*)MEMCG_LWIP_SYS_MALLOC(RX_HDR + len);
  if (!f) return NULL;
  f->owner = NULL;
  f->truesize = (uint32_t)(RX_HDR + len);
  f->pc.custom_free_function = rx_free;
  ++s_stats.rx_frames;
  return pbuf_alloced_custom(PBUF_RAW, len, PBUF_REF, &f->pc, (u8_t*)f + RX_HDR, len);
}

err_t memcg_lwip_netif_input(struct pbuf* p, struct netif* inp) {
  struct pbuf* q;
  if (!p) return ERR_ARG;
  if (p->next || !rx_of(p)) {
    q = memcg_lwip_rx_alloc(p->tot_len);
    if (!q) return ERR_MEM; /* the caller frees p, as for any refused input */
    (void)pbuf_copy_partial(p, q->payload, p->tot_len, 0);
    pbuf_free(p);
    ++s_stats.rx_copied;
    p = q;
  }
  if (ip_input(p, inp) != ERR_OK) pbuf_free(p);
  /* Acknowledged send heap and pruned queues gave room back: woken connections' updates. */
  (void)memcg_lwip_wake();
  return ERR_OK; /* p is consumed either way */
}

/* ---- receive: the input hook ---- */

/* Who refused the last receive (memcg_refusal_source), counted. */
static void count_refusal(void) {
  memcg_refusal r;
  r.size = sizeof r;
  if (memcg_last_refusal(&r) == 0 && r.source >= 0 && r.source < MEMCG_LWIP_NR_REFUSAL_SOURCES)
    ++s_stats.rx_refused_by[r.source];
}

/* Feeds lwIP the header of a segment whose payload was refused, on its own: its ACK and window
 * reach the pcb. Safe in the hook because tcp_input(), when the hook refuses a segment of an
 * active pcb, only frees it and returns: the statics it set for that segment are dead, and
 * this call sets its own (with ip_data still describing the same IP packet). The pbuf is on the
 * stack: a segment without payload is never kept (no queue, no recv_data). */
static void noop_free(struct pbuf* p) { LWIP_UNUSED_ARG(p); }

static void reinject_header(const struct tcp_hdr* hdr, u16_t optlen, u16_t opt1len,
                            const u8_t* opt2, u8_t flags) {
  union {
    u32_t align;
    u8_t b[TCP_HLEN + 40];
  } buf;
  struct tcp_hdr* h = (struct tcp_hdr*)buf.b;
  struct pbuf_custom pc;
  struct pbuf* q;
  u16_t len = (u16_t)(TCP_HLEN + optlen);
  if (optlen > 40 || opt1len > optlen) return;
  h->src = lwip_htons(hdr->src);
  h->dest = lwip_htons(hdr->dest);
  h->seqno = lwip_htonl(hdr->seqno);
  h->ackno = lwip_htonl(hdr->ackno);
  h->_hdrlen_rsvd_flags = hdr->_hdrlen_rsvd_flags; /* still in network order */
  TCPH_FLAGS_SET(h, flags & (TCP_ACK | TCP_ECE | TCP_CWR));
  h->wnd = lwip_htons(hdr->wnd);
  h->chksum = 0;
  h->urgp = 0;
  memcpy(buf.b + TCP_HLEN, (const u8_t*)hdr + TCP_HLEN, opt1len);
  if (optlen > opt1len && opt2) memcpy(buf.b + TCP_HLEN + opt1len, opt2, optlen - opt1len);
  pc.custom_free_function = noop_free;
  q = pbuf_alloced_custom(PBUF_RAW, len, PBUF_REF, &pc, buf.b, len);
  if (!q) return;
  h->chksum = ip_chksum_pseudo(q, IP_PROTO_TCP, len, ip_current_src_addr(), ip_current_dest_addr());
  s_reinjecting = 1;
  tcp_input(q, ip_current_input_netif());
  s_reinjecting = 0;
}

/* Charges the frames of a segment TCP may keep to its pcb's socket. A refusal costs the payload
 * only: in sequence, the payload is cut off in place (the bytes before rcv_nxt stay, for lwIP to
 * trim as old) and the FIN cleared (it follows the refused data); lwIP then processes the ACK
 * and window as for an empty segment. tcp_input() computed the segment's length before this
 * hook (a static), so lwIP still treats it as a data segment: not a duplicate ACK, and the
 * in-sequence path recomputes the length from the pbuf (0). Out of order, an empty segment in
 * that path would be queued (with the frame's memory, uncharged): the segment is dropped and
 * its header fed to lwIP on its own, if its ACK or window says something new. */
err_t memcg_lwip_inpacket(struct tcp_pcb* pcb, struct tcp_hdr* hdr, u16_t optlen, u16_t opt1len,
                          u8_t* opt2, struct pbuf* p) {
  struct memcg_lwip_conn* c;
  struct pbuf* q;
  u32_t seq, nxt, len;
  int64_t size = 0;
  int foreign = 0, rc;
  u8_t flags;
  if (!s_ready || s_reinjecting || !pcb || !p || p->tot_len == 0) return ERR_OK;
  /* Only states whose payload lwIP keeps (later ones ignore the text, earlier have none). */
  if (pcb->state != SYN_RCVD && pcb->state != ESTABLISHED && pcb->state != FIN_WAIT_1 &&
      pcb->state != FIN_WAIT_2)
    return ERR_OK;
  flags = TCPH_FLAGS(hdr);
  if (flags & (TCP_SYN | TCP_RST)) return ERR_OK;
  seq = hdr->seqno;
  nxt = pcb->rcv_nxt;
  len = p->tot_len;
  /* Old or beyond the window: lwIP frees it before returning; nothing to charge. */
  if (TCP_SEQ_LEQ(seq + len, nxt) || TCP_SEQ_GEQ(seq, nxt + pcb->rcv_wnd)) return ERR_OK;
  c = conn_of(pcb);
  for (q = p; q; q = q->next) {
    struct rx_frame* f = rx_of(q);
    if (!f) foreign = 1;
    else if (!f->owner) size += f->truesize;
  }
  if (foreign || !c || !c->sock) {
    ++s_stats.rx_uncharged;
    if (!c || !c->sock) return ERR_OK;
  }
  if (size == 0) return ERR_OK;
  rc = memcg_sock_recv(c->sock, size, 0);
#if TCP_QUEUE_OOSEQ
  if (rc != 0 && TCP_SEQ_LEQ(seq, nxt) && pcb->ooseq) {
    /* In-sequence data first: out-of-order data gives its memory back (the kernel prunes its
     * out-of-order queue the same way). */
    tcp_free_ooseq(pcb);
    ++s_stats.rx_ooseq_pruned;
    rc = memcg_sock_recv(c->sock, size, 0);
  }
#endif
  if (rc == 0) {
    for (q = p; q; q = q->next) {
      struct rx_frame* f = rx_of(q);
      if (f && !f->owner) {
        f->owner = c;
        ++c->refs;
      }
    }
    ++s_stats.rx_charged;
    return ERR_OK;
  }
  ++s_stats.rx_refused;
  count_refusal();
  if (flags & TCP_FIN) ++s_stats.rx_fin_deferred;
  if (TCP_SEQ_LEQ(seq, nxt)) {
    TCPH_FLAGS_SET(hdr, flags & (u8_t) ~(TCP_FIN | TCP_PSH | TCP_URG));
    pbuf_realloc(p, (u16_t)(nxt - seq));
    ++s_stats.rx_trimmed;
    return ERR_OK;
  }
  if ((flags & TCP_ACK) &&
      ((TCP_SEQ_GT(hdr->ackno, pcb->lastack) && TCP_SEQ_LEQ(hdr->ackno, pcb->snd_nxt)) ||
       (u32_t)SND_WND_SCALE(pcb, hdr->wnd) != (u32_t)pcb->snd_wnd)) {
    ++s_stats.rx_reinjected;
    reinject_header(hdr, optlen, opt1len, opt2, flags); /* pcb may be gone after this */
  }
  return ERR_MEM;
}

/* Out-of-order data never holds more than the socket's receive buffer (it is charged at arrival
 * like any other; this bounds what lwIP queues before the refusals start). */
u32_t memcg_lwip_ooseq_limit(const struct tcp_pcb* pcb) {
  struct memcg_lwip_conn* c = conn_of(pcb);
  memcg_sock_info info;
  info.size = sizeof info;
  if (!c || !c->sock || memcg_sock_get_info(c->sock, &info) != 0) return TCP_WND_MAX(pcb);
  return (u32_t)(info.rcvbuf > 0xffffffffLL ? 0xffffffffLL : info.rcvbuf);
}

/* ---- receive: the window ---- */

/* What a full received segment costs beyond its TCP payload: the frame's pbuf and bookkeeping
 * (one allocation) and its IP and TCP headers. */
static int64_t rx_overhead(void) { return memcg_lwip_rx_truesize(TCP_MSS + IP_HLEN + TCP_HLEN) - TCP_MSS; }

/* Memory that `payload` bytes take in full received segments. */
static int64_t rx_bytes_of(int64_t payload) {
  int64_t n = 0;
  return memcg_truesize_of(payload, TCP_MSS, rx_overhead(), &n) == 0 ? n : payload;
}

/* The window (payload bytes, beyond what is open now) this connection may open. The window is
 * promised to its group: the memory of its whole window (what is open and what may be opened
 * now) is held in the promises of the group and every ancestor, so the other connections of the
 * group are advised what is left, and the group's room callback is armed when its room cut
 * it. Segments take their size from the promise as they arrive; each window update promises
 * again. */
static u32_t window_room(struct memcg_lwip_conn* c) {
  memcg_window_advice a;
  const int64_t ovh = rx_overhead();
  int64_t payload = 0;
  u32_t room;
  a.size = sizeof a;
  /* The promise is asked in the memory of whole segments (mss TCP_MSS + overhead, overhead 0)
   * and turned into payload here with the real overhead: the promise is the same memory either
   * way, but the library's floor under pressure is two segments of `mss` bytes of memory, and
   * it must be two whole segments of payload (acknowledged at once: with less than two, every
   * segment waits for lwIP's delayed ACK). */
  if (memcg_sock_promise_window(c->sock, TCP_MSS + ovh, 0, &a) != 0 ||
      memcg_payload_of(a.rcv_window, TCP_MSS, ovh, &payload) != 0)
    return 0;
  room = payload > 0x7fffffffLL ? 0x7fffffffU : (u32_t)payload;
  return room > c->pcb->rcv_wnd ? room - c->pcb->rcv_wnd : 0;
}

/* The window the peer was last told: from what it has sent to the right edge announced. */
static u32_t told_window(const struct tcp_pcb* pcb) {
  return TCP_SEQ_GT(pcb->rcv_ann_right_edge, pcb->rcv_nxt) ? pcb->rcv_ann_right_edge - pcb->rcv_nxt
                                                           : 0;
}

static void give_window(struct tcp_pcb* pcb, u32_t n) {
  u32_t told;
  if (!n) return;
  while (n) {
    u16_t k = (u16_t)(n > 0xffffu ? 0xffffu : n);
    tcp_recved(pcb, k);
    n -= k;
  }
  /* tcp_recved() announces a window only when its right edge moves by
   * TCP_WND_UPDATE_THRESHOLD; a window reopened from under a segment by a smaller grant (two
   * segments under pressure) would wait for the peer's zero-window probe, which backs off. As
   * Linux does after a read, announce it at once when it is a segment or more and at least
   * twice what the peer knows (rcv_ann_wnd: what the next segment carries; `told` is read
   * after tcp_recved(), which may have announced it itself). */
  told = told_window(pcb);
  if ((pcb->state == ESTABLISHED || pcb->state == FIN_WAIT_1 || pcb->state == FIN_WAIT_2) &&
      told < TCP_MSS && pcb->rcv_ann_wnd >= TCP_MSS && pcb->rcv_ann_wnd >= 2 * told) {
    tcp_ack_now(pcb);
    (void)tcp_output(pcb);
  }
}

static u32_t update_window(struct memcg_lwip_conn* c) {
  struct tcp_pcb* pcb = c->pcb;
  memcg_sock_info info;
  u32_t grant;
  info.size = sizeof info;
  if (pcb->state >= CLOSE_WAIT || pcb->state < ESTABLISHED) {
    /* No data comes (any more): the window costs no memory. */
    if (pcb->state >= CLOSE_WAIT) (void)memcg_sock_release_promise(c->sock);
    grant = c->withheld;
  } else if (!c->withheld) {
    grant = 0;
  } else {
    grant = window_room(c);
    if (grant > c->withheld) grant = c->withheld;
    /* An empty receive queue always takes a segment: keep the connection moving. */
    if (grant < TCP_MSS && pcb->rcv_wnd < TCP_MSS && memcg_sock_get_info(c->sock, &info) == 0 &&
        info.rmem_alloc == 0)
      grant = c->withheld < TCP_MSS ? c->withheld : TCP_MSS;
    /* No silly windows: less than a segment waits for more room. */
    if (grant < TCP_MSS && grant < c->withheld) grant = 0;
  }
  c->withheld -= grant;
  if (c->withheld) wait_for_room(c);
  else wait_remove(c);
  give_window(pcb, grant);
  return grant;
}

uint32_t memcg_lwip_update_window(struct tcp_pcb* pcb) {
  struct memcg_lwip_conn* c = conn_of(pcb);
  u32_t n = 0;
  if (c && c->sock && c->withheld) n = update_window(c);
  (void)memcg_lwip_wake();
  return n;
}

uint32_t memcg_lwip_recved(struct tcp_pcb* pcb, uint32_t len) {
  struct memcg_lwip_conn* c = conn_of(pcb);
  if (!pcb) return 0;
  if (!c || !c->sock) {
    give_window(pcb, len);
    return len;
  }
  c->withheld += len;
  return memcg_lwip_update_window(pcb); /* then the connections the reads woke */
}

uint32_t memcg_lwip_withheld(const struct tcp_pcb* pcb) {
  struct memcg_lwip_conn* c = conn_of(pcb);
  return c ? c->withheld : 0;
}

/* The application closes: the window held back is given to lwIP, and the promise back. */
static void close_window(struct memcg_lwip_conn* c, struct tcp_pcb* pcb) {
  if (!c) return;
  if (c->withheld) {
    give_window(pcb, c->withheld);
    c->withheld = 0;
  }
  wait_remove(c);
  if (c->sock) (void)memcg_sock_release_promise(c->sock);
}

err_t memcg_lwip_close(struct tcp_pcb* pcb) {
  err_t e;
  if (!pcb) return ERR_ARG;
  close_window(conn_of(pcb), pcb);
  e = tcp_close(pcb);
  (void)memcg_lwip_wake();
  return e;
}

/* ---- send: lwIP's heap ---- */

/* A heap block: who it is charged to, and its size. */
union heap_hdr {
  struct {
    struct memcg_lwip_conn* owner;
    size_t size;
  } h;
  long double align_ld;
  void* align_p;
  long long align_ll;
};
#define HEAP_HDR LWIP_MEM_ALIGN_SIZE(sizeof(union heap_hdr))

void* memcg_lwip_malloc(size_t size) {
  struct memcg_lwip_conn* owner = s_tx_owner;
  union heap_hdr* b;
  size_t total = HEAP_HDR + size;
  if (owner && memcg_sock_send(owner->sock, (int64_t)total) != 0) {
    /* The socket's send queue is full, or its group refused: tcp_write fails with ERR_MEM
     * and queues nothing. */
    ++s_stats.tx_refused;
    return NULL;
  }
  b = (union heap_hdr*)MEMCG_LWIP_SYS_MALLOC(total);
  if (!b) {
    if (owner) (void)memcg_sock_ack(owner->sock, (int64_t)total);
    return NULL;
  }
  b->h.owner = owner;
  b->h.size = total;
  s_stats.heap += (int64_t)total;
  if (owner) {
    ++owner->refs;
    s_stats.tx_heap += (int64_t)total;
  }
  return (u8_t*)b + HEAP_HDR;
}

void* memcg_lwip_calloc(size_t count, size_t size) {
  void* p;
  if (size && count > ((size_t)-1 - HEAP_HDR) / size) return NULL;
  p = memcg_lwip_malloc(count * size);
  if (p) memset(p, 0, count * size);
  return p;
}

void memcg_lwip_free(void* p) {
  union heap_hdr* b;
  if (!p) return;
  b = (union heap_hdr*)((u8_t*)p - HEAP_HDR);
  s_stats.heap -= (int64_t)b->h.size;
  if (b->h.owner) {
    /* Sent data lwIP lets go of: acknowledged (or the connection is gone). */
    (void)memcg_sock_ack(b->h.owner->sock, (int64_t)b->h.size);
    s_stats.tx_heap -= (int64_t)b->h.size;
    conn_put(b->h.owner);
  }
  MEMCG_LWIP_SYS_FREE(b);
}

/* Heap one queued segment costs: its pbuf (headers reserved, and a whole mss of payload:
 * tcp_write allocates the last segment's pbuf oversized, TCP_OVERSIZE) and its tcp_seg. */
static int64_t tx_seg_size(int64_t mss) {
  return (int64_t)(2 * HEAP_HDR +
                   LWIP_MEM_ALIGN_SIZE(LWIP_MEM_ALIGN_SIZE(sizeof(struct pbuf)) +
                                       PBUF_LINK_ENCAPSULATION_HLEN + PBUF_LINK_HLEN +
                                       PBUF_IP_HLEN + PBUF_TRANSPORT_HLEN) +
                   LWIP_MEM_ALIGN_SIZE(sizeof(struct tcp_seg))) +
         (int64_t)LWIP_MEM_ALIGN_SIZE(mss);
}

/* Heap that `payload` bytes of full segments take when queued. */
static int64_t tx_bytes_of(int64_t payload) {
  return (payload + TCP_MSS - 1) / TCP_MSS * tx_seg_size(TCP_MSS);
}

uint32_t memcg_lwip_sndbuf(const struct tcp_pcb* pcb) {
  struct memcg_lwip_conn* c = conn_of(pcb);
  memcg_window_advice a;
  int64_t mss;
  u32_t n, room;
  a.size = sizeof a;
  if (!pcb) return 0;
  n = tcp_sndbuf(pcb);
  mss = pcb->mss ? pcb->mss : TCP_MSS;
  if (!c || !c->sock || memcg_sock_advice(c->sock, tx_seg_size(mss), &a) != 0) return n;
  /* Whole segments only: a write of part of one still allocates a whole one. */
  room = (u32_t)(a.snd_space / tx_seg_size(mss) * mss);
  return room < n ? room : n;
}

err_t memcg_lwip_write(struct tcp_pcb* pcb, const void* data, uint16_t len, uint8_t flags) {
  err_t e;
  struct memcg_lwip_conn* c = conn_of(pcb);
  s_tx_owner = c && c->sock ? c : NULL;
  e = tcp_write(pcb, data, len, flags);
  s_tx_owner = NULL;
  (void)memcg_lwip_wake();
  return e;
}

/* ---- altcp: lwIP's tcp layer with the writes charged ---- */

#if LWIP_ALTCP
extern const struct altcp_functions altcp_tcp_functions;
static struct altcp_functions s_altcp_fns;

static err_t altcp_memcg_write(struct altcp_pcb* conn, const void* data, u16_t len, u8_t flags) {
  err_t e;
  struct memcg_lwip_conn* c = conn_of((struct tcp_pcb*)conn->state);
  s_tx_owner = c && c->sock ? c : NULL;
  e = altcp_tcp_functions.write(conn, data, len, flags);
  s_tx_owner = NULL;
  (void)memcg_lwip_wake();
  return e;
}

static void altcp_memcg_recved(struct altcp_pcb* conn, u16_t len) {
  if (conn->state) (void)memcg_lwip_recved((struct tcp_pcb*)conn->state, len);
}

static u16_t altcp_memcg_sndbuf(struct altcp_pcb* conn) {
  u32_t n = conn->state ? memcg_lwip_sndbuf((struct tcp_pcb*)conn->state) : 0;
  return (u16_t)(n > 0xffffu ? 0xffffu : n);
}

static err_t altcp_memcg_close(struct altcp_pcb* conn) {
  err_t e;
  if (conn->state)
    close_window(conn_of((struct tcp_pcb*)conn->state), (struct tcp_pcb*)conn->state);
  e = altcp_tcp_functions.close(conn);
  (void)memcg_lwip_wake();
  return e;
}

int memcg_lwip_altcp_attach(struct altcp_pcb* conn, memcg_group* g) {
  struct tcp_pcb* pcb;
  int rc;
  if (!s_ready || !conn || !conn->state ||
      (conn->fns != &altcp_tcp_functions && conn->fns != &s_altcp_fns))
    return -EINVAL;
  pcb = (struct tcp_pcb*)conn->state;
  if (!tcp_ext_arg_get(pcb, s_ext_id) && (rc = memcg_lwip_attach(pcb, g)) != 0) return rc;
  if (s_altcp_fns.write != altcp_memcg_write) {
    s_altcp_fns = altcp_tcp_functions;
    s_altcp_fns.write = altcp_memcg_write;
    s_altcp_fns.recved = altcp_memcg_recved;
    s_altcp_fns.close = altcp_memcg_close;
    s_altcp_fns.sndbuf = altcp_memcg_sndbuf;
  }
  conn->fns = &s_altcp_fns;
  return 0;
}
#else
int memcg_lwip_altcp_attach(struct altcp_pcb* conn, memcg_group* g) {
  (void)conn;
  (void)g;
  return -EINVAL;
}
#endif
