//! Counterparts of the level-1 scenarios of the C++ reference's own suite,
//! `c++/src/capnp/rpc-test.c++` at tag v1.4.0, each named after the C++
//! test it follows (`rpc_test_` + its name). They run through a connection
//! pair (two `ConnActor`s over an in-memory duplex, or TCP), on this
//! project's test schema; each says what it checks of the original.
//!
//! Scenarios covered elsewhere, at the wire level where the C++ test
//! checks messages: `Abort` (`wire.rs`), "send() throws, exports don't
//! leak" (`wire_client.rs`), "export the same promise twice"
//! (`races.rs`). "loopback bootstrap" is a connection whose transport
//! loops back to itself.

mod support;

use capnp_actix::{Capability, Stats};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::test_capnp::{counter, sequencer, test, FailureKind};
use support::*;

/// How long a release may take to travel.
const SETTLE: Duration = Duration::from_secs(2);

fn new_counter(
    t: &test::Client,
    start: i64,
) -> capnp::capability::RemotePromise<test::new_counter_results::Owned> {
    let mut req = t.new_counter_request();
    req.get().set_start(start);
    req.send()
}

async fn increment(c: &counter::Client, by: i64) -> Result<i64, capnp::Error> {
    let mut req = c.increment_request();
    req.get().set_by(by);
    Ok(req.send().promise.await?.get()?.get_value())
}

/// A local `Test` object (as the C++ tests make client-side objects).
fn local_test(tally: &Tally) -> test::Client {
    Capability::from_server::<test::Client, _>(TestImpl::new(tally)).client()
}

/// A promise made here that settles to `seq` after `millis`.
fn delayed_seq(local: &test::Client, seq: sequencer::Client, millis: u32) -> sequencer::Client {
    let mut req = local.delayed_seq_request();
    req.get().set_seq(seq);
    req.get().set_millis(millis);
    req.send().pipeline.get_seq()
}

/// A promise made here that breaks ("foo") after 30 ms, and the local
/// object that makes it.
fn breaking_promise() -> (sequencer::Client, test::Client) {
    let local = local_test(&Tally::default());
    let broken: sequencer::Client = Capability::broken(capnp_actix::Error::failed("foo")).client();
    (delayed_seq(&local, broken, 30), local)
}

// covers: P-01, P-08
#[test]
fn rpc_test_basic() {
    // Several calls in flight at once; one to a method the object lacks
    // fails alone, the others succeed, the connection lives.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let cap = Capability::from_client(&h.test);
        let mut first = h.test.echo_request();
        first.get().set_text("foo");
        let first = first.send().promise;
        let missing = cap.new_call(support::raw::TEST_ID, 999).send();
        let mut third = h.test.echo_request();
        third.get().set_text("baz");
        let third = third.send().promise;
        let err = missing.await.err().expect("no method 999");
        assert_eq!(
            err.kind(),
            capnp_actix::ErrorKind::Unimplemented,
            "{mode:?}: {err}"
        );
        let first = first.await.unwrap();
        assert_eq!(first.get().unwrap().get_text().unwrap(), "foo");
        let third = third.await.unwrap();
        assert_eq!(third.get().unwrap().get_text().unwrap(), "baz");
        assert_eq!(echo(&h.test, "after").await, "after");
    });
}

// covers: P-03
#[test]
fn rpc_test_pipelining() {
    // Calls pipelined on a result before it returns, then the original
    // promise dropped: the pipelined calls still complete.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let made = new_counter(&h.test, 5);
        let counter = made.pipeline.get_counter();
        let mut a = counter.increment_request();
        a.get().set_by(1);
        let a = a.send().promise;
        let b = counter.get_request().send().promise;
        drop(made.promise);
        assert_eq!(a.await.unwrap().get().unwrap().get_value(), 6, "{mode:?}");
        assert_eq!(b.await.unwrap().get().unwrap().get_value(), 6, "{mode:?}");
        assert_eq!(increment(&counter, 1).await.unwrap(), 7, "{mode:?}");
    });
}

