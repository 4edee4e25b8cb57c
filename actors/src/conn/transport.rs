//! The two halves of a connection's byte stream: inbound bytes become a
//! stream of frames for the connection actor; outbound frames are written
//! by a task that batches everything queued since its last write into one
//! write call (many small messages, one syscall; a lone message goes out
//! at once).

use super::backpressure::Backpressure;
use super::{ConnActor, WriteFailed};
use actix::WeakAddr;
use capnp_actix_proto::frame::{Frame, FrameDecoder, Limits};
use capnp_actix_proto::Error;
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What ends the inbound stream.
pub(crate) enum ReadFailure {
    /// The peer broke the protocol (a frame over a limit): abort.
    Protocol(Error),
    /// The transport ended or failed: no point in writing an Abort.
    Disconnected(Error),
}

/// Inbound frames, decoded under `limits`.
pub(crate) fn frames<R>(
    read: R,
    limits: Limits,
    backpressure: Arc<Backpressure>,
) -> impl Stream<Item = Result<Frame, ReadFailure>>
where
    R: AsyncRead + Unpin + 'static,
{
    let state = Some((
        read,
        FrameDecoder::new(limits),
        vec![0u8; 64 * 1024],
        backpressure,
    ));
    futures::stream::unfold(state, |state| async move {
        let (mut read, mut decoder, mut buf, backpressure) = state?;
        loop {
            // Flow control: hand out nothing more (buffered or not) while
            // the connection has enough to do.
            backpressure.permit().await;
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    return Some((Ok(frame), Some((read, decoder, buf, backpressure))))
                }
                Ok(None) => {}
                Err(e) => return Some((Err(ReadFailure::Protocol(e.into())), None)),
            }
            match read.read(&mut buf).await {
                Ok(0) if decoder.buffered() == 0 => return None,
                Ok(0) => {
                    let e = Error::disconnected("the peer closed the connection mid-message");
                    return Some((Err(ReadFailure::Disconnected(e)), None));
                }
                Ok(n) => decoder.push(&buf[..n]),
                Err(e) => {
                    let e = Error::disconnected(format!("read failed: {e}"));
                    return Some((Err(ReadFailure::Disconnected(e)), None));
                }
            }
        }
    })
}

/// Writes queued frames until the queue closes, then shuts the write half
/// down. A write error is reported to the connection.
pub(crate) async fn write_frames<W>(
    mut write: W,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    backpressure: Arc<Backpressure>,
    conn: WeakAddr<ConnActor>,
) where
    W: AsyncWrite + Unpin + 'static,
{
    while let Some(mut batch) = queue.next().await {
        while let Ok(more) = queue.try_recv() {
            batch.extend_from_slice(&more);
        }
        let written = async {
            write.write_all(&batch).await?;
            write.flush().await
        };
        let result = written.await;
        backpressure.written(batch.len());
        if let Err(e) = result {
            if let Some(conn) = conn.upgrade() {
                conn.do_send(WriteFailed(Error::disconnected(format!(
                    "write failed: {e}"
                ))));
            }
            return;
        }
    }
    let _ = write.shutdown().await;
}
