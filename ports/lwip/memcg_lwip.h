/* memcg_lwip.h: lwIP's TCP socket memory charged to memory groups (memcg's C API, memcg/memcg.h).
 *
 * A stack drops the port in with three lines of its lwipopts.h (after its own settings):
 *
 *     #define LWIP_TCP_PCB_NUM_EXT_ARGS 1   (or one more than it uses)
 *     #define MEM_LIBC_MALLOC 1             (lwIP's heap through the port, to charge send memory)
 *     #include "memcg_lwip.h"               (the hooks below)
 *
 * and compiles memcg_lwip.c with lwIP. What it gets (checked against lwIP 2.1.3):
 *   - a connection slot in one of lwIP's tcp ext args (one allocation per connection, holding
 *     the memcg socket's state: memcg_sock_init); memcg_lwip_attach() gives it a group;
 *     accepted connections inherit the listener's;
 *   - receive charging: frames in pbufs from memcg_lwip_rx_alloc() (or any pbuf, copied once by
 *     memcg_lwip_netif_input) are charged with their real size (the pbuf and its payload: one
 *     allocation) when TCP keeps them, and given back when the last reference is freed;
 *   - a refused segment (the group is at memory.max, the socket at its rcvbuf, the protocol at
 *     its hard limit) loses its payload only: lwIP still processes its ACK and window; a FIN
 *     behind refused data is left for the peer's retransmission (it follows the data);
 *   - window updates: memcg_lwip_recved() in place of tcp_recved() opens only the window the
 *     group can hold, and memcg_lwip_update_window() opens what was held back. Each
 *     connection's window is promised to its group (memcg_sock_promise_window, with the real
 *     per-segment overhead of a received frame), so the group's other connections are advised
 *     what is left; a connection held back by a group's room waits on that group, and the
 *     group's room callback wakes it (a window update) at the end of the port call that gave
 *     the room back: no loop over connections. The port sets the room callbacks of the groups
 *     it was attached to and of their ancestors (they are the port's);
 *   - send charging: data written through memcg_lwip_write() or the altcp layer charges the lwIP
 *     heap it allocates (pbufs and segments) to the socket's send queue; it is given back when
 *     lwIP frees it (when the peer acknowledges it), so no separate acknowledgement call exists.
 *
 * Threads: lwIP's core lock (or NO_SYS's one thread) covers every call here, and every pbuf_free
 * of a received pbuf. */
#ifndef MEMCG_LWIP_H
#define MEMCG_LWIP_H

#include <stddef.h>
#include <stdint.h>

#include "memcg/memcg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* lwIP's types, declared here because lwipopts.h includes this header before lwIP's own. */
struct tcp_pcb;
struct tcp_hdr;
struct pbuf;
struct netif;
struct altcp_pcb;

/* ---- setup ---- */

/* Once, after lwip_init(): the protocol every socket charges. Allocates the ext arg slot.
 * -EBUSY if already initialized, -ENOSPC if lwIP has no ext arg slot left, -EINVAL for NULL. */
int memcg_lwip_init(memcg_proto* proto);

/* A connection's or a listener's group. For an active pcb (after tcp_new): its socket is opened
 * and charged to g (NULL: the protocol only). For a listening pcb (after tcp_listen, or on the
 * pcb before tcp_listen: its slot, which lwIP copies into the listener, becomes the listener's
 * at its first SYN or the port's next call): connections it accepts get sockets in g from their
 * SYN on, before any data. -EEXIST if the pcb has a slot already (an accepted one), -ENOMEM,
 * -EINVAL. */
int memcg_lwip_attach(struct tcp_pcb* pcb, memcg_group* g);
/* The pcb's socket, or NULL (no slot, or a listener). */
memcg_sock* memcg_lwip_sock(const struct tcp_pcb* pcb);

/* ---- receive ---- */

/* A pbuf for one received frame of len bytes, charged with its whole allocation when TCP keeps
 * it (the driver fills p->payload and passes it to netif->input). NULL when out of memory. */
struct pbuf* memcg_lwip_rx_alloc(uint16_t len);
/* The real size a frame of len bytes is charged (the pbuf and its payload: one allocation). */
int64_t memcg_lwip_rx_truesize(uint16_t len);
/* A netif input function (netif_add's last argument, or call it from one) for drivers that do
 * not use memcg_lwip_rx_alloc: other pbufs are copied into one (and freed), then ip_input. */
signed char memcg_lwip_netif_input(struct pbuf* p, struct netif* inp);

/* The application consumed len received bytes: tcp_recved() for as much as the group can hold
 * (at least what keeps the connection moving); the rest is held back. Returns the bytes of
 * window opened now. A pcb without a socket gets tcp_recved(len). */
uint32_t memcg_lwip_recved(struct tcp_pcb* pcb, uint32_t len);
/* Opens window held back by memcg_lwip_recved as far as the group can hold it now (call it
 * when memory was given back: after reads, from the poll callback). Returns the bytes opened. */
