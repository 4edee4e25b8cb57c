//! Wire-level tests of the calling side: a `ConnActor` that makes the calls,
//! and the test playing the server byte by byte. What is asserted is what
//! our side sends: questions, finishes, releases, disembargoes.

mod support;

use capnp_actix::{Bootstrap, ConnOptions, Stats};
use capnp_actix_proto::message::{self as out, DisembargoContext, OutMessage};
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::{CapDescriptor, Error, MessageTarget};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::raw::*;
use support::test_capnp;
use support::{CounterImpl, Tally};
use test_capnp::{counter, test};

// covers: P-05
#[test]
fn an_import_received_twice_is_released_once_with_count_two() {
    run(async {
        let mut peer = Peer::connect(ConnOptions::new()).await;
        let first = peer.conn.send(Bootstrap).await.unwrap().unwrap();
        let q0 = expect_bootstrap(&peer.recv().await);
        let second = peer.conn.send(Bootstrap).await.unwrap().unwrap();
        let q1 = expect_bootstrap(&peer.recv().await);
        peer.send(&return_cap(q0, CapDescriptor::SenderHosted(5)))
            .await;
        peer.send(&return_cap(q1, CapDescriptor::SenderHosted(5)))
            .await;
        actix_rt::time::sleep(Duration::from_millis(30)).await;
        drop((first, second));
        let sent = collect(&mut peer, Duration::from_millis(200)).await;
        let releases: Vec<_> = sent
            .iter()
            .filter(|s| matches!(s, Seen::Release(..)))
            .collect();
        assert_eq!(releases, vec![&Seen::Release(5, 2)], "{sent:?}");
        assert!(
            sent.contains(&Seen::Finish(q0)) && sent.contains(&Seen::Finish(q1)),
            "{sent:?}"
        );
    });
}

// covers: P-06
#[test]
fn param_caps_are_released_as_the_return_says() {
    for release_param_caps in [true, false] {
        run(async move {
            let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(3)).await;
            let tally = Tally::default();
            let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
            let client: test::Client = cap.client();
            let mut req = client.hold_request();
            req.get().set_cap(mine);
            let pending = req.send();
            let frame = peer.recv().await;
            let call = expect_call(&frame);
            let question = call.get_question_id();
            let table = call.get_params().unwrap().get_cap_table().unwrap();
            assert_eq!(table.len(), 1);
            let CapDescriptor::SenderHosted(export) = CapDescriptor::read(table.get(0)).unwrap()
            else {
                panic!("a local capability goes out as senderHosted");
            };
            assert_eq!(peer.conn.send(Stats).await.unwrap().exports, 1);
            peer.send(&return_empty(question, release_param_caps)).await;
            pending.promise.await.unwrap();
            let exports = peer.conn.send(Stats).await.unwrap().exports;
            if release_param_caps {
                assert_eq!(exports, 0, "releaseParamCaps released the export");
            } else {
                assert_eq!(exports, 1, "the export stays until a Release");
                peer.send(&out::release(export, 1)).await;
                let conn = peer.conn.clone();
                let mut left = 1;
                for _ in 0..100 {
                    left = conn.send(Stats).await.unwrap().exports;
                    if left == 0 {
                        break;
                    }
                    actix_rt::time::sleep(Duration::from_millis(5)).await;
                }
                assert_eq!(left, 0, "the Release released the export");
            }
            let t = tally.clone();
            support::eventually("the counter is dropped", Duration::from_secs(2), || {
                t.counters.load(Ordering::SeqCst) == 0
            })
            .await;
        });
    }
}

// covers: P-07, T-03
#[test]
fn a_dropped_call_sends_finish_and_its_id_waits_for_the_return() {
    run(async {
        let (mut peer, cap, bootstrap_question) =
            bootstrapped(CapDescriptor::SenderHosted(1)).await;
        let dropped = echo(&cap, "a");
        let a = expect_call(&peer.recv().await).get_question_id();
        drop(dropped);
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert_eq!(sent, vec![Seen::Finish(a)]);
        // No Return yet: a new question must take another id.
        let _b_pending = echo(&cap, "b");
        let b = expect_call(&peer.recv().await).get_question_id();
        assert_ne!(a, b);
        assert_ne!(b, bootstrap_question);
        // Once the Return arrives, the id is free again: the lowest one.
        peer.send(&return_empty(a, false)).await;
        actix_rt::time::sleep(Duration::from_millis(30)).await;
        let _c_pending = echo(&cap, "c");
        let c = expect_call(&peer.recv().await).get_question_id();
        assert_eq!(c, a, "the freed id is the lowest free one");
    });
}

