//! The connection's decisions, replayed message by message between two
//! connections wired in memory (no runtime, no timing).

use super::pair::{call_message, reframe, return_message, Pair, Side, Test};
use super::{CallTo, Config, Connection, Event, Incoming, Outcome, Sent, Wants};
use crate::cap_descriptor::{CapDescriptor, MessageTarget, PromisedAnswer};
use crate::embargo::Resolution;
use crate::error::ErrorKind;
use crate::message::{self as out, DisembargoContext};
use crate::rpc_capnp::message;

mod results;

fn events(conn: &mut Connection<Test>) -> Vec<Event<Test>> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn promised(question_id: u32, transform: &[u16]) -> MessageTarget {
    MessageTarget::PromisedAnswer(PromisedAnswer {
        question_id,
        transform: transform.to_vec(),
    })
}

/// What kind of message `conn` sends next, without taking it.
fn sent_kinds(conn: &mut Connection<Test>) -> Vec<String> {
    let mut kinds = Vec::new();
    let mut kept = Vec::new();
    while let Some(m) = conn.poll_transmit() {
        let root: message::Reader = m.get_root_as_reader().unwrap();
        kinds.push(out::kind(root).to_string());
        kept.push(m);
    }
    for m in kept {
        conn.send(m);
    }
    kinds
}

/// `side` embargoes `target`: the peer reflects it along `back` (the
/// Tribble rule), and the embargo lifts.
fn embargo_round_trip(pair: &mut Pair, side: Side, target: MessageTarget, back: MessageTarget) {
    let peer = match side {
        Side::A => Side::B,
        Side::B => Side::A,
    };
    let label = format!("calls on {target:?}");
    let embargo = pair.side(side).embargo(target, label.clone());
    pair.deliver(side).unwrap();
    let [Event::Reflect { target, embargo_id }] = &events(pair.side(peer))[..] else {
        panic!("no reflection")
    };
    assert_eq!((target, *embargo_id), (&back, embargo));
    pair.side(peer).reflect(&back, embargo);
    pair.deliver(peer).unwrap();
    assert!(matches!(&events(pair.side(side))[..], [Event::EmbargoLifted(w)] if *w == label));
}

/// B, with a flow limit of one byte, runs a call of A's (`first`, on B's
/// main interface `target`): the next calls wait.
fn one_call_at_the_flow_limit() -> (Pair, MessageTarget, u32) {
    let mut pair = Pair::with_configs(
        Config::default(),
        Config {
            flow_limit: 1,
            ..Config::default()
        },
    );
    let import = bootstrapped(&mut pair);
    let target = MessageTarget::ImportedCap(import);
    let first = pair.call(Side::A, 10, &target, &[]);
    pair.deliver(Side::A).unwrap();
    let [Event::Call(call)] = &events(&mut pair.b)[..] else {
        panic!()
    };
    pair.b
        .start_answer(first, vec![], Wants::Results, call.bytes)
        .unwrap();
    (pair, target, first)
}

