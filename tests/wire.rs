//! Wire-level tests: a hand-driven "raw peer" writes frames built byte by
//! byte (or with the core's message builders) to a `ConnActor` serving the
//! `Test` interface, and reads back and decodes what the actor sends. No
//! RPC runtime on the peer's side: what is asserted is exactly what crosses
//! the stream.

mod support;

use capnp::any_pointer;
use capnp::traits::IntoInternalStructReader;
use capnp_actix::Stats;
use capnp_actix_proto::frame::{encode, Limits};
use capnp_actix_proto::message::{self as out};
use capnp_actix_proto::rpc_capnp::{bootstrap, message};
use capnp_actix_proto::{Error, MessageTarget, PromisedAnswer};
use std::cell::Cell;
use std::time::Duration;
// The generated code names its own types as `crate::test_capnp::...`.
use support::raw::*;
use support::test_capnp;
use test_capnp::test::echo_results;
use tokio::io::AsyncWriteExt;

// covers: W-01, P-01
#[test]
fn raw_bootstrap_and_echo_call() {
    run(async {
        let mut peer = Peer::start().await;
        let export = peer.bootstrap(0).await;
        peer.send(&echo_call(1, export, "raw")).await;
        let frame = peer.recv().await;
        let results = expect_results(&frame, 1);
        let echoed = results
            .get_content()
            .get_as::<echo_results::Reader>()
            .unwrap();
        assert_eq!(echoed.get_text().unwrap().to_str().unwrap(), "raw");
        peer.send(&out::finish(0, false)).await;
        peer.send(&out::finish(1, false)).await;
        // Both answers are gone once the Finishes are handled.
        answers_become(&peer, 0, "answers kept after Finish").await;
    });
}

// covers: P-08
#[test]
fn unknown_message_type_is_echoed_as_unimplemented() {
    run(async {
        let mut peer = Peer::start().await;
        let mut bytes = encoded(&out::bootstrap(7));
        let at = discriminant_offset(&bytes);
        assert_eq!(&bytes[at..at + 2], &8u16.to_le_bytes(), "Bootstrap is @8");
        bytes[at..at + 2].copy_from_slice(&99u16.to_le_bytes());
        peer.send_raw(&bytes).await;

        let frame = peer.recv().await;
        let echo = expect_unimplemented(&frame);
        assert!(matches!(echo.which(), Err(capnp::NotInSchema(99))));
        // The echo carries the original body too (the Bootstrap struct
        // under the union's pointer).
        let inner = echo.into_internal_struct_reader();
        let body = any_pointer::Reader::new(inner.get_pointer_field(0));
        assert_eq!(
            body.get_as::<bootstrap::Reader>()
                .unwrap()
                .get_question_id(),
            7
        );

        peer.bootstrap(0).await;
    });
}

// covers: P-16
#[test]
fn level_three_and_four_messages_are_unimplemented() {
    run(async {
        let mut peer = Peer::start().await;
        for (name, question_id) in [("provide", 1), ("accept", 2), ("join", 3)] {
            let mut m = capnp_actix_proto::message::new_message();
            let root = m.init_root::<message::Builder>();
            match name {
                "provide" => {
                    let mut p = root.init_provide();
                    p.set_question_id(question_id);
                    MessageTarget::ImportedCap(0).write(p.init_target());
                }
                "accept" => root.init_accept().set_question_id(question_id),
                _ => {
                    let mut j = root.init_join();
                    j.set_question_id(question_id);
                    MessageTarget::ImportedCap(0).write(j.init_target());
                }
            }
            peer.send(&m).await;
            let frame = peer.recv().await;
            let echoed_id = match expect_unimplemented(&frame).which().unwrap() {
                message::Provide(p) if name == "provide" => p.unwrap().get_question_id(),
                message::Accept(a) if name == "accept" => a.unwrap().get_question_id(),
                message::Join(j) if name == "join" => j.unwrap().get_question_id(),
                _ => panic!("{name}: the echo holds another message"),
            };
            assert_eq!(echoed_id, question_id, "{name}");
        }
        // The connection still serves.
        let export = peer.bootstrap(0).await;
        peer.send(&echo_call(1, export, "still up")).await;
        expect_results(&peer.recv().await, 1);
    });
}

