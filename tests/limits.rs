//! Limits a peer cannot push us past: the inbound flow limit, the bytes
//! waiting for a peer that does not read, open questions and imports. Each
//! test plays a hostile or careless peer byte by byte.

mod support;

use capnp_actix::{ConnOptions, Stats};
use capnp_actix_proto::message::OutMessage;
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::{CapDescriptor, MessageTarget};
use std::time::Duration;
use support::raw::*;
use support::test_capnp;
use test_capnp::test;
use tokio::io::AsyncWriteExt;

/// `Test.delayedCounter(millis, 1)` on `target`, as question `id`.
fn delayed(id: u32, target: u32, millis: u32) -> OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    {
        let mut c = m.init_root::<message::Builder>().init_call();
        c.set_question_id(id);
        MessageTarget::ImportedCap(target).write(c.reborrow().init_target());
        c.set_interface_id(TEST_ID);
        c.set_method_id(17);
        let mut p = c
            .init_params()
            .get_content()
            .init_as::<test::delayed_counter_params::Builder>();
        p.set_millis(millis);
        p.set_start(1);
    }
    m
}

// covers: F-05
#[test]
fn over_the_flow_limit_calls_wait_their_turn() {
    run(async {
        // Room for two calls running, and two waiting: none is refused,
        // and no more than two run at once.
        let mut peer = Peer::start().await;
        let one_call = encoded(&delayed(1, 0, 30)).len();
        drop(peer);
        peer = Peer::serving(ConnOptions::new().flow_limit(2 * one_call)).await;
        let main = peer.bootstrap(0).await;
        for id in 1..=4 {
            peer.send(&delayed(id, main, 30)).await;
        }
        let conn = peer.conn.clone();
        let watcher = actix::spawn(async move {
            let mut most = 0;
            for _ in 0..60 {
                let stats = conn.send(Stats).await.unwrap();
                most = most.max(stats.inbound_bytes);
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            most
        });
        let mut returned = Vec::new();
        while returned.len() < 4 {
            let frame = peer.recv().await;
            let root: message::Reader = frame.get_root().unwrap();
            if let Ok(message::Return(r)) = root.which() {
                let r = r.unwrap();
                assert!(
                    matches!(
                        r.which(),
                        Ok(capnp_actix_proto::rpc_capnp::return_::Results(_))
                    ),
                    "call {} was not run",
                    r.get_answer_id()
                );
                returned.push(r.get_answer_id());
            }
        }
        let most = watcher.await.unwrap();
        assert!(most > 0, "the calls were counted");
        assert!(
            most <= 2 * one_call,
            "{most} bytes of calls at once, the limit is {}",
            2 * one_call
        );
    });
}

/// The next `Return` our side sends (a `Finish` may come first).
async fn next_return(peer: &mut Peer) -> capnp_actix_proto::frame::Frame {
    loop {
        let frame = peer.recv().await;
        let root: message::Reader = frame.get_root().unwrap();
        if let Ok(message::Return(_)) = root.which() {
            return frame;
        }
    }
}

/// `Return{results: (result)}`: the answer to `Callback.call`.
fn callback_return(answer_id: u32, result: i64) -> OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    {
        let mut r = m.init_root::<message::Builder>().init_return();
        r.set_answer_id(answer_id);
        r.set_release_param_caps(false);
        r.init_results()
            .get_content()
            .init_as::<test_capnp::callback::call_results::Builder>()
            .set_result(result);
    }
    m
}

/// A server with a 1-byte flow limit, running q1 = `callBack(the peer's
/// callback 10, 5)`: its handler has called the peer and waits for the
/// Return. Gives the peer, the main export, and the callback's question.
async fn calling_back() -> (Peer, u32, u32) {
    let mut peer = Peer::serving(ConnOptions::new().flow_limit(1)).await;
    let main = peer.bootstrap(0).await;
    peer.send(&raw_call(
        1,
        MessageTarget::ImportedCap(main),
        TEST_ID,
        5,
        &[CapDescriptor::SenderHosted(10)],
        |c| {
            let mut p = c.init_as::<test::call_back_params::Builder>();
            p.set_cb(placeholder());
            p.set_value(5);
        },
    ))
    .await;
    let frame = peer.recv().await;
    let callback = expect_call(&frame).get_question_id();
    (peer, main, callback)
}

