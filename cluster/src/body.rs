//! A request body fed chunk by chunk from a channel, so that a part's bytes
//! go to the object store while they are hashed, and its last bytes can be
//! held back until its link is proven. Ending the channel with an error (or
//! dropping it early) cuts the request off before its declared length: the
//! store then keeps whatever the part held before.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// The sending side: one chunk at a time, in order.
pub(crate) struct Feed {
    tx: mpsc::Sender<Result<Bytes, Cut>>,
}

/// Why a body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the part was refused before its last byte")]
pub(crate) struct Cut;

/// The receiving side, handed to the S3 client as the request body.
pub(crate) struct Channel {
    rx: mpsc::Receiver<Result<Bytes, Cut>>,
    len: u64,
    sent: u64,
}

/// A body of exactly `len` bytes, fed through the returned [`Feed`].
pub(crate) fn channel(len: u64) -> (Feed, Channel) {
    let (tx, rx) = mpsc::channel(4);
    (Feed { tx }, Channel { rx, len, sent: 0 })
}

impl Feed {
    /// Sends one chunk; `false` when the request is gone (the store
    /// answered, or the connection broke).
    pub(crate) async fn send(&self, chunk: Bytes) -> bool {
        self.tx.send(Ok(chunk)).await.is_ok()
    }

    /// Cuts the request off: the store sees it end short.
    pub(crate) async fn cut(self) {
        let _ = self.tx.send(Err(Cut)).await;
    }
}

impl Body for Channel {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.sent += b.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            // A feed dropped before the last byte (its request was
            // cancelled) cuts the body off too: never a short body that
            // ends cleanly.
            Poll::Ready(None) if self.sent < self.len => Poll::Ready(Some(Err(Cut))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}
