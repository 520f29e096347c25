# Hand-built frames for the hostile-pod tests: what a pod with CAP_NET_RAW can put on its own
# interface. Run inside the pod's network namespace:
#   python3 packets.py <host-side MAC> <case> key=value ...
# Every frame leaves through eth0 by AF_PACKET, so the pod's own stack never sees or fixes it.
import socket
import struct
import sys


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def v6(a):
    return ":" in a


def pseudo(src, dst, proto, length):
    if v6(src):
        return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                + struct.pack("!IxxxB", length, proto))
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!xBH", proto, length)


def tcp(src, dst, sport, dport, flags, data=b""):
    h = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 64240, 0, 0)
    c = csum(pseudo(src, dst, 6, len(h) + len(data)) + h + data)
    return h[:16] + struct.pack("!H", c) + h[18:] + data


def udp(src, dst, sport, dport, data):
    h = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    c = csum(pseudo(src, dst, 17, len(h) + len(data)) + h + data) or 0xFFFF
    return h[:6] + struct.pack("!H", c) + data


def ipv4(src, dst, proto, payload, ident=0x4242, frag=0):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def ipv6(src, dst, nexthdr, payload):
    return (struct.pack("!IHBB", 6 << 28, len(payload), nexthdr, 64)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + payload)


def ext(nexthdr, kind, body_len=6):
    # Hop-by-hop (0) and destination options (60): PadN filling 8 bytes.
    if kind in (0, 60):
        return struct.pack("!BBBB", nexthdr, 0, 1, 4) + b"\0" * 4
    # Routing header type 4 (segment routing) with one segment left to visit.
    if kind == 43:
        return struct.pack("!BBBBBBH", nexthdr, 2, 4, 1, 0, 0, 0) + b"\0" * 16
    raise ValueError(kind)


def frame(host_mac, ethertype, payload, vlans=0):
    dst = bytes.fromhex(host_mac.replace(":", ""))
    src = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
    tags = b"".join(struct.pack("!HH", 0x8100, 0) for _ in range(vlans))
    return dst + src + tags + struct.pack("!H", ethertype) + payload


def send(frames):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    for f in frames:
        s.send(f)


def main():
    host_mac, case = sys.argv[1], sys.argv[2]
    a = dict(kv.split("=", 1) for kv in sys.argv[3:])
    src, dst = a.get("src"), a.get("dst")
    sport, dport = int(a.get("sport", "40000")), int(a.get("dport", "80"))
    marker = a.get("marker", "").encode()
    eth = 0x86DD if src and v6(src) else 0x0800
    if case == "syn":
        # A SYN with a marker in its data, optionally behind VLAN tags.
        seg = tcp(src, dst, sport, dport, 0x02, marker)
        pkt = ipv6(src, dst, 6, seg) if v6(src) else ipv4(src, dst, 6, seg)
        send([frame(host_mac, eth, pkt, int(a.get("vlans", "0")))])
    elif case == "synack":
        # A forged reply "from" dst's server port to one of the pod's own ports.
        seg = tcp(src, dst, sport, dport, 0x12)
        send([frame(host_mac, eth, ipv4(src, dst, 6, seg))])
    elif case == "ethertype":
        send([frame(host_mac, int(a["type"], 0), b"\0" * 46 + marker)])
    elif case == "frag":
        # A SYN split after `first` bytes of its TCP header; `only` sends one of the two.
        first, only = int(a.get("first", "8")), a.get("only", "both")
        seg = tcp(src, dst, sport, dport, 0x02, marker)
        if v6(src):
            ident = 0x4242
            frags = []
            for off, more, part in ((0, 1, seg[:first]), (first, 0, seg[first:])):
                fh = struct.pack("!BBHI", 6, 0, (off // 8) << 3 | more, ident)
                frags.append(frame(host_mac, eth, ipv6(src, dst, 44, fh + part)))
        else:
            frags = [
                frame(host_mac, eth, ipv4(src, dst, 6, seg[:first], frag=0x2000)),
                frame(host_mac, eth, ipv4(src, dst, 6, seg[first:], frag=first // 8)),
            ]
        send({"both": frags, "first": frags[:1], "later": frags[1:]}[only])
    elif case == "ext6":
        # A SYN behind IPv6 extension headers, in the order given (0, 60, 43).
        kinds = [int(k) for k in a["chain"].split(",")]
        seg = tcp(src, dst, sport, dport, 0x02, marker)
        payload, nh = seg, 6
        for k in reversed(kinds):
            payload, nh = ext(nh, k) + payload, k
        send([frame(host_mac, eth, ipv6(src, dst, nh, payload))])
    elif case == "udp":
        d = udp(src, dst, sport, dport, marker)
        pkt = ipv6(src, dst, 17, d) if v6(src) else ipv4(src, dst, 17, d)
        send([frame(host_mac, eth, pkt)])
    else:
        sys.exit("unknown case " + case)


main()
