//! The server side of a ZeroMQ REP socket over one connection (ZMTP 3.0, the NULL
//! mechanism: rfc.zeromq.org/spec/23), enough for a REQ peer such as Frigate's `zmq`
//! detector: the greeting, the READY handshake, then requests answered one at a time.
//!
//! Written here rather than taken from a crate because every length on the wire is checked
//! against a limit before anything is allocated for it (a frame declaring 2^62 bytes is an
//! error), which the pure-Rust ZeroMQ crate (0.7.0) does not do: it reserves the declared
//! length first.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The greeting's fixed 64 bytes: signature, version 3.0, mechanism NULL, as-server 0.
fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// Frames a request may have, its envelope (the empty delimiter REQ sends) included.
const MAX_FRAMES: usize = 8;
/// Largest command body (READY with its properties, PING): a few hundred bytes in practice.
const MAX_COMMAND: usize = 4096;

/// What went wrong on a connection; it is closed after any of these.
#[derive(Debug)]
pub enum WireError {
    /// The peer closed the connection (between requests: the normal end).
    Closed,
    Io(std::io::Error),
    /// The peer broke the protocol or a limit: said, then the connection is closed.
    Protocol(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Closed => write!(f, "the peer closed the connection"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Protocol(m) => write!(f, "{m}"),
        }
    }
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(e)
        }
    }
}

fn bad(m: impl Into<String>) -> WireError {
    WireError::Protocol(m.into())
}

/// One connection of a REP socket.
pub struct RepConnection<S> {
    stream: S,
    /// Largest request (all its frames together), in bytes.
    max_request: usize,
}