/// Protocol errors that must make the connection abort (F-01).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// A second Call with the id of a call still running.
    DuplicateCallId,
    /// A second Bootstrap with the id of one not finished.
    DuplicateBootstrapId,
    /// A Call to an export id that was never handed out.
    CallToUnknownExport,
    /// Release 5 references of an export the peer holds once.
    ReleaseBelowZero,
    /// A Return for a question the connection never asked.
    ReturnForUnknownQuestion,
    /// `unimplemented` echoing a Finish (which must be implemented).
    UnimplementedFinish,
}

/// Provokes `fault` on a fresh connection, then checks for Abort, EOF and
/// the end report.
fn abort_on(fault: Fault) {
    run(async move {
        let mut peer = Peer::start().await;
        match fault {
            Fault::DuplicateCallId => {
                let export = peer.bootstrap(0).await;
                peer.send(&out::finish(0, false)).await;
                let hang = call(1, MessageTarget::ImportedCap(export), HANG, "");
                peer.send(&hang).await;
                peer.send(&echo_call(1, export, "again")).await;
            }
            Fault::DuplicateBootstrapId => {
                peer.bootstrap(0).await;
                peer.send(&out::bootstrap(0)).await;
            }
            Fault::CallToUnknownExport => peer.send(&echo_call(0, 42, "nobody")).await,
            Fault::ReleaseBelowZero => {
                let export = peer.bootstrap(0).await;
                peer.send(&out::release(export, 5)).await;
            }
            Fault::ReturnForUnknownQuestion => {
                let never_asked = Error::failed("an answer to nothing");
                peer.send(&out::return_exception(7, &never_asked)).await;
            }
            Fault::UnimplementedFinish => {
                let finish = out::finish(3, false);
                let echo = out::unimplemented(finish.get_root_as_reader().unwrap()).unwrap();
                peer.send(&echo).await;
            }
        }
        let abort = peer.expect_abort_and_close().await;
        eprintln!("{fault:?}: aborted with {abort}");
    });
}

// covers: F-01, P-09
#[test]
fn duplicate_call_id_aborts() {
    abort_on(Fault::DuplicateCallId);
}

// covers: F-01, P-09
#[test]
fn duplicate_bootstrap_id_aborts() {
    abort_on(Fault::DuplicateBootstrapId);
}

// covers: F-01, P-09
#[test]
fn call_to_unknown_export_aborts() {
    abort_on(Fault::CallToUnknownExport);
}

// covers: F-01, T-04, P-09
#[test]
fn release_below_zero_aborts() {
    abort_on(Fault::ReleaseBelowZero);
}

// covers: F-01, P-09
#[test]
fn return_for_unknown_question_aborts() {
    abort_on(Fault::ReturnForUnknownQuestion);
}

// covers: F-01, P-09
#[test]
fn unimplemented_echo_of_finish_aborts() {
    abort_on(Fault::UnimplementedFinish);
}

// covers: F-02
#[test]
fn finish_for_unknown_question_is_tolerated() {
    run(async {
        let mut peer = Peer::start().await;
        peer.send(&out::finish(99, true)).await;
        // Handled in order: an Abort for the Finish would come first.
        let export = peer.bootstrap(0).await;
        peer.send(&echo_call(1, export, "fine")).await;
        expect_results(&peer.recv().await, 1);
    });
}

/// A segment table (count, sizes, padding) with no body.
fn header_only(sizes: &[u32]) -> Vec<u8> {
    let mut bytes = (sizes.len() as u32 - 1).to_le_bytes().to_vec();
    for size in sizes {
        bytes.extend(size.to_le_bytes());
    }
    if sizes.len() % 2 == 0 {
        bytes.extend([0; 4]);
    }
    bytes
}

