//! The two halves of a connection's byte stream: inbound bytes become a
//! stream of frames for the connection actor; outbound frames are written
//! by a task that batches everything queued since its last write into one
//! vectored write call (many messages, small or large, one syscall; a lone
//! message goes out at once).

use super::backpressure::Backpressure;
use super::{ConnActor, WriteFailed};
use crate::payload::Payload;
use crate::stats;
use actix::WeakAddr;
use capnp_actix_proto::frame::{self, Frame, FrameDecoder, Limits};
use capnp_actix_proto::message::OutMessage;
use capnp_actix_proto::Error;
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most turns a write waits for work under way on its thread (a call
/// pipelined on another takes about two turns to run after it: its
/// answer's actor, then its object's).
const MAX_WAIT_TURNS: u32 = 64;

/// A write with this many messages or bytes queued goes out without
/// waiting: a batch that large is worth sending at once, so that the peer
/// works on it while we go on (many calls in flight).
const WAIT_MESSAGES: usize = 8;
const WAIT_BYTES: usize = 64 * 1024;

/// A framed message or segment larger than this is written from where it
/// is instead of being copied into the batch.
const ADOPT_BYTES: usize = 4096;

/// Lets every task queued ahead of this one run once: wakes itself and
/// waits once (the runtime puts it at the back of its queue; unlike
/// tokio's `yield_now`, it does not wait for the next I/O poll).
struct YieldTurn(bool);

impl Future for YieldTurn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// What ends the inbound stream.
pub(crate) enum ReadFailure {
    /// The peer broke the protocol (a frame over a limit): abort.
    Protocol(Error),
    /// The transport ended or failed: no point in writing an Abort.
    Disconnected(Error),
}

/// Inbound frames, decoded under `limits`.
pub(crate) fn frames<R>(read: R, limits: Limits, backpressure: Arc<Backpressure>) -> Frames<R>
where
    R: AsyncRead + Unpin + 'static,
{
    Frames {
        read,
        decoder: FrameDecoder::new(limits),
        backpressure,
        ended: false,
    }
}

/// The stream of [`frames`]. (A stream of its own rather than an
/// `unfold`: its state stays where it is instead of moving into and out of
/// a new future for every frame.)
pub(crate) struct Frames<R> {
    read: R,
    decoder: FrameDecoder,
    backpressure: Arc<Backpressure>,
    /// Nothing more comes (the transport ended or a frame broke a limit).
    ended: bool,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    /// Ends the stream with `failure`.
    fn fail(&mut self, failure: ReadFailure) -> Poll<Option<Result<Frame, ReadFailure>>> {
        self.ended = true;
        Poll::Ready(Some(Err(failure)))
    }
}

impl<R: AsyncRead + Unpin> Stream for Frames<R> {
    type Item = Result<Frame, ReadFailure>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            // Flow control: hand out nothing more (buffered or not) while
            // the connection has enough to do.
            if Pin::new(&mut this.backpressure.permit())
                .poll(cx)
                .is_pending()
            {
                return Poll::Pending;
            }
            match this.decoder.next_frame() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => return this.fail(ReadFailure::Protocol(e.into())),
            }
            // Bytes go straight where the decoder keeps them: its own small
            // buffer, or a large frame's body (as much as it has room for:
            // one read can take in all the socket holds).
            let Some(space) = this.decoder.read_space(usize::MAX) else {
                let e = Error::failed("the frame decoder failed");
                return this.fail(ReadFailure::Protocol(e));
            };
            let mut space = ReadBuf::new(space);
            let read = match Pin::new(&mut this.read).poll_read(cx, &mut space) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(read) => read.map(|()| space.filled().len()),
            };
            match read {
                Ok(0) if this.decoder.buffered() == 0 => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    let e = Error::disconnected("the peer closed the connection mid-message");
                    return this.fail(ReadFailure::Disconnected(e));
                }
                Ok(n) => {
                    this.backpressure.read(n);
                    this.decoder.filled(n)
                }
                Err(e) => {
                    let e = Error::disconnected(format!("read failed: {e}"));
                    return this.fail(ReadFailure::Disconnected(e));
                }
            }
        }
    }
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

