//! The one place that owns a broker stream: buffered net/rpc message reads and atomic writes,
//! plus the two roles played over such a stream, [`RpcClient`] (Go `rpc.Client`) and
//! [`serve_rpc`] (Go `rpc.Server.ServeCodec`).
//!
//! Reads go through [`codec::decode_message`], which says "incomplete" until a whole
//! header+body pair is buffered; the buffer is capped at [`codec::MAX_MESSAGE`]. Writes of one
//! header+body pair happen under a lock so concurrent replies never interleave. The server runs
//! every request in its own task, as Go does: `PostProcessor.Cancel` arrives on the same stream
//! while `PostProcess` is still running (tests/fixtures/wire/cancel-and-ping.txt).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use rmpv::Value;
use tokio::sync::oneshot;

use super::codec::{self, CodecError, Message};
use super::mux::Stream;

/// Why a stream-level operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Undecodable bytes.
    #[error("net/rpc: {0}")]
    Codec(#[from] CodecError),
    /// The stream failed.
    #[error("net/rpc stream: {0}")]
    Io(#[from] std::io::Error),
    /// EOF in the middle of a message.
    #[error("net/rpc stream ended in the middle of a message")]
    Truncated,
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The remote returned this `Error` string.
    #[error("{0}")]
    Remote(String),
    /// The stream closed or failed before the reply.
    #[error("connection to Packer lost: {0}")]
    Closed(String),
}

/// Reading half: buffers bytes until a whole message is in.
pub struct ConnReader {
    io: ReadHalf<Stream>,
    buf: Vec<u8>,
}

/// Writing half, cheap to clone; each write is one whole message.
#[derive(Clone)]
pub struct ConnWriter {
    io: Arc<tokio::sync::Mutex<WriteHalf<Stream>>>,
}

/// Splits a stream into its reading and writing halves.
pub fn split(stream: Stream) -> (ConnReader, ConnWriter) {
    let (r, w) = stream.split();
    (
        ConnReader { io: r, buf: Vec::with_capacity(4096) },
        ConnWriter { io: Arc::new(tokio::sync::Mutex::new(w)) },
    )
}

impl ConnReader {
    /// The next message, or `Ok(None)` on a clean EOF between messages.
    pub async fn read_message(&mut self) -> Result<Option<Message>, ConnError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((msg, used)) = codec::decode_message(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(msg));
            }
            if self.buf.len() > codec::MAX_MESSAGE {
                return Err(CodecError::TooLarge.into());
            }
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(ConnError::Truncated) };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl ConnWriter {
    /// Writes and flushes one encoded message.
    pub async fn write_message(&self, bytes: &[u8]) -> Result<(), ConnError> {
        let mut io = self.io.lock().await;
        io.write_all(bytes).await?;
        io.flush().await?;
        Ok(())
    }

    /// Half-closes the stream (yamux FIN).
    pub async fn close(&self) -> Result<(), ConnError> {
        let mut io = self.io.lock().await;
        io.close().await?;
        Ok(())
    }
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>>>;

/// A net/rpc client over one stream (Go `rpc.Client`): calls may be concurrent; replies are
/// matched by `Seq`.
#[derive(Clone)]
pub struct RpcClient {
    writer: ConnWriter,
    seq: Arc<AtomicU64>,
    pending: Pending,
}

impl RpcClient {
    /// Takes over `stream` (already past the broker handshake) and starts reading replies.
    pub fn new(stream: Stream) -> RpcClient {
        let (mut reader, writer) = split(stream);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let routes = pending.clone();
        tokio::spawn(async move {
            let why = loop {
                match reader.read_message().await {
                    Ok(Some(msg)) => {
                        let waiter =
                            routes.lock().ok().and_then(|mut p| p.as_mut().and_then(|p| p.remove(&msg.seq)));
                        let Some(waiter) = waiter else {
                            tracing::warn!("rpc client: reply with unknown Seq {}", msg.seq);
                            continue;
                        };
                        let result = match msg.error {
                            Some(e) if !e.is_empty() => Err(RpcError::Remote(e)),
                            _ => Ok(msg.body),
                        };
                        let _ = waiter.send(result);
                    }
                    Ok(None) => break "stream closed".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            // Fail every outstanding and future call.
            let waiters = routes.lock().ok().and_then(|mut p| p.take());
            for (_, w) in waiters.into_iter().flatten() {
                let _ = w.send(Err(RpcError::Closed(why.clone())));
            }
        });
        RpcClient { writer, seq: Arc::new(AtomicU64::new(0)), pending }
    }

    /// Calls `service_method` with `body` and waits for the reply body.
    pub async fn call(&self, service_method: &str, body: Value) -> Result<Value, RpcError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let bytes =
            codec::encode_request(service_method, seq, &body).map_err(|e| RpcError::Closed(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().map_err(|_| RpcError::Closed("poisoned".into()))?;
            match pending.as_mut() {
                Some(p) => p.insert(seq, tx),
                None => return Err(RpcError::Closed("stream closed".into())),
            };
        }
        if let Err(e) = self.writer.write_message(&bytes).await {
            if let Ok(mut p) = self.pending.lock()
                && let Some(p) = p.as_mut()
            {
                p.remove(&seq);
            }
            return Err(RpcError::Closed(e.to_string()));
        }
        rx.await.map_err(|_| RpcError::Closed("stream closed".into()))?
    }

    /// Half-closes the stream.
    pub async fn close(&self) {
        let _ = self.writer.close().await;
    }
}

/// A net/rpc service: `call("Service.Method", arg)` returns the reply body or an error string.
pub trait Service: Send + Sync + 'static {
    /// Handles one request.
    fn call(
        self: Arc<Self>,
        service_method: String,
        body: Value,
    ) -> BoxFuture<'static, Result<Value, String>>;
}

/// Serves `service` on `stream` until the peer closes it: every request runs in its own task;
/// each reply is written atomically. Returns an error on undecodable input.
pub async fn serve_rpc<S: Service>(stream: Stream, service: Arc<S>) -> Result<(), ConnError> {
    let (mut reader, writer) = split(stream);
    while let Some(msg) = reader.read_message().await? {
        if msg.is_response() {
            tracing::warn!("rpc server: ignoring a response ({}) on a server stream", msg.service_method);
            continue;
        }
        let service = service.clone();
        let writer = writer.clone();
        tokio::spawn(async move {
            let method = msg.service_method.clone();
            let result = service.call(msg.service_method, msg.body).await;
            let bytes = match &result {
                Ok(body) => codec::encode_response(&method, msg.seq, "", body),
                Err(e) => {
                    // Go never sends an empty Error for a failure.
                    let e = if e.is_empty() { "error" } else { e.as_str() };
                    codec::encode_response(&method, msg.seq, e, &Value::Nil)
                }
            };
            match bytes {
                Ok(bytes) => {
                    if let Err(e) = writer.write_message(&bytes).await {
                        tracing::debug!("rpc server: reply to {method} not sent: {e}");
                    }
                }
                Err(e) => tracing::error!("rpc server: cannot encode reply to {method}: {e}"),
            }
        });
    }
    Ok(())
}

/// Go's reply for an unknown method.
pub fn unknown_method(service_method: &str) -> String {
    format!("rpc: can't find method {service_method}")
}