// covers: P-03
#[test]
fn rpc_test_send_for_pipeline() {
    // Only the pipeline is kept: the response is never awaited, and the
    // pipelined calls (made before and after dropping it) complete.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let counter = new_counter(&h.test, 1).pipeline.get_counter();
        let first = increment(&counter, 1);
        assert_eq!(first.await.unwrap(), 2, "{mode:?}");
        assert_eq!(increment(&counter, 1).await.unwrap(), 3, "{mode:?}");
    });
}

// covers: P-05, T-04
#[test]
fn rpc_test_release() {
    // Two capabilities; the first is released when dropped, the second
    // only once the response that holds it is dropped too.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let one = new_counter(&h.test, 0).promise.await.unwrap();
        let handle1 = one.get().unwrap().get_counter().unwrap();
        drop(one);
        let response2 = new_counter(&h.test, 0).promise.await.unwrap();
        let handle2 = response2.get().unwrap().get_counter().unwrap();
        let counters = h.tally.counters.clone();
        assert_eq!(counters.load(Ordering::SeqCst), 2, "{mode:?}");
        drop(handle1);
        eventually("handle1 released", SETTLE, || {
            counters.load(Ordering::SeqCst) == 1
        })
        .await;
        drop(handle2);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            counters.load(Ordering::SeqCst),
            1,
            "{mode:?}: the response holds it"
        );
        drop(response2);
        eventually("handle2 released", SETTLE, || {
            counters.load(Ordering::SeqCst) == 0
        })
        .await;
    });
}

// covers: P-07, P-21
#[test]
fn rpc_test_release_on_cancel() {
    // A call that returns a capability, dropped at once: its Finish and
    // its Return may cross, and the capability is released either way.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        for _ in 0..20 {
            drop(new_counter(&h.test, 0));
        }
        let counters = h.tally.counters.clone();
        eventually("every counter released", SETTLE, || {
            counters.load(Ordering::SeqCst) == 0
        })
        .await;
        assert_eq!(echo(&h.test, "alive").await, "alive", "{mode:?}");
    });
}

// covers: P-07
#[test]
fn rpc_test_cancellation() {
    // A call whose work holds a capability from its params: cancelled by
    // dropping it, the work stops and the capability comes back released.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let client = h.client_conn.clone().unwrap();
        let ours: sequencer::Client = capnp_actix::new_client(SequencerImpl::new());
        let mut req = h.test.delayed_seq_request();
        req.get().set_seq(ours);
        req.get().set_millis(60_000);
        let waiting = req.send();
        eventually_exports(&client, 1).await;
        drop(waiting);
        eventually_exports(&client, 0).await;
    });
}

async fn eventually_exports(conn: &actix::Addr<capnp_actix::ConnActor>, n: usize) {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let exports = conn.send(Stats).await.unwrap().exports;
        if exports == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "exports stay at {exports}, not {n}"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

// covers: P-10
#[test]
fn rpc_test_promise_resolve() {
    // A promise made here, sent in two calls: the server's calls on it
    // wait for it, then reach its resolution; the same promise comes back
    // and works here too.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let tally = Tally::default();
        let local = local_test(&tally);
        let mut req = local.delayed_counter_request();
        req.get().set_millis(50);
        req.get().set_start(7);
        let promise = req.send().pipeline.get_counter();
        let mut hold = h.test.hold_request();
        hold.get().set_cap(promise.clone());
        hold.send().promise.await.unwrap();
        let mut echo_cap = h.test.echo_cap_request();
        echo_cap.get().set_cap(promise);
        let echoed = echo_cap.send();
        let mut held = h.test.call_held_request();
        held.get().set_by(1);
        let value = held.send().promise.await.unwrap();
        assert_eq!(value.get().unwrap().get_value(), 8, "{mode:?}");
        let back = echoed.pipeline.get_cap();
        assert_eq!(increment(&back, 1).await.unwrap(), 9, "{mode:?}");
    });
}

