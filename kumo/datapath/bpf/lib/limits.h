/* The upcall rate limit of each input port (a token bucket, kumo_rates) and storm control (kumo_port_limits,
 * kumo.agent.storms): a port whose misses come faster than upcall_rate for storm_enter_ms is held to
 * storm_rate; its upcalls then wait in the ring without waking the agent (kumo_ring_lazy). */
#ifndef KUMO_LIMITS_H
#define KUMO_LIMITS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kumo.h"
#include "stats.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct kumo_rate);
} kumo_rates SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct kumo_port_limit);
} kumo_port_limits SEC(".maps");

/* 1 while an upcall of a held (storming) port may wait in the ring unread. Such upcalls do not wake the agent:
 * it reads them with the next upcall that does, or at its next poll (50 ms), so a held storm costs it one
 * wake-up per batch instead of one per upcall. The ring by itself wakes the reader only for a record at the
 * reader's position, so the next upcall of any other port, queued behind them, forces the wake-up. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} kumo_ring_lazy SEC(".maps");

/* Close a window of a watched port (struct kumo_port_limit) that opened at `started`, ended at `end` and
 * held `misses`: was the port over its limit in it; does it start or stop storming. */
static __always_inline void storm_judge(struct kumo_port_limit *p, __u64 started, __u64 end, __u64 misses,
					struct kumo_config *cfg)
{
	if (misses * 1000000000ull > (__u64)cfg->upcall_rate * (end - started)) {
		p->calm_since_ns = 0;
		if (!p->over_since_ns)
			p->over_since_ns = started;
		if (!p->storming_since_ns && end - p->over_since_ns >= (__u64)cfg->storm_enter_ms * 1000000ull) {
			p->storming_since_ns = end;
			p->storms++;
		}
	} else {
		p->over_since_ns = 0;
		if (!p->calm_since_ns)
			p->calm_since_ns = started;
		if (p->storming_since_ns && end - p->calm_since_ns >= (__u64)cfg->storm_leave_ms * 1000000ull)
			p->storming_since_ns = 0;
	}
}

/* One more miss on a watched port, at `now`; its previous miss came at `previous` (0: none known). A window
 * lasts half of storm_enter_ms and is closed by the first miss after its end. */
static __always_inline void storm_control(struct kumo_port_limit *p, __u64 now, __u64 previous,
					  struct kumo_config *cfg)
{
	__u64 offered = __sync_fetch_and_add(&p->offered, 1) + 1;
	__u64 started = p->window_ns;
	__u64 span = (__u64)cfg->storm_enter_ms * 500000ull; /* half of storm_enter_ms, in ns */
	if (!started) { /* the port's first miss opens its first window */
		p->window_ns = now;
		p->window_offered = offered;
		return;
	}
	if (previous > started && now - previous >= span) {
		/* The port fell silent after `previous`, for a window or longer: the open window's misses all came
		 * before the silence, so it is judged over its own span, and the silence (with this miss) on its own.
		 * Averaged over the silence, a fast storm's last misses could find a port calm for the whole leave
		 * time still over its limit, and hold it for another leave time. */
		__u64 end = previous - started < span ? started + span : previous;
		storm_judge(p, started, end, offered - 1 - p->window_offered, cfg);
		storm_judge(p, end, now, 1, cfg);
	} else if (now - started < span) {
		return;
	} else { /* the one closing the window is counted in it */
		storm_judge(p, started, now, offered - p->window_offered, cfg);
	}
	p->window_ns = now;
	p->window_offered = offered;
}

#define RATE_REFUSED 0
#define RATE_OK 1
#define RATE_OK_HELD 2 /* within the storm rate of a held port */

static __always_inline int rate_ok(__u32 in_port, struct kumo_config *cfg)
{
	if (!cfg || !cfg->upcall_rate)
		return RATE_OK;
	__u64 now = bpf_ktime_get_ns();
	__u32 rate = cfg->upcall_rate;
	struct kumo_rate *r = bpf_map_lookup_elem(&kumo_rates, &in_port); /* (its last_ns: the previous miss) */
	struct kumo_port_limit *limit = bpf_map_lookup_elem(&kumo_port_limits, &in_port);
	if (limit && cfg->storm_rate && cfg->storm_rate < rate) {
		storm_control(limit, now, r ? r->last_ns : 0, cfg);
		if (limit->storming_since_ns)
			rate = cfg->storm_rate;
	}
	__u64 cost = 1000000000ull / rate;
	__u64 cap = cost * (cfg->upcall_burst ? cfg->upcall_burst : 1);
	int ok = rate == cfg->upcall_rate ? RATE_OK : RATE_OK_HELD;
	if (!r) {
		struct kumo_rate fresh = {.last_ns = now, .credit_ns = cap - cost};
		bpf_map_update_elem(&kumo_rates, &in_port, &fresh, BPF_ANY);
		return ok;
	}
	__u64 credit = r->credit_ns + (now - r->last_ns);
	if (credit > cap)
		credit = cap;
	r->last_ns = now;
	if (credit < cost) {
		r->credit_ns = credit;
		return RATE_REFUSED;
	}
	r->credit_ns = credit - cost;
	return ok;
}

/* The ring's wake-up flags for an upcall (kumo_ring_lazy). */
static __always_inline __u64 wake_flags(int rate)
{
	__u32 zero = 0;
	__u32 *lazy = bpf_map_lookup_elem(&kumo_ring_lazy, &zero);
	if (!lazy)
		return 0;
	if (rate == RATE_OK_HELD) {
		if (!*lazy)
			*lazy = 1;
		count(KUMO_ST_UPCALL_HELD);
		return BPF_RB_NO_WAKEUP;
	}
	if (!*lazy)
		return 0;
	*lazy = 0;
	return BPF_RB_FORCE_WAKEUP;
}

#endif
