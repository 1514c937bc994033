//! One tunnel connection, whichever transport carries it: QUIC, or the TCP
//! transport (TLS, WebSocket, and [`crate::mux`] streams).
//!
//! Both ends speak the same protocol over a [`Link`]: the agent opens its
//! control stream, the control plane opens one stream per call, frames go
//! through [`crate::wire`]. What differs is hidden here:
//! - closing with a code: QUIC's application close, or the WebSocket close
//!   frame;
//! - a caller giving up on a call: over QUIC the control plane stops the
//!   stream and the agent's [`SendHalf::stopped`] fires; over TCP the
//!   control plane keeps its half open until the call ends and drops the
//!   stream to give up, which the agent reads as the end of the stream
//!   ([`RecvHalf::abandoned`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use crate::mux::{Mux, MuxStream};

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The peer closed it with a tunnel close code.
    #[error("closed by the peer ({code}): {reason}")]
    ClosedByPeer {
        /// `dibop_protocol::codes::CLOSE_*`.
        code: u32,
        /// For a person.
        reason: String,
    },
    /// This side closed it.
    #[error("closed")]
    ClosedHere,
    /// The path or the peer failed.
    #[error("{0}")]
    Lost(String),
}

impl From<quinn::ConnectionError> for LinkError {
    fn from(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => LinkError::ClosedByPeer {
                code: u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            quinn::ConnectionError::LocallyClosed => LinkError::ClosedHere,
            other => LinkError::Lost(other.to_string()),
        }
    }
}

/// The TCP transport's side of a link.
#[derive(Debug)]
pub struct TcpLink {
    mux: Mux,
    id: usize,
    remote: SocketAddr,
    peer: Option<Vec<CertificateDer<'static>>>,
}

/// Ids of TCP links: apart from quinn's (which are small counters).
static NEXT_TCP_ID: AtomicUsize = AtomicUsize::new(1 << 40);

/// A tunnel connection. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Link {
    /// Over QUIC.
    Quic(quinn::Connection),
    /// Over TLS, WebSocket and multiplexed streams.
    Tcp(Arc<TcpLink>),
}

impl Link {
    /// A TCP link over `mux`, to `remote`, whose client certificate chain
    /// (on the control plane's side) is `peer`.
    pub fn tcp(mux: Mux, remote: SocketAddr, peer: Option<Vec<CertificateDer<'static>>>) -> Link {
        Link::Tcp(Arc::new(TcpLink {
            mux,
            id: NEXT_TCP_ID.fetch_add(1, Ordering::Relaxed),
            remote,
            peer,
        }))
    }

    /// `quic` or `wss`.
    pub fn transport(&self) -> &'static str {
        match self {
            Link::Quic(_) => "quic",
            Link::Tcp(_) => "wss",
        }
    }

    /// Opens a stream to the peer.
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), LinkError> {
        match self {
            Link::Quic(c) => {
                let (s, r) = c.open_bi().await?;
                Ok((SendHalf::Quic(s), RecvHalf::Quic(r)))
            }
            Link::Tcp(t) => {
                let stream = t.mux.open_bi().await.map_err(|e| t.error(e))?;
                Ok(split(stream))
            }
        }
    }

    /// The next stream the peer opens.
    pub async fn accept_bi(&self) -> Result<(SendHalf, RecvHalf), LinkError> {
        match self {
            Link::Quic(c) => {
                let (s, r) = c.accept_bi().await?;
                Ok((SendHalf::Quic(s), RecvHalf::Quic(r)))
            }
            Link::Tcp(t) => {
                let stream = t.mux.accept_bi().await.map_err(|e| t.error(e))?;
                Ok(split(stream))
            }
        }
    }

    /// Closes with a tunnel close code and a reason the peer reads.
    pub fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Link::Quic(c) => c.close(code.into(), reason),
            Link::Tcp(t) => t.mux.close(code, &String::from_utf8_lossy(reason)),
        }
    }

    /// Resolves when the link has ended, with why.
    pub async fn closed(&self) -> LinkError {
        match self {
            Link::Quic(c) => c.closed().await.into(),
            Link::Tcp(t) => {
                t.mux.closed().await;
                t.ended()
            }
        }
    }

    /// Why it ended, once it has.
    pub fn close_reason(&self) -> Option<LinkError> {
        match self {
            Link::Quic(c) => c.close_reason().map(Into::into),
            Link::Tcp(t) => t.mux.is_closed().then(|| t.ended()),
        }
    }

    /// An id unique among this process's live links.
    pub fn stable_id(&self) -> usize {
        match self {
            Link::Quic(c) => c.stable_id(),
            Link::Tcp(t) => t.id,
        }
    }

    /// The path's round-trip time as QUIC measures it; zero over TCP (the
    /// liveness deadlines then use their floors).
    pub fn rtt(&self) -> Duration {
        match self {
            Link::Quic(c) => c.rtt(),
            Link::Tcp(_) => Duration::ZERO,
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Link::Quic(c) => c.remote_address(),
            Link::Tcp(t) => t.remote,
        }
    }

    /// The peer's certificate chain, when it presented one.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        match self {
            Link::Quic(c) => c
                .peer_identity()?
                .downcast::<Vec<CertificateDer<'static>>>()
                .ok()
                .map(|b| *b),
            Link::Tcp(t) => t.peer.clone(),
        }
    }
}

