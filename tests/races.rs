//! The races a C++ peer provokes around promise resolution and embargoes,
//! replayed message by message by a raw peer: what is asserted is what our
//! side sends (or does not send) at each step.
//!
//! - P-17: the fact that calls went through a promise is handed on when it
//!   resolves to another promise of the peer's.
//! - P-18: the Tribble 4-way race (rpc.capnp, `Disembargo`): a
//!   `senderLoopback` is reflected along exactly what we described, and a
//!   capability the peer names as ours is embargoed even when it forwards
//!   back to the peer.
//! - P-19, P-20: promise exports are released with what they wait on, and
//!   one promise is one export with one `Resolve`.

mod support;

use capnp_actix::{Capability, Stats};
use capnp_actix_proto::message::{self as out, DisembargoContext};
use capnp_actix_proto::{CapDescriptor, MessageTarget, PromisedAnswer};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::raw::*;
// The generated code names its own types as `crate::test_capnp::...`.
use support::test_capnp;
use support::{CounterImpl, Tally, TestImpl};
use test_capnp::{counter, sequencer, test};

const COUNTER_ID: u64 = <counter::Client as capnp::traits::HasTypeId>::TYPE_ID;
const ECHO_CAP: u16 = 4;
const NEW_COUNTER: u16 = 3;

/// How long to watch for what our side sends after a step.
const WINDOW: Duration = Duration::from_millis(100);

fn promised(question_id: u32, transform: &[u16]) -> MessageTarget {
    MessageTarget::PromisedAnswer(PromisedAnswer {
        question_id,
        transform: transform.to_vec(),
    })
}

/// The first cap-table entry of a `Call`'s params.
fn first_param_cap(frame: &capnp_actix_proto::frame::Frame) -> CapDescriptor {
    let table = expect_call(frame)
        .get_params()
        .unwrap()
        .get_cap_table()
        .unwrap();
    CapDescriptor::read(table.get(0)).unwrap()
}

/// A `hold` call kept pending (dropping it would send a `Finish`).
type Held = capnp::capability::RemotePromise<test::hold_results::Owned>;

/// Sends our counter to the peer in a `hold` call on `cap`; gives the
/// export id it went out as, and the call.
async fn export_counter(peer: &mut Peer, cap: &Capability, mine: &counter::Client) -> (u32, Held) {
    let client: test::Client = cap.client();
    let mut req = client.hold_request();
    req.get().set_cap(mine.clone());
    let hold = req.send();
    match first_param_cap(&peer.recv().await) {
        CapDescriptor::SenderHosted(id) => (id, hold),
        other => panic!("a local counter went out as {other:?}"),
    }
}

fn increment(
    counter: &counter::Client,
    by: i64,
) -> capnp::capability::RemotePromise<counter::increment_results::Owned> {
    let mut req = counter.increment_request();
    req.get().set_by(by);
    req.send()
}

async fn value_of(counter: &counter::Client) -> i64 {
    let reply = counter.get_request().send().promise.await.unwrap();
    reply.get().unwrap().get_value()
}

