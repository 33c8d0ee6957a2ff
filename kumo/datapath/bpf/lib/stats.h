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

#endif
