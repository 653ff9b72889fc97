//! One synchronous NETLINK_ROUTE socket for the whole crate: dumps (the
//! capture's probe reads addresses and routes) and acknowledged requests
//! (the recovery image sets links, addresses and routes up).

use anyhow::{Context, Result, anyhow, bail};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

pub(crate) struct Rtnetlink {
    socket: Socket,
    sequence: u32,
}

impl Rtnetlink {
    pub(crate) fn open() -> Result<Self> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).context("cannot open a NETLINK_ROUTE socket")?;
        socket
            .bind_auto()
            .context("cannot bind the NETLINK_ROUTE socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("cannot connect the NETLINK_ROUTE socket to the kernel")?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Send `msg` and wait for the kernel's acknowledgement.
    pub(crate) fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let what = "netlink request";
        self.send(msg, NLM_F_ACK | flags, what)?;
        self.replies(what, |msg| match msg.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => Ok(Some(())),
                Some(_) => Err(e.to_io()).context("the kernel refused"),
            },
            _ => Ok(None),
        })
    }

    /// Send a dump request and collect every reply until NLMSG_DONE. A dump
    /// the kernel marks interrupted (the table changed under it) is retried.
    pub(crate) fn dump(
        &mut self,
        request: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        const ATTEMPTS: usize = 5;
        let what = format!("{what} dump");
        for _ in 0..ATTEMPTS {
            self.send(request.clone(), NLM_F_DUMP, &what)?;
            let mut replies = Vec::new();
            let mut interrupted = false;
            let complete = self.replies(&what, |msg| {
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Done(_) => Ok(Some(!interrupted)),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        Err(e.to_io()).with_context(|| format!("{what}: kernel refused"))
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        Ok(None)
                    }
                    _ => Ok(None),
                }
            })?;
            if complete {
                return Ok(replies);
            }
        }
        bail!("{what}: interrupted {ATTEMPTS} times in a row (the table keeps changing)")
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<()> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .with_context(|| format!("{what}: cannot send it"))?;
        Ok(())
    }

    /// Read the answers to the last request, handing each to `answer` until
    /// it returns a result.
    fn replies<T>(
        &mut self,
        what: &str,
        mut answer: impl FnMut(NetlinkMessage<RouteNetlinkMessage>) -> Result<Option<T>>,
    ) -> Result<T> {
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .with_context(|| format!("{what}: cannot receive the answer"))?;
            let mut offset = 0;
            while offset < data.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| anyhow!("{what}: cannot decode the answer: {e}"))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.sequence
                    && let Some(done) = answer(msg)?
                {
                    return Ok(done);
                }
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3; // messages are NLMSG_ALIGNTO (4) aligned
            }
        }
    }
}