/// The id of the one `senderLoopback` to `target` in `sent`.
fn sender_loopback(sent: &[Seen], target: &MessageTarget) -> u32 {
    sent.iter()
        .find_map(|s| match s {
            Seen::Disembargo(t, DisembargoContext::SenderLoopback(id)) if t == target => Some(*id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no senderLoopback to {target:?} in {sent:?}"))
}

/// Checks that a call made now on `counter` waits for the embargo (our
/// counter `mine` does not see it), and goes on once the peer reflects
/// embargo `id`.
async fn held_until_reflected(
    peer: &mut Peer,
    counter: &counter::Client,
    mine: &counter::Client,
    id: u32,
) {
    let held = increment(counter, 10);
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(value_of(mine).await, 0, "a call overtook the embargo");
    peer.send(&out::disembargo(
        &MessageTarget::ImportedCap(0),
        DisembargoContext::ReceiverLoopback(id),
    ))
    .await;
    let reply = held.promise.await.unwrap();
    assert_eq!(reply.get().unwrap().get_value(), 10);
}

/// Asserts that nothing in `sent` is a `Disembargo`.
fn no_disembargo(sent: &[Seen]) {
    assert!(
        !sent.iter().any(|s| matches!(s, Seen::Disembargo(..))),
        "{sent:?}"
    );
}

/// The peer resolves its promise `promise` to our `export` (our counter
/// `mine`): we must send a `senderLoopback` along the promise, and a call
/// made then on `counter` waits until the peer reflects it.
async fn resolves_home(
    peer: &mut Peer,
    promise: u32,
    export: u32,
    counter: &counter::Client,
    mine: &counter::Client,
) {
    peer.send(&out::resolve(
        promise,
        Ok(&CapDescriptor::ReceiverHosted(export)),
    ))
    .await;
    let target = MessageTarget::ImportedCap(promise);
    let sent = collect_until(peer, |s| {
        s.iter().any(|s| {
            matches!(s, Seen::Disembargo(t, DisembargoContext::SenderLoopback(_)) if *t == target)
        })
    })
    .await;
    let id = sender_loopback(&sent, &target);
    held_until_reflected(peer, counter, mine, id).await;
}

/// A promise of ours that settles, after 30 ms, to `cap` (the peer's
/// import), sent to the peer in a `holdSeq` call while unsettled; gives the
/// export id it went out as (after checking its `Resolve` named `import`),
/// and what keeps the calls alive.
async fn export_promise_of(peer: &mut Peer, cap: &Capability, import: u32) -> (u32, impl Sized) {
    let tally = Tally::default();
    let local: test::Client =
        Capability::from_server::<test::Client, _>(TestImpl::new(&tally)).client();
    let mut req = local.delayed_seq_request();
    req.get().set_seq(cap.client::<sequencer::Client>());
    req.get().set_millis(30);
    let delayed = req.send();
    let client: test::Client = cap.client();
    let mut hold = client.hold_seq_request();
    hold.get().set_seq(delayed.pipeline.get_seq());
    let held = hold.send();
    let CapDescriptor::SenderPromise(export) = first_param_cap(&peer.recv().await) else {
        panic!("an unsettled promise goes out as senderPromise");
    };
    let resolve = Seen::Resolve(export, CapDescriptor::ReceiverHosted(import));
    let sent = collect_until(peer, |s| s.contains(&resolve)).await;
    assert!(sent.contains(&resolve), "{sent:?}");
    (export, (delayed, held, local))
}

// covers: P-17
#[test]
fn a_promise_resolved_to_another_promise_that_comes_home_embargoes() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let (export, _hold) = export_counter(&mut peer, &cap, &mine).await;
        // A call through the first promise goes to the peer.
        let as_counter: counter::Client = cap.client();
        let _in_flight = increment(&as_counter, 1);
        let sent = collect(&mut peer, WINDOW).await;
        assert!(
            matches!(&sent[..], [Seen::Call(_, MessageTarget::ImportedCap(7))]),
            "{sent:?}"
        );
        // It resolves to another promise of the peer's: nothing to hold yet.
        peer.send(&out::resolve(7, Ok(&CapDescriptor::SenderPromise(8))))
            .await;
        no_disembargo(&collect(&mut peer, WINDOW).await);
        // That one resolves to our counter: the call sent through the first
        // promise may still be on its way back, so new calls wait.
        resolves_home(&mut peer, 8, export, &as_counter, &mine).await;
    });
}

// covers: P-17
#[test]
fn a_result_that_is_a_promise_coming_home_later_embargoes_the_path() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let (export, _hold) = export_counter(&mut peer, &cap, &mine).await;
        // A call, and a call pipelined on its result.
        let pending = cap.new_call(support::raw::TEST_ID, NEW_COUNTER).send();
        let question = expect_call(&peer.recv().await).get_question_id();
        let as_counter: counter::Client = pending.pipeline().cap(&[]).client();
        let _early = increment(&as_counter, 1);
        let sent = collect(&mut peer, WINDOW).await;
        assert!(
            matches!(&sent[..], [Seen::Call(_, MessageTarget::PromisedAnswer(p))] if p.question_id == question),
            "{sent:?}"
        );
        // The result is a promise of the peer's: no embargo yet.
        peer.send(&return_cap(question, CapDescriptor::SenderPromise(8)))
            .await;
        no_disembargo(&collect(&mut peer, WINDOW).await);
        // It resolves to our counter: the pipelined call may still be on
        // its way back through the peer.
        resolves_home(&mut peer, 8, export, &as_counter, &mine).await;
        drop(pending);
    });
}

