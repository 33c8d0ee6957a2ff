/* Kumo datapath: the layouts shared by the BPF programs and the agent.
 *
 * kumo/datapath/layout.py declares the same structures with ctypes; tests/unit/datapath/test_layout.py
 * compiles _Static_asserts generated from the Python side against this header (clang -target bpf), so
 * the two cannot drift apart silently. Byte order: IPv4 addresses as on the wire (network order), ports,
 * ethertype and VLAN in host order. */
#ifndef KUMO_H
#define KUMO_H

#include <linux/types.h>

#define KUMO_MAX_OUT 16     /* outputs of one value (a longer flood continues in links, below) */
#define KUMO_SNAP 1600      /* bytes of a packet copied into an upcall: a 1500-MTU frame with a VLAN tag */
#define KUMO_INJECT_MARK 0x80000000u /* skb->mark of a re-injected packet: this bit | the input port */

/* An exact flow: the input port and every header field the datapath parses. */
struct kumo_flow_key {
	__u32 in_port;      /* ifindex of the VM interface (or of the port a re-injected packet came from) */
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__u16 eth_type;
	__u16 vlan;         /* 0x1000 | VID when the frame carries an 802.1Q tag, else 0 */
	__u32 ip_src;       /* IPv4; ARP: sender protocol address */
	__u32 ip_dst;       /* IPv4; ARP: target protocol address */
	__u8 ip_proto;
	__u8 ip_tos;
	__u8 fragment;      /* KUMO_FRAG_* */
	__u8 ct;            /* KUMO_CT_*: 0 as parsed; the answer of a connection-tracking query (lib/conntrack.h) */
	__u16 tp_src;       /* TCP/UDP source port; ICMP: type; ARP: operation */
	__u16 tp_dst;       /* TCP/UDP destination port; ICMP: code */
	__u16 icmp_id;      /* ICMP echo identifier */
	__u16 pad1;
};

#define KUMO_CT_UNTRACKED 0
#define KUMO_CT_ESTABLISHED 1 /* the reversed tuple is recorded in the queried zone: a reply */
#define KUMO_CT_NEW 2         /* it is not */

#define KUMO_FRAG_NONE 0
#define KUMO_FRAG_FIRST 1
#define KUMO_FRAG_LATER 2

/* Action flags, applied in this order: drop; L3/L4 rewrites; TTL; VLAN; L2 rewrites; output. */
#define KUMO_A_DROP (1u << 0)
#define KUMO_A_SET_ETH_SRC (1u << 1)
#define KUMO_A_SET_ETH_DST (1u << 2)
#define KUMO_A_SET_IP_SRC (1u << 3)
#define KUMO_A_SET_IP_DST (1u << 4)
#define KUMO_A_SET_TP_SRC (1u << 5)
#define KUMO_A_SET_TP_DST (1u << 6)
#define KUMO_A_SET_ICMP_ID (1u << 7)
#define KUMO_A_DEC_TTL (1u << 8)
#define KUMO_A_VLAN_POP (1u << 9)
#define KUMO_A_VLAN_PUSH (1u << 10)
#define KUMO_A_OUTPUT (1u << 11)
#define KUMO_A_TUNNEL (1u << 12) /* some outputs are tunnelled (remote != 0) */
#define KUMO_A_MORE_OUT (1u << 13) /* the flood goes on: out[KUMO_MAX_OUT - 1] names the next link */
#define KUMO_A_CT_QUERY (1u << 14) /* no actions yet: query zone ct_zone, set key.ct, look the megaflows up again */
#define KUMO_A_CT_RECORD (1u << 15) /* record the packet's tuple in zone ct_zone as it is forwarded */

/* A flood to more outputs than one value holds is a chain of values in the flow map: the flow's own value
 * takes the first KUMO_MAX_OUT - 1 outputs and names the next link in its last output slot (ifindex 0,
 * tunnel_key = the link set, remote = the link's index); each link is a value under the key
 * {in_port = KUMO_LINK_PORT, ip_src = set, ip_dst = index}, every other field 0, which no packet has. A
 * chain has at most KUMO_MAX_LINKS values: (KUMO_MAX_OUT - 1) * (KUMO_MAX_LINKS - 1) + KUMO_MAX_OUT outputs. */
#define KUMO_LINK_PORT 0xFFFFFFFFu
#define KUMO_MAX_LINKS 16

