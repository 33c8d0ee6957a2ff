/* ARP answered in the kernel, for the addresses of paths the agent has already established (kumo.agent
 * .arpanswers): a VM's neighbour entries must be refreshed (a unicast ARP probe every few tens of seconds)
 * while its host's agent is down, or its established connections stop (issue 21). An ARP request arriving on
 * an interface with an answer for its target address is turned into the reply, in place, and sent back out
 * of that interface; nothing else is answered here. */
#ifndef KUMO_ARP_H
#define KUMO_ARP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kumo.h"
#include "stats.h"

#define KUMO_ARP_OP 20  /* offsets in an untagged Ethernet + ARP frame */
#define KUMO_ARP_SHA 22
#define KUMO_ARP_SPA 28
#define KUMO_ARP_THA 32
#define KUMO_ARP_TPA 38

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct kumo_arp_key);
	__type(value, struct kumo_arp_answer);
} kumo_arp_answers SEC(".maps");

/* TC_ACT_REDIRECT for a request answered here, or -1. */
static __always_inline int arp_answer(struct __sk_buff *skb, __u32 ifindex, struct kumo_flow_key *key)
{
	if (key->eth_type != 0x0806 || key->tp_src != 1 || key->vlan)
		return -1;
	struct kumo_arp_key k = {.ifindex = ifindex, .ip = key->ip_dst};
	struct kumo_arp_answer *a = bpf_map_lookup_elem(&kumo_arp_answers, &k);
	if (!a)
		return -1;
	__u8 sha[6];
	if (bpf_skb_load_bytes(skb, KUMO_ARP_SHA, sha, 6) < 0)
		return -1;
	__be16 reply = bpf_htons(2);
	int err = bpf_skb_store_bytes(skb, 0, key->eth_src, 6, 0);
	err |= bpf_skb_store_bytes(skb, 6, a->mac, 6, 0);
	err |= bpf_skb_store_bytes(skb, KUMO_ARP_OP, &reply, 2, 0);
	err |= bpf_skb_store_bytes(skb, KUMO_ARP_SHA, a->mac, 6, 0);
	err |= bpf_skb_store_bytes(skb, KUMO_ARP_SPA, &key->ip_dst, 4, 0);
	err |= bpf_skb_store_bytes(skb, KUMO_ARP_THA, sha, 6, 0);
	err |= bpf_skb_store_bytes(skb, KUMO_ARP_TPA, &key->ip_src, 4, 0);
	if (err)
		return -1;
	count(KUMO_ST_ARP_ANSWERED);
	return bpf_redirect(ifindex, 0);
}

#endif