/// Side B serves its bootstrap interface as export 0, answered to A's
/// question 0: gives A's import id of it.
fn bootstrapped(pair: &mut Pair) -> u32 {
    let q = pair.a.bootstrap(1, "bootstrap".into());
    pair.deliver(Side::A).unwrap();
    let [Event::Bootstrap {
        question_id,
        refusal: None,
    }] = &events(&mut pair.b)[..]
    else {
        panic!("no bootstrap")
    };
    assert_eq!(*question_id, q);
    pair.b
        .start_answer(q, vec![vec![]], Wants::Results, 0)
        .unwrap();
    let (export, _) = pair.b.export(100, false, || "main".into());
    pair.return_results(Side::B, q, &[CapDescriptor::SenderHosted(export)]);
    pair.deliver(Side::B).unwrap();
    match &events(&mut pair.a)[..] {
        [Event::Return {
            outcome: Outcome::Results { caps, .. },
            ..
        }] => match caps[..] {
            [Incoming::Import { id, promise: false }] => id,
            _ => panic!("bootstrap returned {caps:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bootstrap_call_return_finish() {
    let mut pair = Pair::new();
    let import = bootstrapped(&mut pair);
    let q = pair.call(Side::A, 2, &MessageTarget::ImportedCap(import), &[]);
    pair.deliver(Side::A).unwrap();
    let [Event::Call(call)] = &events(&mut pair.b)[..] else {
        panic!()
    };
    assert_eq!(call.target, CallTo::Export(0));
    pair.b
        .start_answer(call.question_id, vec![], Wants::Results, call.bytes)
        .unwrap();
    assert_eq!(pair.b.inbound_bytes(), call.bytes);
    // No capabilities: noFinishNeeded, the answer ends at once.
    assert!(pair
        .return_results(Side::B, call.question_id, &[])
        .is_some());
    assert_eq!(pair.b.inbound_bytes(), 0);
    pair.deliver(Side::B).unwrap();
    let [Event::Return {
        question_id,
        taker: Some(taker),
        no_finish_needed: true,
        ..
    }] = &events(&mut pair.a)[..]
    else {
        panic!()
    };
    assert_eq!((*question_id, taker.as_str()), (q, "question 2"));
    // The id is free already: letting go sends nothing.
    pair.a.question_dropped(2);
    assert!(!pair.a.has_transmit());
    // The bootstrap question carried a capability: it needs its Finish.
    pair.a.question_dropped(1);
    assert_eq!(sent_kinds(&mut pair.a), ["finish"]);
    pair.deliver(Side::A).unwrap();
    assert!(matches!(&events(&mut pair.b)[..], [Event::AnswerEnded(_)]));
    assert_eq!((pair.a.questions(), pair.b.answers()), (0, 0));
}

#[test]
fn release_of_the_last_reference_releases_the_export() {
    let mut pair = Pair::new();
    let import = bootstrapped(&mut pair);
    let (_, generation) = pair.a.import_mut(import).unwrap();
    pair.a.import_dropped(import, generation + 1); // not the current one
    assert!(!pair.a.has_transmit());
    pair.a.import_dropped(import, generation);
    pair.deliver(Side::A).unwrap();
    let released: Vec<_> = events(&mut pair.b);
    assert!(matches!(&released[..], [Event::Released(label)] if label == "main"));
    assert_eq!(pair.b.exports(), 0);
}

#[test]
fn protocol_errors_are_errors() {
    // A second call with an id in use.
    let mut pair = Pair::new();
    let import = bootstrapped(&mut pair);
    let call = call_message(5, &MessageTarget::ImportedCap(import), &[]);
    pair.b.receive(reframe(&call)).unwrap();
    let [Event::Call(c)] = &events(&mut pair.b)[..] else {
        panic!()
    };
    pair.b
        .start_answer(c.question_id, vec![], Wants::Results, 0)
        .unwrap();
    let again = pair.b.receive(reframe(&call)).unwrap_err();
    assert!(
        again.reason().contains("duplicate question id 5"),
        "{again}"
    );
    // A call to an export that does not exist.
    let stray = call_message(6, &MessageTarget::ImportedCap(42), &[]);
    let e = pair.b.receive(reframe(&stray)).unwrap_err();
    assert!(e.reason().contains("export 42"), "{e}");
    // A Release of more references than were given.
    let e = pair.b.receive(reframe(&out::release(0, 5))).unwrap_err();
    assert!(e.reason().contains("bad Release"), "{e}");
    // A Return for a question never asked.
    let e = pair
        .a
        .receive(reframe(&return_message(9, &[], false)))
        .unwrap_err();
    assert!(e.reason().contains("bad Return"), "{e}");
    // A Disembargo lifting an embargo never started.
    let lift = out::disembargo(
        &MessageTarget::ImportedCap(0),
        DisembargoContext::ReceiverLoopback(3),
    );
    assert!(pair.a.receive(reframe(&lift)).is_err());
}

// covers: P-07
#[test]
fn an_early_finish_does_not_cancel_an_answer_with_calls_pipelined_on_it() {
    // As a C++ client does in a chain of `next()` calls: A calls, pipelines
    // a call on the result, and lets go of the first question before its
    // Return. The pipelined call still needs the results, so B's answer
    // runs on (rpc.capnp, `Finish`), and its Return ends it.
    let mut pair = Pair::new();
    let import = bootstrapped(&mut pair);
    let q = pair.call(Side::A, 2, &MessageTarget::ImportedCap(import), &[]);
    let p = pair.call(Side::A, 3, &promised(q, &[0]), &[]);
    pair.a.question_dropped(2);
    // B starts each answer as its runtime would, then takes the Finish.
    for id in [q, p] {
        pair.deliver_one(Side::A).unwrap();
        assert!(matches!(&events(&mut pair.b)[..], [Event::Call(c)] if c.question_id == id));
        pair.b
            .start_answer(id, vec![vec![0]], Wants::Results, 0)
            .unwrap();
    }
    pair.deliver(Side::A).unwrap();
    let seen = events(&mut pair.b);
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Cancel { .. })),
        "no Cancel: {seen:?}"
    );
    let (export, _) = pair.b.export(200, false, || "result".into());
    let ended = pair.return_results(Side::B, q, &[CapDescriptor::SenderHosted(export)]);
    assert!(ended.is_some(), "the Finish came first: the Return ends it");

    // Without a pipelined call, the same early Finish cancels.
    let q = pair.call(Side::A, 4, &MessageTarget::ImportedCap(import), &[]);
    pair.a.question_dropped(4);
    pair.deliver_one(Side::A).unwrap();
    events(&mut pair.b);
    pair.b
        .start_answer(q, vec![vec![0]], Wants::Results, 0)
        .unwrap();
    pair.deliver(Side::A).unwrap();
    assert!(events(&mut pair.b)
        .iter()
        .any(|e| matches!(e, Event::Cancel { question_id, .. } if *question_id == q)));
}

