/* TC ingress on the host's VXLAN device (external / collect_md mode).
 *
 * The sending host already simulated the packet's whole walk, egress port included, and tunnelled it with
 * VNI = that port's tunnel key. Here the VNI alone picks the local interface: the agent pre-installs
 * VNI -> ifindex for every port bound to this host, so that a tunnelled packet never causes an upcall.
 *
 * A packet from an outer source that is not one of this host's tunnel peers is dropped (counted): the VXLAN port
 * takes datagrams from anyone on the underlay, and a forged one must not reach a VM.
 *
 * A packet whose VXLAN GBP field carries a zone tag is the forward packet of a connection its sender recorded
 * in that zone (lib/conntrack.h): it is recorded here too, where its reply will be simulated and looked up. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/conntrack.h"
#include "lib/kumo.h"
#include "lib/stats.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* VNI: a port's tunnel key */
	__type(value, __u32); /* the ifindex of its interface on this host */
} kumo_vnis SEC(".maps");

/* The underlay addresses of this host's tunnel peers (the hosts sharing a tunnel zone with it), and whether
 * the agent has filled them in yet (kumo_tunnel_filter[0]: until it has, as after an upgrade from a program
 * without them, every source is taken). Both outlive the agent, like kumo_vnis. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);  /* the outer source address, host byte order (bpf_tunnel_key.remote_ipv4) */
	__type(value, __u8);
} kumo_tunnel_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} kumo_tunnel_filter SEC(".maps");

/* a zone's 16-bit tag -> the zone (kumo.agent: the stateful devices whose tags no other device shares) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} kumo_ct_tags SEC(".maps");

/* Record the inner IPv4 TCP/UDP packet's tuple in the zone its GBP tag names (untagged frames only). */
static __always_inline void record_tagged(struct __sk_buff *skb)
{
	struct kumo_vxlan_md md = {};
	if (bpf_skb_get_tunnel_opt(skb, &md, sizeof(md)) < 0)
		return;
	__u32 tag = md.gbp & 0xffff;
	if (!tag)
		return;
	__u64 *zone = bpf_map_lookup_elem(&kumo_ct_tags, &tag);
	if (!zone) {
		count(KUMO_ST_CT_TAG_UNKNOWN);
		return;
	}
	struct iphdr ip;
	__be16 ports[2];
	__be16 proto;
	if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0 || proto != bpf_htons(ETH_P_IP))
		return;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.ihl < 5 || (ip.frag_off & bpf_htons(0x1fff)))
		return;
	if (ip.protocol != 6 && ip.protocol != 17)
		return;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + ip.ihl * 4, ports, sizeof(ports)) < 0)
		return;
	struct kumo_flow_key key = {.ip_src = ip.saddr, .ip_dst = ip.daddr, .ip_proto = ip.protocol,
				    .tp_src = bpf_ntohs(ports[0]), .tp_dst = bpf_ntohs(ports[1])};
	conntrack_record(*zone, &key);
}

SEC("tc")
int kumo_vxlan_ingress(struct __sk_buff *skb)
{
	struct bpf_tunnel_key tk = {};
	count(KUMO_ST_TUNNEL_RX);
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0) {
		count(KUMO_ST_TUNNEL_NO_KEY);
		return TC_ACT_SHOT;
	}
	__u32 zero = 0;
	__u32 *filtering = bpf_map_lookup_elem(&kumo_tunnel_filter, &zero);
	__u32 remote = tk.remote_ipv4;
	if (filtering && *filtering && !bpf_map_lookup_elem(&kumo_tunnel_peers, &remote)) {
		count(KUMO_ST_TUNNEL_STRANGER);
		return TC_ACT_SHOT;
	}
	count_tunnel(remote, skb->len, 1);
	__u32 vni = tk.tunnel_id;
	__u32 *ifindex = bpf_map_lookup_elem(&kumo_vnis, &vni);
	if (!ifindex) {
		count(KUMO_ST_TUNNEL_UNKNOWN_VNI);
		return TC_ACT_SHOT;
	}
	record_tagged(skb);
	count(KUMO_ST_TUNNEL_DELIVERED);
	return bpf_redirect(*ifindex, 0);
}
