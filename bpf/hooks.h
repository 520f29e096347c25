/* The cgroup hooks, for bpf/datapath.c (docs/design/attribution.md §4):
 * cgroup/connect4, connect6, sendmsg4 and sendmsg6 at the host's cgroup v2
 * root, sharing the datapath's maps.
 *   1. Every connect() or unconnected send on the node passes through them:
 *      anything not to a protected (metadata) address returns at once.
 *   2. Otherwise the calling process is written into the socket's storage
 *      (sock_procs), where TC finds it through skb->sk: flows from veth pods
 *      then name their process.
 *   3. A hostNetwork pod (its cgroup or an ancestor in cgroup_endpoints) has
 *      no pod interface for TC to judge its packets on, so it is judged here,
 *      with the same policy tables: a deny fails the syscall (EPERM, or
 *      ECONNREFUSED with --deny-response reject) and no packet is sent.
 *   4. Where its policy has HTTP rules, a hostNetwork pod's TCP connect() is
 *      sent to the L7 proxy on loopback instead (as Cilium's socket LB
 *      rewrites a connect()): the original destination goes into the socket's
 *      storage (hostnet_socks), and once the kernel has chosen the client's
 *      port the sockops program files it under that port (hostnet_redirects)
 *      for the proxy to take when it accepts.
 * The node's own processes (no cgroup_endpoints entry) are never refused.
 * Only for inclusion by datapath.c. */
#ifndef IMDSGUARD_HOOKS_H
#define IMDSGUARD_HOOKS_H

#define HOOK_ALLOW 1
#define HOOK_REFUSE 0
#define ECONNREFUSED 111
/* cgroup v2 levels searched above the caller's own cgroup for a hostNetwork
 * pod's entry: a pod's containers sit about four levels below the root
 * (kubepods.slice/kubepods-burstable.slice/…pod<uid>.slice/cri-…scope). */
#define HOOK_CGROUP_LEVELS 12

/* The destination as the maps hold it (IPv4-mapped for IPv4); v4-mapped
 * addresses on an AF_INET6 socket arrive at the IPv6 hooks already mapped. */
static __always_inline void hook_daddr(struct bpf_sock_addr *ctx, int v6, struct addr *a)
{
	if (v6) {
		__u32 w[4];

		w[0] = ctx->user_ip6[0];
		w[1] = ctx->user_ip6[1];
		w[2] = ctx->user_ip6[2];
		w[3] = ctx->user_ip6[3];
		__builtin_memcpy(a->b, w, 16);
	} else {
		__u32 ip = ctx->user_ip4;

		a->b[10] = 0xff;
		a->b[11] = 0xff;
		__builtin_memcpy(&a->b[12], &ip, 4);
	}
}

/* The caller's endpoint, if it is a hostNetwork pod's: its own cgroup, else
 * the deepest ancestor with an entry. */
static __always_inline int hook_endpoint(struct endpoint_info *ep, __u64 *cgid)
{
	struct endpoint_info *found;
	__u64 id = bpf_get_current_cgroup_id();
	int ok = 0;

	*cgid = id;
	found = bpf_map_lookup_elem(&cgroup_endpoints, &id);
	if (found && (found->flags & EP_HOST_NETWORK)) {
		*ep = *found;
		return 1;
	}
	for (int l = 1; l <= HOOK_CGROUP_LEVELS; l++) {
		__u64 a = bpf_get_current_ancestor_cgroup_id(l);

		if (!a || a == id)
			break;
		found = bpf_map_lookup_elem(&cgroup_endpoints, &a);
		if (found && (found->flags & EP_HOST_NETWORK)) {
			*ep = *found;
			ok = 1;
		}
	}
	return ok;
}

/* One event of a hook's verdict: no packet, so no interface (0); the source
 * is the socket's bound address, unspecified until it has one. */