#[test]
fn a_pipelined_call_on_an_ended_answer_fails_alone() {
    let mut pair = Pair::new();
    bootstrapped(&mut pair);
    let stale = call_message(3, &promised(8, &[0]), &[]);
    pair.b.receive(reframe(&stale)).unwrap();
    let [Event::Call(call)] = &events(&mut pair.b)[..] else {
        panic!()
    };
    assert!(matches!(&call.target, CallTo::Broken(e) if e.reason().contains("answer 8")));
}

#[test]
fn messages_we_do_not_implement_are_echoed() {
    let mut conn = Connection::<Test>::new(Config::default());
    let mut m = out::new_message();
    m.init_root::<message::Builder>().init_provide();
    conn.receive(reframe(&m)).unwrap();
    assert_eq!(sent_kinds(&mut conn), ["unimplemented"]);
    assert!(conn.poll_event().is_none());
}

// covers: P-21
#[test]
fn resolve_to_none_is_a_protocol_error() {
    let mut pair = Pair::new();
    let resolve = out::resolve(0, Ok(&CapDescriptor::None));
    let e = pair.a.receive(reframe(&resolve)).unwrap_err();
    assert!(e.reason().contains("CapDescriptor.none"), "{e}");
}

// covers: P-21
#[test]
fn bootstrap_with_a_deprecated_object_id_gets_an_exception() {
    let mut conn = Connection::<Test>::new(Config::default());
    let mut m = out::bootstrap(0);
    {
        let root: message::Builder = m.get_root().unwrap();
        let message::Bootstrap(Ok(b)) = root.which().unwrap() else {
            panic!()
        };
        b.init_deprecated_object_id()
            .set_as(capnp::text::Reader::from("old"))
            .unwrap();
    }
    conn.receive(reframe(&m)).unwrap();
    let [Event::Bootstrap {
        question_id: 0,
        refusal: Some(e),
    }] = &events(&mut conn)[..]
    else {
        panic!()
    };
    assert!(e.reason().contains("deprecatedObjectId"));
    let mut none = Connection::<Test>::new(Config {
        serves_bootstrap: false,
        ..Config::default()
    });
    none.receive(reframe(&out::bootstrap(0))).unwrap();
    assert!(matches!(
        &events(&mut none)[..],
        [Event::Bootstrap {
            refusal: Some(_),
            ..
        }]
    ));
}

// covers: P-21
#[test]
fn an_early_finish_releases_result_caps_and_its_return_imports_nothing() {
    let mut pair = Pair::new();
    let import = bootstrapped(&mut pair);
    let q = pair.call(Side::A, 2, &MessageTarget::ImportedCap(import), &[]);
    pair.deliver(Side::A).unwrap();
    let [Event::Call(call)] = &events(&mut pair.b)[..] else {
        panic!()
    };
    pair.b
        .start_answer(call.question_id, vec![vec![0]], Wants::Results, 0)
        .unwrap();
    // A lets go before the Return: its Finish asks B to release the
    // results' capabilities itself.
    pair.a.question_dropped(2);
    let finish = pair.a.poll_transmit().unwrap();
    let root: message::Reader = finish.get_root_as_reader().unwrap();
    let message::Finish(Ok(f)) = root.which().unwrap() else {
        panic!()
    };
    assert!(f.get_release_result_caps());
    pair.b.receive(reframe(&finish)).unwrap();
    assert!(
        matches!(&events(&mut pair.b)[..], [Event::Cancel { question_id, after_delivery: false }] if *question_id == q)
    );
    // B's Return crosses the Finish, with an object of B's.
    let (export, _) = pair.b.export(200, false, || "result".into());
    let ended = pair.return_results(Side::B, q, &[CapDescriptor::SenderHosted(export)]);
    // The Finish asked: the result export is released as the answer ends.
    assert!(ended.is_some());
    assert!(matches!(&events(&mut pair.b)[..], [Event::Released(r)] if r == "result"));
    pair.deliver(Side::B).unwrap();
    let imports = pair.a.imports();
    let [Event::Return {
        outcome: Outcome::Error(_),
        ..
    }] = &events(&mut pair.a)[..]
    else {
        panic!()
    };
    assert_eq!(
        pair.a.imports(),
        imports,
        "nothing imported from the late Return"
    );
    assert_eq!(pair.a.questions(), 1, "only the bootstrap question is open");
}

