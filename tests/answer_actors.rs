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

/// `frame` as a `Return`, or a failure of round `round`.
fn as_return(frame: &capnp_actix_proto::frame::Frame, round: u32) -> return_::Reader<'_> {
    let root: capnp_actix_proto::rpc_capnp::message::Reader = frame.get_root().unwrap();
    let Ok(capnp_actix_proto::rpc_capnp::message::Return(ret)) = root.which() else {
        panic!("round {round}: not a Return");
    };
    ret.unwrap()
}

/// The value a `Counter.increment` returned.
fn increment_value(results: capnp_actix_proto::rpc_capnp::payload::Reader<'_>) -> i64 {
    results
        .get_content()
        .get_as::<test_capnp::counter::increment_results::Reader>()
        .unwrap()
        .get_value()
}

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

/// `Test.delayedCounter(millis, 0)` on the main interface, as question
/// `question_id`: a counter, after `millis`.
fn delayed_counter_call(
    question_id: u32,
    main: u32,
    millis: u32,
) -> capnp_actix_proto::message::OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    let mut c = m
        .init_root::<capnp_actix_proto::rpc_capnp::message::Builder>()
        .init_call();
    c.set_question_id(question_id);
    capnp_actix_proto::MessageTarget::ImportedCap(main).write(c.reborrow().init_target());
    c.set_interface_id(TEST_ID);
    c.set_method_id(17);
    let mut params = c
        .init_params()
        .get_content()
        .init_as::<test_capnp::test::delayed_counter_params::Builder>();
    params.set_millis(millis);
    params.set_start(0);
    m
}

/// `Counter.increment(1)` on the capability answer `on` returns, as
/// question `question_id`.
fn increment_call(question_id: u32, on: u32) -> capnp_actix_proto::message::OutMessage {
    use capnp::traits::HasTypeId;
    let mut m = capnp_actix_proto::message::new_message();
    let mut c = m
        .init_root::<capnp_actix_proto::rpc_capnp::message::Builder>()
        .init_call();
    c.set_question_id(question_id);
    capnp_actix_proto::MessageTarget::PromisedAnswer(
        capnp_actix_proto::cap_descriptor::PromisedAnswer {
            question_id: on,
            transform: vec![0],
        },
    )
    .write(c.reborrow().init_target());
    c.set_interface_id(<test_capnp::counter::Client as HasTypeId>::TYPE_ID);
    c.set_method_id(0);
    c.init_params()
        .get_content()
        .init_as::<test_capnp::counter::increment_params::Builder>()
        .set_by(1);
    m
}

// covers: P-07
/// A `Finish` that comes before the `Return` does not cancel an answer the
/// peer pipelined calls on: they still need its results (rpc.capnp,
/// `Finish`). A C++ client sends exactly this in a chain of calls, each
/// on the last one's result: it lets go of each question as soon as the
/// next call on it went out.
#[test]
fn a_finish_does_not_cancel_an_answer_with_calls_pipelined_on_it() {
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        for round in 0..10u32 {
            // The counter comes after 5 ms: the Finish is read long before.
            peer.send(&delayed_counter_call(1, main, 5)).await;
            peer.send(&increment_call(2, 1)).await;
            peer.send(&out::finish(1, false)).await;
            let mut returned = [false; 2];
            while returned != [true, true] {
                let frame = peer.recv().await;
                let ret = as_return(&frame, round);
                let id = ret.get_answer_id();
                let return_::Results(results) = ret.which().unwrap() else {
                    panic!("round {round}: call {id} did not return results");
                };
                if id == 2 {
                    let value = increment_value(results.unwrap());
                    assert_eq!(value, 1, "round {round}");
                }
                returned[id as usize - 1] = true;
            }
            peer.send(&out::finish(2, false)).await;
        }
    });
}

