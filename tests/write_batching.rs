//! Writes wait for the work under way on their thread (as the C++
//! reference's `evalLast` does), so that the messages a burst of local work
//! produces leave in one write: one syscall and one wake-up of the peer,
//! not one per message.

mod support;

use capnp::traits::HasTypeId;
use capnp_actix::{Capability, ConnActor, ConnOptions};
use capnp_actix_proto::cap_descriptor::PromisedAnswer;
use capnp_actix_proto::frame::{FrameDecoder, Limits};
use capnp_actix_proto::message::{self as out, OutMessage};
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::MessageTarget;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use support::raw::*;
// The generated code names its own types as `crate::test_capnp::...`.
use support::test_capnp;
use support::{Tally, TestImpl};
use test_capnp::{counter, test};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A transport's write half that counts the writes made on it.
struct CountingWriter<W> {
    inner: W,
    writes: Arc<AtomicUsize>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(_))) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(_))) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
