//! Capability scenarios, each run four times: against a local object, and
//! through a pair of connections (in memory, over TCP, over a Unix socket). A local and a
//! remote capability must behave the same to a caller.

mod support;

use capnp_actix::{Capability, ErrorKind};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::test_capnp::{callback, counter, FailureKind};
use support::*;

// covers: P-02, W-04
#[test]
fn echo_returns_results() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let mut req = h.test.echo_request();
        req.get().set_text("hello");
        let reply = req.send().promise.await.unwrap();
        assert_eq!(
            reply.get().unwrap().get_text().unwrap().to_str().unwrap(),
            "hello"
        );
    });
}

// covers: P-02
#[test]
fn each_exception_type_arrives_with_its_reason() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        for (kind, expected) in [
            (FailureKind::Failed, capnp::ErrorKind::Failed),
            (FailureKind::Overloaded, capnp::ErrorKind::Overloaded),
            (FailureKind::Disconnected, capnp::ErrorKind::Disconnected),
            (FailureKind::Unimplemented, capnp::ErrorKind::Unimplemented),
        ] {
            let mut req = h.test.fail_request();
            req.get().set_kind(kind);
            req.get().set_reason("because of the test");
            let err = req.send().promise.await.err().expect("fail must fail");
            assert_eq!(err.kind, expected, "mode {mode:?}");
            assert!(
                err.extra.contains("because of the test"),
                "{mode:?}: {}",
                err.extra
            );
        }
        // One call failing leaves the others working.
        let mut req = h.test.echo_request();
        req.get().set_text("still here");
        assert!(req.send().promise.await.is_ok());
    });
}

// covers: P-03
#[test]
fn calls_pipelined_on_a_returned_capability_are_delivered() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let mut req = h.test.new_counter_request();
        req.get().set_start(40);
        let promise = req.send();
        // Call the counter before the call that makes it has returned.
        let counter = promise.pipeline.get_counter();
        let mut inc = counter.increment_request();
        inc.get().set_by(1);
        let first = inc.send();
        let mut inc = counter.increment_request();
        inc.get().set_by(1);
        let second = inc.send();
        assert_eq!(first.promise.await.unwrap().get().unwrap().get_value(), 41);
        assert_eq!(second.promise.await.unwrap().get().unwrap().get_value(), 42);
        assert!(promise.promise.await.is_ok());
    });
}

// covers: P-04
#[test]
fn a_pipelined_call_on_a_null_capability_fails_only_that_call() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let promise = h.test.nested_request().send();
        let pair = promise.pipeline.get_pair();
        let right = pair.get_right().increment_request().send();
        let left = pair.get_left().increment_request().send();
        assert!(right.promise.await.is_err(), "mode {mode:?}");
        assert_eq!(left.promise.await.unwrap().get().unwrap().get_value(), 10);
    });
}

// covers: P-06, P-12, T-04
#[test]
fn a_capability_sent_in_params_comes_back_as_itself() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(5, &tally));
        let mut req = h.test.echo_cap_request();
        req.get().set_cap(mine.clone());
        let reply = req.send().promise.await.unwrap();
        let back = reply.get().unwrap().get_cap().unwrap();
        // The same object: it keeps its state.
        let mut inc = back.increment_request();
        inc.get().set_by(2);
        assert_eq!(
            inc.send().promise.await.unwrap().get().unwrap().get_value(),
            7
        );
        let mut inc = mine.increment_request();
        inc.get().set_by(1);
        assert_eq!(
            inc.send().promise.await.unwrap().get().unwrap().get_value(),
            8
        );
        // Sent twice, still the same object.
        let mut req = h.test.echo_cap_request();
        req.get().set_cap(mine.clone());
        let again = req.send().promise.await.unwrap();
        let again = again.get().unwrap().get_cap().unwrap();
        assert_eq!(
            again
                .get_request()
                .send()
                .promise
                .await
                .unwrap()
                .get()
                .unwrap()
                .get_value(),
            8
        );
    });
}

// covers: F-04
#[test]
fn a_handler_that_calls_back_does_not_deadlock() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let cb: callback::Client = capnp_actix::new_client(CallbackImpl {
            test: Some(h.test.clone()),
        });
        let mut req = h.test.call_back_request();
        req.get().set_cb(cb);
        req.get().set_value(20);
        let reply = req.send().promise.await.unwrap();
        // 20 * 2 + len("from the callback")
        assert_eq!(reply.get().unwrap().get_result(), 40 + 17);
    });
}

