/* TC ingress on the host's VXLAN device (external / collect_md mode).
 *
 * The sending host already simulated the packet's whole walk, egress port included, and tunnelled it with
 * VNI = that port's tunnel key. Here the VNI alone picks the local interface: the agent pre-installs
 * VNI -> ifindex for every port bound to this host, so that a tunnelled packet never causes an upcall. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/kumo.h"
#include "lib/stats.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* VNI: a port's tunnel key */
	__type(value, __u32); /* the ifindex of its interface on this host */
} kumo_vnis SEC(".maps");

SEC("tc")
int kumo_vxlan_ingress(struct __sk_buff *skb)
{
	struct bpf_tunnel_key tk = {};
	count(KUMO_ST_TUNNEL_RX);
	if (bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), 0) < 0) {
		count(KUMO_ST_TUNNEL_NO_KEY);
		return TC_ACT_SHOT;
	}
	__u32 vni = tk.tunnel_id;
	__u32 *ifindex = bpf_map_lookup_elem(&kumo_vnis, &vni);
	if (!ifindex) {
		count(KUMO_ST_TUNNEL_UNKNOWN_VNI);
		return TC_ACT_SHOT;
	}
	count(KUMO_ST_TUNNEL_DELIVERED);
	return bpf_redirect(*ifindex, 0);
}
