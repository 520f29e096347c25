/* The datapath ABI: map keys and values and the event record, shared with
 * crates/imdsguard-datapath/src/abi.rs. Every struct has explicit padding, and
 * the Rust side asserts the sizes. Bump LAYOUT_VERSION in abi.rs when any of
 * this changes: pinned maps are reused as they are. */
#ifndef IMDSGUARD_DATAPATH_H
#define IMDSGUARD_DATAPATH_H

#include <linux/types.h>

/* IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d) so one set of maps
 * serves both families. */
struct addr {
	__u8 b[16];
};

/* endpoints: pod IP -> endpoint. */
#define EP_READY (1u << 0)            /* its policy is in the tables */
#define EP_EGRESS_ENFORCED (1u << 1)  /* default deny for egress */
#define EP_INGRESS_ENFORCED (1u << 2) /* default deny for ingress */
#define EP_AUDIT (1u << 3)            /* denials pass, reported as AUDIT */
/* An audit-mode policy selects the endpoint: its FULL view (every policy,
 * audit ones included) is in the policy map under generation |
 * AUDIT_VIEW_GENERATION, and judges what the enforced view lets through. */
#define EP_AUDIT_VIEW (1u << 4)
#define EP_AUDIT_EGRESS_ENFORCED (1u << 5)  /* the full view's default deny */
#define EP_AUDIT_INGRESS_ENFORCED (1u << 6)
/* A hostNetwork pod (cgroup_endpoints): judged at connect()/sendmsg() by the
 * cgroup hooks, as its packets cross no pod interface. */
#define EP_HOST_NETWORK (1u << 7)
/* The full view's row (identity AUDIT_DEFAULT_DENY_IDENTITY, protocol and port
 * 0, prefix 104) whose rule id names the audit policy a full-view miss (133) is
 * reported against. No identity is ever this. */
#define AUDIT_DEFAULT_DENY_IDENTITY 0xffffffffu
#define AUDIT_VIEW_GENERATION (1u << 31)

struct endpoint_info {
	__u32 ep_id;
	__u32 identity;
	__u32 generation; /* which policy generation is live */
	__u32 flags;
};

/* ifaces: a pod's host-side interface -> the addresses its pod may send from
 * and the endpoint behind it. A pod is known by the interface its packets
 * arrive on, never by the source address it writes (Cilium's
 * DROP_INVALID_SIP); an interface with no entry has no known pod. */
#define IFACE_HAS_V4 (1u << 0)
#define IFACE_HAS_V6 (1u << 1)

struct iface_info {
	struct addr ip4;
	struct addr ip6;
	__u32 flags;
	__u32 ep_id;
	__u32 identity;
	__u32 pad;
};

/* frags: the ports of a datagram's first fragment, for its later ones
 * (which carry no L4 header). Keyed as Cilium's fragment tracking is. */
struct frag_key {
	struct addr saddr;
	struct addr daddr;
	__u32 id;
	__u32 ifindex;
	__u8 proto;
	__u8 pad[3];
};

struct frag_value {
	__be16 sport;
	__be16 dport;
	__be16 ct_sport;
	__be16 ct_dport;
	__u8 tcp_flags;
	__u8 pad[3];
};

/* ipcache: prefix -> identity (LPM over the 128-bit mapped address). */
#define IPC_PROTECTED (1u << 0) /* a metadata address: fail closed */

struct ipcache_key {
	__u32 prefixlen;
	struct addr addr;
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;
};

/* policy: one LPM trie for all endpoints. The prefix always covers ep_id,
 * generation, identity and direction (104 bits); a protocol adds 8, and a port
 * prefix up to 16 more (the port is big-endian so its prefix is its high bits). */
#define POLICY_FIXED_BITS 104
#define DIR_INGRESS 0
#define DIR_EGRESS 1

struct policy_key {
	__u32 prefixlen;
	__u32 ep_id;
	__u32 generation;
	__u32 identity;
	__u8 dir;
	__u8 proto;
	__be16 dport;
};

#define POL_DENY (1u << 0)

struct policy_value {
	__u8 flags;
	__u8 prefixlen_l4; /* proto and port bits of the key: 0, 8..24 */
	__u8 proxy_rank;
	__u8 match_type; /* Hubble's policy_match_type */
	__u16 proxy_port; /* host order; 0 = no redirect */
	__u16 pad;
	__u32 rule_id; /* the origin, for "allowed by" / "denied by" */
};

