//! The call hints of P-14 as the callee honours them, replayed on the wire:
//! `onlyPromisePipeline` (the caller only pipelines on the results, so no
//! `Return` goes out and its `Finish` ends the answer). (`noFinishNeeded`:
//! tests/wire.rs.)

mod support;

use capnp::traits::HasTypeId;
use capnp_actix_proto::message::{self as out, OutMessage};
use capnp_actix_proto::rpc_capnp::{message, return_};
use capnp_actix_proto::{MessageTarget, PromisedAnswer};
use support::raw::{self, run, Peer};
use support::test_capnp;
use test_capnp::{counter, test};

/// What the connection sent, as (tag, answer id of a Return).
async fn until_return(peer: &mut Peer, last: u32) -> Vec<u32> {
    let mut returns = Vec::new();
    loop {
        let frame = peer.recv().await;
        let root: message::Reader = frame.get_root().unwrap();
        if let Ok(message::Return(ret)) = root.which() {
            let ret = ret.unwrap();
            let id = ret.get_answer_id();
            if id == 2 {
                // The pipelined call's results: the counter's value.
                let return_::Results(results) = ret.which().unwrap() else {
                    panic!("question 2 failed");
                };
                let value = results
                    .unwrap()
                    .get_content()
                    .get_as::<counter::get_results::Reader>()
                    .unwrap()
                    .get_value();
                assert_eq!(value, 5);
            }
            returns.push(id);
            if id == last {
                return returns;
            }
        }
    }
}

/// Asks for a new counter (question 1, with `only_pipeline` as its hint),
/// pipelines `get` on it (question 2), waits for its Return and fences
/// with a bootstrap (question 3); then finishes question 1 and fences
/// again (question 4). Gives the Returns seen before the Finish, and
/// after.
async fn scenario(only_pipeline: bool) -> (Vec<u32>, Vec<u32>) {
    let mut peer = Peer::start().await;
    let main = MessageTarget::ImportedCap(peer.bootstrap(0).await);
    let mut call: OutMessage = raw::raw_call(1, main, test::Client::TYPE_ID, 3, &[], |c| {
        c.init_as::<test::new_counter_params::Builder>()
            .set_start(5);
    });
    {
        let root: message::Builder = call.get_root().unwrap();
        let message::Call(Ok(mut c)) = root.which().unwrap() else {
            unreachable!()
        };
        c.set_only_promise_pipeline(only_pipeline);
    }
    peer.send(&call).await;
    let on_counter = MessageTarget::PromisedAnswer(PromisedAnswer {
        question_id: 1,
        transform: vec![0],
    });
    peer.send(&raw::raw_call(
        2,
        on_counter,
        counter::Client::TYPE_ID,
        1,
        &[],
        |c| {
            c.init_as::<counter::get_params::Builder>();
        },
    ))
    .await;
    // (Question 2 needs question 1's results: its Return comes after any
    // Return for question 1.)
    let mut before = until_return(&mut peer, 2).await;
    peer.send(&out::bootstrap(3)).await;
    before.extend(until_return(&mut peer, 3).await);
    peer.send(&out::finish(1, true)).await;
    peer.send(&out::bootstrap(4)).await;
    let after = until_return(&mut peer, 4).await;
    (before, after)
}

// covers: P-14
#[test]
fn a_call_made_only_to_pipeline_on_gets_no_return() {
    run(async {
        let (before, after) = scenario(true).await;
        assert!(
            before.contains(&2),
            "the pipelined call returned: {before:?}"
        );
        assert!(!before.contains(&1), "no Return for question 1: {before:?}");
        assert_eq!(after, vec![4], "nor after its Finish");
    });
}

// covers: P-14
#[test]
fn without_the_hint_the_call_returns() {
    run(async {
        let (before, _) = scenario(false).await;
        assert!(before.contains(&1) && before.contains(&2), "{before:?}");
    });
}

/// `Return{answerId}` with `counter.get` results holding `value`.
fn return_value(answer_id: u32, value: i64) -> OutMessage {
    let mut m = out::new_message();
    {
        let mut ret = m.init_root::<message::Builder>().init_return();
        ret.set_answer_id(answer_id);
        ret.set_release_param_caps(false);
        ret.init_results()
            .get_content()
            .init_as::<counter::get_results::Builder>()
            .set_value(value);
    }
    m
}

/// The next `Call` the connection sends (past Finishes and Releases).
async fn next_call(peer: &mut Peer) -> capnp_actix_proto::frame::Frame {
    loop {
        let frame = peer.recv().await;
        if raw::tag(&frame) == 2 {
            // (`Message.call` is the union's third member.)
            return frame;
        }
    }
}

/// Our `newCounter` sent only to pipeline on, and `get` pipelined on its
/// counter, against the test playing the server: gives the first call's
/// question id and whether it said `onlyPromisePipeline`, after answering
/// `get` with 5 (and, if `ignore_hint`, answering the first call too, as
/// a peer that ignores the hint does).
async fn pipelined_get(peer: &mut Peer, test: &test::Client, ignore_hint: bool) -> (u32, bool) {
    use capnp_actix::SendForPipeline;
    let counter = test.new_counter_request().send_for_pipeline().get_counter();
    let get = counter.get_request().send().promise;
    let first = next_call(peer).await;
    let call = raw::expect_call(&first);
    let (id, hinted) = (call.get_question_id(), call.get_only_promise_pipeline());
    let second = next_call(peer).await;
    let get_id = raw::expect_call(&second).get_question_id();
    if ignore_hint {
        peer.send(&raw::return_empty(id, false)).await;
    }
    peer.send(&return_value(get_id, 5)).await;
    assert_eq!(get.await.unwrap().get().unwrap().get_value(), 5);
    drop(counter);
    (id, hinted)
}

// covers: P-14
#[test]
fn a_call_sent_only_to_pipeline_on_asks_for_no_return() {
    run(async {
        let (mut peer, cap, _) =
            raw::bootstrapped(capnp_actix_proto::CapDescriptor::SenderHosted(7)).await;
        let test: test::Client = cap.client();
        let (id, hinted) = pipelined_get(&mut peer, &test, false).await;
        assert!(hinted, "the call says onlyPromisePipeline");
        assert!(
            id >= capnp_actix_proto::table::PIPELINE_IDS,
            "from the high ids: {id}"
        );
        // Dropped, it is finished (asking the peer to release its results).
        let seen =
            raw::collect_until(&mut peer, |seen| seen.contains(&raw::Seen::Finish(id))).await;
        assert!(seen.contains(&raw::Seen::Finish(id)));
        // A peer that ignores the hint returns anyway: tolerated, and the
        // hint is not used again on this connection.
        let (id, hinted) = pipelined_get(&mut peer, &test, true).await;
        assert!(hinted);
        let (later, hinted) = pipelined_get(&mut peer, &test, false).await;
        assert!(
            !hinted && later < capnp_actix_proto::table::PIPELINE_IDS,
            "{later}"
        );
        let _ = id;
    });
}