// covers: P-07
#[test]
fn dropping_a_pending_call_cancels_the_work() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let pending = h.test.hang_request().send();
        // Let the call reach the server, then give it up.
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(h.tally.cancellations.load(Ordering::SeqCst), 0);
        drop(pending);
        let tally = h.tally.clone();
        eventually(
            "the hanging call is cancelled",
            Duration::from_secs(5),
            || tally.cancellations.load(Ordering::SeqCst) == 1,
        )
        .await;
        // The connection still serves.
        let count = h.test.cancellations_request().send().promise.await.unwrap();
        assert_eq!(count.get().unwrap().get_count(), 1);
    });
}

// covers: P-05, T-04
#[test]
fn dropping_every_reference_releases_the_object() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let mut req = h.test.new_counter_request();
        req.get().set_start(1);
        let reply = req.send().promise.await.unwrap();
        let counter = reply.get().unwrap().get_counter().unwrap();
        let copy = counter.clone();
        assert_eq!(
            copy.get_request()
                .send()
                .promise
                .await
                .unwrap()
                .get()
                .unwrap()
                .get_value(),
            1
        );
        assert_eq!(h.tally.counters.load(Ordering::SeqCst), 1);
        drop((counter, copy, reply));
        let tally = h.tally.clone();
        eventually("the counter is released", Duration::from_secs(5), || {
            tally.counters.load(Ordering::SeqCst) == 0
        })
        .await;
        if let Some(server) = &h.server_conn {
            // Only the bootstrap capability stays exported.
            let stats = server.send(capnp_actix::Stats).await.unwrap();
            assert_eq!(stats.exports, 1, "{mode:?}: {stats:?}");
        }
    });
}

// covers: P-06
#[test]
fn hold_call_held_and_release_held() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let mut req = h.test.hold_request();
        req.get().set_cap(mine);
        req.send().promise.await.unwrap();
        // Our reference is gone; the server's keeps the object alive.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(tally.counters.load(Ordering::SeqCst), 1, "{mode:?}");
        let mut req = h.test.call_held_request();
        req.get().set_by(3);
        assert_eq!(
            req.send().promise.await.unwrap().get().unwrap().get_value(),
            3
        );
        h.test.release_held_request().send().promise.await.unwrap();
        let t = tally.clone();
        eventually(
            "the held counter is released",
            Duration::from_secs(5),
            || t.counters.load(Ordering::SeqCst) == 0,
        )
        .await;
    });
}

// covers: P-03
#[test]
fn pipelined_calls_keep_their_order() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let promise = h.test.sequencer_request().send();
        let seq = promise.pipeline.get_seq();
        let calls = send_next(&seq, 0..50);
        expect_in_order(calls, &format!("{mode:?}")).await;
    });
}

// covers: W-03
#[test]
fn large_messages_pass_and_oversize_ones_fail_that_call_only() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let data = vec![7u8; 4 << 20];
        let mut req = h.test.blob_request();
        req.get().set_data(&data);
        let reply = req.send().promise.await.unwrap();
        assert_eq!(reply.get().unwrap().get_size(), data.len() as u64);
        assert_eq!(reply.get().unwrap().get_data().unwrap(), &data[..]);
        if mode == Mode::Local {
            return; // no wire, no wire limit
        }
        let huge = vec![1u8; 80 << 20]; // over the default 64 MiB limit
        let mut req = h.test.blob_request();
        req.get().set_data(&huge);
        let err = req.send().promise.await.err().expect("over the limit");
        assert!(err.extra.contains("max_message_words"), "{}", err.extra);
        let mut req = h.test.echo_request();
        req.get().set_text("alive");
        assert!(req.send().promise.await.is_ok(), "the connection survives");
    });
}

