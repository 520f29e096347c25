/* --deny-response reject at TC, for bpf/datapath.c (docs/design/attribution.md
 * §6): a pod's packet that egress policy denies is answered instead of
 * dropped silently, so the client fails at once rather than at its timeout:
 *   TCP            -> a RST, the packet rewritten in place (ECONNREFUSED);
 *   other IPv4     -> ICMP 3/13 "administratively prohibited" (EHOSTUNREACH);
 *   other IPv6     -> ICMPv6 1/1 "administratively prohibited" (EACCES).
 * The answer goes straight into the pod with bpf_redirect_peer, past the host
 * veth's egress (where to_pod would judge it as a packet from the denied
 * address). No connection is tracked for it; the flow is reported DROPPED
 * with its policy reason, marked PROC_REJECTED.
 * Never answered: RSTs and ICMP errors (no storms between two rejecters),
 * fragments, packets whose source is not the pod's own, IPv4 with options and
 * IPv6 with extension headers (rare, and answering them would need a longer
 * parser): those are dropped as in drop mode. Only for inclusion by
 * datapath.c. */
#ifndef IMDSGUARD_REJECT_H
#define IMDSGUARD_REJECT_H

#define ETH_LEN 14
#define IP4_LEN 20
#define IP6_LEN 40
#define TCP_LEN 20
#define ICMP_TYPE_UNREACH 3
#define ICMP_CODE_PROHIBITED 13
#define ICMPV6_TYPE_UNREACH 1
#define ICMPV6_CODE_PROHIBITED 1

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 c = (__u64)sum & 0xffffffffULL;

	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

/* Whether a denied packet may be answered (see above). */
static __always_inline int answerable(struct __sk_buff *skb, struct verdict *v,
				      const struct pkt *p)
{
	const struct iface_info *i = load_iface(v);
	__u8 b;

	if (p->frag != FRAG_NONE || !i || !iface_owns(i, p, &p->saddr))
		return 0;
	if (p->proto == IPPROTO_TCP)
		return !(p->tcp_flags & TCP_RST);
	if (p->ipver == 4) {
		__u8 type = bpf_ntohs(p->dport);

		if (load(skb, ETH_LEN, &b, 1) || b != 0x45)
			return 0;
		/* ICMP errors: unreachable, source quench, redirect, time
		 * exceeded, parameter problem. */
		return p->proto != IPPROTO_ICMP ||
		       !(type == 3 || type == 4 || type == 5 || type == 11 || type == 12);
	}
	if (load(skb, ETH_LEN + 6, &b, 1) || b != p->proto)
		return 0;
	/* ICMPv6 types below 128 are errors. */
	return p->proto != IPPROTO_ICMPV6 || bpf_ntohs(p->dport) >= 128;
}

/* Swaps the Ethernet addresses: the answer goes back where the packet came from. */
static __always_inline int swap_macs(struct __sk_buff *skb)
{
	__u8 eth[12], swapped[12];

	if (bpf_skb_load_bytes(skb, 0, eth, 12))
		return -1;
	__builtin_memcpy(swapped, eth + 6, 6);
	__builtin_memcpy(swapped + 6, eth, 6);
	return bpf_skb_store_bytes(skb, 0, swapped, 12, 0);
}

/* The TCP RST, in place: addresses and ports swapped, options and payload cut
 * off, the checksum computed afresh (right whether the pod's stack offloaded
 * it or not: the pod trusts a CHECKSUM_PARTIAL packet as it is, and checks
 * any other). */
static __noinline int reject_tcp(struct __sk_buff *skb, const struct pkt *p)
{
	struct tcphdr th, nt = {};
	__u32 l4 = ETH_LEN + (p->ipver == 4 ? IP4_LEN : IP6_LEN);
	__u32 seg, plen, doff;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th)))
		return -1;
	doff = th.doff * 4;
	if (p->ipver == 4) {
		__be16 tot;

		if (bpf_skb_load_bytes(skb, ETH_LEN + 2, &tot, 2))
			return -1;
		seg = bpf_ntohs(tot) - IP4_LEN;
	} else {
		__be16 pl;

		if (bpf_skb_load_bytes(skb, ETH_LEN + 4, &pl, 2))
			return -1;
		seg = bpf_ntohs(pl);
	}
	if (doff < TCP_LEN || seg < doff)
		return -1;
	plen = seg - doff;
	nt.source = th.dest;
	nt.dest = th.source;
	nt.doff = 5;
	nt.rst = 1;
	if (th.ack) {
		nt.seq = th.ack_seq;
	} else {
		nt.ack = 1;
		nt.ack_seq = bpf_htonl(bpf_ntohl(th.seq) + plen + th.syn + th.fin);
	}
	if (bpf_skb_change_tail(skb, l4 + TCP_LEN, 0) || swap_macs(skb))
		return -1;
	if (p->ipver == 4) {
		struct {
			__be32 saddr;
			__be32 daddr;
			__u8 zero;
			__u8 proto;
			__be16 len;
		} ph = { .proto = IPPROTO_TCP, .len = bpf_htons(TCP_LEN) };
		__be32 addrs[2];
		__be16 old_tot = bpf_htons(seg + IP4_LEN), new_tot = bpf_htons(IP4_LEN + TCP_LEN);

		__builtin_memcpy(&ph.saddr, &p->daddr.b[12], 4);
		__builtin_memcpy(&ph.daddr, &p->saddr.b[12], 4);
		addrs[0] = ph.saddr;
		addrs[1] = ph.daddr;
		/* Swapped addresses keep the header checksum; the length does not. */
		if (bpf_skb_store_bytes(skb, ETH_LEN + 12, addrs, 8, 0) ||
		    bpf_skb_store_bytes(skb, ETH_LEN + 2, &new_tot, 2, 0) ||
		    bpf_l3_csum_replace(skb, ETH_LEN + 10, old_tot, new_tot, 2))
			return -1;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else {
		struct {
			__u8 saddr[16];
			__u8 daddr[16];
			__be32 len;
			__u8 zero[3];
			__u8 nexthdr;
		} ph = { .len = bpf_htonl(TCP_LEN), .nexthdr = IPPROTO_TCP };
		__be16 pl = bpf_htons(TCP_LEN);

		__builtin_memcpy(ph.saddr, p->daddr.b, 16);
		__builtin_memcpy(ph.daddr, p->saddr.b, 16);
		if (bpf_skb_store_bytes(skb, ETH_LEN + 8, ph.saddr, 32, 0) ||
		    bpf_skb_store_bytes(skb, ETH_LEN + 4, &pl, 2, 0))
			return -1;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	}
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&nt, sizeof(nt), sum);
	if (sum < 0)
		return -1;
	nt.check = csum_fold(sum);
	return bpf_skb_store_bytes(skb, l4, &nt, sizeof(nt), 0) ? -1 : 0;
}