// covers: P-10, P-12
#[test]
fn a_promise_import_is_called_until_resolve_then_its_resolution() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        let _first = echo(&cap, "before");
        let sent = collect(&mut peer, Duration::from_millis(50)).await;
        assert!(
            matches!(&sent[..], [Seen::Call(_, MessageTarget::ImportedCap(7))]),
            "{sent:?}"
        );
        peer.send(&out::resolve(7, Ok(&CapDescriptor::SenderHosted(8))))
            .await;
        actix_rt::time::sleep(Duration::from_millis(30)).await;
        let _second = echo(&cap, "after");
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        // The promise export is released, and the call goes to what it
        // resolved to; no embargo (the peer hosts it).
        assert!(sent.contains(&Seen::Release(7, 1)), "{sent:?}");
        assert!(
            sent.iter()
                .any(|s| matches!(s, Seen::Call(_, MessageTarget::ImportedCap(8)))),
            "{sent:?}"
        );
        assert!(
            !sent.iter().any(|s| matches!(s, Seen::Disembargo(..))),
            "{sent:?}"
        );
    });
}

// covers: F-01
#[test]
fn resolve_for_an_import_that_is_no_promise_aborts() {
    run(async {
        let (mut peer, _cap, _) = bootstrapped(CapDescriptor::SenderHosted(4)).await;
        peer.send(&out::resolve(4, Ok(&CapDescriptor::SenderHosted(9))))
            .await;
        let abort = peer.expect_abort_and_close().await;
        assert!(abort.reason().contains("not a promise"), "{abort}");
    });
}

// covers: F-02
#[test]
fn resolve_for_a_released_promise_releases_what_it_carries() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        drop(cap);
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert!(sent.contains(&Seen::Release(7, 1)), "{sent:?}");
        peer.send(&out::resolve(7, Ok(&CapDescriptor::SenderHosted(8))))
            .await;
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert_eq!(sent, vec![Seen::Release(8, 1)]);
    });
}

// covers: P-11
#[test]
fn a_promise_resolved_back_to_us_holds_new_calls_until_the_disembargo_returns() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        // Export a counter of ours to the peer.
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let client: test::Client = cap.client();
        let mut req = client.hold_request();
        req.get().set_cap(mine.clone());
        let _hold = req.send();
        let frame = peer.recv().await;
        let table = expect_call(&frame)
            .get_params()
            .unwrap()
            .get_cap_table()
            .unwrap();
        let CapDescriptor::SenderHosted(export) = CapDescriptor::read(table.get(0)).unwrap() else {
            panic!("senderHosted expected");
        };
        // A call through the promise goes to the peer.
        let as_counter: counter::Client = cap.client();
        let mut req = as_counter.increment_request();
        req.get().set_by(1);
        let _in_flight = req.send();
        let sent = collect(&mut peer, Duration::from_millis(50)).await;
        assert!(
            matches!(&sent[..], [Seen::Call(_, MessageTarget::ImportedCap(7))]),
            "{sent:?}"
        );
        // The promise resolves to our own counter: we must embargo.
        peer.send(&out::resolve(7, Ok(&CapDescriptor::ReceiverHosted(export))))
            .await;
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        let embargo = sent
            .iter()
            .find_map(|s| match s {
                Seen::Disembargo(
                    MessageTarget::ImportedCap(7),
                    DisembargoContext::SenderLoopback(id),
                ) => Some(*id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no senderLoopback Disembargo in {sent:?}"));
        // A call made now waits for the embargo: it must not reach the
        // counter yet.
        let mut req = as_counter.increment_request();
        req.get().set_by(10);
        let held = req.send();
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let value = mine.get_request().send().promise.await.unwrap();
        assert_eq!(
            value.get().unwrap().get_value(),
            0,
            "a call overtook the embargo"
        );
        // The peer reflects the embargo: the held call goes on.
        peer.send(&out::disembargo(
            &MessageTarget::ImportedCap(export),
            DisembargoContext::ReceiverLoopback(embargo),
        ))
        .await;
        let reply = held.promise.await.unwrap();
        assert_eq!(reply.get().unwrap().get_value(), 10);
    });
}

// covers: P-11
#[test]
fn no_embargo_for_a_broken_resolution() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        let _in_flight = echo(&cap, "x");
        let _ = collect(&mut peer, Duration::from_millis(50)).await;
        peer.send(&out::resolve(7, Err(&Error::failed("gone"))))
            .await;
        actix_rt::time::sleep(Duration::from_millis(30)).await;
        let err = echo(&cap, "y").promise.await.err().unwrap();
        assert!(err.extra.contains("gone"), "{err}");
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert!(
            !sent.iter().any(|s| matches!(s, Seen::Disembargo(..))),
            "{sent:?}"
        );
    });
}

