//! Streams over one WebSocket: what the TCP transport carries the tunnel
//! protocol on where UDP (and so QUIC) cannot pass.
//!
//! QUIC gives the tunnel a stream per call, each with its own flow control,
//! and application close codes. Over TCP the same comes from two layers:
//! - [`WsIo`] turns a WebSocket (binary messages, over TLS, through
//!   proxies that speak HTTP) into a byte stream, and carries the close
//!   code and reason in the WebSocket close frame (`4000 + code`);
//! - [yamux] multiplexes streams over it: either side opens bidirectional
//!   streams, each with a credit window (a slow reader of one call's large
//!   answer stops only that stream's sender, never the others'), and a
//!   stream dropped unfinished is reset, which the peer sees as the call
//!   abandoned.
//!
//! [`Mux`] owns the yamux connection in a driver task and hands out
//! streams as tokio `AsyncRead + AsyncWrite` halves, like quinn's.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// WebSocket close codes 4000-4999 are the application's: ours are
/// `4000 + code` for the tunnel's close codes (`dibop_protocol::codes`).
const APP_CLOSE_BASE: u16 = 4000;
/// Writes are gathered up to this size into one WebSocket message.
const MESSAGE_MAX: usize = 64 * 1024;

/// Why a tunnel connection closed: a tunnel close code and its reason, as
/// the peer (or this side) gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The tunnel close code (`dibop_protocol::codes::CLOSE_*`).
    pub code: u32,
    /// For a person.
    pub reason: String,
}

/// The close reason slot shared by the byte stream and the handle.
#[derive(Debug, Default)]
struct Closing {
    /// The peer's close frame, once read.
    received: Option<CloseReason>,
    /// What this side closes with.
    sending: Option<CloseReason>,
    /// This side asked to close.
    here: bool,
}

/// A WebSocket as a byte stream: binary messages in, binary messages out.
#[derive(Debug)]
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    /// The message being read, and how far.
    reading: bytes::Bytes,
    /// Bytes written since the last message was sent.
    writing: Vec<u8>,
    closing: Arc<Mutex<Closing>>,
    /// The close frame went out: what is written after it is dropped.
    close_sent: bool,
}

fn lock(c: &Mutex<Closing>) -> std::sync::MutexGuard<'_, Closing> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsIo<S> {
    fn new(ws: WebSocketStream<S>, closing: Arc<Mutex<Closing>>) -> Self {
        WsIo {
            ws,
            reading: bytes::Bytes::new(),
            writing: Vec::new(),
            closing,
            close_sent: false,
        }
    }

    /// Sends this side's close frame, if it is closing: first, so the
    /// peer reads the code before yamux's own goodbye ends its reading.
    fn poll_send_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.close_sent || lock(&self.closing).sending.is_none() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
        let Some(close) = lock(&self.closing).sending.take() else {
            return Poll::Ready(Ok(()));
        };
        let code = APP_CLOSE_BASE.saturating_add(u16::try_from(close.code).unwrap_or(999));
        // A close frame's reason is at most 123 bytes.
        let mut reason = close.reason;
        while reason.len() > 123 {
            reason.pop();
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        self.close_sent = true;
        self.writing.clear();
        // The peer may be gone already; closing goes on regardless.
        let _ = Pin::new(&mut self.ws).start_send(Message::Close(Some(frame)));
        Poll::Ready(Ok(()))
    }

    /// Sends what was gathered as one message.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.writing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
        let data = std::mem::take(&mut self.writing);
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(data.into()))
            .map_err(ws_error)?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.reading.is_empty() {
                let n = this.reading.len().min(buf.remaining());
                buf.put_slice(&this.reading.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.reading = data,
                // Answered by tungstenite on the next write or flush.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer sent a text message on the tunnel",
                    )));
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = frame {
                        let code = u16::from(f.code);
                        lock(&this.closing).received = Some(CloseReason {
                            code: u32::from(code.saturating_sub(APP_CLOSE_BASE)),
                            reason: f.reason.to_string(),
                        });
                    }
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send_close(cx))?;
        if this.close_sent {
            return Poll::Ready(Ok(buf.len()));
        }
        if this.writing.len() >= MESSAGE_MAX {
            ready!(this.poll_send_gathered(cx))?;
        }
        let n = buf.len().min(MESSAGE_MAX - this.writing.len());
        this.writing.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_close(cx))?;
        if !this.close_sent {
            ready!(this.poll_send_gathered(cx))?;
        }
        match Pin::new(&mut this.ws).poll_flush(cx) {
            Poll::Ready(Err(_)) if this.close_sent => Poll::Ready(Ok(())),
            other => other.map_err(ws_error),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_close(cx))?;
        if !this.close_sent {
            ready!(this.poll_send_gathered(cx))?;
        }
        match Pin::new(&mut this.ws).poll_close(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
            )) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(ws_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Which end of the tunnel this is (yamux numbers streams by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The agent: it dialled.
    Agent,
    /// The control plane: it accepted.
    ControlPlane,
}

/// One multiplexed stream, as tokio I/O.
pub type MuxStream = Compat<yamux::Stream>;

type OpenReply = oneshot::Sender<io::Result<MuxStream>>;

enum Request {
    Open(OpenReply),
    Close(CloseReason),
}

/// A tunnel connection over one WebSocket: open and accept streams, close
/// with a code. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Mux {
    requests: mpsc::UnboundedSender<Request>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<MuxStream>>,
    closing: Arc<Mutex<Closing>>,
    ended: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Open(_) => "Open",
            Request::Close(_) => "Close",
        })
    }
}

