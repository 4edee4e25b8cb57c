//! The actors that run the peer's calls: a connection keeps those of
//! answers that returned and gives each one the next answer, so these
//! tests check that a kept actor never carries anything of its last answer
//! into the next one.

mod support;

use capnp_actix_proto::message as out;
use capnp_actix_proto::rpc_capnp::return_;
use support::raw::*;
// The generated code names its own types as `crate::test_capnp::...`.
#[allow(unused_imports)]
use support::test_capnp;

/// A call of the `Test` method that never returns, to export `main`.
fn hang_call(question_id: u32, main: u32) -> capnp_actix_proto::message::OutMessage {
    call(
        question_id,
        capnp_actix_proto::MessageTarget::ImportedCap(main),
        HANG,
        "",
    )
}

/// Finishes question `id`, whose call hangs: its `Return` says canceled.
async fn finish_and_expect_canceled(peer: &mut Peer, id: u32, round: usize) {
    peer.send(&out::finish(id, false)).await;
    let frame = peer.recv().await;
    assert!(
        matches!(
            expect_return(&frame, id).which().unwrap(),
            return_::Canceled(())
        ),
        "round {round}: the hanging call was not cancelled"
    );
}

/// A `Finish` that crosses its call's `Return` (it cancels the call if it
/// still runs, else it is ignored) never cancels the next call the peer
/// makes with the same question id, whichever actor runs it.
#[test]
fn a_finish_crossing_its_return_never_cancels_the_next_call_with_that_id() {
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        for round in 0..200 {
            // A call and its Finish at once: the call may have run or not.
            let mut bytes = encoded(&echo_call(1, main, "early"));
            bytes.extend(encoded(&out::finish(1, false)));
            peer.send_raw(&bytes).await;
            let frame = peer.recv().await;
            match expect_return(&frame, 1).which().unwrap() {
                return_::Results(_) | return_::Canceled(()) => {}
                _ => panic!("round {round}: neither results nor canceled"),
            }
            // The id again, for a call that must run to its end.
            peer.send(&echo_call(1, main, "again")).await;
            let frame = peer.recv().await;
            let results = expect_results(&frame, 1);
            let text = results
                .get_content()
                .get_as::<test_capnp::test::echo_results::Reader>()
                .unwrap()
                .get_text()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(text, "again", "round {round}");
            // (It carried no capabilities: noFinishNeeded.)
        }
    });
}

/// A call that hangs is cancelled by its `Finish`, and the actor that ran
/// it runs the next call normally.
#[test]
fn an_actor_whose_call_was_cancelled_runs_the_next_one() {
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        for round in 0..20 {
            peer.send(&hang_call(1, main)).await;
            finish_and_expect_canceled(&mut peer, 1, round).await;
            peer.send(&echo_call(2, main, "next")).await;
            let frame = peer.recv().await;
            expect_results(&frame, 2);
        }
    });
}

/// Calls in flight at once each have an actor of their own: a call that
/// hangs does not hold up the next, and its `Finish` cancels just it.
#[test]
fn calls_in_flight_each_have_their_own_actor() {
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        // An actor that ran a call is kept for the next ones.
        peer.send(&echo_call(5, main, "warm")).await;
        expect_results(&peer.recv().await, 5);
        for round in 0..20 {
            peer.send(&hang_call(1, main)).await;
            peer.send(&echo_call(2, main, "meanwhile")).await;
            expect_results(&peer.recv().await, 2);
            finish_and_expect_canceled(&mut peer, 1, round).await;
        }
    });
}

/// Our questions in flight at once each have an actor of their own (the
/// connection keeps those of answered questions for the next ones): a
/// question that waits does not take the answers of the next, however
/// many come and go meanwhile.
#[test]
fn questions_in_flight_each_have_their_own_actor() {
    support::for_modes(&[support::Mode::Pair], |mode| async move {
        let h = support::harness(mode).await;
        let mut hanging = Vec::new();
        for round in 0..20 {
            hanging.push(h.test.hang_request().send().promise);
            for i in 0..5 {
                let text = format!("round {round}, call {i}");
                assert_eq!(support::echo(&h.test, &text).await, text);
            }
        }
        // Each waiting question still has its own actor: when the
        // connection closes, every one of them hears why.
        let conn = h.client_conn.clone().expect("a connection");
        conn.send(capnp_actix::Close).await.unwrap();
        for (round, call) in hanging.into_iter().enumerate() {
            let outcome = actix_rt::time::timeout(std::time::Duration::from_secs(5), call)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the hanging call never heard"));
            let e = outcome.err().expect("no answer to a call that hangs");
            assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "round {round}: {e}");
        }
    });
}
