//! The call hints of P-14, replayed on the wire: as the callee honours
//! them, `onlyPromisePipeline` (the caller only pipelines on the results,
//! so no `Return` goes out and its `Finish` ends the answer) and
//! `noPromisePipelining` (the caller will not pipeline on them, so they go
//! once returned); as the caller sends them, `onlyPromisePipeline` for
//! `send_for_pipeline` and `noPromisePipelining` for streaming calls.
//! (`noFinishNeeded`: tests/wire.rs.)

mod support;

#[allow(dead_code, clippy::all)]
mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

use capnp::traits::HasTypeId;
use capnp_actix_proto::message::{self as out, OutMessage};
use capnp_actix_proto::rpc_capnp::{call, message, return_};
use capnp_actix_proto::{MessageTarget, PromisedAnswer};
use support::raw::{self, run, Peer};
use support::test_capnp;
use support::{Tally, TestImpl};
use test_capnp::{counter, test};

/// `Test.newCounter(start)` as question `id` on `main`, with the hints
/// `hint` sets.
fn new_counter(
    id: u32,
    main: MessageTarget,
    start: i64,
    hint: impl FnOnce(call::Builder<'_>),
) -> OutMessage {
    let call = raw::raw_call(id, main, test::Client::TYPE_ID, 3, &[], |c| {
        c.init_as::<test::new_counter_params::Builder>()
            .set_start(start);
    });
    raw::edit_call(call, hint)
}

/// `Counter.get()` as question `id`, on the counter in the results of
/// question `on` (pipelined).
fn get_on(id: u32, on: u32) -> OutMessage {
    let counter = MessageTarget::PromisedAnswer(PromisedAnswer {
        question_id: on,
        transform: vec![0],
    });
    raw::raw_call(id, counter, counter::Client::TYPE_ID, 1, &[], |c| {
        c.init_as::<counter::get_params::Builder>();
    })
}

/// What the `Return` in `frame` gave for a `Counter.get`: the counter's
/// value, or the exception's reason.
fn got(frame: &capnp_actix_proto::frame::Frame) -> Result<i64, String> {
    match raw::expect_return_any(frame).which().unwrap() {
        return_::Results(results) => Ok(results
            .unwrap()
            .get_content()
            .get_as::<counter::get_results::Reader>()
            .unwrap()
            .get_value()),
        return_::Exception(e) => Err(e.unwrap().get_reason().unwrap().to_string().unwrap()),
        _ => panic!("the call returned neither results nor an exception"),
    }
}

/// The answer ids of the Returns the connection sends, up to the one for
/// `last`; that question 2 (the pipelined `get`) gave 5, if it is among
/// them.
async fn until_return(peer: &mut Peer, last: u32) -> Vec<u32> {
    let mut returns = Vec::new();
    loop {
        let frame = raw::next_return(peer).await;
        let id = raw::expect_return_any(&frame).get_answer_id();
        if id == 2 {
            assert_eq!(got(&frame), Ok(5), "the counter's value");
        }
        returns.push(id);
        if id == last {
            return returns;
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
    peer.send(&new_counter(1, main, 5, |mut c| {
        c.set_only_promise_pipeline(only_pipeline)
    }))
    .await;
    peer.send(&get_on(2, 1)).await;
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

/// A `Test` whose `pipelineOnly` publishes for pipelining (and never
/// returns) a `TestImpl` as its counter: the wire does not know
/// interfaces, and calls pipelined on it reach a `Test`.
struct Relay(test::Client);

impl test::Server for Relay {
    async fn pipeline_only(
        self: std::rc::Rc<Self>,
        _: test::PipelineOnlyParams,
        mut results: test::PipelineOnlyResults,
    ) -> Result<(), capnp::Error> {
        let main = capnp::capability::FromClientHook::new(self.0.client.hook.add_ref());
        results.get().set_counter(main);
        results.set_pipeline()?;
        futures::future::pending::<()>().await;
        Ok(())
    }
}

/// Serving a `Relay`, the peer's `Relay.pipelineOnly()` as question 1,
/// which never returns, and then `Test.newCounter(5)` pipelined on its
/// results as question 2, with the hints `hint` sets: calls pipelined on a
/// running answer go by way of its actor. Gives the peer.
async fn pipelined_on_a_running_answer(hint: impl FnOnce(call::Builder<'_>)) -> Peer {
    let test: test::Client = capnp_actix::new_client(TestImpl::new(&Tally::default()));
    let main = capnp_actix::Capability::from_server::<test::Client, _>(Relay(test));
    let mut peer = Peer::connect(capnp_actix::ConnOptions::new().main_interface(main)).await;
    let main = MessageTarget::ImportedCap(peer.bootstrap(0).await);
    peer.send(&raw::raw_call(
        1,
        main,
        test::Client::TYPE_ID,
        21,
        &[],
        |c| {
            c.init_as::<test::pipeline_only_params::Builder>();
        },
    ))
    .await;
    let relayed = MessageTarget::PromisedAnswer(PromisedAnswer {
        question_id: 1,
        transform: vec![0],
    });
    peer.send(&new_counter(2, relayed, 5, hint)).await;
    peer
}

// covers: P-14
#[test]
fn a_call_pipelined_on_a_running_answer_keeps_its_only_promise_pipeline() {
    run(async {
        let mut peer =
            pipelined_on_a_running_answer(|mut c| c.set_only_promise_pipeline(true)).await;
        peer.send(&get_on(3, 2)).await;
        // (Question 3 needs question 2's results: its Return comes after
        // any Return for question 2.)
        let frame = raw::next_return(&mut peer).await;
        let id = raw::expect_return_any(&frame).get_answer_id();
        assert_eq!(id, 3, "no Return for question 2");
        assert_eq!(got(&frame), Ok(5), "the call pipelined on it went");
    });
}

// covers: P-14
#[test]
fn a_call_pipelined_on_a_running_answer_keeps_its_no_promise_pipelining() {
    run(async {
        let mut peer =
            pipelined_on_a_running_answer(|mut c| c.set_no_promise_pipelining(true)).await;
        let frame = raw::return_of(&mut peer, 2).await;
        let table = raw::expect_results(&frame, 2).get_cap_table().unwrap();
        assert_eq!(table.len(), 1, "the Return carries the counter");
        // A call pipelined on question 2's results anyway.
        peer.send(&get_on(3, 2)).await;
        let reason = got(&raw::return_of(&mut peer, 3).await).expect_err("it fails");
        assert!(reason.contains("noPromisePipelining"), "{reason}");
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

/// Our `newCounter` sent only to pipeline on, and `get` pipelined on its
/// counter, against the test playing the server: gives the first call's
/// question id and whether it said `onlyPromisePipeline`, after answering
/// `get` with 5 (and, if `ignore_hint`, answering the first call too, as
/// a peer that ignores the hint does).
async fn pipelined_get(peer: &mut Peer, test: &test::Client, ignore_hint: bool) -> (u32, bool) {
    use capnp_actix::SendForPipeline;
    let counter = test.new_counter_request().send_for_pipeline().get_counter();
    let get = counter.get_request().send().promise;
    let first = raw::next_call(peer).await;
    let call = raw::expect_call(&first);
    let (id, hinted) = (call.get_question_id(), call.get_only_promise_pipeline());
    let second = raw::next_call(peer).await;
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

/// `Test.liveCounters()` as question `id`: how many counters are alive.
async fn live_counters(peer: &mut Peer, main: &MessageTarget, id: u32) -> u32 {
    peer.send(&raw::raw_call(
        id,
        main.clone(),
        test::Client::TYPE_ID,
        18,
        &[],
        |c| {
            c.init_as::<test::live_counters_params::Builder>();
        },
    ))
    .await;
    let frame = raw::return_of(peer, id).await;
    let results = raw::expect_results(&frame, id);
    let count = results
        .get_content()
        .get_as::<test::live_counters_results::Reader>()
        .unwrap()
        .get_count();
    peer.send(&out::finish(id, false)).await;
    count
}

/// Asks `liveCounters` (as questions `next` on) until none is alive.
async fn until_no_counters(peer: &mut Peer, main: &MessageTarget, mut next: u32) {
    while live_counters(peer, main, next).await != 0 {
        next += 1;
    }
}

/// Asks for a new counter (question 1, saying `noPromisePipelining` if
/// `hinted`), releases the counter the Return exported, then pipelines
/// `get` on question 1's counter (question 2), before any Finish. Gives
/// what `get` returned (the counter's value, or the exception's reason)
/// and the peer, main and next question id, for more.
async fn release_then_pipeline(hinted: bool) -> (Result<i64, String>, Peer, MessageTarget, u32) {
    let mut peer = Peer::start().await;
    let main = MessageTarget::ImportedCap(peer.bootstrap(0).await);
    peer.send(&new_counter(1, main.clone(), 5, |mut c| {
        c.set_no_promise_pipelining(hinted)
    }))
    .await;
    let frame = raw::return_of(&mut peer, 1).await;
    let table = raw::expect_results(&frame, 1).get_cap_table().unwrap();
    assert_eq!(table.len(), 1, "the Return carries the counter");
    let capnp_actix_proto::CapDescriptor::SenderHosted(export) =
        capnp_actix_proto::CapDescriptor::read(table.get(0)).unwrap()
    else {
        panic!("the counter is not senderHosted");
    };
    peer.send(&out::release(export, 1)).await;
    peer.send(&get_on(2, 1)).await;
    let got = got(&raw::return_of(&mut peer, 2).await);
    (got, peer, main, 3)
}

// covers: P-14
#[test]
fn results_the_caller_will_not_pipeline_on_are_dropped_once_returned() {
    run(async {
        let (got, mut peer, main, next) = release_then_pipeline(true).await;
        let reason = got.expect_err("the pipelined call fails");
        assert!(reason.contains("noPromisePipelining"), "{reason}");
        // Its Release dropped the counter, though question 1 is not
        // finished: the answer kept no reference to it.
        until_no_counters(&mut peer, &main, next).await;
    });
}

// covers: P-14
#[test]
fn without_the_hint_returned_results_stay_for_pipelining() {
    run(async {
        let (got, mut peer, main, next) = release_then_pipeline(false).await;
        assert_eq!(got, Ok(5), "the pipelined call reaches the counter");
        assert_eq!(live_counters(&mut peer, &main, next).await, 1);
        // Until question 1 is finished.
        peer.send(&out::finish(1, false)).await;
        until_no_counters(&mut peer, &main, next + 1).await;
    });
}

// covers: P-14
#[test]
fn a_streaming_call_says_no_promise_pipelining() {
    use bench_capnp::sink;
    run(async {
        let (mut peer, cap, _) =
            raw::bootstrapped(capnp_actix_proto::CapDescriptor::SenderHosted(7)).await;
        let sink: sink::Client = cap.client();
        let mut write = sink.write_request();
        write.get().set_data(b"chunk");
        // (A streaming send completes while the window has room.)
        write.send().await.unwrap();
        let frame = raw::next_call(&mut peer).await;
        let call = raw::expect_call(&frame);
        assert_eq!(call.get_method_id(), 0, "Sink.write");
        assert!(
            call.get_no_promise_pipelining(),
            "its results are not pipelined on"
        );
        // An ordinary call's results may be pipelined on: no hint.
        let done = sink.done_request().send();
        let frame = raw::next_call(&mut peer).await;
        let call = raw::expect_call(&frame);
        assert_eq!(call.get_method_id(), 1, "Sink.done");
        assert!(!call.get_no_promise_pipelining());
        drop(done);
    });
}
