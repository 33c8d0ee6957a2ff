/* Megaflows: flows that match on some of the key's bytes only (the fields their simulation read), so that the
 * next connection on a path the agent has already simulated finds its flow in the kernel (kumo.agent.masks).
 *
 * A packet that finds no exact flow is looked up under each mask in use, in the agent's order (the most used
 * first): a bounded tuple-space search, as Open vSwitch's datapath does. Every megaflow is a complete answer
 * for every packet that agrees with it under its mask, so the first hit is right whatever the order. */
#ifndef KUMO_MEGAFLOWS_H
#define KUMO_MEGAFLOWS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kumo.h"
#include "stats.h"

#define KUMO_MAX_MEGAFLOWS 65536
#define KUMO_KEY_WORDS (sizeof(struct kumo_flow_key) / 4)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KUMO_MAX_MEGAFLOWS);
	__type(key, struct kumo_megaflow_key);
	__type(value, struct kumo_flow_value);
} kumo_megaflows SEC(".maps");

/* mask id -> the mask: a kumo_flow_key whose bytes are 0xff where the megaflows of that mask match */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KUMO_MAX_MASKS);
	__type(key, __u32);
	__type(value, struct kumo_flow_key);
} kumo_masks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kumo_mask_list);
} kumo_mask_list SEC(".maps");

/* mask id -> packets that hit a megaflow of that mask (the agent orders the masks by it) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KUMO_MAX_MASKS);
	__type(key, __u32);
	__type(value, __u64);
} kumo_mask_hits SEC(".maps");

static __always_inline struct kumo_flow_value *megaflow_lookup(struct kumo_flow_key *key)
{
	__u32 zero = 0;
	struct kumo_mask_list *list = bpf_map_lookup_elem(&kumo_mask_list, &zero);
	if (!list)
		return NULL;
	__u32 n = list->n;
	struct kumo_megaflow_key mk = {};
	__u32 *k = (__u32 *)key, *m, *out = (__u32 *)&mk.key;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KUMO_MAX_MASKS; i++) {
		if (i >= n)
			break;
		__u32 id = list->ids[i];
		m = bpf_map_lookup_elem(&kumo_masks, &id);
		if (!m)
			continue;
		count(KUMO_ST_MASK_PROBES);
#pragma clang loop unroll(full)
		for (__u32 w = 0; w < KUMO_KEY_WORDS; w++)
			out[w] = k[w] & m[w];
		mk.mask_id = id;
		struct kumo_flow_value *v = bpf_map_lookup_elem(&kumo_megaflows, &mk);
		if (v) {
			__u64 *hits = bpf_map_lookup_elem(&kumo_mask_hits, &id);
			if (hits)
				*hits += 1;
			count(KUMO_ST_MEGAFLOW_HIT);
			return v;
		}
	}
	return NULL;
}

#endif