// covers: P-01
#[test]
fn bootstrap_without_a_main_interface_is_an_exception_not_an_abort() {
    actix::System::new().block_on(async {
        let (client, _server) = capnp_actix::ConnActor::pair(
            capnp_actix::ConnOptions::new(),
            capnp_actix::ConnOptions::new(),
        );
        let cap = client.send(capnp_actix::Bootstrap).await.unwrap().unwrap();
        let err = cap.new_call(1, 0).send().await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Failed);
        assert!(err.reason().contains("no bootstrap interface"));
        // Still connected: a second bootstrap gets the same answer.
        let cap = client.send(capnp_actix::Bootstrap).await.unwrap().unwrap();
        assert!(cap.new_call(1, 0).send().await.is_err());
        let stats = client.send(capnp_actix::Stats).await.unwrap();
        assert_eq!(stats.imports, 0);
    });
}

// covers: P-01
#[test]
fn a_bootstrap_factory_gives_each_connection_its_own_object() {
    actix::System::new().block_on(async {
        let tally = Tally::default();
        let t = tally.clone();
        let options = capnp_actix::ConnOptions::new().bootstrap_factory(move || {
            Capability::from_server::<counter::Client, _>(CounterImpl::new(100, &t))
        });
        let (c1, _s1) =
            capnp_actix::ConnActor::pair(capnp_actix::ConnOptions::new(), options.clone());
        let (c2, _s2) = capnp_actix::ConnActor::pair(capnp_actix::ConnOptions::new(), options);
        let a: counter::Client = c1
            .send(capnp_actix::Bootstrap)
            .await
            .unwrap()
            .unwrap()
            .client();
        let b: counter::Client = c2
            .send(capnp_actix::Bootstrap)
            .await
            .unwrap()
            .unwrap()
            .client();
        let mut inc = a.increment_request();
        inc.get().set_by(1);
        assert_eq!(
            inc.send().promise.await.unwrap().get().unwrap().get_value(),
            101
        );
        let value = b.get_request().send().promise.await.unwrap();
        assert_eq!(value.get().unwrap().get_value(), 100);
        assert_eq!(tally.counters.load(Ordering::SeqCst), 2);
    });
}

// covers: P-02
#[test]
fn the_call_message_calls_like_a_typed_client() {
    actix::System::new().block_on(async {
        let h = harness(Mode::Pair).await;
        let conn = h.client_conn.clone().unwrap();
        let target = Capability::from_client(&h.test);
        let mut params = capnp::message::Builder::new_default();
        params
            .init_root::<support::test_capnp::test::echo_params::Builder>()
            .set_text("by message");
        let pending = conn
            .send(capnp_actix::Call {
                target,
                interface_id:
                    <support::test_capnp::test::Client as capnp::traits::HasTypeId>::TYPE_ID,
                method_id: 0,
                params,
            })
            .await
            .unwrap();
        let response = pending.await.unwrap();
        let results: support::test_capnp::test::echo_results::Reader =
            response.content().unwrap().get_as().unwrap();
        assert_eq!(results.get_text().unwrap().to_str().unwrap(), "by message");
    });
}

// covers: W-04
#[test]
fn a_capability_works_from_another_arbiter_thread() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        let cap = Capability::from_client(&h.test);
        let other = actix::Arbiter::new();
        let (tx, rx) = futures::channel::oneshot::channel();
        // The closure crosses threads; the calls run on the other one.
        other.spawn_fn(move || {
            actix::spawn(async move {
                let test: support::test_capnp::test::Client = cap.client();
                let mut req = test.echo_request();
                req.get().set_text("from another thread");
                let reply = req.send().promise.await.map(|r| {
                    r.get()
                        .unwrap()
                        .get_text()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string()
                });
                let _ = tx.send((std::thread::current().id(), reply));
            });
        });
        let (thread, reply) = rx.await.unwrap();
        assert_ne!(thread, std::thread::current().id());
        assert_eq!(reply.unwrap(), "from another thread", "{mode:?}");
        other.stop();
    });
}

// covers: P-03, F-03
#[test]
fn a_call_pipelined_on_a_dropped_call_still_gets_its_answer() {
    for_each_mode(|mode| async move {
        let h = harness(mode).await;
        // The counter exists only after 50 ms; nobody keeps the call that
        // makes it, only the call pipelined on it.
        let mut req = h.test.delayed_counter_request();
        req.get().set_millis(50);
        req.get().set_start(7);
        let parent = req.send();
        let mut inc = parent.pipeline.get_counter().increment_request();
        inc.get().set_by(1);
        let child = inc.send();
        drop(parent);
        let reply = child
            .promise
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(reply.get().unwrap().get_value(), 8);
    });
}