/* One output: a local interface, or the VXLAN device with the tunnel's key and remote end. */
struct kumo_output {
	__u32 ifindex;
	__u32 tunnel_key;   /* VNI: the egress port's tunnel key */
	__u32 remote;       /* the egress host's tunnel IPv4 in HOST byte order (as struct bpf_tunnel_key); 0: local */
};

struct kumo_flow_actions {
	__u32 flags;
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__u32 ip_src;
	__u32 ip_dst;
	__u16 tp_src;
	__u16 tp_dst;
	__u16 icmp_id;
	__u16 vlan;         /* VID to push */
	__u8 ttl_dec;       /* packets with TTL <= this go to the agent (it answers time exceeded) */
	__u8 n_out;
	__u16 mtu;          /* path MTU: larger DF packets go to the agent (fragmentation needed); 0: none */
	__u16 ct_tag;       /* with KUMO_A_CT_RECORD: the zone's 16-bit tag, sent in tunnelled packets' VXLAN GBP
			     * field so that the egress host records the connection too (vxlan_ingress.c); 0: none */
	__u16 pad2;
	__u64 ct_zone;      /* the connection-tracking zone of KUMO_A_CT_QUERY / KUMO_A_CT_RECORD: a stateful device */
	struct kumo_output out[KUMO_MAX_OUT];
};

struct kumo_flow_value {
	struct kumo_flow_actions act;
	__u64 packets;
	__u64 bytes;
	__u64 last_used_ns; /* bpf_ktime_get_ns() of the last packet */
};

/* Why a packet went to the agent. */
#define KUMO_UPCALL_MISS 0
#define KUMO_UPCALL_TTL 1   /* the flow would decrement the TTL to zero */
#define KUMO_UPCALL_MTU 2   /* a DF packet larger than the flow's path MTU */
#define KUMO_UPCALL_INJECT_MISS 3 /* a re-injected packet found no flow (it is not simulated again) */

struct kumo_upcall {
	__u32 in_port;
	__u32 len;          /* the packet's length; larger than cap_len when truncated (GSO) */
	__u32 cap_len;      /* bytes copied into data */
	__u32 reason;
	__u64 queued_ns;    /* bpf_ktime_get_ns() when queued: the agent measures its share of first-packet latency */
	struct kumo_flow_key key; /* the key looked up: the agent installs the packet's flow under it */
	__u8 data[KUMO_SNAP];
};

struct kumo_config {
	__u32 inject_ifindex;   /* packets arriving here carry their input port in skb->mark */
	__u32 upcall_rate;      /* upcalls per second per input port (token bucket) */
	__u32 upcall_burst;
	__u32 storm_rate;       /* upcalls per second of a port that storms (0: storm control off) */
	__u32 storm_enter_ms;   /* over upcall_rate this long: the port storms */
	__u32 storm_leave_ms;   /* at or under it this long: it no longer does */
	__u32 ct_timeout_s;     /* a recorded connection idle this long is gone (lib/conntrack.h) */
};

struct kumo_rate {
	__u64 last_ns;
	__u64 credit_ns;
};

/* A bound port's storm control (kumo.agent.storms), created zeroed by the agent when it attaches the port
 * and kept by the program: a port whose misses come faster than upcall_rate for storm_enter_ms storms, and
 * is held to storm_rate until they have come at or under upcall_rate for storm_leave_ms. The rate is taken
 * over windows of storm_enter_ms / 2, closed by the first miss after their end. Misses on two CPUs at once
 * may both close a window (no lock): one window's rate may be misjudged, the next one's is right again. */
struct kumo_port_limit {
	__u64 offered;           /* misses that reached the rate limiter, ever */
	__u64 window_ns;         /* when the current window started */
	__u64 window_offered;    /* offered when it started */
	__u64 over_since_ns;     /* over upcall_rate since (0: not over in the last window) */
	__u64 calm_since_ns;     /* at or under it since (0: over in the last window) */
	__u64 storming_since_ns; /* held to storm_rate since (0: not held) */
	__u64 storms;            /* times it was held */
};

/* Megaflows (lib/megaflows.h): a flow that matches every packet agreeing with it on the bytes of a mask. Its
 * key is the packet's kumo_flow_key ANDed with the mask, followed by the mask's id, so that two masks never
 * share a key. The first KUMO_FLOW_KEY_SIZE bytes keep the input port (every mask holds it). */
