//! An rtnetlink socket of this process, in the network namespace of the thread that opens it:
//! requests the kernel acknowledges, single answers (`ip route get`) and dumps (`ip rule`,
//! `ip neigh`, `bridge fdb`, `ip link`). The agent reads and changes routes, rules, neighbours
//! and links through it, so it needs no iproute2 (or any other program) at run time.
//!
//! # Errors
//!
//! A request the kernel refuses fails with `io::Error::from_raw_os_error(errno)` and nothing
//! else, so callers can tell the kernel's answers apart (`raw_os_error() == Some(EEXIST)`).
//! Failures of the socket itself, and answers that cannot be decoded, carry a description and
//! no OS error code.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::fmt;
use std::io;

/// A dump the kernel reports as interrupted (the list changed meanwhile) is taken again, this
/// many times at most.
const DUMP_TRIES: usize = 5;
/// Enough for any netlink message: the kernel sizes a dump's messages to the reader's buffer,
/// up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// An rtnetlink socket; requests go one at a time, each answered in full before the next.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace, with strict checking of requests
    /// (Linux 4.20+: the kernel filters dumps by the attributes given, and refuses fields it
    /// would otherwise ignore); older kernels dump everything, so callers filter answers too.
    pub fn open() -> io::Result<Rtnl> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| context(e, "opening an rtnetlink socket"))?;
        socket
            .bind_auto()
            .map_err(|e| context(e, "binding an rtnetlink socket"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| context(e, "connecting an rtnetlink socket"))?;
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Rtnl { socket, seq: 0 })
    }

    /// A change the kernel acknowledges (`flags`: `NLM_F_CREATE`, `NLM_F_REPLACE`, ...).
    pub fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(msg, NLM_F_ACK | flags).map(|_| ())
    }

    /// A request for one object (`RTM_GETROUTE` for a destination, `RTM_GETLINK` by index):
    /// the kernel's answers to it, usually one.
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        // The acknowledgement after the answer says it is complete.
        self.exchange(msg, NLM_F_ACK).map(|(msgs, _)| msgs)
    }

    /// Every object of a kind the request selects, taken again when the kernel says the list
    /// changed during the dump.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_TRIES {
            let (msgs, interrupted) = self.exchange(msg.clone(), NLM_F_DUMP)?;
            if !interrupted {
                return Ok(msgs);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("the kernel's list changed during each of {DUMP_TRIES} dumps"),
        ))
    }

    /// Sends one request and reads the answers to it until the acknowledgement or the end of
    /// the dump; whether a dump was interrupted.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| context(e, "sending an rtnetlink request"))?;

        let mut out = Vec::new();
        let mut interrupted = false;
        let mut rx = vec![0u8; RECV_BUF];
        loop {
            let n = match self.socket.recv(&mut &mut rx[..], libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(context(e, "reading an rtnetlink answer")),
            };
            if n > rx.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an rtnetlink answer of {n} bytes exceeds {RECV_BUF}"),
                ));
            }
            let mut at = 0;
            while at < n {
                let len = NetlinkBuffer::new_checked(&rx[at..n])
                    .map(|b| b.length() as usize)
                    .map_err(|e| invalid(format_args!("{e}")))?;
                if len == 0 {
                    return Err(invalid("an empty netlink message"));
                }
                let raw = &rx[at..n];
                at += len.next_multiple_of(4);
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw)
                    .map_err(|e| invalid(format_args!("{e}")))?;
                // Answers to an earlier request that gave up (none today) are not ours.
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Done(d) if d.code != 0 => {
                        return Err(io::Error::from_raw_os_error(d.code.abs()));
                    }
                    NetlinkPayload::Done(_) => return Ok((out, interrupted)),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok((out, interrupted)),
                        Some(_) => return Err(e.to_io()),
                    },
                    _ => {}
                }
            }
        }
    }
}

/// `e` with what was being done, keeping its kind (and dropping its OS error code: see the
/// module's documentation).
pub fn context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn invalid(what: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decoding an rtnetlink answer: {what}"),
    )
}
