//! The transport: a yamux session over the plugin's one connection, and Packer's "mux broker"
//! on top of it.
//!
//! * [`FrameHeader`] is the pure 12-byte yamux header codec (big-endian; docs/protocol.md §2).
//!   The session itself is the `yamux` crate; the codec exists for byte-exact
//!   tests against the captures and for the conformance harness, which speaks raw frames (pings).
//! * [`MuxSession`] owns the `yamux::Connection` in one driver task: the crate is poll-based and
//!   nothing moves unless someone polls it. Outbound opens are requests over a channel; inbound
//!   streams go to the broker.
//! * [`MuxBroker`] mirrors packer-plugin-sdk `rpc/mux_broker.go`: every logical channel is a yamux
//!   stream whose first 4 bytes (from the dialler) are a little-endian broker id, echoed back by
//!   the acceptor as the ack. Each side allocates ids from its own counter starting at 1; id 0 is
//!   the plugin's main RPC server. Streams for an id nobody accepts are held for 5 s;
//!   [`MuxBroker::accept`] waits at most 5 s.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use yamux::{Mode, Stream};

/// How long an accepted-but-unclaimed stream, or an [`MuxBroker::accept`], waits (Go: 5 s).
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a dialler waits for the 4-byte ack. Go waits forever; we do not hang.
pub const DIAL_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Size of a yamux frame header.
pub const HEADER_LEN: usize = 12;

/// yamux frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Payload follows the header.
    Data = 0,
    /// `length` is a window delta.
    WindowUpdate = 1,
    /// `length` is an opaque value echoed by the ACK.
    Ping = 2,
    /// `length` is a code: 0 normal, 1 protocol error, 2 internal error.
    GoAway = 3,
}

/// Flag bits of a yamux header.
pub mod flags {
    /// Opens a stream / asks for a pong.
    pub const SYN: u16 = 1;
    /// Acknowledges a stream / answers a ping.
    pub const ACK: u16 = 2;
    /// Half-closes a stream.
    pub const FIN: u16 = 4;
    /// Resets a stream.
    pub const RST: u16 = 8;
}

/// One decoded yamux header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame type.
    pub kind: FrameType,
    /// Flag bits ([`flags`]).
    pub flags: u16,
    /// Stream id (0 for Ping and GoAway).
    pub stream_id: u32,
    /// Payload length, window delta, ping opaque value or GoAway code.
    pub length: u32,
}

/// A decoded frame: header, Data payload (empty for other types), bytes used.
pub type Frame<'a> = (FrameHeader, &'a [u8], usize);

/// Largest Data payload [`FrameHeader::decode_frame`] accepts (the `yamux` crate's own limit).
pub const MAX_DATA_LEN: u32 = 1024 * 1024;

/// Why a yamux header or the session failed.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// Version byte other than 0.
    #[error("yamux: unsupported version {0} (is the peer speaking yamux?)")]
    Version(u8),
    /// Unknown frame type.
    #[error("yamux: unknown frame type {0}")]
    Type(u8),
    /// A Data frame longer than [`MAX_DATA_LEN`].
    #[error("yamux: data frame of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(u32),
    /// The session failed (garbage, reset, I/O error).
    #[error("yamux session: {0}")]
    Session(#[from] yamux::ConnectionError),
    /// The session is gone.
    #[error("yamux session closed")]
    Closed,
    /// I/O on a stream failed.
    #[error("broker stream {id}: {source}")]
    Io {
        /// Broker id.
        id: u32,
        /// Cause.
        source: std::io::Error,
    },
    /// Nobody dialled the id in time.
    #[error("timeout waiting for accept of broker id {0}")]
    AcceptTimeout(u32),
    /// The dialled side did not ack in time.
    #[error("timeout waiting for the ack of broker id {0}")]
    AckTimeout(u32),
    /// The ack differed from the id.
    #[error("bad ack for broker id {id}: got {got}")]
    BadAck {
        /// Dialled id.
        id: u32,
        /// What came back.
        got: u32,
    },
}

impl FrameHeader {
    /// Encodes the 12-byte big-endian header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[1] = self.kind as u8;
        out[2..4].copy_from_slice(&self.flags.to_be_bytes());
        out[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        out[8..12].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// Decodes a header at the start of `buf`: `Ok(None)` if fewer than 12 bytes.
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, MuxError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if h[0] != 0 {
            return Err(MuxError::Version(h[0]));
        }
        let kind = match h[1] {
            0 => FrameType::Data,
            1 => FrameType::WindowUpdate,
            2 => FrameType::Ping,
            3 => FrameType::GoAway,
            t => return Err(MuxError::Type(t)),
        };
        let be32 = |r: &[u8]| u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
        Ok(Some((
            FrameHeader {
                kind,
                flags: u16::from_be_bytes([h[2], h[3]]),
                stream_id: be32(&h[4..8]),
                length: be32(&h[8..12]),
            },
            HEADER_LEN,
        )))
    }

