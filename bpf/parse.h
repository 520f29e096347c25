/* Packet parsing for bpf/datapath.c: what a packet is (struct pkt), read so
 * that it cannot be fooled. Headers come straight from the packet when they
 * are in its linear part and through bpf_skb_load_bytes beyond it; what
 * cannot be judged is refused with Cilium's drop reason (p->reason): unknown
 * L3 and VLAN tags, malformed IP headers, L4 headers too short, fragments
 * without their ports, IPv6 extension header chains it will not walk. Only
 * for inclusion by datapath.c, after the kernel and libbpf headers. */
#ifndef IMDSGUARD_PARSE_H
#define IMDSGUARD_PARSE_H

/* ICMP and ICMPv6 share this layout for the fields read here. (linux/icmp.h
 * pulls in libc headers that do not build for the BPF target.) */
struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be16 id;
	__be16 seq;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define FRAG_NONE 0
#define FRAG_FIRST 1 /* offset 0, more to come: must carry the ports */
#define FRAG_LATER 2 /* no L4 header: takes the first fragment's ports */

struct pkt {
	struct addr saddr;
	struct addr daddr;
	__be16 sport; /* ICMP: 0 */
	__be16 dport; /* ICMP: the type, as Cilium keys ICMP rules */
	__be16 ct_sport; /* ICMP echo: the identifier on both sides */
	__be16 ct_dport;
	__u8 proto;
	__u8 ipver;
	__u8 tcp_flags;
	__u8 icmp_code;
	__u8 neighbor_discovery;
	__u8 frag;
	__u8 reason; /* why parse refused the packet */
	__u8 pad;
	__u32 len;
	__u32 frag_id;
};


/* Reads `len` bytes at `off`: straight from the packet when they are in its
 * linear part (the common case, and the cheap one), else through
 * bpf_skb_load_bytes, so a header outside the linear part is read rather than
 * mistaken for a missing one. */
static __always_inline int load(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (off <= 512 && data + off + len <= end) {
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

#define PARSE_OK 0
#define PARSE_PASS 1 /* ARP: not ours to judge */
#define PARSE_DROP 2 /* cannot be judged: p->reason says why */

static __always_inline int refuse(struct pkt *p, __u8 reason)
{
	p->reason = reason;
	return PARSE_DROP;
}

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define IPV6_MAX_EXT 6

static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_FRAGMENT ||
	       nh == NEXTHDR_AUTH || nh == NEXTHDR_DEST;
}

/* The L4 header at `off`, of which `l4_len` bytes are in the packet (or this
 * fragment), read with load(). A header too short to hold
 * what the verdict depends on is refused, never judged as port 0. */
static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p, __u32 off, __u32 l4_len)
{
	__u8 short_reason = p->frag == FRAG_FIRST ? DROP_FRAG_NOSUPPORT : DROP_CT_INVALID_HDR;

	if (p->frag == FRAG_LATER)
		return PARSE_OK;
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		__be16 ports[2];

		/* A whole datagram must have a whole header; a first fragment
		 * at least the ports (RFC 1858's tiny fragments carry less). */
		if (p->frag == FRAG_NONE && l4_len < (p->proto == IPPROTO_TCP ? 20 : 8))
			return refuse(p, short_reason);
		if (l4_len < 4 || load(skb, off, ports, 4))
			return refuse(p, short_reason);
		p->sport = ports[0];
		p->dport = ports[1];
		p->ct_sport = ports[0];
		p->ct_dport = ports[1];
		if (p->proto == IPPROTO_TCP && l4_len >= 14 &&
		    load(skb, off + 13, &p->tcp_flags, 1))
			return refuse(p, short_reason);
		return PARSE_OK;
	}
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		struct icmp_echo_hdr ic = {};
		__u8 type;

		if (l4_len < 4 || load(skb, off, &ic, 4))
			return refuse(p, short_reason);
		type = ic.type;
		/* Router and neighbour discovery (133-137) keep IPv6 working: never
		 * judged, as in Cilium. */
		if (p->proto == IPPROTO_ICMPV6 && type >= 133 && type <= 137)
			p->neighbor_discovery = 1;
		p->dport = bpf_htons(type);
		p->icmp_code = ic.code;
		if (type == ICMP_ECHO || type == ICMP_ECHOREPLY || type == ICMPV6_ECHO_REQUEST ||
		    type == ICMPV6_ECHO_REPLY) {
			if (l4_len < 8 || load(skb, off, &ic, 8))
				return refuse(p, short_reason);
			p->ct_sport = ic.id;
			p->ct_dport = ic.id;
		}
		return PARSE_OK;
	}
	/* Other protocols have no ports: judged by protocol alone. */
	return PARSE_OK;
}