/// Per-stream and connection limits: a stream's window grows to what its
/// calls need (large answers go at line rate), all streams together stay
/// within `max_connection_window`.
fn config(max_streams: usize) -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(max_streams.max(2));
    c.set_max_connection_receive_window(Some(1024 * 1024 * 1024));
    c
}

impl Mux {
    /// Starts the connection over `ws` (its handshake done) on a driver
    /// task; at most `max_streams` open at once.
    pub fn new<S>(ws: WebSocketStream<S>, side: Side, max_streams: usize) -> Mux
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let closing = Arc::new(Mutex::new(Closing::default()));
        let io = WsIo::new(ws, closing.clone()).compat();
        let mode = match side {
            Side::Agent => yamux::Mode::Client,
            Side::ControlPlane => yamux::Mode::Server,
        };
        let connection = yamux::Connection::new(io, config(max_streams), mode);
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let ended = tokio_util::sync::CancellationToken::new();
        tokio::spawn(drive(
            connection,
            requests_rx,
            incoming_tx,
            closing.clone(),
            ended.clone(),
        ));
        Mux {
            requests,
            incoming: tokio::sync::Mutex::new(incoming),
            closing,
            ended,
        }
    }

    /// Opens a stream to the peer.
    pub async fn open_bi(&self) -> io::Result<MuxStream> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Open(tx))
            .map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    /// The next stream the peer opened; an error once the connection ended.
    pub async fn accept_bi(&self) -> io::Result<MuxStream> {
        let mut incoming = self.incoming.lock().await;
        incoming.recv().await.ok_or_else(|| self.gone())
    }

    /// Closes the connection with a tunnel close code: open streams end,
    /// and the peer reads the code and reason.
    pub fn close(&self, code: u32, reason: &str) {
        lock(&self.closing).here = true;
        let _ = self.requests.send(Request::Close(CloseReason {
            code,
            reason: reason.to_owned(),
        }));
    }

    /// Resolves when the connection has ended (closed by either side or failed).
    pub async fn closed(&self) {
        self.ended.cancelled().await;
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Whether this side closed it.
    pub fn closed_here(&self) -> bool {
        lock(&self.closing).here
    }

    /// The peer's close code and reason, once it closed the connection.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.closing).received.clone()
    }

    fn gone(&self) -> io::Error {
        match self.close_reason() {
            Some(r) => io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the peer closed the tunnel ({}): {}", r.code, r.reason),
            ),
            None => io::Error::new(io::ErrorKind::ConnectionAborted, "the tunnel is closed"),
        }
    }
}