    /// Decodes a whole frame (header plus Data payload) at the start of `buf`: `Ok(None)` until
    /// it is complete.
    pub fn decode_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, MuxError> {
        let Some((h, used)) = Self::decode(buf)? else {
            return Ok(None);
        };
        if h.kind != FrameType::Data {
            return Ok(Some((h, &[], used)));
        }
        if h.length > MAX_DATA_LEN {
            return Err(MuxError::TooLarge(h.length));
        }
        let end = used + h.length as usize;
        match buf.get(used..end) {
            Some(payload) => Ok(Some((h, payload, end))),
            None => Ok(None),
        }
    }

    /// True if `flag` is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

type OpenReply = oneshot::Sender<Result<Stream, MuxError>>;

/// What [`MuxSession::start`] returns: the handle, the inbound streams, the driver task.
pub type Started = (MuxSession, mpsc::Receiver<Stream>, tokio::task::JoinHandle<Result<(), MuxError>>);

/// A running yamux session: one driver task owning the `yamux::Connection`.
#[derive(Clone)]
pub struct MuxSession {
    open_tx: mpsc::Sender<OpenReply>,
    close: CancellationToken,
}

/// The yamux configuration: at most 64 streams, 16 MiB of receive window in all, so a peer
/// cannot make us buffer more than that.
fn yamux_config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    // Order matters: the crate asserts window >= 256 KiB * streams on each call.
    cfg.set_max_num_streams(64);
    cfg.set_max_connection_receive_window(Some(64 * 256 * 1024));
    cfg
}

impl MuxSession {
    /// Starts the driver over `io` in `mode` (the plugin is `Mode::Server`, Packer the client).
    /// Returns the session handle, the inbound streams and the driver's join handle, which
    /// resolves when the session ends (`Ok` on a clean close or EOF).
    pub fn start<T>(io: T, mode: Mode) -> Started
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (open_tx, open_rx) = mpsc::channel(16);
        let (inbound_tx, inbound_rx) = mpsc::channel(64);
        let close = CancellationToken::new();
        let conn = yamux::Connection::new(io, yamux_config(), mode);
        let driver = tokio::spawn(drive(conn, open_rx, inbound_tx, close.clone()));
        (MuxSession { open_tx, close }, inbound_rx, driver)
    }

    /// Opens an outbound stream.
    pub async fn open(&self) -> Result<Stream, MuxError> {
        let (tx, rx) = oneshot::channel();
        self.open_tx.send(tx).await.map_err(|_| MuxError::Closed)?;
        rx.await.map_err(|_| MuxError::Closed)?
    }

    /// Closes the session (GoAway, then the socket).
    pub fn close(&self) {
        self.close.cancel();
    }
}