// covers: P-18
/// The Tribble 4-way race, on an answer: B calls A with its promise P and
/// pipelines on the result; A returns `receiverHosted P`; B resolves P to
/// A's own object and sends `Disembargo{senderLoopback}` naming the path
/// into the answer. A reflects it along what it described (P itself, back
/// to B), with no abort, and B's embargo lifts.
#[test]
fn tribble_race_on_an_answer_reflects_along_what_was_described() {
    let mut pair = Pair::new();
    // A serves its bootstrap to B this time.
    let q0 = pair.b.bootstrap(1, "bootstrap".into());
    pair.deliver(Side::B).unwrap();
    events(&mut pair.a);
    pair.a
        .start_answer(q0, vec![vec![]], Wants::Results, 0)
        .unwrap();
    let (main, _) = pair.a.export(1, false, || "A's main".into());
    pair.return_results(Side::A, q0, &[CapDescriptor::SenderHosted(main)]);
    pair.deliver(Side::A).unwrap();
    events(&mut pair.b);
    // B calls A's main with its promise P.
    let (p, _) = pair.b.export(50, true, || "P".into());
    let q = pair.call(
        Side::B,
        2,
        &MessageTarget::ImportedCap(main),
        &[CapDescriptor::SenderPromise(p)],
    );
    pair.deliver_one(Side::B).unwrap();
    let got = events(&mut pair.a);
    let [Event::Call(call)] = &got[..] else {
        panic!()
    };
    assert_eq!(
        call.caps,
        [Incoming::Import {
            id: p,
            promise: true
        }]
    );
    pair.a
        .start_answer(q, vec![vec![0]], Wants::Results, 0)
        .unwrap();
    // ...and pipelines a call on the result's capability.
    pair.call(Side::B, 3, &promised(q, &[0]), &[]);
    pair.deliver(Side::B).unwrap();
    let got = events(&mut pair.a);
    assert!(
        matches!(&got[..], [Event::Call(c)] if c.target == CallTo::Answer { question_id: q, transform: vec![0], returned: false })
    );
    // A returns P back to B: receiverHosted P.
    pair.return_results(Side::A, q, &[CapDescriptor::ReceiverHosted(p)]);
    pair.deliver(Side::A).unwrap();
    let [Event::Return {
        outcome: Outcome::Results { caps, .. },
        ..
    }] = &events(&mut pair.b)[..]
    else {
        panic!()
    };
    assert_eq!(caps, &[Incoming::Export(p)]);
    // B's runtime: the result is its own P, and a call went through A:
    // that path is embargoed.
    assert_eq!(
        Resolution::of(&CapDescriptor::ReceiverHosted(p)),
        Resolution::Reflected
    );
    // Meanwhile P resolves to A's main, and B says so.
    assert!(pair
        .b
        .resolve_export(p, Ok(CapDescriptor::ReceiverHosted(main))));
    let embargo = pair.b.embargo_path(2, &[0], "calls on q.0".into()).unwrap();
    pair.deliver(Side::B).unwrap();
    let got = events(&mut pair.a);
    let [Event::Resolve {
        promise_id,
        to: Ok(Incoming::Export(to)),
        resolution: Resolution::Reflected,
    }, Event::ReflectWhenSettled {
        question_id,
        transform,
        target,
        embargo_id,
    }] = &got[..]
    else {
        panic!("{got:?}")
    };
    assert_eq!((*promise_id, *to), (p, main));
    assert_eq!(
        (*question_id, &transform[..], *embargo_id),
        (q, &[0][..], embargo)
    );
    // Back along P, B's export, as described: not to A's own main.
    assert_eq!(target, &MessageTarget::ImportedCap(p));
    pair.a.reflect(target, *embargo_id);
    pair.a.reflection_done();
    pair.deliver(Side::A).unwrap();
    assert!(matches!(&events(&mut pair.b)[..], [Event::EmbargoLifted(w)] if w == "calls on q.0"));
}