// covers: W-02, P-09
#[test]
fn too_many_segments_aborts_without_waiting_for_the_body() {
    run(async {
        let mut peer = Peer::start().await;
        peer.send_raw(&header_only(&[1; 600])).await;
        let abort = peer.expect_abort_and_close().await;
        assert!(abort.reason().contains("segments"), "{abort}");
    });
}

// covers: W-02, P-09
#[test]
fn oversized_message_aborts_without_waiting_for_the_body() {
    let max = Limits::default().max_message_words as u32;
    for sizes in [vec![max + 1], vec![max / 2 + 1, max / 2 + 1]] {
        run(async {
            let mut peer = Peer::start().await;
            peer.send_raw(&header_only(&sizes)).await;
            let abort = peer.expect_abort_and_close().await;
            eprintln!("{sizes:?}: {abort}");
        });
    }
}

// covers: P-09
#[test]
fn abort_from_the_peer_ends_the_connection() {
    run(async {
        let mut peer = Peer::start().await;
        peer.bootstrap(0).await;
        peer.send(&out::abort(&Error::failed("bye"))).await;
        let why = peer.ended().await;
        assert!(why.reason().contains("bye"), "{why}");
        assert!(
            peer.next().await.is_none(),
            "a message after the peer's Abort"
        );
    });
}

/// A deterministic xorshift64 generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

thread_local! {
    /// Panics seen on this thread (the actix system of a test runs on it).
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts panics per thread, still printing them as before.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

/// A valid session to mutate: bootstrap, calls pipelined on it (one that
/// returns, one that hangs), finishes.
fn session() -> Vec<u8> {
    let on_bootstrap = || {
        MessageTarget::PromisedAnswer(PromisedAnswer {
            question_id: 0,
            transform: vec![],
        })
    };
    let mut bytes = Vec::new();
    for m in [
        out::bootstrap(0),
        call(1, on_bootstrap(), ECHO, "fuzz"),
        call(2, on_bootstrap(), HANG, ""),
        out::finish(1, false),
        out::finish(2, false),
        out::finish(0, false),
    ] {
        encode(&m, &mut bytes);
    }
    bytes
}

/// One fuzz input: pure noise, a plausible header with a noisy body, or a
/// valid session with a few bytes changed (maybe cut short).
fn blob(rng: &mut XorShift, case: usize, session: &[u8]) -> Vec<u8> {
    match case % 3 {
        0 => {
            let len = rng.below(300);
            rng.bytes(len)
        }
        1 => {
            let sizes: Vec<u32> = (0..1 + rng.below(3)).map(|_| rng.below(8) as u32).collect();
            let mut bytes = header_only(&sizes);
            let body = sizes.iter().sum::<u32>() as usize * 8;
            bytes.extend(rng.bytes(body));
            bytes
        }
        _ => {
            let mut bytes = session.to_vec();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(bytes.len() as u64);
                bytes[at] ^= 1 + rng.below(255) as u8;
            }
            if rng.below(4) == 0 {
                bytes.truncate(rng.below(bytes.len() as u64));
            }
            bytes
        }
    }
}

