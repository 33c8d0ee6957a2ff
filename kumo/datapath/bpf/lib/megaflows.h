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

#include "conntrack.h"
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

/* One probe of the tuple-space search (a bpf_loop callback: the verifier walks it once, where a loop of up to
 * 2 * KUMO_MAX_MASKS probes was walked once per probe). 1 stops the loop. */
struct megaflow_search {
	struct kumo_flow_key key;     /* the packet's; key.ct is set by a first stage's query */
	struct kumo_megaflow_key mk;  /* the last key probed: the megaflow's when found */
	__u32 i;                      /* the next position in the mask list */
	__u32 ct_timeout_s;
	__u32 found;
	__u32 pad;
};

static long megaflow_probe(__u32 step, void *data)
{
	struct megaflow_search *s = data;
	__u32 zero = 0;
	struct kumo_mask_list *list = bpf_map_lookup_elem(&kumo_mask_list, &zero);
	if (!list || s->i >= list->n || s->i >= KUMO_MAX_MASKS)
		return 1;
	__u32 id = list->ids[s->i & (KUMO_MAX_MASKS - 1)];
	s->i++;
	__u32 *m = bpf_map_lookup_elem(&kumo_masks, &id);
	if (!m)
		return 0;
	count(KUMO_ST_MASK_PROBES);
	__u32 *k = (__u32 *)&s->key, *out = (__u32 *)&s->mk.key;
#pragma clang loop unroll(full)
	for (__u32 w = 0; w < KUMO_KEY_WORDS; w++)
		out[w] = k[w] & m[w];
	s->mk.mask_id = id;
	struct kumo_flow_value *v = bpf_map_lookup_elem(&kumo_megaflows, &s->mk);
	if (!v)
		return 0;
	if (v->act.flags & KUMO_A_CT_QUERY) {
		if (!s->key.ct) { /* (a first stage cannot match a second lookup: the ct byte is in its mask) */
			s->key.ct = conntrack_query(v->act.ct_zone, &s->key, s->ct_timeout_s);
			s->i = 0; /* the second lookup: every mask again, the answer in the key */
		}
		return 0;
	}
	__u64 *hits = bpf_map_lookup_elem(&kumo_mask_hits, &id);
	if (hits)
		*hits += 1;
	count(KUMO_ST_MEGAFLOW_HIT);
	s->found = 1;
	return 1;
}

/* The megaflow of `key`, or NULL; key->ct is the conntrack answer if a first stage asked for one. */
static __always_inline struct kumo_flow_value *megaflow_lookup(struct kumo_flow_key *key, struct kumo_config *cfg)
{
	struct megaflow_search s = {.ct_timeout_s = cfg ? cfg->ct_timeout_s : 0};
	__builtin_memcpy(&s.key, key, sizeof(s.key));
	bpf_loop(2 * KUMO_MAX_MASKS, megaflow_probe, &s, 0);
	key->ct = s.key.ct;
	if (!s.found)
		return NULL;
	return bpf_map_lookup_elem(&kumo_megaflows, &s.mk);
}

#endif