// covers: P-18
/// The mirror case: A exports a promise, B calls on it; the promise settles
/// to B's own export and A's `Resolve` says `receiverHosted`. B embargoes
/// its import; A reflects the Disembargo along what it resolved to.
#[test]
fn tribble_race_on_a_resolved_export_reflects_along_the_resolution() {
    let mut pair = Pair::new();
    let import = bootstrapped(&mut pair);
    // A gives B its promise P (in a call's params), and B an object X of
    // its own back.
    let (p, _) = pair.a.export(7, true, || "P".into());
    pair.call(
        Side::A,
        2,
        &MessageTarget::ImportedCap(import),
        &[CapDescriptor::SenderPromise(p)],
    );
    pair.deliver(Side::A).unwrap();
    let [Event::Call(call)] = &events(&mut pair.b)[..] else {
        panic!()
    };
    assert_eq!(
        call.caps,
        [Incoming::Import {
            id: p,
            promise: true
        }]
    );
    let (x, _) = pair.b.export(300, false, || "X".into());
    pair.b
        .start_answer(call.question_id, vec![vec![0]], Wants::Results, 0)
        .unwrap();
    pair.return_results(Side::B, call.question_id, &[CapDescriptor::SenderHosted(x)]);
    pair.deliver(Side::B).unwrap();
    events(&mut pair.a);
    // B calls P (through A).
    pair.call(Side::B, 9, &MessageTarget::ImportedCap(p), &[]);
    pair.deliver(Side::B).unwrap();
    assert!(matches!(&events(&mut pair.a)[..], [Event::Call(c)] if c.target == CallTo::Export(p)));
    // P settles to X: A's Resolve names B's own export.
    assert!(pair
        .a
        .resolve_export(p, Ok(CapDescriptor::ReceiverHosted(x))));
    assert!(
        !pair
            .a
            .resolve_export(p, Ok(CapDescriptor::ReceiverHosted(x))),
        "one Resolve"
    );
    pair.deliver(Side::A).unwrap();
    let [Event::Resolve {
        promise_id,
        resolution: Resolution::Reflected,
        ..
    }] = &events(&mut pair.b)[..]
    else {
        panic!()
    };
    assert_eq!(*promise_id, p);
    embargo_round_trip(
        &mut pair,
        Side::B,
        MessageTarget::ImportedCap(p),
        MessageTarget::ImportedCap(x),
    );
}

// covers: F-08
#[test]
fn a_disembargo_on_an_unreturned_answer_is_refused_and_reflections_are_bounded() {
    let mut pair = Pair::with_configs(
        Config {
            max_reflections: 1,
            ..Config::default()
        },
        Config::default(),
    );
    let q0 = pair.b.bootstrap(1, "bootstrap".into());
    pair.deliver(Side::B).unwrap();
    events(&mut pair.a);
    pair.a
        .start_answer(q0, vec![vec![]], Wants::Results, 0)
        .unwrap();
    let sender_loopback = |id| {
        reframe(&out::disembargo(
            &promised(q0, &[]),
            DisembargoContext::SenderLoopback(id),
        ))
    };
    let e = pair.a.receive(sender_loopback(0)).unwrap_err();
    assert!(e.reason().contains("has not returned"), "{e}");
    // Returned as B's own import: the reflection goes back along it.
    let mut pair = Pair::with_configs(
        Config {
            max_reflections: 1,
            ..Config::default()
        },
        Config::default(),
    );
    pair.b.bootstrap(1, "bootstrap".into());
    pair.deliver(Side::B).unwrap();
    events(&mut pair.a);
    let (p, _) = pair.b.export(1, true, || "P".into());
    let _ = p;
    pair.a
        .start_answer(q0, vec![vec![]], Wants::Results, 0)
        .unwrap();
    pair.return_results(Side::A, q0, &[CapDescriptor::ReceiverHosted(0)]);
    pair.a.receive(sender_loopback(0)).unwrap();
    assert!(matches!(
        &events(&mut pair.a)[..],
        [Event::ReflectWhenSettled { .. }]
    ));
    let e = pair.a.receive(sender_loopback(1)).unwrap_err();
    assert!(e.reason().contains("Disembargos waiting"), "{e}");
}