// covers: F-06
#[test]
fn random_input_never_panics_nor_hangs() {
    count_panics();
    run(async {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let session = session();
        let (mut aborted, mut answered) = (0, 0);
        for case in 0..200 {
            let bytes = blob(&mut rng, case, &session);
            let mut peer = Peer::start().await;
            // The connection may abort and close before all is written.
            let _ = peer.io.write_all(&bytes).await;
            // Take what the connection answers; once it falls quiet, hang
            // up (a blob may end mid-frame) and take the rest until EOF.
            let mut frames = Vec::new();
            let mut hung_up = false;
            loop {
                let limit = if hung_up { WAIT } else { QUIET };
                match actix_rt::time::timeout(limit, peer.next()).await {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(_) => {
                        assert!(!hung_up, "case {case}: no EOF after the peer hung up");
                        let _ = peer.io.shutdown().await;
                        hung_up = true;
                    }
                }
            }
            let mut abort_seen = false;
            for frame in frames {
                assert!(!abort_seen, "case {case}: a message after the Abort");
                let root: message::Reader = frame.get_root().unwrap();
                match root.which() {
                    Ok(message::Abort(_)) => abort_seen = true,
                    Ok(message::Return(_)) => answered += 1,
                    Ok(_) => {}
                    Err(e) => panic!("case {case}: the connection sent a bad message: {e:?}"),
                }
            }
            aborted += usize::from(abort_seen);
            let why = peer.ended().await;
            assert!(
                !why.reason().is_empty(),
                "case {case}: ended without a reason"
            );
            assert_eq!(
                PANICS.with(Cell::get),
                0,
                "case {case}: panicked on {bytes:02x?}"
            );
        }
        eprintln!("random input: {aborted} aborts, {answered} returns");
        assert!(aborted > 0 && answered > 0, "the inputs reach too little");
        // A fresh connection in the same system still works.
        let mut peer = Peer::start().await;
        let export = peer.bootstrap(0).await;
        peer.send(&echo_call(1, export, "after the storm")).await;
        expect_results(&peer.recv().await, 1);
    });
}

/// Reads until the `Return` for `answer_id`, playing a well-behaved peer
/// meanwhile: every `Disembargo{senderLoopback}` is reflected back.
async fn wait_for_return(peer: &mut Peer, answer_id: u32) -> capnp_actix_proto::frame::Frame {
    loop {
        let frame = peer.recv().await;
        let reflect = {
            let root: message::Reader = frame.get_root().unwrap();
            match root.which() {
                Ok(message::Return(Ok(r))) if r.get_answer_id() == answer_id => None,
                Ok(message::Disembargo(Ok(d))) => match d.get_context().which() {
                    Ok(capnp_actix_proto::rpc_capnp::disembargo::context::SenderLoopback(id)) => {
                        Some((MessageTarget::read(d.get_target().unwrap()).unwrap(), id))
                    }
                    _ => continue,
                },
                _ => continue,
            }
        };
        match reflect {
            None => return frame,
            Some((target, id)) => {
                let back = out::disembargo(
                    &target,
                    capnp_actix_proto::message::DisembargoContext::ReceiverLoopback(id),
                );
                peer.send(&back).await;
            }
        }
    }
}