/// Owns the yamux connection: serves open and close requests and passes on
/// the streams the peer opens, until the connection ends.
async fn drive<T>(
    mut connection: yamux::Connection<T>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    incoming: mpsc::UnboundedSender<MuxStream>,
    closing: Arc<Mutex<Closing>>,
    ended: tokio_util::sync::CancellationToken,
) where
    T: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin,
{
    let mut waiting: VecDeque<OpenReply> = VecDeque::new();
    let mut close_requested = false;
    std::future::poll_fn(|cx| {
        loop {
            match requests.poll_recv(cx) {
                Poll::Ready(Some(Request::Open(reply))) => waiting.push_back(reply),
                Poll::Ready(Some(Request::Close(reason))) => {
                    lock(&closing).sending = Some(reason);
                    close_requested = true;
                }
                // Every handle is gone: close.
                Poll::Ready(None) => close_requested = true,
                Poll::Pending => break,
            }
        }
        if close_requested {
            for reply in waiting.drain(..) {
                let _ = reply.send(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the tunnel is closing",
                )));
            }
            return connection.poll_close(cx).map(|_| ());
        }
        while !waiting.is_empty() {
            match connection.poll_new_outbound(cx) {
                Poll::Ready(result) => {
                    if let Some(reply) = waiting.pop_front() {
                        let _ = reply.send(result.map(|s| s.compat()).map_err(io::Error::other));
                    }
                }
                Poll::Pending => break,
            }
        }
        loop {
            match connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // Nobody accepts any more: the stream is dropped (reset).
                    let _ = incoming.send(stream.compat());
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!("tunnel connection failed: {e}");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    for reply in waiting {
        let _ = reply.send(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the tunnel is closed",
        )));
    }
    ended.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Two ends of a tunnel over an in-memory pipe.
    async fn pair() -> (Mux, Mux) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let agent = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let cp = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (
            Mux::new(agent, Side::Agent, 64),
            Mux::new(cp, Side::ControlPlane, 64),
        )
    }

    #[tokio::test]
    async fn either_side_opens_streams_and_data_crosses_both_ways() {
        let (agent, cp) = pair().await;
        let cp = Arc::new(cp);
        // The control plane opens a call stream; the agent answers on it.
        let server = {
            let cp = cp.clone();
            tokio::spawn(async move {
                let mut s = cp.open_bi().await.unwrap();
                s.write_all(b"call 1").await.unwrap();
                s.flush().await.unwrap();
                let mut answer = vec![0; 8];
                s.read_exact(&mut answer).await.unwrap();
                answer
            })
        };
        let mut call = agent.accept_bi().await.unwrap();
        let mut got = vec![0; 6];
        call.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"call 1");
        call.write_all(b"result 1").await.unwrap();
        call.flush().await.unwrap();
        assert_eq!(server.await.unwrap(), b"result 1");
        // And the agent opens one (its control stream).
        let mut control = agent.open_bi().await.unwrap();
        control.write_all(b"hello").await.unwrap();
        control.flush().await.unwrap();
        let mut accepted = cp.accept_bi().await.unwrap();
        let mut hello = vec![0; 5];
        accepted.read_exact(&mut hello).await.unwrap();
        assert_eq!(hello, b"hello");
    }

    #[tokio::test]
    async fn a_large_answer_nobody_reads_does_not_hold_up_other_calls() {
        let (agent, cp) = pair().await;
        let cp = Arc::new(cp);
        // The agent writes 8 MiB on one stream the control plane never reads
        // (a stream reaches the peer with its first bytes: the call).
        let mut big = cp.open_bi().await.unwrap();
        big.write_all(b"call").await.unwrap();
        big.flush().await.unwrap();
        let mut big_at_agent = agent.accept_bi().await.unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..128 {
                if big_at_agent.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            big_at_agent
        });
        // Meanwhile 50 small calls go through.
        for i in 0..50u32 {
            let cp = cp.clone();
            let caller = tokio::spawn(async move {
                let mut s = cp.open_bi().await.unwrap();
                s.write_all(&i.to_be_bytes()).await.unwrap();
                s.flush().await.unwrap();
                let mut back = [0u8; 4];
                s.read_exact(&mut back).await.unwrap();
                u32::from_be_bytes(back)
            });
            let mut s = agent.accept_bi().await.unwrap();
            let mut n = [0u8; 4];
            s.read_exact(&mut n).await.unwrap();
            s.write_all(&n).await.unwrap();
            s.flush().await.unwrap();
            let back = tokio::time::timeout(Duration::from_secs(10), caller)
                .await
                .expect("a small call waited behind the large answer")
                .unwrap();
            assert_eq!(back, i);
        }
        assert!(
            !writer.is_finished(),
            "the large answer's window should hold its writer back"
        );
        drop(big);
        writer.abort();
    }

    #[tokio::test]
    async fn a_dropped_stream_is_reset_for_the_peer() {
        let (agent, cp) = pair().await;
        let mut s = cp.open_bi().await.unwrap();
        s.write_all(b"call").await.unwrap();
        s.flush().await.unwrap();
        let mut at_agent = agent.accept_bi().await.unwrap();
        let mut got = [0u8; 4];
        at_agent.read_exact(&mut got).await.unwrap();
        // The caller gives up: the agent's read ends instead of waiting.
        drop(s);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), at_agent.read_to_end(&mut rest))
            .await
            .expect("the reset did not reach the agent");
        assert!(read.is_err() || rest.is_empty(), "{read:?}");
    }

    #[tokio::test]
    async fn the_close_code_and_reason_reach_the_peer() {
        let (agent, cp) = pair().await;
        // A stream first, so both ends are up.
        let mut s = agent.open_bi().await.unwrap();
        s.write_all(b"hi").await.unwrap();
        s.flush().await.unwrap();
        let _ = cp.accept_bi().await.unwrap();
        cp.close(0x10, "revoked by an admin");
        tokio::time::timeout(Duration::from_secs(5), agent.closed())
            .await
            .expect("the agent did not see the close");
        assert_eq!(
            agent.close_reason(),
            Some(CloseReason {
                code: 0x10,
                reason: "revoked by an admin".into()
            })
        );
        let e = agent.open_bi().await.unwrap_err();
        assert!(e.to_string().contains("revoked by an admin"), "{e}");
    }
}
