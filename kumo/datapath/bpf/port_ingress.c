/* TC ingress on every bound VM interface and on the re-injection interface.
 *
 * Parse the frame into a kumo_flow_key, look the exact flow up, then the megaflows (lib/megaflows.h), apply
 * the actions found; on a miss, copy the packet into the upcall ring (rate-limited per input port) and drop
 * it: the agent simulates, installs the flow and re-injects the packet, which then takes this same path and
 * hits. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/arp.h"
#include "lib/kumo.h"
#include "lib/limits.h"
#include "lib/megaflows.h"
#include "lib/speakers.h"
#include "lib/stats.h"

char LICENSE[] SEC("license") = "GPL";

#define MAX_FLOWS 262144

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct kumo_flow_key);
	__type(value, struct kumo_flow_value);
} kumo_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} kumo_upcalls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kumo_config);
} kumo_config SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_ARP_ 0x0806
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

struct parsed {
	__u32 l3;       /* offset of the IPv4 header, 0 if not IPv4 */
	__u32 l4;       /* offset of the L4 header, 0 if none (or a later fragment) */
	__u16 tot_len;
	__u8 ttl;
	__u8 df;
};

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

struct arp_ipv4_ {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 op;
	__u8 sha[6];
	__be32 spa;
	__u8 tha[6];
	__be32 tpa;
} __attribute__((packed));

/* -1: malformed (the caller drops it and counts why). */
static __always_inline int parse(struct __sk_buff *skb, struct kumo_flow_key *key, struct parsed *p)
{
	__u32 want = skb->len < 128 ? skb->len : 128;
	if (want < ETH_HLEN)
		return -1;
	bpf_skb_pull_data(skb, want);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(key->eth_src, eth->h_source, 6);
	__builtin_memcpy(key->eth_dst, eth->h_dest, 6);
	__u16 proto = bpf_ntohs(eth->h_proto);
	__u32 off = ETH_HLEN;
	if (proto == ETH_P_8021Q_) {
		struct vlan_hdr_ *vh = data + off;
		if ((void *)(vh + 1) > end)
			return -1;
		key->vlan = 0x1000 | (bpf_ntohs(vh->tci) & 0x0fff);
		proto = bpf_ntohs(vh->proto);
		off += sizeof(*vh);
	}
	key->eth_type = proto;
	if (proto == ETH_P_ARP_) {
		struct arp_ipv4_ *arp = data + off;
		if ((void *)(arp + 1) > end)
			return -1;
		key->tp_src = bpf_ntohs(arp->op);
		key->ip_src = arp->spa;
		key->ip_dst = arp->tpa;
		return 0;
	}
	if (proto != ETH_P_IP)
		return 0;
	struct iphdr *ip = data + off;
	if ((void *)(ip + 1) > end)
		return -1;
	__u32 ihl = ip->ihl * 4;
	__u16 tot_len = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || ihl < sizeof(*ip) || tot_len < ihl || off + tot_len > skb->len)
		return -1;
	p->l3 = off;
	p->tot_len = tot_len;
	p->ttl = ip->ttl;
	key->ip_src = ip->saddr;
	key->ip_dst = ip->daddr;
	key->ip_proto = ip->protocol;
	key->ip_tos = ip->tos;
	__u16 frag = bpf_ntohs(ip->frag_off);
	p->df = (frag & 0x4000) != 0;
	if (frag & 0x1fff) {
		key->fragment = KUMO_FRAG_LATER;
		return 0; /* no L4 header in a later fragment */
	}
	if (frag & 0x2000)
		key->fragment = KUMO_FRAG_FIRST;
	__u32 l4 = off + ihl;
	if (l4 > 120) /* (options make this at most 14 + 4 + 60) */
		return -1;
	__u8 *h = data + l4;
	if (ip->protocol == IPPROTO_TCP_ || ip->protocol == IPPROTO_UDP_) {
		if ((void *)(h + 4) > end)
			return -1;
		key->tp_src = ((__u16)h[0] << 8) | h[1];
		key->tp_dst = ((__u16)h[2] << 8) | h[3];
		p->l4 = l4;
	} else if (ip->protocol == IPPROTO_ICMP_) {
		if ((void *)(h + 8) > end)
			return -1;
		key->tp_src = h[0];
		key->tp_dst = h[1];
		if (h[0] == 0 || h[0] == 8) /* echo reply / request */
			key->icmp_id = ((__u16)h[4] << 8) | h[5];
		p->l4 = l4;
	}
	return 0;
}