// covers: P-19, P-20
#[test]
fn a_promise_is_one_export_with_one_resolve_and_goes_when_released() {
    let mut conn = Connection::<Test>::new(Config::default());
    let (id, new) = conn.export(5, true, || "promise".into());
    assert!(new);
    assert_eq!(conn.export(5, true, || unreachable!()), (id, false));
    assert_eq!(conn.export_refs(id), Some(2));
    assert!(conn.resolve_export(id, Err(crate::Error::failed("broke"))));
    assert!(!conn.resolve_export(id, Err(crate::Error::failed("again"))));
    // Resolved: the key names a new export now.
    let (again, new) = conn.export(5, true, || "promise, sent again".into());
    assert!(new && again != id);
    conn.receive(reframe(&out::release(id, 2))).unwrap();
    assert!(matches!(&events(&mut conn)[..], [Event::Released(p)] if p == "promise"));
    assert_eq!(conn.counts().resolves_sent, 1);
}

// covers: F-07
/// Over the flow limit, the peer's calls wait, but the `Return` of our own
/// call (made by a handler that called the peer back) does not: otherwise
/// the handler, its caller and the connection wait for each other forever.
#[test]
fn over_the_flow_limit_a_return_passes_waiting_calls() {
    let (mut pair, target, first) = one_call_at_the_flow_limit();
    // The second call waits, and so does a Finish behind it.
    let second = pair.call(Side::A, 11, &target, &[]);
    pair.deliver(Side::A).unwrap();
    pair.a.question_dropped(1);
    pair.deliver(Side::A).unwrap();
    assert!(events(&mut pair.b).is_empty());
    // B's handler calls A back (on a path of A's bootstrap question, here:
    // any question of A's will do); A answers; the Return reaches B.
    let callback = pair.call(Side::B, 20, &promised(0, &[]), &[]);
    pair.deliver(Side::B).unwrap();
    let got = events(&mut pair.a);
    let [Event::Call(c)] = &got[..] else {
        panic!("{got:?}")
    };
    pair.a
        .start_answer(c.question_id, vec![], Wants::Results, 0)
        .unwrap();
    pair.return_results(Side::A, c.question_id, &[]);
    events(&mut pair.a);
    pair.deliver(Side::A).unwrap();
    let got = events(&mut pair.b);
    assert!(
        matches!(&got[..], [Event::Return { question_id, .. }] if *question_id == callback),
        "{got:?}"
    );
    // The first call returns: the second runs, then the Finish.
    pair.return_results(Side::B, first, &[]);
    events(&mut pair.b);
    assert!(pair.b.handle_waiting().unwrap());
    assert!(matches!(&events(&mut pair.b)[..], [Event::Call(c)] if c.question_id == second));
    pair.b
        .start_answer(second, vec![], Wants::Results, 8)
        .unwrap();
    // The Finish (of the bootstrap question) waited behind it only.
    assert!(pair.b.handle_waiting().unwrap());
    assert!(matches!(&events(&mut pair.b)[..], [Event::AnswerEnded(_)]));
    assert!(!pair.b.handle_waiting().unwrap());
}

// covers: F-07
#[test]
fn a_call_over_the_bound_is_refused_at_once_and_its_answer_keeps_its_turn() {
    let (mut pair, target, first) = one_call_at_the_flow_limit();
    // One call waits (the parked calls' bound is the limit: the first one
    // always fits); the next one is refused at once.
    pair.call(Side::A, 11, &target, &[]);
    let refused = pair.call(Side::A, 12, &target, &[]);
    pair.deliver(Side::A).unwrap();
    assert_eq!(sent_kinds(&mut pair.b), ["return"]);
    pair.deliver(Side::B).unwrap();
    let got = events(&mut pair.a);
    let [Event::Return {
        question_id,
        outcome: Outcome::Error(e),
        ..
    }] = &got[..]
    else {
        panic!("{got:?}")
    };
    assert_eq!((*question_id, e.kind()), (refused, ErrorKind::Overloaded));
    // Its answer enters in turn, after the waiting call.
    pair.return_results(Side::B, first, &[]);
    events(&mut pair.b);
    assert!(pair.b.handle_waiting().unwrap());
    let got = events(&mut pair.b);
    let [Event::Call(c)] = &got[..] else { panic!() };
    pair.b
        .start_answer(c.question_id, vec![], Wants::Results, c.bytes)
        .unwrap();
    pair.return_results(Side::B, c.question_id, &[]);
    events(&mut pair.b);
    assert!(pair.b.handle_waiting().unwrap());
    assert!(
        matches!(&events(&mut pair.b)[..], [Event::Refused { question_id, .. }] if *question_id == refused)
    );
}

