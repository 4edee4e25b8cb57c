//! Promise resolution and embargoes across a connection: capabilities that
//! settle after they were sent, and calls that must keep their order when
//! a promise settles to an object next to the caller (E-order).

mod support;

use capnp_actix::{Capability, Stats};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::test_capnp::{sequencer, test};
use support::*;

// covers: P-11, P-12
#[test]
fn calls_keep_their_order_when_an_echoed_capability_resolves_back_home() {
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let client = h.client_conn.clone().unwrap();
        let seq: sequencer::Client = capnp_actix::new_client(support::SequencerImpl::new());
        // Send our sequencer to the server and call it through the promised
        // result: these calls travel to the server and back to us.
        let mut req = h.test.echo_seq_request();
        req.get().set_seq(seq);
        let echoed = req.send();
        let promised = echoed.pipeline.get_seq();
        let mut calls = send_next(&promised, 0..20);
        // Let the Return arrive: the promise now resolves to our own
        // object, and new calls must not overtake the ones in flight.
        echoed.promise.await.unwrap();
        calls.extend(send_next(&promised, 20..60));
        expect_in_order(calls, &format!("{mode:?}")).await;
        let stats = client.send(Stats).await.unwrap();
        assert_eq!(stats.embargoes_started, 1, "{mode:?}: {stats:?}");
        // Once lifted, calls go straight to the local object (P-12): they
        // still arrive in order.
        let mut req = promised.next_request();
        req.get().set_expected(60);
        assert_eq!(req.send().promise.await.unwrap().get().unwrap().get_n(), 60);
    });
}

// covers: P-10
#[test]
fn a_promise_sent_to_the_peer_resolves_there() {
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let client = h.client_conn.clone().unwrap();
        let server = h.server_conn.clone().unwrap();
        let tally = Tally::default();
        let local: test::Client =
            Capability::from_server::<test::Client, _>(TestImpl::new(&tally)).client();
        // A counter that exists only after 100 ms: send its promise now.
        let mut req = local.delayed_counter_request();
        req.get().set_millis(100);
        req.get().set_start(7);
        let later = req.send();
        let mut req = h.test.hold_request();
        req.get().set_cap(later.pipeline.get_counter());
        req.send().promise.await.unwrap();
        // Calls the server makes on the promise wait for it, then work.
        let mut req = h.test.call_held_request();
        req.get().set_by(1);
        assert_eq!(
            req.send().promise.await.unwrap().get().unwrap().get_value(),
            8
        );
        let sent = client.send(Stats).await.unwrap();
        assert_eq!(sent.resolves_sent, 1, "{mode:?}: {sent:?}");
        let received = server.send(Stats).await.unwrap();
        assert_eq!(received.resolves_received, 1, "{mode:?}: {received:?}");
        // After the Resolve the server calls the counter directly.
        let mut req = h.test.call_held_request();
        req.get().set_by(1);
        assert_eq!(
            req.send().promise.await.unwrap().get().unwrap().get_value(),
            9
        );
        drop(later);
        h.test.release_held_request().send().promise.await.unwrap();
        let t = tally.clone();
        eventually(
            "the resolved counter is released",
            Duration::from_secs(5),
            || t.counters.load(Ordering::SeqCst) == 0,
        )
        .await;
    });
}

// covers: P-10, P-11
#[test]
fn a_promise_that_resolves_to_the_peers_own_object_keeps_call_order_there() {
    for_modes(&REMOTE_MODES, |mode| async move {
        let h = harness(mode).await;
        let server = h.server_conn.clone().unwrap();
        let tally = Tally::default();
        let local: test::Client =
            Capability::from_server::<test::Client, _>(TestImpl::new(&tally)).client();
        // The server's own sequencer, wrapped in a promise of ours that
        // settles after 80 ms.
        let server_seq = h.test.sequencer_request().send().pipeline.get_seq();
        let mut req = local.delayed_seq_request();
        req.get().set_seq(server_seq);
        req.get().set_millis(80);
        let later = req.send();
        let mut req = h.test.hold_seq_request();
        req.get().set_seq(later.pipeline.get_seq());
        req.send().promise.await.unwrap();
        // The server calls through our promise; it then learns that the
        // promise is its own object, and embargoes new calls until the
        // ones on their way through us are back.
        let mut calls = Vec::new();
        for i in 0..60u32 {
            let mut req = h.test.call_held_seq_request();
            req.get().set_expected(i);
            calls.push(req.send().promise);
            actix_rt::time::sleep(Duration::from_millis(3)).await;
        }
        for (i, call) in calls.into_iter().enumerate() {
            let reply = call
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: call {i}: {e}"));
            assert_eq!(reply.get().unwrap().get_n(), i as u32);
        }
        let stats = server.send(Stats).await.unwrap();
        assert_eq!(stats.resolves_received, 1, "{mode:?}: {stats:?}");
        assert_eq!(stats.embargoes_started, 1, "{mode:?}: {stats:?}");
    });
}