/// The result in q1's `callBack` Return.
fn call_back_result(frame: &capnp_actix_proto::frame::Frame) -> i64 {
    expect_results(frame, 1)
        .get_content()
        .get_as::<test::call_back_results::Reader>()
        .unwrap()
        .get_result()
}

// covers: F-07
#[test]
fn over_the_flow_limit_a_handler_that_calls_back_still_gets_its_return() {
    run(async {
        // Any call is over a 1-byte limit: while q1 runs, one more waits
        // and any further one is refused.
        let (mut peer, main, callback) = calling_back().await;
        // The peer sends more calls first: q2 waits, q3 is refused at once.
        peer.send(&echo_call(2, main, "waits")).await;
        peer.send(&echo_call(3, main, "refused")).await;
        let frame = peer.recv().await;
        let refused = expect_return(&frame, 3);
        assert!(refused.get_release_param_caps(), "its params are not kept");
        let capnp_actix_proto::rpc_capnp::return_::Exception(e) = refused.which().unwrap() else {
            panic!("q3 is refused");
        };
        let e = capnp_actix_proto::Error::read(e.unwrap());
        assert_eq!(e.kind(), capnp_actix_proto::ErrorKind::Overloaded, "{e}");
        assert!(e.reason().contains("flow_limit"), "{e}");
        // Then the Return the handler waits for: read, though calls wait.
        peer.send(&callback_return(callback, 6)).await;
        let frame = next_return(&mut peer).await;
        assert_eq!(call_back_result(&frame), 6);
        // q1 returned: q2 runs.
        let frame = next_return(&mut peer).await;
        expect_results(&frame, 2);
    });
}

// covers: F-06
#[test]
fn a_peer_that_does_not_read_cannot_make_replies_pile_up() {
    run(async {
        // A tiny pipe and a peer that never reads its end.
        let (ours, theirs) = tokio::io::duplex(64);
        let (read, write) = tokio::io::split(ours);
        let main = capnp_actix::Capability::from_server::<test::Client, _>(support::TestImpl::new(
            &support::Tally::default(),
        ));
        let conn = capnp_actix::ConnActor::start(
            read,
            write,
            ConnOptions::new()
                .main_interface(main)
                .send_buffer_size(4096),
        );
        let (_their_read, mut their_write) = tokio::io::split(theirs);
        let text = "y".repeat(1000);
        let writer = actix::spawn(async move {
            let mut bytes = encoded(&capnp_actix_proto::message::bootstrap(0));
            for id in 1..=500 {
                bytes.extend(encoded(&call(
                    id,
                    MessageTarget::PromisedAnswer(capnp_actix_proto::PromisedAnswer {
                        question_id: 0,
                        transform: vec![],
                    }),
                    ECHO,
                    &text,
                )));
            }
            // Blocks once our side stops reading.
            let _ = their_write.write_all(&bytes).await;
        });
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let stats = conn.send(Stats).await.unwrap();
        // Reading stops past twice the send buffer; one more reply may be
        // in flight through the answer actors.
        assert!(stats.queued_bytes < 2 * 4096 + 8 * 1100, "{stats:?}");
        assert!(stats.answers < 500, "{stats:?}");
        writer.abort();
    });
}

// covers: F-06
#[test]
fn one_question_over_max_answers_aborts_naming_the_limit() {
    run(async {
        let mut peer = Peer::serving(ConnOptions::new().max_answers(3)).await;
        let main = peer.bootstrap(0).await;
        for id in 1..=3 {
            peer.send(&call(id, MessageTarget::ImportedCap(main), HANG, ""))
                .await;
        }
        let abort = peer.expect_abort_and_close().await;
        assert!(abort.reason().contains("max_answers"), "{abort}");
    });
}

