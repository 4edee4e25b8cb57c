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
