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

/// The results of `Test.newCounter`: a counter the peer exports as
/// `export_id`, as question `answer_id`'s `Return`.
fn new_counter_return(answer_id: u32, export_id: u32) -> OutMessage {
    let mut m = out::new_message();
    let mut table: capnp::private::layout::CapTable = Vec::new();
    {
        let mut ret = m.init_root::<message::Builder>().init_return();
        ret.set_answer_id(answer_id);
        ret.set_release_param_caps(false);
        let mut results = ret.init_results();
        {
            let mut content = results.reborrow().get_content();
            capnp::traits::ImbueMut::imbue_mut(&mut content, &mut table);
            content
                .init_as::<test::new_counter_results::Builder>()
                .set_counter(placeholder());
        }
        capnp_actix_proto::CapDescriptor::SenderHosted(export_id)
            .write(results.init_cap_table(1).get(0));
    }
    m
}

/// A caller that goes on with its next call as soon as its last one
/// returned sends that call in the same write as the `Finish` its
/// `Return`s set off: the client lets go of a question whose only user was
/// a call pipelined on it when the `Return` comes, and the `Finish` (and
/// `Release`) wait one turn of the runtime, in which the caller's task
/// makes its next call. One write, one wake-up of the peer, not two.
#[test]
fn finishes_go_in_the_same_write_as_the_callers_next_call() {
    run(async {
        let (conn_end, mut peer) = tokio::io::duplex(1 << 20);
        let (read, write) = tokio::io::split(conn_end);
        let writes = Arc::new(AtomicUsize::new(0));
        let write = CountingWriter {
            inner: write,
            writes: writes.clone(),
        };
        let conn = ConnActor::start(read, write, ConnOptions::new());
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut buf = vec![0u8; 1 << 16];
        let mut frames = Vec::new();
        macro_rules! read_until {
            ($done:expr) => {
                while !$done(&frames) {
                    let n = actix_rt::time::timeout(WAIT, peer.read(&mut buf))
                        .await
                        .expect("the client's messages arrive")
                        .unwrap();
                    decoder.push(&buf[..n]);
                    while let Some(frame) = decoder.next_frame().unwrap() {
                        frames.push(seen(&frame));
                    }
                }
            };
        }

        let main = conn.send(capnp_actix::Bootstrap).await.unwrap().unwrap();
        read_until!(|f: &Vec<Seen>| !f.is_empty());
        peer.write_all(&encoded(&return_cap(
            0,
            capnp_actix_proto::CapDescriptor::SenderHosted(0),
        )))
        .await
        .unwrap();
        let main: test::Client = main.client();

        for round in 0..5u32 {
            // A counter, incremented through the pipeline; the caller lets
            // go of the counter itself at once.
            let counter = main.new_counter_request().send().pipeline.get_counter();
            let increment = counter.increment_request().send().promise;
            drop(counter);
            frames.clear();
            // (After the `Finish` of the last round's call, which the caller
            // dropped.)
            let calls = |f: &Vec<Seen>| {
                f.iter()
                    .filter_map(|s| match s {
                        Seen::Call(id, _) => Some(*id),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            };
            read_until!(|f: &Vec<Seen>| calls(f).len() >= 2);
            let [q1, q2] = calls(&frames)[..] else {
                panic!("round {round}: two calls, got {frames:?}");
            };
            let mut both = encoded(&new_counter_return(q1, 10 + round));
            both.extend(encoded(&return_empty(q2, false)));
            let before = writes.load(Ordering::SeqCst);
            peer.write_all(&both).await.unwrap();
            increment.await.unwrap();
            // The caller goes on at once.
            let next = main.echo_request().send().promise;
            frames.clear();
            read_until!(|f: &Vec<Seen>| f.iter().any(|s| matches!(s, Seen::Call(..))));
            assert!(
                frames
                    .iter()
                    .any(|s| matches!(s, Seen::Finish(id) if *id == q1)),
                "round {round}: no Finish for the counter's question: {frames:?}"
            );
            assert_eq!(
                writes.load(Ordering::SeqCst) - before,
                1,
                "round {round}: the Finish and the next call went in separate writes: {frames:?}"
            );
            drop(next);
        }
    });
}