static __always_inline int upcall(struct __sk_buff *skb, struct kumo_flow_key *key, __u32 reason,
				  struct kumo_config *cfg)
{
	__u32 in_port = key->in_port;
	int rate = rate_ok(in_port, cfg);
	if (rate == RATE_REFUSED) {
		count(KUMO_ST_UPCALL_RATE_LIMITED);
		return TC_ACT_SHOT;
	}
	struct kumo_upcall *u = bpf_ringbuf_reserve(&kumo_upcalls, sizeof(*u), 0);
	if (!u) {
		count(KUMO_ST_UPCALL_RING_FULL);
		return TC_ACT_SHOT;
	}
	__u32 cap = skb->len;
	if (cap > KUMO_SNAP)
		cap = KUMO_SNAP;
	if (cap < ETH_HLEN || bpf_skb_load_bytes(skb, 0, u->data, cap) < 0) {
		bpf_ringbuf_discard(u, 0);
		count(KUMO_ST_MALFORMED);
		return TC_ACT_SHOT;
	}
	u->in_port = in_port;
	u->len = skb->len;
	u->cap_len = cap;
	u->reason = reason;
	u->queued_ns = bpf_ktime_get_ns();
	__builtin_memcpy(&u->key, key, sizeof(*key));
	if (skb->len > cap)
		count(KUMO_ST_UPCALL_TRUNCATED);
	bpf_ringbuf_submit(u, wake_flags(rate));
	count(KUMO_ST_UPCALL);
	return TC_ACT_SHOT;
}

/* A tunnelled output: the VNI and remote end go with the packet to the VXLAN device (collect_md), which
 * encapsulates it; a recorded connection's zone tag goes in the GBP field. The metadata is per CPU and a
 * clone is sent before the next output sets its own. */
static __always_inline int set_tunnel(struct __sk_buff *skb, struct kumo_output *o, __u16 ct_tag)
{
	if (!o->remote)
		return 0;
	struct bpf_tunnel_key tk = {};
	tk.tunnel_id = o->tunnel_key;
	tk.remote_ipv4 = o->remote;
	tk.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), BPF_F_ZERO_CSUM_TX) < 0) {
		count(KUMO_ST_ACTION_ERROR);
		return -1;
	}
	count_tunnel(o->remote, skb->len, 0);
	if (ct_tag) {
		struct kumo_vxlan_md md = {.gbp = ct_tag};
		if (bpf_skb_set_tunnel_opt(skb, &md, sizeof(md)) < 0)
			count(KUMO_ST_ACTION_ERROR); /* (sent without: the egress host's agent is asked, as before) */
	}
	return 0;
}

static __always_inline int set_addr(struct __sk_buff *skb, struct parsed *p, __u8 proto, __u32 field, __be32 new)
{
	__be32 old;
	if (bpf_skb_load_bytes(skb, p->l3 + field, &old, 4) < 0)
		return -1;
	if (p->l4 && proto == IPPROTO_TCP_)
		bpf_l4_csum_replace(skb, p->l4 + 16, old, new, BPF_F_PSEUDO_HDR | 4);
	else if (p->l4 && proto == IPPROTO_UDP_)
		bpf_l4_csum_replace(skb, p->l4 + 6, old, new, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4);
	if (bpf_l3_csum_replace(skb, p->l3 + 10, old, new, 4) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, p->l3 + field, &new, 4, 0);
}