/* ct: connection tracking. One entry per connection and pod interface, under
 * a key that is the same for both directions (the lower address/port pair
 * first), so a packet of a known connection costs one lookup and no endpoint
 * lookup. Two local pods each keep their own entry, so the receiver's ingress
 * policy is never skipped; a new pod reusing an IP has a new interface. */
struct ct_key {
	struct addr lo_addr;
	struct addr hi_addr;
	__be16 lo_port;
	__be16 hi_port;
	__u32 ifindex;
	__u8 proto;
	__u8 pad[3];
};

#define CT_SEEN_REPLY (1u << 0)
#define CT_CLOSING (1u << 1)
#define CT_AUDITED (1u << 2)

struct ct_value {
	__u64 created_ns;
	__u32 flags;
	__u32 rule_id;
	__u16 proxy_port;
	__u8 dir;     /* the direction the first packet was judged in */
	__u8 orig_lo; /* the first packet came from the lower side */
	__u8 pad[2];
	__u32 epoch; /* the policy epoch it was judged under */
	__u32 pad2;
};

/* config: one entry. The agent bumps policy_epoch after every table change;
 * a connection judged under an older epoch is judged again on its next
 * packet from the side that opened it (as Cilium enforces policy on every
 * non-reply packet), so a new deny also cuts existing connections. */
#define CFG_PROXY_ROUTE_SHADOWED (1u << 0) /* a routing rule catches redirects first */
/* --deny-response reject: a deny is answered (ECONNREFUSED at the hooks, a
 * TCP RST or ICMP unreachable at TC) instead of dropped silently. */
#define CFG_DENY_REJECT (1u << 1)

struct config {
	__u32 policy_epoch;
	__u32 flags;
};

/* Counters (per CPU). */
enum counter {
	CNT_PACKETS = 0,
	CNT_ALLOWED,
	CNT_DENIED,
	CNT_REDIRECTED,
	CNT_AUDITED,
	CNT_REPLY,
	CNT_ESTABLISHED,
	CNT_PROXY_DOWN,
	CNT_NOT_READY,
	CNT_RB_FULL,
	CNT_INVALID_SOURCE,
	CNT_UNSUPPORTED_L3,
	CNT_FRAG_DROPPED,
	CNT_INVALID_PACKET,
	CNT_REJECTED,       /* denials answered with a RST or ICMP unreachable */
	CNT_HOOK_DENIED,    /* connect()/sendmsg() refused by a cgroup hook */
	CNT_HOOK_NOT_READY, /* ... of a hostNetwork pod without its policy: allowed */
	CNT_MAX,
};

/* Events. */
#define EV_POLICY_VERDICT 1
#define EV_DROP 2
#define EV_TRACE 3

/* Trace points, numbered as Hubble's event_type.sub_type for traces. */
#define TRACE_TO_ENDPOINT 0
#define TRACE_TO_PROXY 1
#define TRACE_TO_NETWORK 11

/* Drop reasons (Cilium's numbers). */
#define DROP_INVALID_SIP 132
#define DROP_INVALID 134
#define DROP_CT_INVALID_HDR 135
#define DROP_UNKNOWN_L3 139
#define DROP_INVALID_EXTHDR 156
#define DROP_FRAG_NOSUPPORT 157
#define DROP_FIB_LOOKUP 169 /* the proxy's routing is shadowed: fail closed */
#define DROP_FRAG_NOT_FOUND 175
#define DROP_VLAN_FILTERED 182
#define DROP_POLICY 133
#define DROP_POLICY_DENY 181
#define DROP_SOCKET_LOOKUP 178 /* no proxy listening: never pass instead */
#define DROP_SOCKET_ASSIGN 179
#define DROP_PROXY_PROTO 180 /* the proxy only takes TCP */

#define VERDICT_FORWARDED 1
#define VERDICT_DROPPED 2
#define VERDICT_AUDIT 6
#define VERDICT_REDIRECTED 5

