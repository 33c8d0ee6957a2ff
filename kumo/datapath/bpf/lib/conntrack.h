/* Connection tracking in the kernel: the connections of paths the agent has already simulated are recorded
 * and recognised here, so that a new connection through a match_return_flow / match_forward_flow firewall
 * needs no upcall (docs/megaflows.md, "Connection tracking in the kernel").
 *
 * A zone is a stateful device (the agent numbers them). A flow with KUMO_A_CT_RECORD records the packet's
 * 5-tuple in its zone as it forwards it; a megaflow with KUMO_A_CT_QUERY asks whether the packet's reversed
 * 5-tuple is recorded in its zone (the packet is then a reply), and the program looks the megaflows up again
 * with the answer in key.ct. Entries idle for ct_timeout_s answer "not recorded"; the map is an LRU. */
#ifndef KUMO_CONNTRACK_H
#define KUMO_CONNTRACK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kumo.h"
#include "stats.h"

#define KUMO_MAX_CONNECTIONS 262144

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KUMO_MAX_CONNECTIONS);
	__type(key, struct kumo_ct_key);
	__type(value, struct kumo_ct_entry);
} kumo_conntrack SEC(".maps");

/* KUMO_CT_ESTABLISHED if the reversed tuple of `key` is recorded in `zone` (and not idle too long). */
static __always_inline __u8 conntrack_query(__u64 zone, struct kumo_flow_key *key, __u32 timeout_s)
{
	struct kumo_ct_key ck = {.zone = zone, .src = key->ip_dst, .dst = key->ip_src, .sport = key->tp_dst,
				 .dport = key->tp_src, .proto = key->ip_proto};
	struct kumo_ct_entry *e = bpf_map_lookup_elem(&kumo_conntrack, &ck);
	__u64 timeout = (timeout_s ? timeout_s : 60) * 1000000000ull;
	if (e && bpf_ktime_get_ns() - e->last_ns <= timeout) {
		count(KUMO_ST_CT_ESTABLISHED);
		return KUMO_CT_ESTABLISHED;
	}
	count(KUMO_ST_CT_NEW);
	return KUMO_CT_NEW;
}

/* A connection already recorded only has its time refreshed, in place: an update of an LRU map takes a lock
 * (and every forward packet of every connection through a stateful port records). */
static __always_inline void conntrack_record(__u64 zone, struct kumo_flow_key *key)
{
	struct kumo_ct_key ck = {.zone = zone, .src = key->ip_src, .dst = key->ip_dst, .sport = key->tp_src,
				 .dport = key->tp_dst, .proto = key->ip_proto};
	__u64 now = bpf_ktime_get_ns();
	struct kumo_ct_entry *found = bpf_map_lookup_elem(&kumo_conntrack, &ck);
	if (found) {
		if (now - found->last_ns > 100000000ull) /* (at most every 0.1 s: the line stays shared in caches) */
			found->last_ns = now;
		return;
	}
	struct kumo_ct_entry e = {.last_ns = now};
	bpf_map_update_elem(&kumo_conntrack, &ck, &e, BPF_ANY);
	count(KUMO_ST_CT_RECORDED);
}

#endif
