/* BGP speakers (kumo.edge): an uplink router port's BGP session runs in a network namespace of its own,
 * behind a veth that holds the port's address and MAC. The program hands the uplink's BGP (TCP 179 either
 * way, to the port's address) to the speaker, and a copy of the ARP for that address (the router answers
 * ARP itself; the speaker needs the peer's replies); it sends whatever the speaker sends out of the uplink.
 * This is done here, ahead of the flow table, so that BGP never waits for an upcall: a storming port, a
 * busy or restarting agent does not make the session miss its keepalives. */
#ifndef KUMO_SPEAKERS_H
#define KUMO_SPEAKERS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "kumo.h"
#include "stats.h"

#define KUMO_BGP_PORT 179

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct kumo_speaker);
} kumo_speakers SEC(".maps");

/* The verdict for a packet that belongs to a speaker, or -1 for one the flow table handles. Called with the
 * interface the packet arrived on (never the re-injection interface: re-injected packets were seen here). */
static __always_inline int speaker_punt(struct __sk_buff *skb, __u32 ifindex, struct kumo_flow_key *key)
{
	struct kumo_speaker *s = bpf_map_lookup_elem(&kumo_speakers, &ifindex);
	if (!s)
		return -1;
	if (!s->uplink) {
		count(KUMO_ST_SPEAKER_OUT);
		return bpf_redirect(s->to_ifindex, 0);
	}
	if (key->ip_dst != s->addr || key->vlan)
		return -1;
	if (key->eth_type == 0x0806) { /* a copy to the speaker; the router answers and learns as always */
		if (bpf_clone_redirect(skb, s->to_ifindex, 0) == 0)
			count(KUMO_ST_SPEAKER_IN);
		return -1;
	}
	if (key->eth_type == ETH_P_IP && key->ip_proto == 6 && key->fragment == KUMO_FRAG_NONE &&
	    (key->tp_dst == KUMO_BGP_PORT || key->tp_src == KUMO_BGP_PORT)) {
		count(KUMO_ST_SPEAKER_IN);
		return bpf_redirect(s->to_ifindex, 0);
	}
	return -1;
}

#endif