// covers: P-18
#[test]
fn a_result_naming_our_export_is_embargoed_even_when_it_forwards_to_the_peer() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        // A promise of ours that settles, after a moment, to the peer's
        // own object 1; sent to the peer while unsettled.
        let (export, _keep) = export_promise_of(&mut peer, &cap, 1).await;
        // A call, with a call pipelined on its result, which the peer then
        // names as our export: ours, though it forwards back to the peer.
        let pending = cap.new_call(support::raw::TEST_ID, ECHO_CAP).send();
        let question = expect_call(&peer.recv().await).get_question_id();
        let as_counter: counter::Client = pending.pipeline().cap(&[]).client();
        let _early = increment(&as_counter, 1);
        let _ = collect(&mut peer, WINDOW).await;
        peer.send(&return_cap(question, CapDescriptor::ReceiverHosted(export)))
            .await;
        let sent = collect(&mut peer, WINDOW).await;
        let id = sender_loopback(&sent, &promised(question, &[]));
        // A new call waits: it must not reach the peer's object yet.
        let _held = increment(&as_counter, 10);
        let sent = collect(&mut peer, WINDOW).await;
        assert!(
            !sent
                .iter()
                .any(|s| matches!(s, Seen::Call(_, MessageTarget::ImportedCap(1)))),
            "a call overtook the embargo: {sent:?}"
        );
        peer.send(&out::disembargo(
            &MessageTarget::ImportedCap(export),
            DisembargoContext::ReceiverLoopback(id),
        ))
        .await;
        let sent = collect(&mut peer, WINDOW).await;
        assert!(
            sent.iter()
                .any(|s| matches!(s, Seen::Call(_, MessageTarget::ImportedCap(1)))),
            "the held call goes on to the peer's object: {sent:?}"
        );
        drop(pending);
    });
}

// covers: P-18
#[test]
fn a_sender_loopback_on_our_answer_is_reflected_along_what_the_return_described() {
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        // q1: echoCap(the peer's promise 5): we return it as receiverHosted 5.
        peer.send(&raw_call(
            1,
            MessageTarget::ImportedCap(main),
            TEST_ID,
            ECHO_CAP,
            &[CapDescriptor::SenderPromise(5)],
            |c| {
                c.init_as::<test::echo_cap_params::Builder>()
                    .set_cap(placeholder());
            },
        ))
        .await;
        let frame = peer.recv().await;
        let table = expect_results(&frame, 1).get_cap_table().unwrap();
        assert_eq!(
            CapDescriptor::read(table.get(0)).unwrap(),
            CapDescriptor::ReceiverHosted(5)
        );
        let get = |id| {
            raw_call(id, promised(1, &[0]), COUNTER_ID, 1, &[], |c| {
                c.init_as::<counter::get_params::Builder>();
            })
        };
        // A call pipelined on q1 goes back to the peer's promise.
        peer.send(&get(2)).await;
        let sent = collect(&mut peer, WINDOW).await;
        assert!(
            matches!(&sent[..], [Seen::Call(_, MessageTarget::ImportedCap(5))]),
            "{sent:?}"
        );
        // The peer resolves its promise to our main object.
        peer.send(&out::resolve(5, Ok(&CapDescriptor::ReceiverHosted(main))))
            .await;
        let mut sent = collect(&mut peer, WINDOW).await;
        // A call pipelined on q1 now still goes where the Return said: to
        // the peer's promise, never straight to our object.
        peer.send(&get(3)).await;
        sent.extend(collect(&mut peer, WINDOW).await);
        let forwarded = sent
            .iter()
            .filter(|s| matches!(s, Seen::Call(_, MessageTarget::ImportedCap(5))))
            .count();
        assert_eq!(forwarded, 1, "the later call is forwarded too: {sent:?}");
        // The peer's own embargo, naming our answer, is reflected along
        // receiverHosted 5, after the forwarded call; no Abort.
        peer.send(&out::disembargo(
            &promised(1, &[0]),
            DisembargoContext::SenderLoopback(0),
        ))
        .await;
        let reflected = collect(&mut peer, WINDOW).await;
        assert_eq!(
            reflected,
            vec![Seen::Disembargo(
                MessageTarget::ImportedCap(5),
                DisembargoContext::ReceiverLoopback(0)
            )]
        );
        // The peer's promise export stays referenced while our answer
        // names it, and is released once the answer is finished.
        assert!(
            !sent.iter().any(|s| matches!(s, Seen::Release(5, _))),
            "{sent:?}"
        );
        if let Some(ours) = sent.iter().find_map(|s| match s {
            Seen::Disembargo(_, DisembargoContext::SenderLoopback(id)) => Some(*id),
            _ => None,
        }) {
            peer.send(&out::disembargo(
                &MessageTarget::ImportedCap(main),
                DisembargoContext::ReceiverLoopback(ours),
            ))
            .await;
        }
        peer.send(&out::finish(1, true)).await;
        let sent = collect(&mut peer, WINDOW).await;
        assert!(sent.contains(&Seen::Release(5, 1)), "{sent:?}");
    });
}