/// Calls the peer pipelines on an answer keep their order whichever way
/// each one goes: held by the answer's actor until the results exist,
/// then straight to the results once they are known. The calls come one
/// write at a time, spread over the time the answer takes, so that its
/// results fall at a different point of the sequence each round; each
/// increment must see the ones before it.
#[test]
fn calls_pipelined_on_an_answer_keep_their_order_across_its_return() {
    run(async {
        for round in 0..40u32 {
            let mut peer = Peer::start().await;
            let main = peer.bootstrap(0).await;
            peer.send(&delayed_counter_call(1, main, 2)).await;
            for i in 0..12u32 {
                if (round + i) % 4 == 0 {
                    actix_rt::time::sleep(std::time::Duration::from_micros(300)).await;
                }
                peer.send(&increment_call(2 + i, 1)).await;
            }
            let mut seen = 0;
            while seen < 13 {
                let frame = peer.recv().await;
                let ret = as_return(&frame, round);
                let id = ret.get_answer_id();
                let return_::Results(results) = ret.which().unwrap() else {
                    panic!("round {round}: call {id} failed");
                };
                if id >= 2 {
                    let value = increment_value(results.unwrap());
                    assert_eq!(
                        value,
                        i64::from(id - 1),
                        "round {round}: call {id} overtook"
                    );
                }
                seen += 1;
            }
        }
    });
}

/// A call pipelined on an answer that its `Finish` cancelled fails (it
/// does not wait for results that will never come), and the connection
/// goes on. (Only a call that comes after the `Finish` can meet a
/// cancelled answer: one made before keeps the answer running, see the
/// next test. A peer should not pipeline on a question it finished; the
/// call fails alone.)
#[test]
fn a_call_pipelined_on_a_cancelled_answer_fails() {
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        for round in 0..20u32 {
            peer.send(&hang_call(1, main)).await;
            peer.send(&out::finish(1, false)).await;
            peer.send(&increment_call(2, 1)).await;
            let mut canceled = false;
            let mut failed = false;
            while !(canceled && failed) {
                let frame = peer.recv().await;
                let ret = as_return(&frame, round);
                match (ret.get_answer_id(), ret.which().unwrap()) {
                    (1, return_::Canceled(())) => canceled = true,
                    (2, return_::Exception(_)) => failed = true,
                    (id, _) => panic!("round {round}: unexpected Return for {id}"),
                }
            }
            peer.send(&out::finish(2, false)).await;
            peer.send(&echo_call(3, main, "after")).await;
            expect_results(&peer.recv().await, 3);
        }
    });
}

/// `Test.pipelineOnly(5)` on `target`, as question `question_id`: a call
/// that publishes a counter for pipelining and never returns.
fn pipeline_only_call(
    question_id: u32,
    target: capnp_actix_proto::MessageTarget,
) -> capnp_actix_proto::message::OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    let mut c = m
        .init_root::<capnp_actix_proto::rpc_capnp::message::Builder>()
        .init_call();
    c.set_question_id(question_id);
    target.write(c.reborrow().init_target());
    c.set_interface_id(TEST_ID);
    c.set_method_id(21);
    c.init_params()
        .get_content()
        .init_as::<test_capnp::test::pipeline_only_params::Builder>()
        .set_start(5);
    m
}

/// A call pipelined on an answer whose method publishes its results early
/// (`setPipeline`) and never returns reaches those results, however its
/// messages are cut: here the bootstrap, the call on it and the call
/// pipelined on that come in one read.
#[test]
fn a_call_pipelined_on_results_published_early_arrives_in_any_read() {
    run(async {
        for round in 0..10u32 {
            let mut peer = Peer::start().await;
            let bootstrap_path = capnp_actix_proto::MessageTarget::PromisedAnswer(
                capnp_actix_proto::cap_descriptor::PromisedAnswer {
                    question_id: 0,
                    transform: vec![],
                },
            );
            let mut all = encoded(&out::bootstrap(0));
            all.extend(encoded(&pipeline_only_call(1, bootstrap_path)));
            all.extend(encoded(&increment_call(2, 1)));
            peer.send_raw(&all).await;
            let mut returned = Vec::new();
            while !returned.contains(&2) {
                let frame = peer.recv().await;
                let ret = as_return(&frame, round);
                let id = ret.get_answer_id();
                assert!(
                    matches!(ret.which().unwrap(), return_::Results(_)),
                    "round {round}: call {id} failed"
                );
                assert_ne!(id, 1, "round {round}: pipelineOnly never returns");
                returned.push(id);
            }
        }
    });
}