// covers: P-05, P-12
#[test]
fn rpc_test_retain_and_release() {
    // The server holds a capability of ours and calls it; the one it gives
    // back is ours again; once it lets go, ours is released.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let tally = Tally::default();
        let ours: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let mut hold = h.test.hold_request();
        hold.get().set_cap(ours.clone());
        hold.send().promise.await.unwrap();
        let mut held = h.test.call_held_request();
        held.get().set_by(2);
        assert_eq!(
            held.send()
                .promise
                .await
                .unwrap()
                .get()
                .unwrap()
                .get_value(),
            2
        );
        let mut echo_cap = h.test.echo_cap_request();
        echo_cap.get().set_cap(ours.clone());
        let copy = echo_cap
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_cap()
            .unwrap();
        assert_eq!(
            increment(&copy, 3).await.unwrap(),
            5,
            "{mode:?}: the copy is ours"
        );
        drop(copy);
        drop(ours);
        assert_eq!(
            tally.counters.load(Ordering::SeqCst),
            1,
            "the server holds it"
        );
        h.test.release_held_request().send().promise.await.unwrap();
        let counters = tally.counters.clone();
        eventually("ours released", SETTLE, || {
            counters.load(Ordering::SeqCst) == 0
        })
        .await;
    });
}

// covers: P-05, T-04
#[test]
fn rpc_test_send_twice() {
    // The same capability in two calls in flight at once: both work, and
    // it is released once nothing holds it.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let client = h.client_conn.clone().unwrap();
        let tally = Tally::default();
        let ours: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let send = |c: &counter::Client| {
            let mut req = h.test.echo_cap_request();
            req.get().set_cap(c.clone());
            req.send().promise
        };
        let (first, second) = (send(&ours), send(&ours));
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        let a = first.get().unwrap().get_cap().unwrap();
        let b = second.get().unwrap().get_cap().unwrap();
        assert_eq!(increment(&a, 1).await.unwrap(), 1, "{mode:?}");
        assert_eq!(increment(&b, 1).await.unwrap(), 2, "{mode:?}");
        drop((a, b, ours, first, second));
        eventually_exports(&client, 0).await;
        let counters = tally.counters.clone();
        eventually("ours released", SETTLE, || {
            counters.load(Ordering::SeqCst) == 0
        })
        .await;
    });
}

// covers: P-11
#[test]
fn rpc_test_embargo() {
    // Calls on a capability of ours echoed back by the server, made before
    // and after its Return: all arrive in order.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let ours: sequencer::Client = capnp_actix::new_client(SequencerImpl::new());
        let mut req = h.test.echo_seq_request();
        req.get().set_seq(ours);
        let echoed = req.send();
        let pipeline = echoed.pipeline.get_seq();
        let mut calls = send_next(&pipeline, 0..2);
        echo(&h.test, "early").await;
        calls.extend(send_next(&pipeline, 2..3));
        echoed.promise.await.unwrap();
        calls.extend(send_next(&pipeline, 3..6));
        expect_in_order(calls, &format!("{mode:?}")).await;
    });
}

// covers: P-11
#[test]
fn rpc_test_embargo_error() {
    // The capability echoed back is a promise made here that breaks:
    // every call on it, before and after the Return, fails; no protocol
    // error.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let (promise, _local) = breaking_promise();
        let mut req = h.test.echo_seq_request();
        req.get().set_seq(promise);
        let echoed = req.send();
        let pipeline = echoed.pipeline.get_seq();
        let mut calls = send_next(&pipeline, 0..3);
        let _ = echoed.promise.await;
        calls.extend(send_next(&pipeline, 3..6));
        for (i, call) in calls.into_iter().enumerate() {
            let err = call
                .await
                .err()
                .unwrap_or_else(|| panic!("{mode:?}: call {i} worked"));
            assert!(err.to_string().contains("foo"), "{mode:?}: call {i}: {err}");
        }
        assert_eq!(echo(&h.test, "alive").await, "alive", "{mode:?}");
    });
}

