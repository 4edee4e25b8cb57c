//! The two halves of a connection's byte stream: inbound bytes become a
//! stream of frames for the connection actor; outbound frames are written
//! by a task that batches everything queued since its last write into one
//! write call (many small messages, one syscall; a lone message goes out
//! at once).

use super::backpressure::Backpressure;
use super::{ConnActor, WriteFailed};
use crate::payload::Payload;
use actix::WeakAddr;
use capnp_actix_proto::frame::{self, Frame, FrameDecoder, Limits};
use capnp_actix_proto::message::OutMessage;
use capnp_actix_proto::Error;
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use std::io::IoSlice;
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
    let state = Some((read, FrameDecoder::new(limits), backpressure));
    futures::stream::unfold(state, |state| async move {
        let (mut read, mut decoder, backpressure) = state?;
        loop {
            // Flow control: hand out nothing more (buffered or not) while
            // the connection has enough to do.
            backpressure.permit().await;
            match decoder.next_frame() {
                Ok(Some(frame)) => return Some((Ok(frame), Some((read, decoder, backpressure)))),
                Ok(None) => {}
                Err(e) => return Some((Err(ReadFailure::Protocol(e.into())), None)),
            }
            // Bytes go straight where the decoder keeps them: its own small
            // buffer, or a large frame's body (as much as it has room for:
            // one read can take in all the socket holds).
            let Some(space) = decoder.read_space(usize::MAX) else {
                let e = Error::failed("the frame decoder failed");
                return Some((Err(ReadFailure::Protocol(e)), None));
            };
            let result = read.read(space).await;
            match result {
                Ok(0) if decoder.buffered() == 0 => return None,
                Ok(0) => {
                    let e = Error::disconnected("the peer closed the connection mid-message");
                    return Some((Err(ReadFailure::Disconnected(e)), None));
                }
                Ok(n) => decoder.filled(n),
                Err(e) => {
                    let e = Error::disconnected(format!("read failed: {e}"));
                    return Some((Err(ReadFailure::Disconnected(e)), None));
                }
            }
        }
    })
}

/// A message on its way to the writer task.
pub(crate) enum Outgoing {
    /// A framed message (small ones: copied, so that many go out in one
    /// write).
    Bytes(Vec<u8>),
    /// A large message built here, written segment by segment, uncopied.
    Built(OutMessage),
    /// Large results shared with the call that made them, written uncopied.
    Shared(Arc<Payload>),
}

impl Outgoing {
    /// Bytes this puts on the wire.
    pub(crate) fn len(&self) -> usize {
        match self {
            Outgoing::Bytes(bytes) => bytes.len(),
            Outgoing::Built(message) => framed_len(message),
            Outgoing::Shared(payload) => payload.built().map(framed_len).unwrap_or(0),
        }
    }
}

/// The framed size of `message`.
pub(crate) fn framed_len(message: &OutMessage) -> usize {
    let output = message.get_segments_for_output();
    let segments = frame::segments_to_send(&output);
    frame::table_len(segments.len()) + segments.iter().map(|s| s.len()).sum::<usize>()
}

/// Writes `message`'s segment table into `batch`, sends the batch, then
/// the segments themselves.
async fn write_segments<W: AsyncWrite + Unpin>(
    write: &mut W,
    batch: &mut Vec<u8>,
    message: &OutMessage,
) -> std::io::Result<()> {
    let output = message.get_segments_for_output();
    let segments = frame::segments_to_send(&output);
    frame::encode_table(segments, batch);
    // The batch (with the table at its end) and the segments in one
    // vectored write: a large message costs no more syscalls than the
    // socket's buffer makes necessary.
    let mut slices: Vec<IoSlice<'_>> = std::iter::once(&batch[..])
        .chain(segments.iter().copied())
        .map(IoSlice::new)
        .collect();
    write_all_vectored(write, &mut slices).await?;
    batch.clear();
    Ok(())
}

/// Writes every byte of `slices`, in as few calls as the writer allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    write: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = write.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Writes queued messages until the queue closes, then shuts the write
/// half down. Everything queued since the last write goes out together:
/// small messages in one write call, large ones without a copy. A write
/// error is reported to the connection.
pub(crate) async fn write_frames<W>(
    mut write: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    backpressure: Arc<Backpressure>,
    conn: WeakAddr<ConnActor>,
) where
    W: AsyncWrite + Unpin + 'static,
{
    let mut batch = Vec::new();
    while let Some(first) = queue.next().await {
        let mut items = vec![first];
        while let Ok(more) = queue.try_recv() {
            items.push(more);
        }
        let total: usize = items.iter().map(Outgoing::len).sum();
        let written = async {
            for item in items {
                match item {
                    Outgoing::Bytes(bytes) if batch.is_empty() => batch = bytes,
                    Outgoing::Bytes(bytes) => batch.extend_from_slice(&bytes),
                    Outgoing::Built(message) => {
                        write_segments(&mut write, &mut batch, &message).await?
                    }
                    Outgoing::Shared(payload) => {
                        if let Some(message) = payload.built() {
                            write_segments(&mut write, &mut batch, message).await?
                        }
                    }
                }
            }
            if !batch.is_empty() {
                write.write_all(&batch).await?;
                batch.clear();
            }
            write.flush().await
        };
        let result = written.await;
        backpressure.written(total);
        if let Err(e) = result {
            if let Some(conn) = conn.upgrade() {
                conn.do_send(WriteFailed(Error::disconnected(format!(
                    "write failed: {e}"
                ))));
            }
            return;
        }
        // Keep a modest buffer between batches, not the largest ever seen.
        if batch.capacity() > 1 << 20 {
            batch = Vec::new();
        }
    }
    let _ = write.shutdown().await;
}