// covers: P-18
#[test]
fn a_sender_loopback_on_our_resolved_export_is_reflected_along_its_resolve() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, &tally));
        let (counter_export, _hold) = export_counter(&mut peer, &cap, &mine).await;
        // A promise of ours that settles to the peer's promise 7.
        let (export, _keep) = export_promise_of(&mut peer, &cap, 7).await;
        // The peer's promise 7 resolves to our counter; then the peer, told
        // that our export resolved to its promise, sends a senderLoopback
        // naming our export.
        peer.send(&out::resolve(
            7,
            Ok(&CapDescriptor::ReceiverHosted(counter_export)),
        ))
        .await;
        peer.send(&out::disembargo(
            &MessageTarget::ImportedCap(export),
            DisembargoContext::SenderLoopback(4),
        ))
        .await;
        let sent = collect(&mut peer, WINDOW).await;
        assert!(
            sent.contains(&Seen::Disembargo(
                MessageTarget::ImportedCap(7),
                DisembargoContext::ReceiverLoopback(4)
            )),
            "reflected along the Resolve: {sent:?}"
        );
        assert!(
            !sent.iter().any(|s| matches!(s, Seen::Release(7, _))),
            "the peer's promise stays referenced while our export names it: {sent:?}"
        );
        let stats = peer.conn.send(Stats).await.unwrap();
        assert!(stats.exports >= 2, "the connection lives: {stats:?}");
    });
}

// covers: P-19
#[test]
fn releasing_a_promise_export_cancels_the_call_it_waited_on() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        let tally = Tally::default();
        let local = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
        // A promise for the result of a local call that never returns by
        // itself, sent to the peer; then every local reference is dropped.
        let hanging = local.new_call(TEST_ID, HANG).send();
        let promise: counter::Client = hanging.pipeline().cap(&[]).client();
        let client: test::Client = cap.client();
        let mut hold = client.hold_request();
        hold.get().set_cap(promise);
        let held = hold.send();
        let CapDescriptor::SenderPromise(export) = first_param_cap(&peer.recv().await) else {
            panic!("an unsettled promise goes out as senderPromise");
        };
        drop((hanging, held, local));
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            tally.cancellations.load(Ordering::SeqCst),
            0,
            "the export holds the call"
        );
        // The peer releases it: the call is cancelled.
        peer.send(&out::release(export, 1)).await;
        let t = tally.clone();
        support::eventually(
            "the local call is cancelled",
            Duration::from_secs(2),
            || t.cancellations.load(Ordering::SeqCst) == 1,
        )
        .await;
        assert_eq!(peer.conn.send(Stats).await.unwrap().exports, 0);
    });
}

// covers: P-20, T-04
#[test]
fn one_promise_is_one_export_with_one_resolve() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        let tally = Tally::default();
        let local: test::Client =
            Capability::from_server::<test::Client, _>(TestImpl::new(&tally)).client();
        let mut req = local.delayed_counter_request();
        req.get().set_millis(60);
        req.get().set_start(0);
        let delayed = req.send();
        let promise = delayed.pipeline.get_counter();
        let client: test::Client = cap.client();
        let send = |promise: &counter::Client| {
            let mut hold = client.hold_request();
            hold.get().set_cap(promise.clone());
            hold.send()
        };
        // The same pipelined capability, sent twice: one export id.
        let _a = send(&promise);
        let first = first_param_cap(&peer.recv().await);
        let _b = send(&promise);
        let second = first_param_cap(&peer.recv().await);
        let CapDescriptor::SenderPromise(export) = first else {
            panic!("an unsettled promise goes out as senderPromise: {first:?}");
        };
        assert_eq!(second, first, "the same promise, exported again");
        assert_eq!(peer.conn.send(Stats).await.unwrap().exports, 1);
        // The peer releases both references, and we send it once more:
        // the id comes back (lowest free), and still gets one Resolve.
        peer.send(&out::release(export, 2)).await;
        let _ = collect(&mut peer, Duration::from_millis(20)).await;
        let _c = send(&promise);
        assert_eq!(first_param_cap(&peer.recv().await), first);
        // Until the one Resolve, then a while more for any second one.
        let mut sent = collect_until(&mut peer, |s| {
            s.iter()
                .any(|s| matches!(s, Seen::Resolve(id, _) if *id == export))
        })
        .await;
        sent.extend(collect(&mut peer, WINDOW).await);
        let resolves = sent
            .iter()
            .filter(|s| matches!(s, Seen::Resolve(id, _) if *id == export))
            .count();
        assert_eq!(resolves, 1, "{sent:?}");
        drop(delayed);
    });
}