#[test]
fn a_return_naming_a_waiting_question_waits_for_it() {
    let (mut pair, target, first) = one_call_at_the_flow_limit();
    let waiting = pair.call(Side::A, 11, &target, &[]);
    pair.deliver(Side::A).unwrap();
    // B asked A something; A's Return names the waiting call's answer.
    let q = pair.b.next_question_id();
    pair.b.asked(30, "asked".into(), vec![]);
    let ret = return_message(
        q,
        &[CapDescriptor::ReceiverAnswer(PromisedAnswer {
            question_id: waiting,
            transform: vec![],
        })],
        false,
    );
    pair.b.receive(reframe(&ret)).unwrap();
    assert!(events(&mut pair.b).is_empty(), "the Return waits");
    pair.return_results(Side::B, first, &[]);
    events(&mut pair.b);
    assert!(pair.b.handle_waiting().unwrap());
    let got = events(&mut pair.b);
    let [Event::Call(c)] = &got[..] else { panic!() };
    pair.b
        .start_answer(c.question_id, vec![], Wants::Results, 0)
        .unwrap();
    assert!(pair.b.handle_waiting().unwrap());
    let got = events(&mut pair.b);
    let [Event::Return {
        outcome: Outcome::Results { caps, .. },
        ..
    }] = &got[..]
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        caps,
        &[Incoming::Answer(PromisedAnswer {
            question_id: waiting,
            transform: vec![]
        })]
    );
}

#[test]
fn an_unimplemented_echo_fails_the_question_and_releases_its_params() {
    let mut conn = Connection::<Test>::new(Config::default());
    let (export, _) = conn.export(1, false, || "param".into());
    let id = conn.next_question_id();
    let call = call_message(
        id,
        &MessageTarget::ImportedCap(0),
        &[CapDescriptor::SenderHosted(export)],
    );
    conn.asked(1, "q".into(), vec![export]);
    let mut echo = out::new_message();
    echo.init_root::<message::Builder>()
        .set_unimplemented(call.get_root_as_reader().unwrap())
        .unwrap();
    conn.receive(reframe(&echo)).unwrap();
    let got = events(&mut conn);
    assert!(matches!(&got[0], Event::Released(p) if p == "param"));
    assert!(
        matches!(&got[1], Event::Return { outcome: Outcome::Error(e), .. } if e.kind() == ErrorKind::Unimplemented)
    );
}

#[test]
fn max_imports_bounds_what_the_peer_makes_us_hold() {
    let mut conn = Connection::<Test>::new(Config {
        max_imports: 1,
        ..Config::default()
    });
    let id = conn.next_question_id();
    conn.asked(1, "q".into(), vec![]);
    let ret = return_message(
        id,
        &[
            CapDescriptor::SenderHosted(1),
            CapDescriptor::SenderHosted(2),
        ],
        false,
    );
    let e = conn.receive(reframe(&ret)).unwrap_err();
    assert!(e.reason().contains("max_imports"), "{e}");
}

#[test]
fn after_abort_nothing_more_is_decided() {
    let mut conn = Connection::<Test>::new(Config::default());
    conn.receive(reframe(&out::abort(&crate::Error::failed("bye"))))
        .unwrap();
    assert!(matches!(&events(&mut conn)[..], [Event::Aborted(e)] if e.reason() == "bye"));
    assert!(conn.is_closed());
    conn.receive(reframe(&out::bootstrap(0))).unwrap();
    assert!(conn.poll_event().is_none());
    let mut conn = Connection::<Test>::new(Config::default());
    conn.abort(&crate::Error::failed("ours"));
    assert_eq!(sent_kinds(&mut conn), ["abort"]);
    let _ = Sent::default();
}