uint32_t memcg_lwip_update_window(struct tcp_pcb* pcb);
/* Window held back, in bytes. */
uint32_t memcg_lwip_withheld(const struct tcp_pcb* pcb);
/* Runs the window updates of connections whose group's room callback woke them. Every port
 * call that can give room back runs them at its end (memcg_lwip_netif_input, recved,
 * update_window, write, close); a stack calls it after what else frees received pbufs or sent
 * data (lwIP's timers: after sys_check_timeouts). Returns the bytes of window opened. */
uint32_t memcg_lwip_wake(void);

/* ---- send ---- */

/* What the application may write now: tcp_sndbuf() bounded by the socket's send space. */
uint32_t memcg_lwip_sndbuf(const struct tcp_pcb* pcb);
/* tcp_write() with the lwIP heap it allocates charged to the pcb's socket; ERR_MEM when the
 * charge is refused (nothing queued: write again from the sent callback). */
signed char memcg_lwip_write(struct tcp_pcb* pcb, const void* data, uint16_t len, uint8_t flags);
/* tcp_close() after giving back every byte of window held back (lwIP resets a connection
 * closed with window outstanding). */
signed char memcg_lwip_close(struct tcp_pcb* pcb);

/* ---- altcp ---- */

/* Makes an altcp connection of lwIP's tcp layer (altcp_tcp_new, or one an altcp accept callback
 * received) charge through the port: altcp_write charges like memcg_lwip_write, altcp_recved
 * is memcg_lwip_recved, altcp_close is memcg_lwip_close. Attaches the inner pcb to g unless it
 * has a socket (an accepted connection inherits its listener's group: pass NULL). -EINVAL if
 * conn is not altcp_tcp's. */
int memcg_lwip_altcp_attach(struct altcp_pcb* conn, memcg_group* g);

/* ---- counters ---- */

enum { MEMCG_LWIP_NR_REFUSAL_SOURCES = 9 }; /* memcg_refusal_source values */

typedef struct memcg_lwip_stats {
  size_t size;              /* set by the caller: sizeof(memcg_lwip_stats) */
  uint64_t rx_charged;      /* segments charged */
  uint64_t rx_refused;      /* segments whose payload was refused */
  uint64_t rx_trimmed;      /* of those, in sequence: the header went on without the payload */
  uint64_t rx_reinjected;   /* of those, out of order: the header was fed to lwIP on its own */
  uint64_t rx_fin_deferred; /* refused segments that carried a FIN */
  uint64_t rx_refused_by[MEMCG_LWIP_NR_REFUSAL_SOURCES]; /* by memcg_refusal_source: the
                               group's memory.max, its tcp limit, tcp_mem, fairness, rcvbuf */
  uint64_t rx_ooseq_pruned; /* out-of-order queues freed for refused in-sequence data */
  uint64_t rx_uncharged;    /* segments TCP kept in pbufs the port cannot charge */
  uint64_t rx_copied;       /* frames copied by memcg_lwip_netif_input */
  uint64_t tx_refused;      /* heap allocations refused to a write */
  int64_t tx_heap;          /* lwIP heap bytes charged to sockets now */
  int64_t heap;             /* lwIP heap bytes allocated now (charged or not) */
  int64_t rx_frames;        /* frames allocated by memcg_lwip_rx_alloc, not yet freed */
  int64_t conns;            /* connection slots alive (a slot outlives its pcb while its
                               pbufs or heap are alive) */
  uint64_t room_callbacks;  /* room callbacks of groups (room appeared after a hold-back) */
  uint64_t room_woken;      /* held-back connections those callbacks woke */
  uint64_t room_opened;     /* of those, connections whose window update opened window */
  uint64_t pressure_woken;  /* connections held back by memory pressure, woken when it ended */
} memcg_lwip_stats;
/* -EINVAL unless out->size >= sizeof(memcg_lwip_stats). */
int memcg_lwip_get_stats(memcg_lwip_stats* out);

/* ---- lwIP's hooks (lwipopts.h: defined below unless MEMCG_LWIP_NO_HOOKS) ---- */

signed char memcg_lwip_inpacket(struct tcp_pcb* pcb, struct tcp_hdr* hdr, uint16_t optlen,
                                uint16_t opt1len, uint8_t* opt2, struct pbuf* p);
uint32_t memcg_lwip_ooseq_limit(const struct tcp_pcb* pcb);
void* memcg_lwip_malloc(size_t size);
void* memcg_lwip_calloc(size_t count, size_t size);
void memcg_lwip_free(void* p);

#ifdef __cplusplus
} /* extern "C" */
#endif

#ifndef MEMCG_LWIP_NO_HOOKS
#define LWIP_HOOK_TCP_INPACKET_PCB(pcb, hdr, optlen, opt1len, opt2, p) \
  memcg_lwip_inpacket(pcb, hdr, optlen, opt1len, opt2, p)
#define TCP_OOSEQ_BYTES_LIMIT(pcb) memcg_lwip_ooseq_limit(pcb)
#define mem_clib_malloc memcg_lwip_malloc
#define mem_clib_calloc memcg_lwip_calloc
#define mem_clib_free memcg_lwip_free
#ifndef LWIP_SUPPORT_CUSTOM_PBUF
#define LWIP_SUPPORT_CUSTOM_PBUF 1
#endif
#endif

#endif /* MEMCG_LWIP_H */
