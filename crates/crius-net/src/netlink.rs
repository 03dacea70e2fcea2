//! A small synchronous rtnetlink client: just the link, address and route requests the
//! networks here need. The socket talks to the network namespace of the thread that opened
//! it, so in-pod work opens its own socket on a thread inside the pod's namespace.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Receive buffer; the kernel never sends a datagram larger than this for our requests.
const RECV_BUF: usize = 64 * 1024;

/// An rtnetlink socket bound to the opening thread's network namespace.
#[derive(Debug)]
pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
}

/// Whether `e` is the kernel's "already exists".
pub(crate) fn is_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc_errno::EEXIST)
}

/// Whether `e` is the kernel's "no such device".
pub(crate) fn is_no_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc_errno::ENODEV)
}

mod libc_errno {
    pub(super) const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
    pub(super) const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends `msg` and collects the answers until the ACK (or DONE for dumps).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        let mut rbuf = vec![0u8; RECV_BUF];
        loop {
            let n = self.sock.recv(&mut &mut rbuf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let bytes = rbuf.get(offset..n).unwrap_or_default();
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(bytes)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.seq {
                    match msg.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                        NetlinkPayload::Error(e) => return Err(e.to_io()),
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    /// The link called `name`, if any.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of link `name`, if it exists.
    pub(crate) fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.link(name)?.map(|l| l.header.index))
    }

    /// Creates a bridge called `name`.
    pub(crate) fn create_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates a veth pair: `host` here, `peer` directly in the namespace `peer_netns`, so
    /// the pod-side name never clashes with host interfaces.
    pub(crate) fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: RawFd,
    ) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_owned()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Sets link `index` up, and enslaves it to `controller` when given.
    pub(crate) fn set_up(&mut self, index: u32, controller: Option<u32>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(c) = controller {
            msg.attributes.push(LinkAttribute::Controller(c));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Deletes link `index` (a veth's peer goes with it).
    pub(crate) fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_ACK)
            .map(drop)
    }

    /// Adds `addr/prefix` to link `index`. IPv6 addresses skip duplicate address detection:
    /// the pod CIDR is ours alone, and a tentative address would break the first seconds of
    /// traffic.
    pub(crate) fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            msg.header.flags = AddressHeaderFlags::Nodad;
            AddressFamily::Inet6
        };
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        if addr.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(addr));
        }
        msg.attributes.push(AddressAttribute::Address(addr));
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The addresses of link `index`.
    pub(crate) fn addresses(&mut self, index: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let prefix = a.header.prefix_len;
                    a.attributes.into_iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some((ip, prefix)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Adds the default route of `gateway`'s family via `gateway` out of link `index`.
    pub(crate) fn add_default_route(&mut self, gateway: IpAddr, index: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        let (family, gw) = match gateway {
            IpAddr::V4(v4) => (AddressFamily::Inet, RouteAddress::Inet(v4)),
            IpAddr::V6(v6) => (AddressFamily::Inet6, RouteAddress::Inet6(v6)),
        };
        msg.header.address_family = family;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(gw));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

/// Whether link message `l` is up.
pub(crate) fn is_up(l: &LinkMessage) -> bool {
    l.header.flags.contains(LinkFlags::Up)
}

/// The controller (bridge) index of link message `l`.
pub(crate) fn controller(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(c) => Some(*c),
        _ => None,
    })
}