// covers: F-06
#[test]
fn capabilities_over_max_imports_abort_naming_the_limit() {
    run(async {
        let mut peer = Peer::serving(ConnOptions::new().max_imports(3)).await;
        let main = peer.bootstrap(0).await;
        // A call whose cap table names four exports of the peer.
        let mut m = call(1, MessageTarget::ImportedCap(main), ECHO, "x");
        {
            let root: message::Builder = m.get_root().unwrap();
            let message::Call(Ok(c)) = root.which().unwrap() else {
                unreachable!()
            };
            let mut table = c.get_params().unwrap().init_cap_table(4);
            for i in 0..4 {
                CapDescriptor::SenderHosted(10 + i).write(table.reborrow().get(i));
            }
        }
        peer.send(&m).await;
        let abort = peer.expect_abort_and_close().await;
        assert!(abort.reason().contains("max_imports"), "{abort}");
    });
}

// covers: F-06, P-03
#[test]
fn calls_over_max_pipelined_on_one_answer_fail_and_the_rest_go_on() {
    use capnp_actix_proto::rpc_capnp::return_;
    use test_capnp::counter;
    run(async {
        let mut peer = Peer::serving(ConnOptions::new().max_pipelined(2)).await;
        let main = peer.bootstrap(0).await;
        // A counter that exists only after 200 ms, and three calls waiting
        // on it.
        peer.send(&delayed(1, main, 200)).await;
        for id in 2..=4 {
            let mut m = capnp_actix_proto::message::new_message();
            {
                let mut c = m.init_root::<message::Builder>().init_call();
                c.set_question_id(id);
                MessageTarget::PromisedAnswer(capnp_actix_proto::PromisedAnswer {
                    question_id: 1,
                    transform: vec![0],
                })
                .write(c.reborrow().init_target());
                c.set_interface_id(<counter::Client as capnp::traits::HasTypeId>::TYPE_ID);
                c.set_method_id(1);
                c.init_params()
                    .get_content()
                    .init_as::<counter::get_params::Builder>();
            }
            peer.send(&m).await;
        }
        let mut outcomes = std::collections::BTreeMap::new();
        while outcomes.len() < 4 {
            let frame = peer.recv().await;
            let root: message::Reader = frame.get_root().unwrap();
            if let Ok(message::Return(Ok(r))) = root.which() {
                let outcome = match r.which().unwrap() {
                    return_::Results(_) => "results".to_string(),
                    return_::Exception(e) => capnp_actix_proto::Error::read(e.unwrap()).to_string(),
                    _ => "other".to_string(),
                };
                outcomes.insert(r.get_answer_id(), outcome);
            }
        }
        assert_eq!(outcomes[&1], "results");
        assert_eq!(outcomes[&2], "results");
        assert_eq!(outcomes[&3], "results");
        assert!(
            outcomes[&4].starts_with("overloaded") && outcomes[&4].contains("max_pipelined"),
            "{outcomes:?}"
        );
    });
}

// covers: F-08
#[test]
fn a_disembargo_naming_an_unreturned_answer_aborts_instead_of_waiting() {
    run(async {
        // A peer learns what a path is from our Return: before it, a
        // senderLoopback naming the answer cannot be honest, and waiting
        // for it would let a peer pile up waiters without a bound.
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        peer.send(&call(1, MessageTarget::ImportedCap(main), HANG, ""))
            .await;
        let target = MessageTarget::PromisedAnswer(capnp_actix_proto::PromisedAnswer {
            question_id: 1,
            transform: vec![],
        });
        peer.send(&capnp_actix_proto::message::disembargo(
            &target,
            capnp_actix_proto::message::DisembargoContext::SenderLoopback(0),
        ))
        .await;
        let abort = peer.expect_abort_and_close().await;
        assert!(abort.reason().contains("has not returned"), "{abort}");
    });
}

