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
fn over_the_flow_limit_calls_are_read_one_at_a_time() {
    run(async {
        // Any one call is over a 1-byte flow limit: the connection reads
        // the next only once the previous returned.
        let mut peer = Peer::serving(ConnOptions::new().flow_limit(1)).await;
        let main = peer.bootstrap(0).await;
        for id in 1..=5 {
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
        let mut returned = 0;
        while returned < 5 {
            let frame = peer.recv().await;
            let root: message::Reader = frame.get_root().unwrap();
            if let Ok(message::Return(_)) = root.which() {
                returned += 1;
            }
        }
        let most = watcher.await.unwrap();
        let one_call = encoded(&delayed(1, main, 30)).len();
        assert!(most > 0, "the calls were counted");
        assert!(
            most <= one_call,
            "{most} bytes of calls at once, one is {one_call}"
        );
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