/* A 16-bit L4 field at `field` of the L4 header, with the L4 checksum (at `csum`) fixed. */
static __always_inline int set_l4_16(struct __sk_buff *skb, struct parsed *p, __u32 field, __u32 csum,
				     __u64 flags, __u16 value)
{
	__be16 old, new = bpf_htons(value);
	if (bpf_skb_load_bytes(skb, p->l4 + field, &old, 2) < 0)
		return -1;
	bpf_l4_csum_replace(skb, p->l4 + csum, old, new, flags | 2);
	return bpf_skb_store_bytes(skb, p->l4 + field, &new, 2, 0);
}

/* Output the (rewritten) packet: a clone to every output but the last, which takes the packet itself. A
 * flood longer than one value follows its links (kumo.h): every output of a value that goes on is a clone. */
static __always_inline int output(struct __sk_buff *skb, struct kumo_flow_actions *a)
{
	struct kumo_flow_key link = {.in_port = KUMO_LINK_PORT};
	__u16 ct_tag = (a->flags & KUMO_A_CT_RECORD) ? a->ct_tag : 0;
#pragma clang loop unroll(disable)
	for (__u32 hop = 0; hop < KUMO_MAX_LINKS; hop++) {
		__u32 n = a->n_out;
		if (n == 0 || n > KUMO_MAX_OUT)
			return TC_ACT_SHOT;
		__u32 more = a->flags & KUMO_A_MORE_OUT;
		__u32 clones = more ? n : n - 1;
		for (__u32 i = 0; i < KUMO_MAX_OUT - 1; i++) {
			if (i >= clones)
				break;
			if (set_tunnel(skb, &a->out[i], ct_tag) == 0)
				bpf_clone_redirect(skb, a->out[i].ifindex, 0);
		}
		if (!more) {
			__u32 last = (n - 1) & (KUMO_MAX_OUT - 1);
			if (set_tunnel(skb, &a->out[last], ct_tag) < 0)
				return TC_ACT_SHOT;
			return bpf_redirect(a->out[last].ifindex, 0);
		}
		link.ip_src = a->out[KUMO_MAX_OUT - 1].tunnel_key;
		link.ip_dst = a->out[KUMO_MAX_OUT - 1].remote;
		struct kumo_flow_value *next = bpf_map_lookup_elem(&kumo_flows, &link);
		if (!next)
			break;
		a = &next->act;
	}
	count(KUMO_ST_FLOOD_LINK_MISSING); /* (or a chain longer than KUMO_MAX_LINKS: the agent makes none) */
	return TC_ACT_SHOT;
}

