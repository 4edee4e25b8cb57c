//! What our side's writes cost: messages queued together go out in one
//! write call, large ones too (a stream's writes), and their bytes are the
//! same as one write each would give.

mod support;

#[allow(dead_code, clippy::all)]
mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

use bench_capnp::sink;
use capnp_actix::{Bootstrap, ConnActor, ConnOptions, Watch};
use capnp_actix_proto::frame::{FrameDecoder, Limits};
use capnp_actix_proto::CapDescriptor;
use std::cell::Cell;
use std::io::IoSlice;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use support::raw::{self, run, Peer};
#[allow(unused_imports)]
use support::test_capnp;
use tokio::io::AsyncWrite;

/// A write half that counts the write calls made on it (each one a
/// syscall on a socket), and takes up to `max` bytes of a vectored write
/// at once (all of it, as a socket with room does, if `max` is large).
struct Counting<W> {
    inner: W,
    calls: Rc<Cell<u32>>,
    max: usize,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.calls.set(self.calls.get() + 1);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let max = self.max;
        let all: Vec<u8> = bufs
            .iter()
            .flat_map(|b| b.iter().copied())
            .take(max)
            .collect();
        let polled = Pin::new(&mut self.inner).poll_write(cx, &all);
        if polled.is_ready() {
            self.calls.set(self.calls.get() + 1);
        }
        polled
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

/// A client connection whose writes are counted (and cut at `max` bytes),
/// with a `Sink` the test (its peer) hosts: gives the peer, the sink and
/// the count.
async fn counted_client(max: usize) -> (Peer, sink::Client, Rc<Cell<u32>>) {
    let (conn_end, peer_end) = tokio::io::duplex(4 << 20);
    let (read, write) = tokio::io::split(conn_end);
    let calls = Rc::new(Cell::new(0));
    let counting = Counting {
        inner: write,
        calls: calls.clone(),
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
    (peer, sink, calls)
}

// covers: P-15
#[test]
fn large_messages_queued_together_go_out_in_one_write() {
    run(async {
        let (mut peer, sink, calls) = counted_client(usize::MAX).await;
        let before = calls.get();
        // Four 100 KB streaming writes, sent back to back (each send is
        // ready at once: the window has room), so that all four are
        // queued before the writer runs.
        let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100_000]).collect();
        let sends: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let mut write = sink.write_request();
                write.get().set_data(chunk);
                write.send()
            })
            .collect();
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(
                &next_write(&mut peer).await,
                chunk,
                "write {i} arrives whole"
            );
        }
        assert_eq!(calls.get() - before, 1, "one write call for the four");
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
        let sends: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let mut write = sink.write_request();
                write.get().set_data(chunk);
                write.send()
            })
            .collect();
        for chunk in &chunks {
            assert_eq!(&next_write(&mut peer).await, chunk);
        }
        assert!(
            calls.get() > 100,
            "the writer was made to cut: {}",
            calls.get()
        );
        for send in sends {
            send.await.unwrap();
        }
    });
}