// covers: P-17
/// A promise that resolves to another promise, which then resolves home.
/// Calls went through the first: the embargo rule hands that on to the
/// second, whose resolution to A's own object then needs an embargo; B
/// reflects it along what it resolved the second promise to.
#[test]
fn promise_to_promise_to_home_hands_on_and_embargoes() {
    use crate::embargo::{after_resolution, AfterResolution};
    let mut pair = Pair::new();
    let boot = bootstrapped(&mut pair);
    // A calls B's main, passing its own object X; B answers with promise P1.
    let (x, _) = pair.a.export(1, false, || "X".into());
    let q = pair.call(
        Side::A,
        2,
        &MessageTarget::ImportedCap(boot),
        &[CapDescriptor::SenderHosted(x)],
    );
    pair.deliver(Side::A).unwrap();
    let [Event::Call(call)] = &events(&mut pair.b)[..] else {
        panic!()
    };
    let x_at_b = match call.caps[..] {
        [Incoming::Import { id, promise: false }] => id,
        _ => panic!("{:?}", call.caps),
    };
    pair.b
        .start_answer(q, vec![vec![0]], Wants::Results, 0)
        .unwrap();
    let (p1, _) = pair.b.export(10, true, || "P1".into());
    pair.return_results(Side::B, q, &[CapDescriptor::SenderPromise(p1)]);
    pair.deliver(Side::B).unwrap();
    let [Event::Return {
        outcome: Outcome::Results { caps, .. },
        ..
    }] = &events(&mut pair.a)[..]
    else {
        panic!()
    };
    assert_eq!(
        caps,
        &[Incoming::Import {
            id: p1,
            promise: true
        }]
    );
    // A calls through P1: calls went to the peer.
    let calls_sent = true;
    pair.call(Side::A, 3, &MessageTarget::ImportedCap(p1), &[]);
    pair.deliver(Side::A).unwrap();
    events(&mut pair.b);
    // P1 resolves to another promise of B's, P2.
    let (p2, _) = pair.b.export(11, true, || "P2".into());
    assert!(pair
        .b
        .resolve_export(p1, Ok(CapDescriptor::SenderPromise(p2))));
    pair.deliver(Side::B).unwrap();
    let [Event::Resolve {
        promise_id,
        to: Ok(Incoming::Import { id, promise: true }),
        resolution,
    }] = &events(&mut pair.a)[..]
    else {
        panic!()
    };
    assert_eq!((*promise_id, *id), (p1, p2));
    // The rule: P2 inherits that calls went through (P-17).
    assert_eq!(
        after_resolution(*resolution, calls_sent),
        AfterResolution::HandOn
    );
    // P2 resolves home, to X.
    assert!(pair
        .b
        .resolve_export(p2, Ok(CapDescriptor::ReceiverHosted(x_at_b))));
    pair.deliver(Side::B).unwrap();
    let [Event::Resolve {
        promise_id,
        to: Ok(Incoming::Export(home)),
        resolution,
    }] = &events(&mut pair.a)[..]
    else {
        panic!()
    };
    assert_eq!((*promise_id, *home), (p2, x));
    assert_eq!(
        after_resolution(*resolution, calls_sent),
        AfterResolution::Embargo
    );
    // Back along what P2 was resolved to: A's X, as B imports it.
    embargo_round_trip(
        &mut pair,
        Side::A,
        MessageTarget::ImportedCap(p2),
        MessageTarget::ImportedCap(x_at_b),
    );
}

// covers: P-12, T-04
#[test]
fn naming_what_we_send() {
    use super::Sending;
    let mut conn = Connection::<Test>::new(Config::default());
    let q = conn.bootstrap(1, "bootstrap".into());
    // A path into our own question's answer: named as that path.
    let path = Sending::QuestionPath {
        key: 1,
        transform: vec![0],
        otherwise: 70,
    };
    let named = conn.name(path.clone(), || unreachable!());
    assert_eq!(
        named.descriptor,
        CapDescriptor::ReceiverAnswer(PromisedAnswer {
            question_id: q,
            transform: vec![0]
        })
    );
    // Once the question is let go, the path is ours to export, as a
    // promise whose Resolve the runtime arranges once.
    conn.question_dropped(1);
    let named = conn.name(path.clone(), || "path".into());
    assert!(named.new_promise);
    assert!(matches!(named.descriptor, CapDescriptor::SenderPromise(_)));
    assert!(!conn.name(path, || unreachable!()).new_promise);
    // The same object twice: one export, two references.
    let a = conn.name(Sending::Object(71), || "object".into());
    let b = conn.name(Sending::Object(71), || unreachable!());
    assert_eq!(a, b);
    let CapDescriptor::SenderHosted(id) = a.descriptor else {
        panic!()
    };
    assert_eq!(conn.export_refs(id), Some(2));
    assert_eq!(
        conn.name(Sending::Null, || unreachable!()).descriptor,
        CapDescriptor::None
    );
}