/* A function of its own (a BPF subprogram, verified once, not once per map the actions come from). */
__attribute__((noinline)) int apply(struct __sk_buff *skb, struct kumo_flow_actions *a, struct parsed *p, __u8 proto)
{
	if (!skb || !a || !p)
		return TC_ACT_SHOT;
	__u32 f = a->flags;
	if (f & KUMO_A_DROP) {
		count(KUMO_ST_FLOW_DROP);
		return TC_ACT_SHOT;
	}
	int err = 0;
	if (p->l3) {
		if (f & KUMO_A_SET_IP_SRC)
			err |= set_addr(skb, p, proto, 12, a->ip_src);
		if (f & KUMO_A_SET_IP_DST)
			err |= set_addr(skb, p, proto, 16, a->ip_dst);
		if (p->l4 && (proto == IPPROTO_TCP_ || proto == IPPROTO_UDP_)) {
			__u32 csum = proto == IPPROTO_TCP_ ? 16 : 6;
			__u64 flags = proto == IPPROTO_UDP_ ? BPF_F_MARK_MANGLED_0 : 0;
			if (f & KUMO_A_SET_TP_SRC)
				err |= set_l4_16(skb, p, 0, csum, flags, a->tp_src);
			if (f & KUMO_A_SET_TP_DST)
				err |= set_l4_16(skb, p, 2, csum, flags, a->tp_dst);
		}
		if (p->l4 && proto == IPPROTO_ICMP_ && (f & KUMO_A_SET_ICMP_ID))
			err |= set_l4_16(skb, p, 4, 2, 0, a->icmp_id);
		if (f & KUMO_A_DEC_TTL) {
			__be16 old, new;
			if (bpf_skb_load_bytes(skb, p->l3 + 8, &old, 2) < 0)
				return TC_ACT_SHOT;
			new = bpf_htons(bpf_ntohs(old) - ((__u16)a->ttl_dec << 8));
			bpf_l3_csum_replace(skb, p->l3 + 10, old, new, 2);
			err |= bpf_skb_store_bytes(skb, p->l3 + 8, &new, 2, 0);
		}
	}
	if (f & KUMO_A_VLAN_POP)
		err |= bpf_skb_vlan_pop(skb);
	if (f & KUMO_A_VLAN_PUSH)
		err |= bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q_), a->vlan);
	if (f & KUMO_A_SET_ETH_DST)
		err |= bpf_skb_store_bytes(skb, 0, a->eth_dst, 6, 0);
	if (f & KUMO_A_SET_ETH_SRC)
		err |= bpf_skb_store_bytes(skb, 6, a->eth_src, 6, 0);
	if (err) {
		count(KUMO_ST_ACTION_ERROR);
		return TC_ACT_SHOT;
	}
	if (!(f & KUMO_A_OUTPUT))
		return TC_ACT_SHOT;
	return output(skb, a);
}

SEC("tc")
int kumo_port_ingress(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct kumo_config *cfg = bpf_map_lookup_elem(&kumo_config, &zero);
	__u32 in_port = skb->ifindex;
	__u32 miss = KUMO_UPCALL_MISS;
	count(KUMO_ST_RX);
	if (cfg && cfg->inject_ifindex == skb->ifindex) {
		miss = KUMO_UPCALL_INJECT_MISS;
		if (!(skb->mark & KUMO_INJECT_MARK)) {
			count(KUMO_ST_INJECT_UNMARKED);
			return TC_ACT_SHOT;
		}
		in_port = skb->mark & ~KUMO_INJECT_MARK;
		skb->mark = 0;
	}
	struct kumo_flow_key key = {};
	struct parsed p = {};
	key.in_port = in_port;
	if (parse(skb, &key, &p) < 0) {
		count(KUMO_ST_MALFORMED);
		return TC_ACT_SHOT;
	}
	if (miss == KUMO_UPCALL_MISS) {
		int verdict = speaker_punt(skb, in_port, &key);
		if (verdict < 0)
			verdict = arp_answer(skb, in_port, &key);
		if (verdict >= 0)
			return verdict;
	}
	struct kumo_flow_value *v = bpf_map_lookup_elem(&kumo_flows, &key);
	if (!v)
		v = megaflow_lookup(&key, cfg);
	if (!v)
		return upcall(skb, &key, miss, cfg);
	if (p.l3 && v->act.ttl_dec && p.ttl <= v->act.ttl_dec) {
		count(KUMO_ST_TTL_PUNT);
		return upcall(skb, &key, KUMO_UPCALL_TTL, cfg);
	}
	if (p.l3 && v->act.mtu && p.df && p.tot_len > v->act.mtu) {
		count(KUMO_ST_MTU_PUNT);
		return upcall(skb, &key, KUMO_UPCALL_MTU, cfg);
	}
	count(KUMO_ST_HIT);
	if ((v->act.flags & KUMO_A_CT_RECORD) && !(v->act.flags & KUMO_A_DROP))
		conntrack_record(v->act.ct_zone, &key);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, skb->len);
	v->last_used_ns = bpf_ktime_get_ns();
	return apply(skb, &v->act, &p, key.ip_proto);
}