async fn drive<T>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    inbound_tx: mpsc::Sender<Stream>,
    close: CancellationToken,
) -> Result<(), MuxError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending_open: Option<OpenReply> = None;
    let closing = close.cancelled();
    tokio::pin!(closing);
    let result = poll_fn(|cx| {
        if closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(true));
        }
        loop {
            if let Some(reply) = pending_open.take() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(r) => {
                        let _ = reply.send(r.map_err(MuxError::from));
                    }
                    Poll::Pending => {
                        pending_open = Some(reply);
                        break;
                    }
                }
            }
            match open_rx.poll_recv(cx) {
                Poll::Ready(Some(reply)) => pending_open = Some(reply),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    if inbound_tx.try_send(stream).is_err() {
                        tracing::warn!("yamux: inbound stream dropped (nobody routing streams)");
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(MuxError::from(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(false)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    match result {
        Ok(true) => {
            let closed = poll_fn(|cx| conn.poll_close(cx));
            match tokio::time::timeout(Duration::from_secs(2), closed).await {
                Ok(Err(e)) => Err(MuxError::from(e)),
                _ => Ok(()),
            }
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    }
}

enum Slot {
    /// An acceptor is waiting for this id.
    Waiting(oneshot::Sender<Stream>),
    /// A stream arrived before its acceptor; `u64` tells holds apart for the 5 s expiry.
    Arrived(Stream, u64),
}

struct BrokerInner {
    session: MuxSession,
    next_id: AtomicU32,
    generation: AtomicU64,
    slots: Mutex<HashMap<u32, Slot>>,
}

/// Packer's `MuxBroker`: broker ids over yamux streams.
/// See: packer-plugin-sdk `rpc/mux_broker.go`.
#[derive(Clone)]
pub struct MuxBroker {
    inner: Arc<BrokerInner>,
}

impl MuxBroker {
    /// Wraps a session and starts routing its inbound streams by their 4-byte id.
    pub fn new(session: MuxSession, mut inbound: mpsc::Receiver<Stream>) -> MuxBroker {
        let broker = MuxBroker {
            inner: Arc::new(BrokerInner {
                session,
                next_id: AtomicU32::new(0),
                generation: AtomicU64::new(0),
                slots: Mutex::new(HashMap::new()),
            }),
        };
        let router = broker.clone();
        tokio::spawn(async move {
            while let Some(stream) = inbound.recv().await {
                let router = router.clone();
                tokio::spawn(async move { router.route(stream).await });
            }
        });
        broker
    }

    /// The session underneath.
    pub fn session(&self) -> &MuxSession {
        &self.inner.session
    }

    /// Allocates the next id for a stream this side will accept (first id: 1).
    pub fn next_id(&self) -> u32 {
        self.inner.next_id.fetch_add(1, Ordering::SeqCst).wrapping_add(1)
    }

    async fn route(&self, mut stream: Stream) {
        let mut id = [0u8; 4];
        match tokio::time::timeout(ACCEPT_TIMEOUT, stream.read_exact(&mut id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!("broker: inbound stream closed before its id: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!("broker: inbound stream sent no id within 5 s; closing it");
                return;
            }
        }
        let id = u32::from_le_bytes(id);
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst);
        let mut stream = Some(stream);
        {
            let Ok(mut slots) = self.inner.slots.lock() else {
                return;
            };
            match slots.remove(&id) {
                Some(Slot::Waiting(tx)) => {
                    if let Some(s) = stream.take() {
                        if let Err(s) = tx.send(s) {
                            // The acceptor gave up in between: hold it like an early arrival.
                            slots.insert(id, Slot::Arrived(s, generation));
                        } else {
                            return;
                        }
                    }
                }
                Some(Slot::Arrived(..)) | None => {
                    if let Some(s) = stream.take() {
                        slots.insert(id, Slot::Arrived(s, generation));
                    }
                }
            }
        }
        tracing::debug!("broker: holding stream for id {id} until accepted (5 s)");
        tokio::time::sleep(ACCEPT_TIMEOUT).await;
        if let Ok(mut slots) = self.inner.slots.lock()
            && matches!(slots.get(&id), Some(Slot::Arrived(_, g)) if *g == generation)
        {
            slots.remove(&id);
            tracing::warn!("broker: nobody accepted id {id} within 5 s; stream closed");
        }
    }

    /// Waits (at most 5 s) for the peer to dial `id`, acks it and returns the stream.
    pub async fn accept(&self, id: u32) -> Result<Stream, MuxError> {
        let rx = {
            let mut slots = self.inner.slots.lock().map_err(|_| MuxError::Closed)?;
            match slots.remove(&id) {
                Some(Slot::Arrived(s, _)) => Ok(s),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(id, Slot::Waiting(tx));
                    Err(rx)
                }
            }
        };
        let mut stream = match rx {
            Ok(s) => s,
            Err(rx) => match tokio::time::timeout(ACCEPT_TIMEOUT, rx).await {
                Ok(Ok(s)) => s,
                _ => {
                    if let Ok(mut slots) = self.inner.slots.lock()
                        && matches!(slots.get(&id), Some(Slot::Waiting(_)))
                    {
                        slots.remove(&id);
                    }
                    return Err(MuxError::AcceptTimeout(id));
                }
            },
        };
        let io = |source| MuxError::Io { id, source };
        stream.write_all(&id.to_le_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        Ok(stream)
    }

    /// Opens a stream to the peer's id `id`: writes the id, waits for the same 4 bytes back.
    pub async fn dial(&self, id: u32) -> Result<Stream, MuxError> {
        let mut stream = self.inner.session.open().await?;
        let io = |source| MuxError::Io { id, source };
        stream.write_all(&id.to_le_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut ack = [0u8; 4];
        match tokio::time::timeout(DIAL_ACK_TIMEOUT, stream.read_exact(&mut ack)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(io(e)),
            Err(_) => return Err(MuxError::AckTimeout(id)),
        }
        let got = u32::from_le_bytes(ack);
        if got != id {
            return Err(MuxError::BadAck { id, got });
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    #[test]
    fn captured_headers_round_trip() {
        // tests/fixtures/wire/json-template-session.txt [0], [1], [2]; cancel-and-ping.txt ping.
        let cases: [([u8; 12], FrameHeader); 4] = [
            (
                [0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
                FrameHeader { kind: FrameType::WindowUpdate, flags: flags::SYN, stream_id: 1, length: 0 },
            ),
            (
                [0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0],
                FrameHeader { kind: FrameType::WindowUpdate, flags: flags::ACK, stream_id: 1, length: 0 },
            ),
            (
                [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 6, 0x9a],
                FrameHeader { kind: FrameType::Data, flags: 0, stream_id: 1, length: 1690 },
            ),
            (
                [0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0],
                FrameHeader { kind: FrameType::Ping, flags: flags::ACK, stream_id: 0, length: 0 },
            ),
        ];
        for (bytes, header) in cases {
            assert_eq!(header.encode(), bytes);
            assert_eq!(FrameHeader::decode(&bytes).unwrap(), Some((header, 12)));
        }
    }

    #[test]
    fn broker_id_frame_decodes_with_payload() {
        // [2]: Data stream 1, 4 bytes, broker id 0 (LE).
        let frame = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0];
        let (h, payload, used) = FrameHeader::decode_frame(&frame).unwrap().unwrap();
        assert_eq!((h.stream_id, payload, used), (1, &[0u8, 0, 0, 0][..], 16));
        assert_eq!(FrameHeader::decode_frame(&frame[..15]).unwrap(), None);
    }

    #[test]
    fn garbage_headers_are_errors() {
        assert!(matches!(FrameHeader::decode(b"5|unix|/tmp/x"), Err(MuxError::Version(b'5'))));
        assert!(matches!(FrameHeader::decode(&[0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(MuxError::Type(9))));
        assert!(matches!(
            FrameHeader::decode_frame(&[0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]),
            Err(MuxError::TooLarge(_))
        ));
    }

    /// Both ends in-process: the server's broker accepts id 0 and dials the client's id 1, with
    /// the echo ack on each.
    #[tokio::test]
    async fn broker_accept_and_dial_over_a_real_session() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ss, sin, _sd) = MuxSession::start(a.compat(), Mode::Server);
        let (cs, cin, _cd) = MuxSession::start(b.compat(), Mode::Client);
        let server = MuxBroker::new(ss, sin);
        let client = MuxBroker::new(cs, cin);
        assert_eq!(server.next_id(), 1);
        assert_eq!(client.next_id(), 1);

        let accept0 = tokio::spawn({
            let server = server.clone();
            async move { server.accept(0).await }
        });
        let mut c0 = client.dial(0).await.unwrap();
        let mut s0 = accept0.await.unwrap().unwrap();
        c0.write_all(b"ping").await.unwrap();
        c0.flush().await.unwrap();
        let mut got = [0u8; 4];
        s0.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        // Stream arrives before the acceptor: held, then claimed.
        let dial = tokio::spawn({
            let server = server.clone();
            async move { server.dial(1).await }
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while !client.holds(1) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the dialled stream reached the client's broker within 10 s");
        let _c1 = client.accept(1).await.unwrap();
        dial.await.unwrap().unwrap();
    }

    impl MuxBroker {
        /// True while a stream for `id` is held, waiting for its acceptor.
        fn holds(&self, id: u32) -> bool {
            matches!(self.inner.slots.lock().unwrap().get(&id), Some(Slot::Arrived(..)))
        }
    }

    /// On tokio's paused clock: the 5 s pass in virtual time, and the timeout fires at 5 s, not
    /// before and not much after.
    #[tokio::test(start_paused = true)]
    async fn accept_times_out_after_5_s() {
        let (a, _b) = tokio::io::duplex(1024);
        let (ss, sin, _sd) = MuxSession::start(a.compat(), Mode::Server);
        let server = MuxBroker::new(ss, sin);
        let start = tokio::time::Instant::now();
        assert!(matches!(server.accept(7).await, Err(MuxError::AcceptTimeout(7))));
        let waited = start.elapsed();
        assert!(
            (ACCEPT_TIMEOUT..ACCEPT_TIMEOUT + Duration::from_millis(100)).contains(&waited),
            "{waited:?}"
        );
    }
}