impl TcpLink {
    fn ended(&self) -> LinkError {
        match self.mux.close_reason() {
            Some(r) => LinkError::ClosedByPeer {
                code: r.code,
                reason: r.reason,
            },
            None if self.mux.closed_here() => LinkError::ClosedHere,
            None => LinkError::Lost("the TCP connection ended".into()),
        }
    }

    fn error(&self, e: io::Error) -> LinkError {
        if self.mux.is_closed() {
            self.ended()
        } else {
            LinkError::Lost(e.to_string())
        }
    }
}

fn split(stream: MuxStream) -> (SendHalf, RecvHalf) {
    let (r, w) = tokio::io::split(stream);
    (SendHalf::Tcp(w), RecvHalf::Tcp(r))
}

/// The sending half of a tunnel stream.
#[derive(Debug)]
pub enum SendHalf {
    /// A QUIC stream.
    Quic(quinn::SendStream),
    /// A multiplexed TCP stream.
    Tcp(tokio::io::WriteHalf<MuxStream>),
}

impl SendHalf {
    /// Says nothing more will be sent. Over TCP the half stays open: the
    /// stream is dropped when the exchange ends, and dropped early to give up.
    pub async fn finish(&mut self) {
        match self {
            SendHalf::Quic(s) => {
                let _ = s.finish();
            }
            SendHalf::Tcp(s) => {
                let _ = s.flush().await;
            }
        }
    }

    /// Abandons the stream with an error code (QUIC); over TCP the stream
    /// is reset when it is dropped.
    pub fn reset(&mut self, code: u32) {
        if let SendHalf::Quic(s) = self {
            let _ = s.reset(code.into());
        }
    }

    /// Resolves when the peer no longer wants what this half sends (QUIC's
    /// STOP_SENDING); never over TCP, where [`RecvHalf::abandoned`] tells.
    pub async fn stopped(&mut self) {
        match self {
            SendHalf::Quic(s) => {
                let _ = s.stopped().await;
            }
            SendHalf::Tcp(_) => std::future::pending().await,
        }
    }
}

impl AsyncWrite for SendHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SendHalf::Quic(s) => Pin::new(s).poll_write(cx, buf).map_err(io::Error::other),
            SendHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SendHalf::Quic(s) => Pin::new(s).poll_flush(cx),
            SendHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SendHalf::Quic(s) => Pin::new(s).poll_shutdown(cx),
            SendHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The receiving half of a tunnel stream.
#[derive(Debug)]
pub enum RecvHalf {
    /// A QUIC stream.
    Quic(quinn::RecvStream),
    /// A multiplexed TCP stream.
    Tcp(tokio::io::ReadHalf<MuxStream>),
}

impl RecvHalf {
    /// Tells the peer this half reads no more (QUIC's STOP_SENDING); over
    /// TCP, dropping the stream does.
    pub fn stop(&mut self, code: u32) {
        if let RecvHalf::Quic(r) = self {
            let _ = r.stop(code.into());
        }
    }

    /// Over TCP, resolves when the peer drops the stream (it gave up on the
    /// call); never over QUIC, where [`SendHalf::stopped`] tells.
    pub async fn abandoned(&mut self) {
        match self {
            RecvHalf::Quic(_) => std::future::pending().await,
            RecvHalf::Tcp(r) => {
                let mut scratch = [0u8; 64];
                while let Ok(n) = r.read(&mut scratch).await {
                    if n == 0 {
                        return;
                    }
                }
            }
        }
    }
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RecvHalf::Quic(r) => Pin::new(r).poll_read(cx, buf),
            RecvHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}