// covers: F-01
#[test]
fn a_receiver_loopback_for_an_unknown_embargo_aborts() {
    run(async {
        let (mut peer, _cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        peer.send(&out::disembargo(
            &MessageTarget::ImportedCap(1),
            DisembargoContext::ReceiverLoopback(42),
        ))
        .await;
        peer.expect_abort_and_close().await;
    });
}

// covers: F-01
#[test]
fn a_sender_loopback_that_does_not_point_back_aborts() {
    run(async {
        let (mut peer, _cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        peer.send(&out::disembargo(
            &MessageTarget::ImportedCap(0),
            DisembargoContext::SenderLoopback(3),
        ))
        .await;
        let abort = peer.expect_abort_and_close().await;
        assert!(abort.reason().contains("senderLoopback"), "{abort}");
    });
}

/// The C++ reference's "when OutgoingRpcMessage::send() throws, we don't
/// leak exports": a call refused before it goes out leaves no question and
/// no export behind, and the capability it carried is dropped.
// covers: F-06, T-04
#[test]
fn a_refused_call_leaves_no_export_behind() {
    run(async {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (read, write) = tokio::io::split(ours);
        let conn =
            capnp_actix::ConnActor::start(read, write, ConnOptions::new().send_buffer_size(1024));
        let cap = conn.send(Bootstrap).await.unwrap().unwrap();
        // Fill the send buffer (the peer reads nothing).
        let filler = "x".repeat(2048);
        let _pending = echo(&cap, &filler);
        conn.send(Stats).await.unwrap();
        let tally = Tally::default();
        let client: test::Client = cap.client();
        let mut req = client.hold_request();
        req.get()
            .set_cap(capnp_actix::new_client(CounterImpl::new(0, &tally)));
        let refused = req.send().promise.await.err().expect("refused");
        assert_eq!(refused.kind, capnp::ErrorKind::Overloaded, "{refused}");
        let stats = conn.send(Stats).await.unwrap();
        assert_eq!(
            stats.exports, 0,
            "the refused call's capability stays unexported"
        );
        assert_eq!(stats.questions, 2, "the bootstrap and the filler only");
        let t = tally.clone();
        support::eventually("the counter is dropped", Duration::from_secs(2), || {
            t.counters.load(Ordering::SeqCst) == 0
        })
        .await;
    });
}

// covers: F-06
#[test]
fn new_calls_fail_overloaded_while_the_send_buffer_is_full() {
    run(async {
        // A peer that reads nothing yet: our writes pile up.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (read, write) = tokio::io::split(ours);
        let conn =
            capnp_actix::ConnActor::start(read, write, ConnOptions::new().send_buffer_size(4096));
        let cap = conn.send(Bootstrap).await.unwrap().unwrap();
        let text = "x".repeat(500);
        let mut went_out = 0;
        let mut refused = None;
        for _ in 0..100 {
            let call = echo(&cap, &text);
            // Each call is handled before the next is made.
            conn.send(Stats).await.unwrap();
            match futures::FutureExt::now_or_never(call.promise) {
                Some(Err(e)) => {
                    refused = Some(e);
                    break;
                }
                Some(Ok(_)) => panic!("no reply can have arrived"),
                None => went_out += 1,
            }
        }
        let refused = refused.expect("calls beyond the send buffer must fail");
        assert_eq!(refused.kind, capnp::ErrorKind::Overloaded, "{refused}");
        assert!(refused.extra.contains("send_buffer_size"), "{refused}");
        assert!(
            went_out >= 4,
            "calls within the buffer went out: {went_out}"
        );
        // Once the peer reads, the buffer drains and calls go out again.
        let drain = actix::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            use tokio::io::AsyncReadExt;
            while let Ok(n) = theirs.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        let mut accepted = false;
        for _ in 0..200 {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
            let call = echo(&cap, "small");
            conn.send(Stats).await.unwrap();
            if futures::FutureExt::now_or_never(call.promise).is_none() {
                accepted = true;
                break;
            }
        }
        assert!(accepted, "calls go out again once the buffer drains");
        drain.abort();
    });
}

// covers: P-13
#[test]
fn a_tail_call_from_the_peer_hands_its_results_to_our_question() {
    run(tail_call_from_the_peer(false));
}

// covers: P-13, P-14
#[test]
fn results_sent_elsewhere_stay_for_the_taker_under_no_promise_pipelining() {
    run(tail_call_from_the_peer(true));
}

/// The peer tail-calls a counter of ours back (`sendResultsTo.yourself`,
/// saying `noPromisePipelining` if `hinted`) and answers our question with
/// that call's results (`takeFromOtherQuestion`); if `hinted`, only after
/// our `Return{resultsSentElsewhere}`, so that the results are taken after
/// it went out.
async fn tail_call_from_the_peer(hinted: bool) {
    {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        // Our question: Test.hold(mine), untyped, to read whatever it returns.
        let mut request = cap.new_call(TEST_ID, 7);
        request
            .params()
            .init_as::<test::hold_params::Builder>()
            .set_cap(mine.clone());
        let ours = request.send();
        let frame = peer.recv().await;
        let call = expect_call(&frame);
        let our_question = call.get_question_id();
        let table = call.get_params().unwrap().get_cap_table().unwrap();
        let CapDescriptor::SenderHosted(export) = CapDescriptor::read(table.get(0)).unwrap() else {
            panic!("senderHosted expected");
        };
        // The peer tail-calls our counter with `sendResultsTo.yourself`...
        let mut m = capnp_actix_proto::message::new_message();
        {
            let mut c = m.init_root::<message::Builder>().init_call();
            c.set_question_id(0);
            MessageTarget::ImportedCap(export).write(c.reborrow().init_target());
            c.set_interface_id(<counter::Client as capnp::traits::HasTypeId>::TYPE_ID);
            c.set_method_id(0);
            c.reborrow().init_send_results_to().set_yourself(());
            c.set_no_promise_pipelining(hinted);
            c.init_params()
                .get_content()
                .init_as::<counter::increment_params::Builder>()
                .set_by(5);
        }
        peer.send(&m).await;
        let elsewhere = |frame: &capnp_actix_proto::frame::Frame| {
            let ret = expect_return(frame, 0);
            assert!(matches!(
                ret.which().unwrap(),
                capnp_actix_proto::rpc_capnp::return_::ResultsSentElsewhere(())
            ));
        };
        if hinted {
            elsewhere(&peer.recv().await);
        }
        // ...and answers our question with that call's results.
        let mut m = capnp_actix_proto::message::new_message();
        {
            let mut r = m.init_root::<message::Builder>().init_return();
            r.set_answer_id(our_question);
            r.set_release_param_caps(false);
            r.set_take_from_other_question(0);
        }
        peer.send(&m).await;
        let response = ours.await.expect("the taken results");
        let results: counter::increment_results::Reader =
            response.content().unwrap().get_as().unwrap();
        assert_eq!(results.get_value(), 5);
        // Our answer to the tail call says where its results went.
        if !hinted {
            elsewhere(&peer.recv().await);
        }
        drop(response);
        peer.send(&out::finish(0, false)).await;
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert!(sent.contains(&Seen::Finish(our_question)), "{sent:?}");
        assert_eq!(peer.conn.send(Stats).await.unwrap().answers, 0);
    }
}

// covers: F-01, P-13
#[test]
fn take_from_an_answer_that_was_no_tail_call_aborts() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        let _ours = echo(&cap, "x");
        let our_question = expect_call(&peer.recv().await).get_question_id();
        // A normal call from the peer, then a Return that takes its results.
        peer.send(&out::bootstrap(3)).await;
        let mut m = capnp_actix_proto::message::new_message();
        {
            let mut r = m.init_root::<message::Builder>().init_return();
            r.set_answer_id(our_question);
            r.set_take_from_other_question(3);
        }
        peer.send(&m).await;
        // Our Return for the bootstrap may come first.
        let mut frame = peer.recv().await;
        if tag(&frame) == 3 {
            frame = peer.recv().await;
        }
        let abort = expect_abort(&frame);
        assert!(abort.reason().contains("sendResultsTo.yourself"), "{abort}");
    });
}