/// A stretch of a batch on the wire: bytes copied into the batch's
/// buffer, or a large segment (or framed message) written from where it
/// is.
enum Piece<'a> {
    Copied(std::ops::Range<usize>),
    InPlace(&'a [u8]),
}

/// Ends the stretch of bytes copied into `batch` since `run`, if any: it
/// goes before the next piece.
fn end_run(batch: &[u8], pieces: &mut Vec<Piece<'_>>, run: &mut usize) {
    if batch.len() > *run {
        pieces.push(Piece::Copied(*run..batch.len()));
        *run = batch.len();
    }
}

/// Writes `items` in one vectored write (as the writer allows): small
/// messages, segment tables and small segments copied into `batch`, large
/// segments and messages uncopied. Many large messages queued together
/// (a stream's writes) cost one syscall, not one each.
async fn write_batch<W: AsyncWrite + Unpin>(
    write: &mut W,
    batch: &mut Vec<u8>,
    items: &[Outgoing],
) -> std::io::Result<()> {
    // (Small messages only, the usual batch: copied, and written from the
    // batch alone.)
    let small = |item: &Outgoing| matches!(item, Outgoing::Bytes(b) if b.len() <= ADOPT_BYTES);
    if items.iter().all(small) {
        for item in items {
            if let Outgoing::Bytes(bytes) = item {
                batch.extend_from_slice(bytes);
            }
        }
        write.write_all(batch).await?;
        batch.clear();
        return Ok(());
    }
    let outputs: Vec<_> = items
        .iter()
        .map(|item| match item {
            Outgoing::Bytes(_) => None,
            Outgoing::Built(message) => Some(message.get_segments_for_output()),
            Outgoing::Shared(payload) => payload.built().map(|m| m.get_segments_for_output()),
        })
        .collect();
    let mut pieces = Vec::new();
    // (Where the bytes copied since the last uncopied piece start.)
    let mut run = batch.len();
    for (item, output) in items.iter().zip(&outputs) {
        match (item, output) {
            (Outgoing::Bytes(bytes), _) if bytes.len() > ADOPT_BYTES => {
                end_run(batch, &mut pieces, &mut run);
                pieces.push(Piece::InPlace(bytes));
            }
            (Outgoing::Bytes(bytes), _) => batch.extend_from_slice(bytes),
            (_, Some(output)) => {
                let segments = frame::segments_to_send(output);
                frame::encode_table(segments, batch);
                for segment in segments {
                    if segment.len() > ADOPT_BYTES {
                        end_run(batch, &mut pieces, &mut run);
                        pieces.push(Piece::InPlace(segment));
                    } else {
                        batch.extend_from_slice(segment);
                    }
                }
            }
            (_, None) => {}
        }
    }
    end_run(batch, &mut pieces, &mut run);
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .map(|piece| match piece {
            Piece::Copied(range) => IoSlice::new(&batch[range.clone()]),
            Piece::InPlace(bytes) => IoSlice::new(bytes),
        })
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
    // (Kept from batch to batch, as `batch` is.)
    let mut items = Vec::new();
    while let Some(first) = queue.next().await {
        let mut total = first.len();
        items.push(first);
        // As the C++ reference does (kj's `evalLast`), the write waits for
        // the work already under way on this thread while answers of this
        // connection still run: a call that settles locally sets off the
        // next (a chain of pipelined calls, each on the last one's
        // result), and each adds a `Return`. So the writer lets everything
        // queued ahead of it run, and again while that did any work of
        // ours, then sends all of it in one write: one syscall, and one
        // wake-up of the peer, instead of one per message. The wait is
        // bounded in turns, messages and bytes.
        let mut turns = 0;
        let mut idle = false;
        loop {
            while let Ok(more) = queue.try_recv() {
                total += more.len();
                items.push(more);
            }
            // (Only while answers of this connection still run: other
            // connections' work is no reason for this one to wait.)
            if idle
                || turns == MAX_WAIT_TURNS
                || items.len() >= WAIT_MESSAGES
                || total >= WAIT_BYTES
                || !backpressure.answers_running()
            {
                break;
            }
            let work = stats::work_count();
            YieldTurn(false).await;
            turns += 1;
            idle = stats::work_count() == work;
        }
        let written = async {
            write_batch(&mut write, &mut batch, &items).await?;
            write.flush().await
        };
        let result = written.await;
        items.clear();
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