/// A request: its envelope (routing frames up to and with the empty delimiter, sent back
/// with the reply) and its body frames.
pub struct Request {
    envelope: Vec<Vec<u8>>,
    pub frames: Vec<Vec<u8>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RepConnection<S> {
    /// Greets the peer and completes the handshake; the peer must be a REQ or DEALER socket
    /// speaking ZMTP 3 with the NULL mechanism.
    pub async fn accept(mut stream: S, max_request: usize) -> Result<Self, WireError> {
        stream.write_all(&greeting()).await?;
        stream.flush().await?;
        let mut g = [0u8; 64];
        stream.read_exact(&mut g).await?;
        if g[0] != 0xFF || g[9] & 1 != 1 {
            return Err(bad("not a ZeroMQ peer (bad greeting signature)"));
        }
        if g[10] < 3 {
            return Err(bad(format!(
                "the peer speaks ZMTP {}.x; 3.0 or later is needed",
                g[10]
            )));
        }
        let mechanism = &g[12..32];
        if !mechanism.starts_with(b"NULL") || mechanism[4..].iter().any(|&b| b != 0) {
            let name = String::from_utf8_lossy(mechanism);
            return Err(bad(format!(
                "security mechanism {:?} is not supported (only NULL)",
                name.trim_end_matches('\0')
            )));
        }
        let mut c = RepConnection {
            stream,
            max_request,
        };
        c.write_command(b"READY", &[(b"Socket-Type".as_slice(), b"REP".as_slice())])
            .await?;
        let (flags, body) = c.read_frame(MAX_COMMAND).await?;
        if flags & FLAG_COMMAND == 0 {
            return Err(bad("the peer sent a message before its READY command"));
        }
        let (name, props) = parse_command(&body)?;
        if name != b"READY" {
            return Err(bad(format!(
                "expected the READY command, got {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        let socket_type = props
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(b"Socket-Type"))
            .map(|(_, v)| *v)
            .unwrap_or_default();
        if socket_type != b"REQ" && socket_type != b"DEALER" {
            return Err(bad(format!(
                "a REP socket talks to REQ or DEALER, not {:?}",
                String::from_utf8_lossy(socket_type)
            )));
        }
        Ok(c)
    }

    /// The next request (a PING on the way is answered with PONG; other commands are
    /// ignored). `Err(Closed)` when the peer hung up between requests.
    pub async fn recv(&mut self) -> Result<Request, WireError> {
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut total = 0usize;
        loop {
            let (flags, body) = self.read_frame(self.max_request - total).await?;
            if flags & FLAG_COMMAND != 0 {
                if !frames.is_empty() {
                    return Err(bad("a command inside a multipart message"));
                }
                let (name, _) = parse_command(&body)?;
                if name == b"PING" {
                    self.pong(&body).await?;
                }
                continue;
            }
            total += body.len();
            frames.push(body);
            if flags & FLAG_MORE == 0 {
                break;
            }
            if frames.len() == MAX_FRAMES {
                return Err(bad(format!("a request of more than {MAX_FRAMES} frames")));
            }
        }
        // REQ puts an empty delimiter before the body; what precedes it (DEALER
        // identities, proxies' routing frames) is the envelope too.
        let split = frames
            .iter()
            .position(|f| f.is_empty())
            .map_or(0, |i| i + 1);
        let body = frames.split_off(split);
        Ok(Request {
            envelope: frames,
            frames: body,
        })
    }

    /// Answers `req` with `frames` (its envelope first).
    pub async fn reply(&mut self, req: &Request, frames: &[&[u8]]) -> Result<(), WireError> {
        let parts: Vec<&[u8]> = req
            .envelope
            .iter()
            .map(Vec::as_slice)
            .chain(frames.iter().copied())
            .collect();
        for (i, f) in parts.iter().enumerate() {
            let more = if i + 1 < parts.len() { FLAG_MORE } else { 0 };
            self.write_frame(more, f).await?;
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// One frame of at most `limit` bytes: (flags, body). The length is checked before its
    /// buffer is allocated.
    async fn read_frame(&mut self, limit: usize) -> Result<(u8, Vec<u8>), WireError> {
        let flags = self.stream.read_u8().await?;
        if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
            return Err(bad(format!(
                "frame flags {flags:#04x} have reserved bits set"
            )));
        }
        let len = if flags & FLAG_LONG != 0 {
            self.stream.read_u64().await?
        } else {
            u64::from(self.stream.read_u8().await?)
        };
        if len > limit as u64 {
            return Err(bad(format!(
                "a frame of {len} bytes: over the limit of {limit} bytes left for this request"
            )));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).await?;
        Ok((flags, body))
    }

    async fn write_frame(&mut self, flags: u8, body: &[u8]) -> Result<(), WireError> {
        if body.len() > 255 {
            self.stream.write_u8(flags | FLAG_LONG).await?;
            self.stream.write_u64(body.len() as u64).await?;
        } else {
            self.stream.write_u8(flags).await?;
            self.stream.write_u8(body.len() as u8).await?;
        }
        self.stream.write_all(body).await?;
        Ok(())
    }

    async fn write_command(
        &mut self,
        name: &[u8],
        props: &[(&[u8], &[u8])],
    ) -> Result<(), WireError> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name);
        for (k, v) in props {
            body.push(k.len() as u8);
            body.extend_from_slice(k);
            body.extend_from_slice(&(v.len() as u32).to_be_bytes());
            body.extend_from_slice(v);
        }
        self.write_frame(FLAG_COMMAND, &body).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// PONG with the PING's context (ZMTP 3.1 heartbeats).
    async fn pong(&mut self, ping: &[u8]) -> Result<(), WireError> {
        // PING: name, TTL (2 bytes), context (the rest, at most 16 bytes).
        let context = ping.get(1 + 4 + 2..).unwrap_or_default();
        let mut body = vec![4u8];
        body.extend_from_slice(b"PONG");
        body.extend_from_slice(&context[..context.len().min(16)]);
        self.write_frame(FLAG_COMMAND, &body).await?;
        self.stream.flush().await?;
        Ok(())
    }
}

/// A command's name and its properties (name, value) where it has them (READY).
type Command<'a> = (&'a [u8], Vec<(&'a [u8], &'a [u8])>);

fn parse_command(body: &[u8]) -> Result<Command<'_>, WireError> {
    let n = *body.first().ok_or_else(|| bad("an empty command"))? as usize;
    let name = body
        .get(1..1 + n)
        .ok_or_else(|| bad("a command shorter than its name"))?;
    let mut props = Vec::new();
    if name == b"READY" {
        let mut rest = &body[1 + n..];
        while !rest.is_empty() {
            let kn = rest[0] as usize;
            let key = rest
                .get(1..1 + kn)
                .ok_or_else(|| bad("a cut READY property"))?;
            let vl = rest
                .get(1 + kn..5 + kn)
                .ok_or_else(|| bad("a cut READY property"))?;
            let vn = u32::from_be_bytes([vl[0], vl[1], vl[2], vl[3]]) as usize;
            let value = rest
                .get(5 + kn..(5 + kn).saturating_add(vn))
                .ok_or_else(|| bad("a cut READY property"))?;
            props.push((key, value));
            rest = &rest[5 + kn + vn..];
        }
    }
    Ok((name, props))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The REQ side of the handshake and one request, written byte by byte here from the
    /// spec, against the REP side over an in-memory pipe.
    #[tokio::test]
    async fn handshake_request_and_reply_on_the_wire() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut c = RepConnection::accept(a, 1 << 20).await.unwrap();
            let req = c.recv().await.unwrap();
            assert_eq!(req.frames, vec![b"head".to_vec(), vec![7u8; 300]]);
            c.reply(&req, &[b"ok", &[1u8; 256]]).await.unwrap();
            c.recv().await.err().map(|e| e.to_string())
        });
        let mut g = [0u8; 64];
        b.read_exact(&mut g).await.unwrap();
        assert_eq!(
            (g[0], g[9], g[10], &g[12..16]),
            (0xFF, 0x7F, 3, b"NULL".as_slice())
        );
        b.write_all(&greeting()).await.unwrap();
        // Its READY: a short command frame naming Socket-Type REP.
        let (flags, len) = (b.read_u8().await.unwrap(), b.read_u8().await.unwrap());
        let mut ready = vec![0u8; len as usize];
        b.read_exact(&mut ready).await.unwrap();
        assert_eq!(flags, FLAG_COMMAND);
        assert_eq!(&ready[..6], b"\x05READY");
        assert_eq!(&ready[6..], b"\x0bSocket-Type\x00\x00\x00\x03REP");
        let mut ours = vec![FLAG_COMMAND, 25, 5];
        ours.extend_from_slice(b"READY\x0bSocket-Type\x00\x00\x00\x03REQ");
        b.write_all(&ours).await.unwrap();
        // A PING on the way is answered PONG with its context.
        b.write_all(b"\x04\x0b\x04PING\x00\x0actx\x00")
            .await
            .unwrap();
        // The request: delimiter, a short frame, a long one.
        b.write_all(&[FLAG_MORE, 0, FLAG_MORE, 4]).await.unwrap();
        b.write_all(b"head").await.unwrap();
        b.write_all(&[FLAG_LONG]).await.unwrap();
        b.write_all(&300u64.to_be_bytes()).await.unwrap();
        b.write_all(&[7u8; 300]).await.unwrap();
        let mut pong = [0u8; 2 + 5 + 4];
        b.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\x04\x09\x04PONGctx\x00");
        // The reply: delimiter, "ok", a long frame of 256 bytes.
        let mut r = [0u8; 2 + 2 + 2 + 9 + 256];
        b.read_exact(&mut r).await.unwrap();
        assert_eq!(&r[..6], &[FLAG_MORE, 0, FLAG_MORE, 2, b'o', b'k']);
        assert_eq!(r[6], FLAG_LONG);
        assert_eq!(&r[7..15], &256u64.to_be_bytes());
        assert!(r[15..].iter().all(|&x| x == 1));
        drop(b);
        assert_eq!(
            server.await.unwrap().as_deref(),
            Some("the peer closed the connection")
        );
    }

    /// A frame declaring more than the limit is refused before anything is allocated for
    /// it; so are a wrong greeting, another mechanism and a PUB peer.
    #[tokio::test]
    async fn hostile_peers_are_refused() {
        async fn after_handshake(then: &[u8]) -> String {
            let (a, mut b) = tokio::io::duplex(1 << 16);
            let mut msg = greeting().to_vec();
            msg.extend_from_slice(&[FLAG_COMMAND, 25, 5]);
            msg.extend_from_slice(b"READY\x0bSocket-Type\x00\x00\x00\x03REQ");
            msg.extend_from_slice(then);
            b.write_all(&msg).await.unwrap();
            let r = async {
                let mut c = RepConnection::accept(a, 1 << 20).await?;
                c.recv().await.map(|_| ())
            };
            r.await.err().unwrap().to_string()
        }
        let mut huge = vec![FLAG_LONG];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        let e = after_handshake(&huge).await;
        assert!(
            e.contains("18446744073709551615 bytes: over the limit"),
            "{e}"
        );
        let mut many = Vec::new();
        for _ in 0..MAX_FRAMES {
            many.extend_from_slice(&[FLAG_MORE, 1, 0]);
        }
        let e = after_handshake(&many).await;
        assert!(e.contains("more than 8 frames"), "{e}");
        let e = after_handshake(&[0x80, 0]).await;
        assert!(e.contains("reserved bits"), "{e}");

        let refused = |mut g: Vec<u8>, ready: &'static [u8]| async move {
            let (a, mut b) = tokio::io::duplex(1 << 16);
            g.extend_from_slice(&[FLAG_COMMAND, ready.len() as u8]);
            g.extend_from_slice(ready);
            b.write_all(&g).await.unwrap();
            RepConnection::accept(a, 1 << 20)
                .await
                .err()
                .unwrap()
                .to_string()
        };
        let mut http = greeting().to_vec();
        http[..4].copy_from_slice(b"GET ");
        assert!(refused(http, b"").await.contains("bad greeting"));
        let mut plain = greeting().to_vec();
        plain[12..17].copy_from_slice(b"PLAIN");
        assert!(refused(plain, b"")
            .await
            .contains("\"PLAIN\" is not supported"));
        let e = refused(
            greeting().to_vec(),
            b"\x05READY\x0bSocket-Type\x00\x00\x00\x03PUB",
        )
        .await;
        assert!(e.contains("not \"PUB\""), "{e}");
    }
}