/// A write half that fails every write once `budget` bytes went through.
struct FailingWriter {
    budget: usize,
}

impl tokio::io::AsyncWrite for FailingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.budget == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("the disk is on fire")));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        std::task::Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

// covers: F-03
#[test]
fn a_write_error_fails_pending_calls_and_ends_the_connection() {
    run(async {
        // The read half stays open and silent: only the write fails.
        let (ours, _theirs) = tokio::io::duplex(1024);
        let (read, _unused_write) = tokio::io::split(ours);
        let conn =
            capnp_actix::ConnActor::start(read, FailingWriter { budget: 100 }, ConnOptions::new());
        let ended = conn.send(capnp_actix::Watch).await.unwrap();
        let cap = conn.send(Bootstrap).await.unwrap().unwrap();
        let pending: Vec<_> = (0..5)
            .map(|i| echo(&cap, &format!("call {i}")).promise)
            .collect();
        for call in pending {
            let err = actix_rt::time::timeout(Duration::from_secs(5), call)
                .await
                .expect("a pending call fails promptly")
                .err()
                .expect("a pending call fails");
            assert_eq!(err.kind, capnp::ErrorKind::Disconnected, "{err}");
        }
        let why = actix_rt::time::timeout(Duration::from_secs(5), ended)
            .await
            .unwrap()
            .unwrap();
        assert!(why.reason().contains("write failed"), "{why}");
    });
}