/* Walks IPv6 extension headers to the real L4 header, noting a fragment
 * header. A chain too long, truncated, or with a routing header that still
 * has segments to visit (the packet's real destination is not daddr) is
 * refused. */
static __always_inline int parse_ipv6_ext(struct __sk_buff *skb, struct pkt *p, __u32 *off)
{
	__u8 nh = p->proto;
	int seen_frag = 0;

	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		__u8 h[8];

		if (!is_ipv6_ext(nh))
			break;
		if (load(skb, *off, h, 8))
			return refuse(p, DROP_INVALID_EXTHDR);
		if (nh == NEXTHDR_FRAGMENT) {
			__u16 offlg = ((__u16)h[2] << 8) | h[3];

			if (seen_frag)
				return refuse(p, DROP_INVALID_EXTHDR);
			seen_frag = 1;
			__builtin_memcpy(&p->frag_id, &h[4], 4);
			if (offlg & 0xfff8)
				p->frag = FRAG_LATER;
			else if (offlg & 1)
				p->frag = FRAG_FIRST;
			*off += 8;
		} else if (nh == NEXTHDR_AUTH) {
			*off += ((__u32)h[1] + 2) * 4;
		} else {
			if (nh == NEXTHDR_ROUTING && h[3] != 0)
				return refuse(p, DROP_INVALID_EXTHDR);
			*off += ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
	}
	if (is_ipv6_ext(nh))
		return refuse(p, DROP_INVALID_EXTHDR);
	p->proto = nh;
	return PARSE_OK;
}

/* Only IPv4, IPv6 and ARP are known; everything else (VLAN tags that the
 * kernel would strip and route, unknown ethertypes) is refused, as Cilium
 * drops unknown L3 (DROP_UNKNOWN_L3). */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u32 off = sizeof(struct ethhdr);
	__u32 l4_len;
	__be16 proto;

	p->len = skb->len;
	/* The kernel takes one VLAN tag off into skb metadata before TCX runs:
	 * the frame would be judged as its inner packet and then belong to
	 * another network. Pod interfaces carry no VLANs. */
	if (skb->vlan_present)
		return refuse(p, DROP_VLAN_FILTERED);
	if (load(skb, 12, &proto, 2))
		return refuse(p, DROP_INVALID);
	if (proto == bpf_htons(ETH_P_ARP))
		return PARSE_PASS;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		__u32 hlen, tot;
		__u16 frag_off;

		if (load(skb, off, &ip, sizeof(ip)) || ip.ihl < 5 || ip.version != 4)
			return refuse(p, DROP_INVALID);
		hlen = ip.ihl * 4;
		tot = bpf_ntohs(ip.tot_len);
		if (skb->len < off + hlen)
			return refuse(p, DROP_INVALID);
		p->ipver = 4;
		p->proto = ip.protocol;
		p->saddr.b[10] = 0xff;
		p->saddr.b[11] = 0xff;
		p->daddr.b[10] = 0xff;
		p->daddr.b[11] = 0xff;
		__builtin_memcpy(&p->saddr.b[12], &ip.saddr, 4);
		__builtin_memcpy(&p->daddr.b[12], &ip.daddr, 4);
		frag_off = bpf_ntohs(ip.frag_off);
		if (frag_off & 0x1fff)
			p->frag = FRAG_LATER;
		else if (frag_off & 0x2000)
			p->frag = FRAG_FIRST;
		p->frag_id = ip.id;
		off += hlen;
		l4_len = skb->len - off;
		/* A fragment's L4 bytes are what its header says, not what
		 * trails it (padding); GSO packets may have tot_len 0. */
		if (p->frag != FRAG_NONE) {
			if (tot < hlen)
				return refuse(p, DROP_INVALID);
			if (tot - hlen < l4_len)
				l4_len = tot - hlen;
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		__u32 payload;
		int r;

		if (load(skb, off, &ip6, sizeof(ip6)) || ip6.version != 6)
			return refuse(p, DROP_INVALID);
		p->ipver = 6;
		p->proto = ip6.nexthdr;
		__builtin_memcpy(p->saddr.b, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr.b, &ip6.daddr, 16);
		payload = bpf_ntohs(ip6.payload_len);
		off += sizeof(ip6);
		r = parse_ipv6_ext(skb, p, &off);
		if (r != PARSE_OK)
			return r;
		if (skb->len < off)
			return refuse(p, DROP_INVALID_EXTHDR);
		l4_len = skb->len - off;
		if (p->frag != FRAG_NONE) {
			__u32 ext = off - sizeof(struct ethhdr) - sizeof(ip6);

			if (payload < ext)
				return refuse(p, DROP_INVALID);
			if (payload - ext < l4_len)
				l4_len = payload - ext;
		}
	} else {
		return refuse(p, DROP_UNKNOWN_L3);
	}
	return parse_l4(skb, p, off, l4_len);
}

#endif