struct event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	struct addr saddr;
	struct addr daddr;
	__u32 ep_id;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule_id;
	__u32 ifindex;
	__u32 pkt_len;
	__be16 sport;
	__be16 dport;
	__u16 proxy_port;
	__u8 kind;
	__u8 sub_type; /* trace point, or drop reason */
	__u8 proto;
	__u8 ipver;
	__u8 tcp_flags;
	__u8 dir;
	__u8 verdict;
	__u8 match_type;
	__u8 is_reply;
	__u8 pad;
	/* The sending socket and process (zero when unknown; see proc_flags). */
	__u64 sock_cookie; /* bpf_get_socket_cookie */
	__u64 cgroup_id;   /* cgroup v2 id (the directory's inode) of the socket's cgroup */
	__u32 pid;         /* tgid, host pid namespace */
	__u32 uid;
	char comm[16];
	__u32 proc_flags;
	__u32 pad2;
};

#define PROC_HAS_SOCK (1u << 0)  /* sock_cookie and cgroup_id are valid */
#define PROC_HAS_TASK (1u << 1)  /* pid, uid and comm are valid */
#define PROC_FROM_HOOK (1u << 2) /* judged at connect()/sendmsg(): no packet, ifindex 0 */
#define PROC_REJECTED (1u << 3)  /* the deny was answered (ECONNREFUSED, RST, ICMP) */

/* sock_procs: per-socket storage, written by the cgroup hooks when a socket
 * connects or sends to a protected address (the last one wins), read at TC
 * through skb->sk. Freed with the socket. */
#define SOCK_ALLOW_REPORTED (1u << 0) /* the hook's ALLOWED verdict was emitted */
#define SOCK_HOST_NETWORK (1u << 1)   /* the socket belongs to a hostNetwork pod */

/* 64 bytes: with the kernel's 128-byte storage element it fills a
 * kmalloc-192 object. No cookie: the socket's own is always at hand. */
struct sock_proc {
	__u64 cgroup_id;
	__u64 netns_cookie;
	__u64 ts_ns;
	__u32 tgid;
	__u32 pid;
	__u32 uid;
	__u32 gid;
	__u32 ep_id;
	__u32 flags;
	char comm[16];
};

/* hostnet_socks: per-socket storage of a hostNetwork pod's connect() that the
 * hook sent to the L7 proxy on loopback: where it was going. */
#define HOSTNET_REDIRECT (1u << 0)

struct hostnet_sock {
	struct addr daddr; /* the original destination, IPv4-mapped for IPv4 */
	__u16 dport;       /* host order */
	__u8 ipver;        /* 4: the connection runs over IPv4 (a v4-mapped AF_INET6 socket too) */
	__u8 flags;
	__u32 ep_id;
};

/* hostnet_redirects: the proxy's view of a redirected connection, written by
 * the sockops program once the client's port is known (TCP_CONNECT_CB) and
 * taken by the proxy when it accepts. Keyed by the client's port on loopback. */
struct hostnet_key {
	__u16 ipver; /* 4 or 6 */
	__u16 port;  /* the client's local port, host order */
	__u32 pad;
};

struct hostnet_redirect {
	struct addr daddr; /* the original destination */
	__u16 dport;       /* host order */
	__u16 pad;
	__u32 ep_id;
	__u32 pid; /* tgid, host pid namespace; 0 unknown */
	__u32 uid;
	char comm[16];
	__u64 cgroup_id;
	__u64 cookie;
	__u64 created_ns; /* CLOCK_MONOTONIC: the proxy refuses an entry older than its SYN could be */
};

_Static_assert(sizeof(struct event) == 128, "event size is part of the ABI");
_Static_assert(sizeof(struct sock_proc) == 64, "sock_proc size");
_Static_assert(sizeof(struct policy_value) == 12, "policy_value size");
_Static_assert(sizeof(struct ct_key) == 44, "ct_key size");
_Static_assert(sizeof(struct ct_value) == 32, "ct_value size");
_Static_assert(sizeof(struct iface_info) == 48, "iface_info size");
_Static_assert(sizeof(struct frag_key) == 44, "frag_key size");
_Static_assert(sizeof(struct frag_value) == 12, "frag_value size");
_Static_assert(sizeof(struct hostnet_sock) == 24, "hostnet_sock size");
_Static_assert(sizeof(struct hostnet_key) == 8, "hostnet_key size");
_Static_assert(sizeof(struct hostnet_redirect) == 72, "hostnet_redirect size");

#endif