// covers: P-04
#[test]
fn rpc_test_embargo_null() {
    // A null capability in the results: calls on it before and after the
    // Return fail, no Disembargo is aimed at it, the connection lives.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let client = h.client_conn.clone().unwrap();
        let nested = h.test.nested_request().send();
        let right = nested.pipeline.get_pair().get_right();
        let before = right.get_request().send().promise;
        nested.promise.await.unwrap();
        let after = right.get_request().send().promise;
        assert!(before.await.is_err(), "{mode:?}");
        assert!(after.await.is_err(), "{mode:?}");
        assert_eq!(
            client.send(Stats).await.unwrap().embargoes_started,
            0,
            "{mode:?}"
        );
        assert_eq!(echo(&h.test, "alive").await, "alive", "{mode:?}");
    });
}

// covers: P-10
#[test]
fn rpc_test_call_broken_promise() {
    // The server holds a promise of ours that then breaks: its call on it
    // fails, and the connection lives.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let (promise, _local) = breaking_promise();
        let mut hold = h.test.hold_seq_request();
        hold.get().set_seq(promise);
        hold.send().promise.await.unwrap();
        let mut held = h.test.call_held_seq_request();
        held.get().set_expected(0);
        let err = held
            .send()
            .promise
            .await
            .err()
            .expect("the held promise broke");
        assert!(err.to_string().contains("foo"), "{mode:?}: {err}");
        assert_eq!(echo(&h.test, "alive").await, "alive", "{mode:?}");
    });
}

// covers: P-02
#[test]
fn rpc_test_method_throws_exception() {
    // An exception keeps its kind and its reason across the connection.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let mut req = h.test.fail_request();
        req.get().set_kind(FailureKind::Failed);
        req.get().set_reason("test exception");
        let err = req.send().promise.await.err().expect("it throws");
        assert_eq!(err.kind, capnp::ErrorKind::Failed, "{mode:?}");
        assert!(err.extra.contains("test exception"), "{mode:?}: {err}");
    });
}

// covers: P-07
#[test]
fn rpc_test_cancel() {
    // A call that never returns keeps a capability of ours in its work and
    // in its half-built results: dropping the call cancels it, and both
    // references are released.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let client = h.client_conn.clone().unwrap();
        let tally = Tally::default();
        let ours: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let mut req = h.test.never_return_request();
        req.get().set_cap(ours.clone());
        let pending = req.send();
        eventually_exports(&client, 1).await;
        assert_eq!(echo(&h.test, "meanwhile").await, "meanwhile", "{mode:?}");
        drop(ours);
        drop(pending);
        eventually_exports(&client, 0).await;
        let counters = tally.counters.clone();
        eventually("ours released", SETTLE, || {
            counters.load(Ordering::SeqCst) == 0
        })
        .await;
        let cancelled = h.tally.cancellations.clone();
        eventually("the call cancelled", SETTLE, || {
            cancelled.load(Ordering::SeqCst) == 1
        })
        .await;
    });
}

/// A write half whose shutdown fails, as the C++ test's network does.
struct FailingShutdown<W>(W);

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FailingShutdown<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("a_disconnect_exception")))
    }
}