/// Waits until the connection holds `n` answers, failing with `what` after
/// [`WAIT`].
async fn answers_become(peer: &Peer, n: usize, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while peer.conn.send(Stats).await.unwrap().answers != n {
        assert!(std::time::Instant::now() < deadline, "{what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

fn promised(question_id: u32, transform: &[u16]) -> MessageTarget {
    MessageTarget::PromisedAnswer(PromisedAnswer {
        question_id,
        transform: transform.to_vec(),
    })
}

// covers: F-06
#[test]
fn a_pipeline_path_that_leads_back_to_itself_neither_hangs_nor_overflows() {
    use capnp_actix_proto::CapDescriptor;
    use test_capnp::{counter, test};
    const COUNTER_ID: u64 = <counter::Client as capnp::traits::HasTypeId>::TYPE_ID;
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        // q1: echoCap(the peer's object 100): its result is the peer's own.
        let echo_cap = raw_call(
            1,
            MessageTarget::ImportedCap(main),
            TEST_ID,
            4,
            &[CapDescriptor::SenderHosted(100)],
            |c| {
                c.init_as::<test::echo_cap_params::Builder>()
                    .set_cap(placeholder());
            },
        );
        peer.send(&echo_cap).await;
        expect_results(&peer.recv().await, 1);
        // q2 on q1's result: we forward it to the peer as question `forwarded`.
        let get = |id, target| {
            raw_call(id, target, COUNTER_ID, 1, &[], |c| {
                c.init_as::<counter::get_params::Builder>();
            })
        };
        peer.send(&get(2, promised(1, &[0]))).await;
        let forwarded = {
            let frame = peer.recv().await;
            let root: message::Reader = frame.get_root().unwrap();
            let message::Call(c) = root.which().unwrap() else {
                panic!("expected the forwarded call")
            };
            c.unwrap().get_question_id()
        };
        // q3 on q2's result: pipelined to the peer on `forwarded`.
        peer.send(&get(3, promised(2, &[0]))).await;
        let _ = peer.recv().await;
        // The peer answers `forwarded` with a capability that is... q2's
        // result itself: a path that leads back to where it starts.
        let mut ret = capnp_actix_proto::message::new_message();
        let mut table: capnp::private::layout::CapTable = Vec::new();
        {
            let mut r = ret.init_root::<message::Builder>().init_return();
            r.set_answer_id(forwarded);
            r.set_release_param_caps(false);
            let mut results = r.init_results();
            {
                let mut content = results.reborrow().get_content();
                capnp::traits::ImbueMut::imbue_mut(&mut content, &mut table);
                content
                    .init_as::<test::echo_cap_results::Builder>()
                    .set_cap(placeholder());
            }
            CapDescriptor::ReceiverAnswer(PromisedAnswer {
                question_id: 2,
                transform: vec![0],
            })
            .write(results.init_cap_table(1).get(0));
        }
        peer.send(&ret).await;
        // The path names our own answer: calls sent on it wait behind an
        // embargo. Hold its reflection back until q2 has returned (its
        // state holds the cyclic result) and a call waits on the path.
        let mut embargo = None;
        let mut returned = false;
        while embargo.is_none() || !returned {
            let frame = peer.recv().await;
            let root: message::Reader = frame.get_root().unwrap();
            match root.which().unwrap() {
                message::Return(Ok(r)) if r.get_answer_id() == 2 => returned = true,
                message::Disembargo(d) => {
                    let d = d.unwrap();
                    if let Ok(capnp_actix_proto::rpc_capnp::disembargo::context::SenderLoopback(
                        id,
                    )) = d.get_context().which()
                    {
                        embargo = Some((MessageTarget::read(d.get_target().unwrap()).unwrap(), id));
                    }
                }
                _ => {}
            }
        }
        peer.send(&get(4, promised(2, &[0]))).await;
        let (target, id) = embargo.unwrap();
        peer.send(&out::disembargo(
            &target,
            capnp_actix_proto::message::DisembargoContext::ReceiverLoopback(id),
        ))
        .await;
        // Released, the waiting call goes round the cycle and fails; the
        // connection keeps serving.
        let frame = wait_for_return(&mut peer, 4).await;
        let capnp_actix_proto::rpc_capnp::return_::Exception(e) =
            expect_return(&frame, 4).which().unwrap()
        else {
            panic!("a call on a cyclic path must fail");
        };
        let e = Error::read(e.unwrap());
        assert!(e.reason().contains("too many promises"), "{e}");
        peer.bootstrap(5).await;
    });
}

// covers: P-05
#[test]
fn calls_on_a_returned_answer_reach_the_capability_their_own_path_names() {
    use test_capnp::{counter, test};
    const COUNTER_ID: u64 = <counter::Client as capnp::traits::HasTypeId>::TYPE_ID;
    let get = |id, target| {
        raw_call(id, target, COUNTER_ID, 1, &[], |c| {
            c.init_as::<counter::get_params::Builder>();
        })
    };
    let outcome = |frame: &capnp_actix_proto::frame::Frame, id| -> Result<i64, String> {
        match expect_return(frame, id).which().unwrap() {
            capnp_actix_proto::rpc_capnp::return_::Results(r) => Ok(r
                .unwrap()
                .get_content()
                .get_as::<counter::get_results::Reader>()
                .unwrap()
                .get_value()),
            capnp_actix_proto::rpc_capnp::return_::Exception(e) => {
                Err(e.unwrap().get_reason().unwrap().to_string().unwrap())
            }
            _ => panic!("unexpected return"),
        }
    };
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        // q1: nested() gives a pair whose `left` is a counter at 10 and
        // whose `right` is null.
        let nested = raw_call(1, MessageTarget::ImportedCap(main), TEST_ID, 13, &[], |c| {
            c.init_as::<test::nested_params::Builder>();
        });
        peer.send(&nested).await;
        wait_for_return(&mut peer, 1).await;
        // Calls on both paths of the returned answer, alternating: each
        // goes to what its own path names, however the last was served.
        let paths: [(&[u16], bool); 4] = [
            (&[0, 0], true),
            (&[0, 1], false),
            (&[0, 0], true),
            (&[0, 1], false),
        ];
        for (i, (path, is_left)) in paths.iter().enumerate() {
            let id = 2 + i as u32;
            peer.send(&get(id, promised(1, path))).await;
            let frame = wait_for_return(&mut peer, id).await;
            match (outcome(&frame, id), is_left) {
                (Ok(value), true) => assert_eq!(value, 10),
                (Err(_), false) => {}
                (other, _) => panic!("call {i} on {path:?}: {other:?}"),
            }
        }
        // Calls on the bootstrap answer itself (as capnp-rpc's and the C++
        // clients make them) reach the main interface, again and again.
        for id in 10..13 {
            let call = raw_call(id, promised(0, &[]), TEST_ID, 0, &[], |c| {
                c.init_as::<test::echo_params::Builder>().set_text("again");
            });
            peer.send(&call).await;
            let frame = wait_for_return(&mut peer, id).await;
            let results = expect_results(&frame, id);
            let echoed = results
                .get_content()
                .get_as::<echo_results::Reader>()
                .unwrap();
            assert_eq!(echoed.get_text().unwrap().to_str().unwrap(), "again");
        }
    });
}

