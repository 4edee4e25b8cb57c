//! Odd but legal input, handled as the C++ reference handles it (P-21):
//! each case is driven byte by byte by a raw peer.

mod support;

use capnp_actix_proto::message::{self as out};
use capnp_actix_proto::rpc_capnp::{message, return_};
use capnp_actix_proto::CapDescriptor;
use std::time::Duration;
use support::raw::*;
// The generated code names its own types as `crate::test_capnp::...`.
#[allow(unused_imports)]
use support::test_capnp;

// covers: P-21
#[test]
fn a_resolve_to_cap_none_aborts() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        peer.send(&out::resolve(7, Ok(&CapDescriptor::None))).await;
        let abort = peer.expect_abort_and_close().await;
        assert!(abort.reason().contains("none"), "{abort}");
        drop(cap);
    });
}

// covers: P-21
#[test]
fn a_bootstrap_with_a_deprecated_object_id_gets_an_exception() {
    run(async {
        let mut peer = Peer::start().await;
        let mut m = out::new_message();
        {
            let mut b = m.init_root::<message::Builder>().init_bootstrap();
            b.set_question_id(3);
            b.init_deprecated_object_id()
                .set_as::<capnp::text::Owned>("a 0.4 named export")
                .unwrap();
        }
        peer.send(&m).await;
        let frame = peer.recv().await;
        match expect_return(&frame, 3).which().unwrap() {
            return_::Exception(e) => {
                let e = capnp_actix_proto::Error::read(e.unwrap());
                assert!(e.reason().contains("deprecatedObjectId"), "{e}");
            }
            _ => panic!("a Bootstrap naming an object got the main interface"),
        }
        // The connection lives, and the plain bootstrap still works.
        peer.send(&out::finish(3, false)).await;
        let export = peer.bootstrap(0).await;
        peer.send(&echo_call(1, export, "still up")).await;
        expect_results(&peer.recv().await, 1);
    });
}

/// The `releaseResultCaps` flag of a `Finish`.
fn finish_releases(frame: &capnp_actix_proto::frame::Frame) -> (u32, bool) {
    let root: message::Reader = frame.get_root().unwrap();
    let message::Finish(f) = root.which().unwrap() else {
        panic!("expected a Finish, got message tag {}", tag(frame));
    };
    let f = f.unwrap();
    (f.get_question_id(), f.get_release_result_caps())
}

// covers: P-21
#[test]
fn an_early_finish_releases_the_result_caps_and_its_return_imports_nothing() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderHosted(1)).await;
        let dropped = echo(&cap, "a");
        let question = expect_call(&peer.recv().await).get_question_id();
        drop(dropped);
        // The Return has not arrived: the Finish asks the peer to release
        // what it will carry.
        assert_eq!(finish_releases(&peer.recv().await), (question, true));
        // It carries a capability; we must neither import nor release it.
        peer.send(&return_cap(question, CapDescriptor::SenderHosted(9)))
            .await;
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert!(sent.is_empty(), "sent after the late Return: {sent:?}");
        let stats = peer.conn.send(capnp_actix::Stats).await.unwrap();
        assert_eq!(stats.imports, 1, "only the bootstrap capability is held");
        assert_eq!(stats.questions, 1, "only the bootstrap question is open");

        // After the Return, a Finish releases nothing: the results'
        // capabilities are released one by one.
        let kept = echo(&cap, "b");
        let question = expect_call(&peer.recv().await).get_question_id();
        peer.send(&return_cap(question, CapDescriptor::SenderHosted(9)))
            .await;
        let response = kept.promise.await.unwrap();
        drop(response);
        drop(kept.pipeline);
        let sent = collect(&mut peer, Duration::from_millis(100)).await;
        assert!(sent.contains(&Seen::Finish(question)), "{sent:?}");
        assert!(sent.contains(&Seen::Release(9, 1)), "{sent:?}");
    });
}

// covers: P-21, F-06
#[test]
fn a_promise_resolved_to_itself_breaks_instead_of_holding_itself() {
    run(async {
        let (mut peer, cap, _) = bootstrapped(CapDescriptor::SenderPromise(7)).await;
        peer.send(&out::resolve(7, Ok(&CapDescriptor::SenderPromise(7))))
            .await;
        let _ = collect(&mut peer, Duration::from_millis(50)).await;
        let err = echo(&cap, "x").promise.await.err().expect("it broke");
        assert!(err.to_string().contains("itself"), "{err}");
        // The connection lives.
        let stats = peer.conn.send(capnp_actix::Stats).await.unwrap();
        assert_eq!(stats.imports, 0, "the promise's import is released");
    });
}