// covers: F-03
#[test]
fn rpc_test_handles_exceptions_thrown_during_disconnect() {
    // The connection aborts (a Return for a question never asked) over a
    // transport whose shutdown fails: the Abort goes out, the connection
    // ends with the abort's reason, and its actor stops.
    support::raw::run(async {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(ours);
        let conn = capnp_actix::ConnActor::start(
            read,
            FailingShutdown(write),
            capnp_actix::ConnOptions::new(),
        );
        let ended = conn.send(capnp_actix::Watch).await.unwrap();
        let never_asked = capnp_actix::Error::failed("an answer to nothing");
        let bytes = support::raw::encoded(&capnp_actix_proto::message::return_exception(
            1234,
            &never_asked,
        ));
        theirs.write_all(&bytes).await.unwrap();
        let mut decoder =
            capnp_actix_proto::FrameDecoder::new(capnp_actix_proto::Limits::default());
        let frame = loop {
            if let Some(frame) = decoder.next_frame().unwrap() {
                break frame;
            }
            let mut buf = [0u8; 4096];
            use tokio::io::AsyncReadExt;
            let n = actix_rt::time::timeout(Duration::from_secs(5), theirs.read(&mut buf))
                .await
                .expect("the Abort")
                .unwrap();
            assert!(n > 0, "EOF before the Abort");
            decoder.push(&buf[..n]);
        };
        let abort = support::raw::expect_abort(&frame);
        let why = actix_rt::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the connection ends")
            .expect("with a reason");
        assert_eq!(why, abort);
        eventually("the connection's actor stopped", SETTLE, || {
            !conn.connected()
        })
        .await;
    });
}

// covers: P-03
#[test]
fn rpc_test_set_pipeline() {
    // A method that publishes its results for pipelining and never
    // returns: calls pipelined on them (made before and after) complete,
    // and the call itself stays pending.
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let mut req = h.test.pipeline_only_request();
        req.get().set_start(5);
        let mut pending = req.send();
        let counter = pending.pipeline.get_counter();
        let early = increment(&counter, 1);
        assert_eq!(early.await.unwrap(), 6, "{mode:?}");
        assert_eq!(increment(&counter, 1).await.unwrap(), 7, "{mode:?}");
        assert!(
            futures::poll!(&mut pending.promise).is_pending(),
            "{mode:?}: the call never returns"
        );
    });
}

// covers: P-11, P-12
#[test]
fn rpc_test_embargo_unwrap() {
    // As `Embargo`, with our sequencer in a `ServerSet`: unwrapping the
    // echoed capability waits for its embargo, so the calls made before
    // have reached the server object when it completes; all arrive in
    // order.
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let set = capnp_actix::ServerSet::new();
        let ours = set.new_capability::<sequencer::Client>(SequencerImpl::new());
        let mut req = h.test.echo_seq_request();
        req.get().set_seq(ours.client());
        let echoed = req.send();
        let pipeline = echoed.pipeline.get_seq();
        let mut calls = send_next(&pipeline, 0..3);
        let echoed_cap = Capability::from_client(&pipeline);
        let server = set
            .local_server(&echoed_cap)
            .await
            .expect("the echoed capability is ours");
        assert!(
            server.count() >= 3,
            "{mode:?}: unwrapped before the calls arrived"
        );
        calls.extend(send_next(&pipeline, 3..6));
        expect_in_order(calls, &format!("{mode:?}")).await;
        drop(echoed.promise);
    });
}

#[test]
fn rpc_test_loopback_bootstrap() {
    // The C++ vat bootstraps its own host id and gets its own bootstrap
    // interface. Here: a connection whose transport loops back to itself
    // (what it writes, it reads) asks for the bootstrap interface, gets its
    // own main interface through its own answer and import, and calls it.
    actix::System::new().block_on(async {
        let tally = Tally::default();
        let main = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
        let (a, b) = tokio::io::duplex(1 << 16);
        let (_a_read, a_write) = tokio::io::split(a);
        let (b_read, _b_write) = tokio::io::split(b);
        let conn = capnp_actix::ConnActor::start(
            b_read,
            a_write,
            capnp_actix::ConnOptions::new().main_interface(main),
        );
        let t: test::Client = conn
            .send(capnp_actix::Bootstrap)
            .await
            .unwrap()
            .unwrap()
            .client();
        for i in 0..10 {
            let text = format!("to myself {i}");
            assert_eq!(echo(&t, &text).await, text);
        }
        // Its question, its answer, its export and its import are all one
        // connection's: letting go of the capability empties every table.
        drop(t);
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            let s = conn.send(Stats).await.unwrap();
            if s.questions == 0 && s.answers == 0 && s.imports == 0 && s.exports == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "tables left: {s:?}");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    });
}