/// A write half that counts the write calls it gets, passing bytes on.
struct CountingWriter {
    inner: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncWrite for CountingWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts the frames our side sends.
struct FrameCounter {
    decoder: capnp_actix_proto::FrameDecoder,
    read: tokio::io::ReadHalf<tokio::io::DuplexStream>,
    frames: usize,
}

impl FrameCounter {
    /// Reads until `want` frames have come, each read bounded in time.
    async fn until(&mut self, want: usize) {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 16];
        while self.frames < want {
            let n = actix_rt::time::timeout(Duration::from_secs(5), self.read.read(&mut buf))
                .await
                .expect("our side sends promptly")
                .unwrap();
            self.decoder.push(&buf[..n]);
            while self.decoder.next_frame().unwrap().is_some() {
                self.frames += 1;
            }
        }
    }
}

// covers: W-05
#[test]
fn messages_queued_in_one_turn_go_out_in_one_write_and_a_lone_one_at_once() {
    run(async {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (read, write) = tokio::io::split(ours);
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let conn = capnp_actix::ConnActor::start(
            read,
            CountingWriter {
                inner: write,
                writes: writes.clone(),
            },
            ConnOptions::new(),
        );
        let mut reader = FrameCounter {
            decoder: capnp_actix_proto::FrameDecoder::new(Default::default()),
            read: tokio::io::split(theirs).0,
            frames: 0,
        };
        // A lone message (the Bootstrap) goes out at once, by itself.
        let cap = conn.send(Bootstrap).await.unwrap().unwrap();
        reader.until(1).await;
        let after_one = writes.load(std::sync::atomic::Ordering::SeqCst);
        // 100 calls made in one go leave in far fewer writes.
        let calls: Vec<_> = (0..100).map(|i| echo(&cap, &format!("{i}"))).collect();
        reader.until(101).await;
        let for_hundred = writes.load(std::sync::atomic::Ordering::SeqCst) - after_one;
        assert!(for_hundred <= 10, "{for_hundred} writes for 100 messages");
        drop(calls);
    });
}

/// A `Return` like [`return_empty`] or [`return_cap`], saying
/// `noFinishNeeded`.
fn no_finish_needed(mut m: OutMessage) -> OutMessage {
    {
        let root: message::Builder = m.get_root().unwrap();
        let message::Return(Ok(mut ret)) = root.which().unwrap() else {
            panic!("not a Return");
        };
        ret.set_no_finish_needed(true);
    }
    m
}

// covers: P-14
#[test]
fn no_finish_is_sent_for_a_return_that_says_none_is_needed() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        // Results without capabilities, `noFinishNeeded`: no Finish, and
        // the id is free at once.
        let first = echo(&cap, "a");
        let a = expect_call(&peer.recv().await).get_question_id();
        peer.send(&no_finish_needed(return_empty(a, false))).await;
        let _ = first.promise.await;
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert_eq!(sent, vec![], "no Finish after noFinishNeeded");
        let second = echo(&cap, "b");
        let b = expect_call(&peer.recv().await).get_question_id();
        assert_eq!(b, a, "the id was free at once");
        // The same hint beside a capability in the results is not taken:
        // the question stays in use until our Finish (for embargoes).
        peer.send(&no_finish_needed(return_cap(
            b,
            CapDescriptor::SenderHosted(7),
        )))
        .await;
        let capnp::capability::RemotePromise { promise, pipeline } = second;
        drop(pipeline);
        let _ = promise.await;
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert!(sent.contains(&Seen::Finish(b)), "{sent:?}");
        // Only the bootstrap question is left.
        assert_eq!(peer.conn.send(Stats).await.unwrap().questions, 1);
    });
}