/// Whether `frame` is a `Return` for `id`, and what kind.
fn return_kind(frame: &capnp_actix_proto::frame::Frame) -> Option<(u32, &'static str, bool)> {
    use capnp_actix_proto::rpc_capnp::return_;
    let root: message::Reader = frame.get_root().unwrap();
    let Ok(message::Return(Ok(r))) = root.which() else {
        return None;
    };
    let kind = match r.which() {
        Ok(return_::Results(_)) => "results",
        Ok(return_::Exception(_)) => "exception",
        Ok(return_::ResultsSentElsewhere(())) => "elsewhere",
        _ => "other",
    };
    Some((r.get_answer_id(), kind, r.get_release_param_caps()))
}

// covers: F-07, T-02
#[test]
fn a_refused_call_takes_its_turn_so_its_id_can_be_reused() {
    run(async {
        // One call runs (300 ms), one waits; the third is refused. The peer
        // finishes the refused question and reuses its id at once: the
        // Finish waits in the gate, and the new call must not be taken
        // for a duplicate of the old one.
        let mut peer = Peer::serving(ConnOptions::new().flow_limit(1)).await;
        let main = peer.bootstrap(0).await;
        peer.send(&capnp_actix_proto::message::finish(0, false))
            .await;
        peer.send(&delayed(1, main, 300)).await;
        peer.send(&echo_call(2, main, "waits")).await;
        peer.send(&echo_call(3, main, "refused")).await;
        let first = next_return(&mut peer).await;
        assert_eq!(return_kind(&first), Some((3, "exception", true)));
        peer.send(&capnp_actix_proto::message::finish(3, false))
            .await;
        peer.send(&echo_call(3, main, "refused again")).await;
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.push(return_kind(&next_return(&mut peer).await).unwrap());
        }
        assert!(seen.contains(&(3, "exception", true)), "{seen:?}");
        assert!(seen.contains(&(1, "results", false)), "{seen:?}");
        assert!(seen.contains(&(2, "results", false)), "{seen:?}");
        // No Abort: the connection still serves.
        peer.send(&echo_call(4, main, "alive")).await;
        let frame = next_return(&mut peer).await;
        expect_results(&frame, 4);
    });
}

// covers: F-07, P-13
#[test]
fn a_refused_tail_call_says_its_results_were_sent_elsewhere() {
    run(async {
        let mut peer = Peer::serving(ConnOptions::new().flow_limit(1)).await;
        let main = peer.bootstrap(0).await;
        peer.send(&delayed(1, main, 30)).await;
        peer.send(&echo_call(2, main, "waits")).await;
        let mut tail = echo_call(3, main, "a tail call");
        {
            let root: message::Builder = tail.get_root().unwrap();
            let message::Call(Ok(call)) = root.which().unwrap() else {
                panic!("a Call")
            };
            call.init_send_results_to().set_yourself(());
        }
        peer.send(&tail).await;
        let frame = next_return(&mut peer).await;
        assert_eq!(return_kind(&frame), Some((3, "elsewhere", true)));
    });
}

// covers: F-07
#[test]
fn over_the_flow_limit_a_return_naming_an_open_answer_still_passes() {
    run(async {
        // As the callback case, but the peer's Return names one of our
        // open answers (the bootstrap's) in its cap table: that answer is
        // open and nothing waiting names it, so the Return passes too.
        let (mut peer, main, callback) = calling_back().await;
        peer.send(&echo_call(2, main, "waits")).await;
        let mut ret = callback_return(callback, 6);
        {
            let root: message::Builder = ret.get_root().unwrap();
            let message::Return(Ok(r)) = root.which().unwrap() else {
                panic!("a Return")
            };
            let capnp_actix_proto::rpc_capnp::return_::Results(Ok(results)) = r.which().unwrap()
            else {
                panic!("results")
            };
            CapDescriptor::ReceiverAnswer(capnp_actix_proto::PromisedAnswer {
                question_id: 0,
                transform: vec![],
            })
            .write(results.init_cap_table(1).get(0));
        }
        peer.send(&ret).await;
        let frame = next_return(&mut peer).await;
        assert_eq!(call_back_result(&frame), 6);
        let frame = next_return(&mut peer).await;
        expect_results(&frame, 2);
    });
}
