/* lwipopts.h for the memcg lwIP example: one thread, raw API and altcp, IPv4 + TCP only, a
 * virtual clock, and the memcg port (ports/lwip/memcg_lwip.h) included last. */
#ifndef MEMCG_LWIPOPTS_H
#define MEMCG_LWIPOPTS_H

#define NO_SYS 1
#define SYS_LIGHTWEIGHT_PROT 0
#define LWIP_TIMERS 1
#define LWIP_SOCKET 0
#define LWIP_NETCONN 0
#define LWIP_IPV4 1
#define LWIP_IPV6 0
#define LWIP_ARP 0
#define LWIP_ETHERNET 0
#define LWIP_ICMP 0
#define LWIP_RAW 0
#define LWIP_UDP 0
#define LWIP_DHCP 0
#define LWIP_AUTOIP 0
#define LWIP_IGMP 0
#define LWIP_DNS 0
#define IP_REASSEMBLY 0
#define IP_FRAG 0
#define LWIP_NETIF_LOOPBACK 0
#define LWIP_HAVE_LOOPIF 0
#define LWIP_STATS 0
#define LWIP_TCP 1
#define LWIP_ALTCP 1

/* Memory: the C library's malloc (through the port, which charges send memory); pools too. */
#define MEM_LIBC_MALLOC 1
#define MEMP_MEM_MALLOC 1
#define MEM_ALIGNMENT 8
#define MEMP_NUM_TCP_PCB 128
#define MEMP_NUM_TCP_PCB_LISTEN 16
#define MEMP_NUM_TCP_SEG 4096
#define MEMP_NUM_PBUF 4096
#define PBUF_POOL_SIZE 256

/* TCP: 16-bit windows (no scaling). TCP_MSL bounds TIME_WAIT and (lwIP) LAST_ACK to 2 * MSL:
 * 10 s virtual, longer than the slow tenant holds a peer's FIN behind refused data. */
#define TCP_MSS 1460
#define TCP_WND (16 * TCP_MSS)
#define TCP_SND_BUF (32 * TCP_MSS)
#define TCP_SND_QUEUELEN (4 * TCP_SND_BUF / TCP_MSS)
#define TCP_QUEUE_OOSEQ 1
#define TCP_MSL 10000UL
#define LWIP_TCP_PCB_NUM_EXT_ARGS 2 /* the port's slot and the test's */
#define LWIP_CALLBACK_API 1

#define LWIP_DEBUG 0
#define LWIP_NOASSERT_ON_ERROR 0

/* The memcg port: the connection slot, the input and out-of-order hooks, lwIP's heap. */
#include "memcg_lwip.h"
#endif