#define KUMO_MAX_MASKS 32

struct kumo_megaflow_key {
	struct kumo_flow_key key; /* masked */
	__u32 mask_id;
};

/* The masks in the order the program tries them (the agent puts the most used first). */
struct kumo_mask_list {
	__u32 n;
	__u32 ids[KUMO_MAX_MASKS];
};

/* kumo_conntrack (lib/conntrack.h): a connection recorded in a zone, as its forward packets are. */
struct kumo_ct_key {
	__u64 zone;
	__u32 src;  /* network order, as the flow key */
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3]; /* (24 bytes: no padding the compiler leaves unset in a key) */
};

/* The VXLAN metadata of bpf_skb_{set,get}_tunnel_opt: the GBP field (policy id in the low 16 bits). */
struct kumo_vxlan_md {
	__u32 gbp;
};

struct kumo_ct_entry {
	__u64 last_ns; /* bpf_ktime_get_ns() of its last forward packet (or of the agent's record) */
};

/* Counters (per-CPU array indexes); the names are in layout.py STATS. */
/* An entry of kumo_speakers (lib/speakers.h): an uplink's BGP speaker, keyed by either of its interfaces. */
struct kumo_speaker {
	__u32 to_ifindex; /* uplink entry: the speaker's veth; speaker entry: the uplink */
	__be32 addr;      /* the uplink port's address */
	__u32 uplink;     /* 1: the key is the uplink's ifindex; 0: the key is the speaker's veth */
	__u32 pad;
};

/* kumo_arp_answers (lib/arp.h): who answers ARP in the kernel for whom. */
struct kumo_arp_key {
	__u32 ifindex; /* the interface the request arrives on (a VM's) */
	__be32 ip;     /* the address asked for */
};

struct kumo_arp_answer {
	__u8 mac[6];
	__u16 pad;
};

enum kumo_stat {
	KUMO_ST_RX = 0,
	KUMO_ST_HIT,
	KUMO_ST_UPCALL,
	KUMO_ST_UPCALL_RATE_LIMITED,
	KUMO_ST_UPCALL_RING_FULL,
	KUMO_ST_MALFORMED,
	KUMO_ST_FLOW_DROP,
	KUMO_ST_TTL_PUNT,
	KUMO_ST_MTU_PUNT,
	KUMO_ST_ACTION_ERROR,
	KUMO_ST_INJECT_UNMARKED,
	KUMO_ST_UPCALL_TRUNCATED,
	KUMO_ST_TUNNEL_RX,          /* packets decapsulated by the VXLAN device */
	KUMO_ST_TUNNEL_DELIVERED,   /* ... handed to the local interface their VNI names */
	KUMO_ST_TUNNEL_UNKNOWN_VNI, /* ... whose VNI names no port bound here (dropped) */
	KUMO_ST_TUNNEL_NO_KEY,      /* ... without tunnel metadata (dropped) */
	KUMO_ST_FLOOD_LINK_MISSING, /* a flood whose next link is not in the flow map (its later outputs missed) */
	KUMO_ST_UPCALL_HELD,        /* upcalls of held (storming) ports, queued without waking the agent */
	KUMO_ST_SPEAKER_IN,         /* BGP (TCP 179) and ARP of an uplink handed to its BGP speaker */
	KUMO_ST_SPEAKER_OUT,        /* the BGP speaker's packets sent out of its uplink */
	KUMO_ST_ARP_ANSWERED,       /* ARP requests answered in the kernel (lib/arp.h) */
	KUMO_ST_MEGAFLOW_HIT,       /* packets that found no exact flow and a megaflow (lib/megaflows.h) */
	KUMO_ST_MASK_PROBES,        /* masked lookups made (per packet that missed the exact flows: masks tried) */
	KUMO_ST_CT_ESTABLISHED,     /* conntrack queries answered "recorded" (lib/conntrack.h) */
	KUMO_ST_CT_NEW,             /* ... answered "not recorded" (or recorded too long ago) */
	KUMO_ST_CT_RECORDED,        /* connections recorded in the kernel's conntrack (here or from a tunnel) */
	KUMO_ST_CT_TAG_UNKNOWN,     /* tunnelled packets with a zone tag this host does not know (not recorded) */
	KUMO_ST_TUNNEL_STRANGER,    /* tunnelled packets from a source that is no tunnel peer of this host (dropped) */
	KUMO_ST_MAX,
};

#endif