static __always_inline void hook_emit(struct bpf_sock_addr *ctx, const struct pkt *p,
				      const struct verdict *v, const struct sock_proc *sp,
				      __u64 cgid, __u8 kind, __u8 sub_type)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(CNT_RB_FULL);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->saddr = p->saddr;
	e->daddr = p->daddr;
	e->ep_id = v->ep.ep_id;
	e->src_identity = v->ep.identity;
	e->dst_identity = v->remote;
	e->rule_id = v->pv.rule_id;
	e->ifindex = 0;
	e->pkt_len = 0;
	e->sport = p->sport;
	e->dport = p->dport;
	e->proxy_port = v->pv.proxy_port;
	e->kind = kind;
	e->sub_type = sub_type;
	e->proto = p->proto;
	e->ipver = p->ipver;
	e->tcp_flags = p->tcp_flags;
	e->dir = DIR_EGRESS;
	e->verdict = v->verdict;
	e->match_type = v->pv.match_type;
	e->is_reply = 0;
	e->pad = 0;
	e->sock_cookie = bpf_get_socket_cookie(ctx);
	e->cgroup_id = cgid;
	e->proc_flags = PROC_HAS_SOCK | PROC_FROM_HOOK | (v->rejected ? PROC_REJECTED : 0);
	if (sp) {
		e->pid = sp->tgid;
		e->uid = sp->uid;
		__builtin_memcpy(e->comm, sp->comm, sizeof(e->comm));
		e->proc_flags |= PROC_HAS_TASK;
	} else {
		e->pid = 0;
		e->uid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	}
	e->pad2 = 0;
	bpf_ringbuf_submit(e, rb_submit_flags);
}

/* A hook's drop notification is due once per interval per endpoint,
 * destination, protocol, port and reason: the source port is not known at
 * connect(), and every hostNetwork pod shares the node's addresses. */
static __always_inline int hook_notify_due(const struct pkt *p, __u32 ep_id, __u8 reason)
{
	struct ct_key k = {};
	__u64 now = bpf_ktime_get_ns();
	__u64 *last;

	k.lo_addr = p->daddr;
	k.lo_port = p->dport;
	k.ifindex = ep_id;
	k.proto = p->proto;
	k.pad[0] = reason;
	k.pad[1] = 1; /* never a TC key: those have pad[1] 0 */
	last = bpf_map_lookup_elem(&drop_notified, &k);
	if (last && now - *last < drop_notify_interval_ns)
		return 0;
	bpf_map_update_elem(&drop_notified, &k, &now, BPF_ANY);
	return 1;
}

/* Sends the connect() to the proxy on loopback (::1, or ::ffff:127.0.0.1 for a
 * v4-mapped destination on an AF_INET6 socket), noting where it was going. No
 * storage, no redirect: the caller fails closed. */
static __always_inline int hook_redirect(struct bpf_sock_addr *ctx, struct bpf_sock *sk, int v6,
					 const struct pkt *p, const struct verdict *v)
{
	struct hostnet_sock *hs;

	hs = bpf_sk_storage_get(&hostnet_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!hs)
		return 0;
	hs->daddr = p->daddr;
	hs->dport = bpf_ntohs(p->dport);
	hs->ipver = p->ipver;
	hs->flags = HOSTNET_REDIRECT;
	hs->ep_id = v->ep.ep_id;
	if (!v6) {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
	} else if (p->ipver == 4) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(v->pv.proxy_port);
	return 1;
}

