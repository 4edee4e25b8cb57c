//! Where a call's results go and what its caller does with them (P-13,
//! P-14): what each `Call` wants, and the `Return`s that rely on it.

use super::events;
use crate::cap_descriptor::MessageTarget;
use crate::connection::pair::{call_message, reframe, Test};
use crate::connection::{Config, Connection, Event, Outcome, Wants};
use crate::message as out;
use crate::rpc_capnp::message;

// covers: P-13, P-14
#[test]
fn a_call_wants_what_its_send_results_to_and_hints_say() {
    // (yourself, onlyPromisePipeline, noPromisePipelining) -> wants
    let cases = [
        (false, false, false, Wants::Results),
        (false, false, true, Wants::NoPipelining),
        (false, true, false, Wants::PipelineOnly),
        // Made only to pipeline on, the results stay for that.
        (false, true, true, Wants::PipelineOnly),
        // Results sent elsewhere return so, whatever the hints.
        (true, true, false, Wants::Elsewhere),
        (true, false, true, Wants::Elsewhere),
    ];
    for (question_id, (yourself, only, no, wants)) in (0..).zip(cases) {
        let mut conn = Connection::<Test>::new(Config::default());
        let (export, _) = conn.export(7, false, || "main".into());
        let mut m = call_message(question_id, &MessageTarget::ImportedCap(export), &[]);
        {
            let root: message::Builder = m.get_root().unwrap();
            let message::Call(Ok(mut call)) = root.which().unwrap() else {
                unreachable!()
            };
            if yourself {
                call.reborrow().init_send_results_to().set_yourself(());
            }
            call.set_only_promise_pipeline(only);
            call.set_no_promise_pipelining(no);
        }
        conn.receive(reframe(&m)).unwrap();
        let Some(Event::Call(call)) = conn.poll_event() else {
            panic!("no call delivered");
        };
        assert_eq!(call.wants, wants, "{yourself} {only} {no}");
    }
}

#[test]
fn take_from_other_question_needs_a_call_that_said_yourself() {
    let mut conn = Connection::<Test>::new(Config::default());
    let id = conn.next_question_id();
    conn.asked(1, "q".into(), vec![]);
    conn.start_answer(4, vec![], Wants::Results, 0).unwrap();
    let mut m = out::new_message();
    {
        let mut ret = m.init_root::<message::Builder>().init_return();
        ret.set_answer_id(id);
        ret.set_take_from_other_question(4);
    }
    let e = conn.receive(reframe(&m)).unwrap_err();
    assert!(e.reason().contains("sendResultsTo.yourself"), "{e}");
    let mut conn = Connection::<Test>::new(Config::default());
    conn.asked(1, "q".into(), vec![]);
    conn.start_answer(4, vec![], Wants::Elsewhere, 0).unwrap();
    conn.receive(reframe(&m)).unwrap();
    assert!(matches!(
        &events(&mut conn)[..],
        [Event::Return {
            outcome: Outcome::TakeFrom(4),
            ..
        }]
    ));
}

// covers: P-13
#[test]
fn results_sent_elsewhere_needs_a_question_that_said_yourself() {
    // A question we asked for its results: the Return may not say the
    // results stayed with the peer.
    let mut conn = Connection::<Test>::new(Config::default());
    let id = conn.asked(1, "q".into(), vec![]);
    let e = conn
        .receive(reframe(&out::return_results_sent_elsewhere(id)))
        .unwrap_err();
    assert!(e.reason().contains("resultsSentElsewhere"), "{e}");
    // Our tail call (sendResultsTo.yourself): it may, and the question
    // stays known for pipelined calls until the runtime lets go of it.
    let mut conn = Connection::<Test>::new(Config::default());
    let id = conn.asked_with(1, "q".into(), vec![], Wants::Elsewhere);
    conn.receive(reframe(&out::return_results_sent_elsewhere(id)))
        .unwrap();
    assert!(matches!(
        &events(&mut conn)[..],
        [Event::Return {
            outcome: Outcome::SentElsewhere,
            ..
        }]
    ));
    assert_eq!(conn.question_id(1), Some(id));
}