/* ICMP 3/13 with the denied packet's IP header and first 8 bytes of payload. */
static __noinline int reject_icmp4(struct __sk_buff *skb)
{
	struct {
		struct iphdr ip;
		__u8 type;
		__u8 code;
		__be16 check;
		__be32 unused;
		__u8 orig[IP4_LEN + 8];
	} m = {};
	__s64 sum;

	if (bpf_skb_load_bytes(skb, ETH_LEN, m.orig, sizeof(m.orig)))
		return -1;
	m.ip.version = 4;
	m.ip.ihl = 5;
	m.ip.tot_len = bpf_htons(sizeof(m));
	m.ip.ttl = 64;
	m.ip.protocol = IPPROTO_ICMP;
	__builtin_memcpy(&m.ip.saddr, m.orig + 16, 4);
	__builtin_memcpy(&m.ip.daddr, m.orig + 12, 4);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&m.ip, IP4_LEN, 0);
	if (sum < 0)
		return -1;
	m.ip.check = csum_fold(sum);
	m.type = ICMP_TYPE_UNREACH;
	m.code = ICMP_CODE_PROHIBITED;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&m.type, sizeof(m) - IP4_LEN, 0);
	if (sum < 0)
		return -1;
	m.check = csum_fold(sum);
	if (bpf_skb_change_tail(skb, ETH_LEN + sizeof(m), 0) || swap_macs(skb))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_LEN, &m, sizeof(m), 0) ? -1 : 0;
}

/* ICMPv6 1/1 with the denied packet's IPv6 header and first 8 bytes of payload. */
static __noinline int reject_icmp6(struct __sk_buff *skb)
{
	struct {
		__be32 vtcfl;
		__be16 payload_len;
		__u8 nexthdr;
		__u8 hop_limit;
		__u8 saddr[16];
		__u8 daddr[16];
		__u8 type;
		__u8 code;
		__be16 check;
		__be32 unused;
		__u8 orig[IP6_LEN + 8];
	} m = {};
	struct {
		__be32 len;
		__u8 zero[3];
		__u8 nexthdr;
	} ph = { .len = bpf_htonl(8 + IP6_LEN + 8), .nexthdr = IPPROTO_ICMPV6 };
	__s64 sum;

	if (bpf_skb_load_bytes(skb, ETH_LEN, m.orig, sizeof(m.orig)))
		return -1;
	m.vtcfl = bpf_htonl(6u << 28);
	m.payload_len = bpf_htons(8 + IP6_LEN + 8);
	m.nexthdr = IPPROTO_ICMPV6;
	m.hop_limit = 64;
	__builtin_memcpy(m.saddr, m.orig + 24, 16);
	__builtin_memcpy(m.daddr, m.orig + 8, 16);
	m.type = ICMPV6_TYPE_UNREACH;
	m.code = ICMPV6_CODE_PROHIBITED;
	/* The pseudo-header: both addresses, the length, the next header. */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)m.saddr, 32, 0);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), sum);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&m.type, sizeof(m) - IP6_LEN, sum);
	if (sum < 0)
		return -1;
	m.check = csum_fold(sum);
	if (bpf_skb_change_tail(skb, ETH_LEN + sizeof(m), 0) || swap_macs(skb))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_LEN, &m, sizeof(m), 0) ? -1 : 0;
}

/* A policy deny on the way out of a pod: answered when --deny-response reject
 * is set and the packet may be answered, else dropped as always. Rate-limited
 * as drop notifications are: within an interval a flow's further packets are
 * dropped silently (its first answer already failed the connection). */
static __always_inline int deny(struct __sk_buff *skb, const struct pkt *p, struct verdict *v,
				__u8 reason)
{
	int r;

	if (v->dir != DIR_EGRESS || !(config_word(1) & CFG_DENY_REJECT) ||
	    !answerable(skb, v, p))
		return drop(skb, p, v, reason, 1);
	count(CNT_DENIED);
	if (!drop_notify_due(p, reason))
		return TCX_DROP;
	/* The events first: the answer rewrites the packet and its socket. */
	v->rejected = 1;
	emit(skb, p, v, EV_POLICY_VERDICT, 0);
	v->verdict = VERDICT_DROPPED;
	emit(skb, p, v, EV_DROP, reason);
	if (p->proto == IPPROTO_TCP)
		r = reject_tcp(skb, p);
	else if (p->ipver == 4)
		r = reject_icmp4(skb);
	else
		r = reject_icmp6(skb);
	if (r)
		return TCX_DROP;
	count(CNT_REJECTED);
	return bpf_redirect_peer(v->ifindex, 0);
}

#endif
