/* The datapath's counters: one per-CPU array shared by every program (the agent loads the VXLAN program
 * with the port program's map), indexed by enum kumo_stat. */
#ifndef KUMO_STATS_H
#define KUMO_STATS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kumo.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KUMO_ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kumo_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&kumo_stats, &stat);
	if (n)
		*n += 1;
}

/* Tunnel traffic per peer host (its underlay address, host byte order), shared by both programs like
 * kumo_stats: packets and inner-frame bytes sent to it (port program, each tunnelled output) and received from
 * it (VXLAN program, once the source filter took the packet). LRU: a bounded map even if the peers churn. */
struct kumo_tunnel_count {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct kumo_tunnel_count);
} kumo_tunnel_traffic SEC(".maps");

static __always_inline void count_tunnel(__u32 remote, __u32 bytes, int received)
{
	struct kumo_tunnel_count *c = bpf_map_lookup_elem(&kumo_tunnel_traffic, &remote);
	if (!c) {
		struct kumo_tunnel_count zero = {};
		bpf_map_update_elem(&kumo_tunnel_traffic, &remote, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&kumo_tunnel_traffic, &remote);
		if (!c)
			return;
	}
	if (received) {
		c->rx_packets += 1;
		c->rx_bytes += bytes;
	} else {
		c->tx_packets += 1;
		c->tx_bytes += bytes;
	}
}

#endif