static __always_inline int sock_hook(struct bpf_sock_addr *ctx, int v6, int connect)
{
	struct pkt p = {};
	struct verdict v = { .dir = DIR_EGRESS };
	struct ipcache_value *r;
	struct sock_proc *sp;
	struct bpf_sock *sk;
	__u64 pid_tgid, uid_gid, cgid = 0;
	__u16 keep_port = 0;
	int found;

	hook_daddr(ctx, v6, &p.daddr);
	r = ipcache_lookup(&p.daddr);
	if (!r || !(r->flags & IPC_PROTECTED))
		return HOOK_ALLOW;

	sk = ctx->sk;
	if (!sk)
		return HOOK_ALLOW;
	sp = bpf_sk_storage_get(&sock_procs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	pid_tgid = bpf_get_current_pid_tgid();
	uid_gid = bpf_get_current_uid_gid();
	if (sp) {
		/* The last connect() or send wins. */
		sp->tgid = pid_tgid >> 32;
		sp->pid = (__u32)pid_tgid;
		sp->uid = (__u32)uid_gid;
		sp->gid = uid_gid >> 32;
		sp->cgroup_id = bpf_get_current_cgroup_id();
		sp->netns_cookie = bpf_get_netns_cookie(ctx);
		sp->ts_ns = bpf_ktime_get_ns();
		sp->ep_id = 0;
		bpf_get_current_comm(sp->comm, sizeof(sp->comm));
	}

	if (connect) {
		/* A socket connecting again is redirected again, or not at all. */
		struct hostnet_sock *old = bpf_sk_storage_get(&hostnet_socks, sk, 0, 0);

		if (old)
			old->flags = 0;
	}
	if (!hook_endpoint(&v.ep, &cgid))
		return HOOK_ALLOW;
	if (sp) {
		sp->ep_id = v.ep.ep_id;
		sp->flags |= SOCK_HOST_NETWORK;
	}
	/* Until its policy is in place a hostNetwork pod passes: it cannot be
	 * told from the node itself, which must keep its metadata service
	 * (kubelet, the cloud's agents). */
	if (!(v.ep.flags & EP_READY)) {
		count(CNT_HOOK_NOT_READY);
		return HOOK_ALLOW;
	}

	p.proto = ctx->protocol;
	p.dport = (__be16)ctx->user_port;
	p.ipver = p.daddr.b[10] == 0xff && p.daddr.b[11] == 0xff ? 4 : 6;
	if (p.ipver == 4) {
		p.saddr.b[10] = 0xff;
		p.saddr.b[11] = 0xff;
		if (!v6) {
			__u32 src = sk->src_ip4;

			__builtin_memcpy(&p.saddr.b[12], &src, 4);
		}
	} else {
		__u32 w[4];

		w[0] = sk->src_ip6[0];
		w[1] = sk->src_ip6[1];
		w[2] = sk->src_ip6[2];
		w[3] = sk->src_ip6[3];
		__builtin_memcpy(p.saddr.b, w, 16);
	}
	p.sport = bpf_htons((__u16)sk->src_port);
	/* No packet yet: a TCP connect() reads as the SYN it is about to send. */
	if (p.proto == IPPROTO_TCP)
		p.tcp_flags = TCP_SYN;
	v.remote = r->identity;
	v.remote_flags = r->flags;
	v.remote_known = 1;
	v.ep_known = 1;

	found = policy_lookup(&v, &p, v.ep.generation);
	if (found && (v.pv.flags & POL_DENY)) {
		v.verdict = VERDICT_DROPPED;
		v.reason = DROP_POLICY_DENY;
	} else if (found && v.pv.proxy_port) {
		/* HTTP rules: a TCP connect() goes to the proxy (below). The proxy
		 * takes no datagrams: UDP fails closed, as at TC. */
		v.verdict = VERDICT_REDIRECTED;
		if (!connect || p.proto != IPPROTO_TCP) {
			v.verdict = VERDICT_DROPPED;
			v.reason = DROP_PROXY_PROTO;
		}
	} else if (found) {
		v.verdict = VERDICT_FORWARDED;
	} else if (v.ep.flags & EP_EGRESS_ENFORCED) {
		v.verdict = VERDICT_DROPPED;
		v.reason = DROP_POLICY;
	} else {
		/* No policy applies: not a policy decision to report, unless the
		 * full view has something to say. */
		v.verdict = VERDICT_FORWARDED;
		v.pv.rule_id = 0;
		found = -1;
	}
	if (v.verdict == VERDICT_FORWARDED && (v.ep.flags & EP_AUDIT_VIEW)) {
		if (audit_view(&v, &p, &keep_port)) {
			/* A full-view redirect cannot be followed either; audit
			 * never blocks, so it passes as forwarded. */
			if (v.verdict == VERDICT_REDIRECTED)
				v.verdict = VERDICT_FORWARDED;
			found = 1;
		}
	}
	if (v.verdict == VERDICT_REDIRECTED && !hook_redirect(ctx, sk, v6, &p, &v)) {
		/* No storage for the original destination: the proxy could not
		 * tell where the connection was going. Never pass instead. */
		v.verdict = VERDICT_DROPPED;
		v.reason = DROP_SOCKET_LOOKUP;
	}
	if (v.verdict == VERDICT_DROPPED && (v.ep.flags & EP_AUDIT)) {
		v.verdict = VERDICT_AUDIT;
		found = 1;
	}

	if (v.verdict == VERDICT_DROPPED) {
		count2(CNT_DENIED, CNT_HOOK_DENIED);
		if (config_word(1) & CFG_DENY_REJECT) {
			bpf_set_retval(-ECONNREFUSED);
			v.rejected = 1;
		}
		if (hook_notify_due(&p, v.ep.ep_id, v.reason)) {
			hook_emit(ctx, &p, &v, sp, cgid, EV_POLICY_VERDICT, 0);
			hook_emit(ctx, &p, &v, sp, cgid, EV_DROP, v.reason);
		}
		return HOOK_REFUSE;
	}
	if (v.verdict == VERDICT_AUDIT)
		count(CNT_AUDITED);
	else if (v.verdict == VERDICT_REDIRECTED)
		count(CNT_REDIRECTED);
	else
		count(CNT_ALLOWED);
	/* One verdict per socket: a UDP socket sending datagram after datagram
	 * reports its first. */
	if (found > 0 && (!sp || !(sp->flags & SOCK_ALLOW_REPORTED))) {
		if (sp)
			sp->flags |= SOCK_ALLOW_REPORTED;
		hook_emit(ctx, &p, &v, sp, cgid, EV_POLICY_VERDICT,
			  v.verdict == VERDICT_AUDIT ? v.reason : 0);
	}
	return HOOK_ALLOW;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_hook(ctx, 0, 1);
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock_hook(ctx, 1, 1);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_hook(ctx, 0, 0);
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_hook(ctx, 1, 0);
}

/* A redirected connect() has its client port now (the SYN is about to leave
 * for the proxy): file the original destination and the process under it. Any
 * other socket operation, or a socket the hooks did not redirect, returns at
 * once. */
SEC("sockops")
int hostnet_sockops(struct bpf_sock_ops *skops)
{
	struct hostnet_redirect r = {};
	struct hostnet_key k = {};
	struct hostnet_sock *hs;
	struct sock_proc *sp;
	struct bpf_sock *sk;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	hs = bpf_sk_storage_get(&hostnet_socks, sk, 0, 0);
	if (!hs || !(hs->flags & HOSTNET_REDIRECT))
		return 1;
	k.ipver = hs->ipver;
	k.port = (__u16)skops->local_port;
	r.daddr = hs->daddr;
	r.dport = hs->dport;
	r.ep_id = hs->ep_id;
	r.cookie = bpf_get_socket_cookie(skops);
	r.created_ns = bpf_ktime_get_ns();
	sp = bpf_sk_storage_get(&sock_procs, sk, 0, 0);
	if (sp) {
		r.pid = sp->tgid;
		r.uid = sp->uid;
		r.cgroup_id = sp->cgroup_id;
		__builtin_memcpy(r.comm, sp->comm, sizeof(r.comm));
	}
	bpf_map_update_elem(&hostnet_redirects, &k, &r, BPF_ANY);
	return 1;
}

#endif