// covers: P-14
#[test]
fn a_return_without_capabilities_says_no_finish_is_needed_and_ends_the_answer() {
    run(async {
        let mut peer = Peer::start().await;
        let main = peer.bootstrap(0).await;
        // The bootstrap's Return carries a capability: a Finish is needed.
        // An echo's does not: the Return says so, and the answer ends
        // without the peer's Finish.
        peer.send(&echo_call(1, main, "one")).await;
        let frame = wait_for_return(&mut peer, 1).await;
        assert!(expect_return(&frame, 1).get_no_finish_needed());
        answers_become(&peer, 1, "answer 1 kept").await;
        // So its id can be used again at once, and a Finish that comes
        // anyway is harmless.
        peer.send(&echo_call(1, main, "two")).await;
        let frame = wait_for_return(&mut peer, 1).await;
        let results = expect_results(&frame, 1);
        let echoed = results
            .get_content()
            .get_as::<echo_results::Reader>()
            .unwrap();
        assert_eq!(echoed.get_text().unwrap().to_str().unwrap(), "two");
        peer.send(&out::finish(1, false)).await;
        // Results with a capability (newCounter) keep their answer until
        // the Finish.
        let new_counter = raw_call(2, MessageTarget::ImportedCap(main), TEST_ID, 3, &[], |c| {
            c.init_as::<test_capnp::test::new_counter_params::Builder>()
                .set_start(1);
        });
        peer.send(&new_counter).await;
        let frame = wait_for_return(&mut peer, 2).await;
        assert!(!expect_return(&frame, 2).get_no_finish_needed());
        actix_rt::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(peer.conn.send(Stats).await.unwrap().answers, 2);
        peer.send(&out::finish(2, false)).await;
        peer.send(&out::finish(0, false)).await;
        answers_become(&peer, 0, "answers kept after Finish").await;
    });
}
