//! Writes wait for the work under way on their thread (as the C++
//! reference's `evalLast` does), so that the messages a burst of local work
//! produces leave in one write: one syscall and one wake-up of the peer,
//! not one per message. Everything queued goes out in that one write,
//! large messages too (a stream's writes), with the same bytes as one
//! write each would give.

mod support;

#[allow(dead_code, clippy::all)]
mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

use bench_capnp::sink;
use capnp::traits::HasTypeId;
use capnp_actix::{Bootstrap, Capability, ConnActor, ConnOptions, Watch};
use capnp_actix_proto::cap_descriptor::PromisedAnswer;
use capnp_actix_proto::frame::{FrameDecoder, Limits};
use capnp_actix_proto::message::{self as out, OutMessage};
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::{CapDescriptor, MessageTarget};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use support::raw::{self, *};
// The generated code names its own types as `crate::test_capnp::...`.
use support::test_capnp;
use support::{Tally, TestImpl};
use test_capnp::{counter, test};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A transport's write half that counts the writes made on it (each one
/// a syscall on a socket). It takes up to `max` bytes a write, of a
/// vectored write too (all of it, as a socket with room does, if `max` is
/// large).
struct CountingWriter<W> {
    inner: W,
    writes: Arc<AtomicUsize>,
    max: usize,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.max);
        let written = Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
        if matches!(written, Poll::Ready(Ok(_))) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // (The in-memory duplex takes one buffer a write: gathered here.)
        let max = self.max;
        let all: Vec<u8> = bufs
            .iter()
            .flat_map(|b| b.iter().copied())
            .take(max)
            .collect();
        self.poll_write(cx, &all)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `Test.newCounter(start)` on `target`, as question `question_id`.
fn new_counter_call(question_id: u32, target: MessageTarget, start: i64) -> OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    let mut c = m.init_root::<message::Builder>().init_call();
    c.set_question_id(question_id);
    target.write(c.reborrow().init_target());
    c.set_interface_id(<test::Client as HasTypeId>::TYPE_ID);
    c.set_method_id(3);
    c.init_params()
        .get_content()
        .init_as::<test::new_counter_params::Builder>()
        .set_start(start);
    m
}

/// `Counter.increment(by)` on `target`, as question `question_id`.
fn increment_call(question_id: u32, target: MessageTarget, by: i64) -> OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    let mut c = m.init_root::<message::Builder>().init_call();
    c.set_question_id(question_id);
    target.write(c.reborrow().init_target());
    c.set_interface_id(<counter::Client as HasTypeId>::TYPE_ID);
    c.set_method_id(0);
    c.init_params()
        .get_content()
        .init_as::<counter::increment_params::Builder>()
        .set_by(by);
    m
}

/// A burst of calls pipelined on a call that has not returned (a counter
/// made by the first call, incremented by the next six) is answered in one
/// write: the seven `Return`s wait for each other. (Eight or more go out
/// without waiting, for the peer to work on while we go on.)
#[test]
fn the_returns_of_a_burst_of_pipelined_calls_leave_in_one_write() {
    run(async {
        let main = Capability::from_server::<test::Client, _>(TestImpl::new(&Tally::default()));
        let (conn_end, mut peer) = tokio::io::duplex(1 << 20);
        let (read, write) = tokio::io::split(conn_end);
        let writes = Arc::new(AtomicUsize::new(0));
        let write = CountingWriter {
            inner: write,
            writes: writes.clone(),
            max: usize::MAX,
        };
        let _conn = ConnActor::start(read, write, ConnOptions::new().main_interface(main));
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut buf = vec![0u8; 1 << 16];

        // Bootstrap, answered in a write of its own.
        peer.write_all(&encoded(&out::bootstrap(0))).await.unwrap();
        let mut frames = Vec::new();
        while frames.is_empty() {
            let n = peer.read(&mut buf).await.unwrap();
            decoder.push(&buf[..n]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        let main = bootstrap_export(&frames[0], 0);
        let before = writes.load(Ordering::SeqCst);

        // One write with the burst: the counter and ten increments on it.
        let mut burst = encoded(&new_counter_call(1, MessageTarget::ImportedCap(main), 100));
        for i in 0..6u32 {
            let on_counter = MessageTarget::PromisedAnswer(PromisedAnswer {
                question_id: 1,
                transform: vec![0],
            });
            burst.extend(encoded(&increment_call(2 + i, on_counter, 1)));
        }
        peer.write_all(&burst).await.unwrap();

        let mut returns = 0;
        while returns < 7 {
            let n = actix_rt::time::timeout(WAIT, peer.read(&mut buf))
                .await
                .expect("the returns arrive")
                .unwrap();
            decoder.push(&buf[..n]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                assert_eq!(tag(&frame), 3, "a Return");
                returns += 1;
            }
        }
        assert_eq!(
            writes.load(Ordering::SeqCst) - before,
            1,
            "the seven Returns were sent in more than one write"
        );
    });
}

/// A client connection whose writes are counted (and cut at `max` bytes),
/// with a `Sink` the test (its peer) hosts: gives the peer, the sink and
/// the count.
async fn counted_client(max: usize) -> (Peer, sink::Client, Arc<AtomicUsize>) {
    let (conn_end, peer_end) = tokio::io::duplex(4 << 20);
    let (read, write) = tokio::io::split(conn_end);
    let writes = Arc::new(AtomicUsize::new(0));
    let counting = CountingWriter {
        inner: write,
        writes: writes.clone(),
        max,
    };
    let conn = ConnActor::start(read, counting, ConnOptions::new());
    let ended = conn.send(Watch).await.unwrap();
    let mut peer = Peer {
        conn,
        io: peer_end,
        decoder: FrameDecoder::new(Limits::default()),
        ended,
    };
    let cap = peer.conn.send(Bootstrap).await.unwrap().unwrap();
    let question = raw::expect_bootstrap(&peer.recv().await);
    peer.send(&raw::return_cap(question, CapDescriptor::SenderHosted(7)))
        .await;
    let sink: sink::Client = cap.client();
    sink.client.when_resolved().await.unwrap();
    (peer, sink, writes)
}

/// Sends a `Sink.write` of each of `chunks`, back to back: each send is
/// ready at once (the window has room), so all are queued before the
/// writer runs. Gives the sends, to await.
fn send_writes(
    sink: &sink::Client,
    chunks: &[Vec<u8>],
) -> Vec<capnp::capability::Promise<(), capnp::Error>> {
    chunks
        .iter()
        .map(|chunk| {
            let mut write = sink.write_request();
            write.get().set_data(chunk);
            write.send()
        })
        .collect()
}

// covers: P-15
#[test]
fn large_messages_queued_together_go_out_in_one_write() {
    run(async {
        let (mut peer, sink, calls) = counted_client(usize::MAX).await;
        let before = calls.load(Ordering::SeqCst);
        // Four 100 KB streaming writes, queued together.
        let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100_000]).collect();
        let sends = send_writes(&sink, &chunks);
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                &next_write(&mut peer).await,
                chunk,
                "write {i} arrives whole"
            );
        }
        assert_eq!(
            calls.load(Ordering::SeqCst) - before,
            1,
            "one write call for the four"
        );
        for send in sends {
            send.await.unwrap();
        }
    });
}

/// The data of the `Sink.write` call in the next `Call` the peer gets.
async fn next_write(peer: &mut Peer) -> Vec<u8> {
    let frame = raw::next_call(peer).await;
    let call = raw::expect_call(&frame);
    let params = call.get_params().unwrap().get_content();
    let write = params.get_as::<sink::write_params::Reader>().unwrap();
    write.get_data().unwrap().to_vec()
}

// covers: P-15
#[test]
fn a_batch_cut_into_short_writes_arrives_whole_and_in_order() {
    run(async {
        // Large and small writes mixed, through a writer that takes at
        // most 1,000 bytes a call.
        let (mut peer, sink, calls) = counted_client(1_000).await;
        let chunks: Vec<Vec<u8>> = [70_000, 10, 100_000, 3, 5_000]
            .iter()
            .zip(1u8..)
            .map(|(&n, byte)| vec![byte; n])
            .collect();
        let sends = send_writes(&sink, &chunks);
        for chunk in &chunks {
            assert_eq!(&next_write(&mut peer).await, chunk);
        }
        assert!(
            calls.load(Ordering::SeqCst) > 100,
            "the writer was made to cut: {}",
            calls.load(Ordering::SeqCst)
        );
        for send in sends {
            send.await.unwrap();
        }
    });
}
