//! Tail calls sent (P-13): a server method that ends with
//! `results.tail_call(request)` returns the tail call's results as its own,
//! pipelined calls on its answer reach the capabilities in them, and the
//! tail call is cancelled when the original caller goes. The scenarios of
//! the C++ reference's TailCall, TailCallCancel and TailCallCancelRace
//! (its `rpc-test.c++`): the callee lives on the caller's side of the
//! connection, as there.

mod support;

use capnp_actix::{Cancellation, Capability, ConnActor, ConnOptions, Connection, TailCall};
use futures::channel::oneshot;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use support::raw::run;
use support::test_capnp;
use support::{eventually, Dropped, SequencerImpl};
use test_capnp::{sequencer, tail_callee, tail_caller};

/// The caller: ends `foo` with `callee.foo(i, "from TailCaller")`, after
/// waiting for its gate if it has one (the first call only).
struct Caller {
    gate: RefCell<Option<oneshot::Receiver<()>>>,
    calls: Rc<Cell<u32>>,
}

impl tail_caller::Server for Caller {
    async fn foo(
        self: Rc<Self>,
        params: tail_caller::FooParams,
        results: tail_caller::FooResults,
    ) -> Result<(), capnp::Error> {
        self.calls.set(self.calls.get() + 1);
        let gate = self.gate.borrow_mut().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        let params = params.get()?;
        let mut request = params.get_callee()?.foo_request();
        request.get().set_i(params.get_i());
        request.get().set_t("from TailCaller");
        results.tail_call(request).await
    }
}

/// The callee: answers `foo` with its params and a sequencer shared by
/// all its answers; or, hanging, never answers, counting the calls it
/// started and the ones whose work was dropped.
struct Callee {
    hang: bool,
    started: Rc<Cell<u32>>,
    dropped: Rc<Cell<u32>>,
    sequencer: sequencer::Client,
}

impl tail_callee::Server for Callee {
    async fn foo(
        self: Rc<Self>,
        params: tail_callee::FooParams,
        mut results: tail_callee::FooResults,
    ) -> Result<(), capnp::Error> {
        self.started.set(self.started.get() + 1);
        if self.hang {
            let _dropped = Dropped(self.dropped.clone());
            futures::future::pending::<()>().await;
        }
        let params = params.get()?;
        let mut out = results.get();
        out.set_i(params.get_i() as u32);
        out.set_t(params.get_t()?);
        out.set_c(self.sequencer.clone());
        Ok(())
    }
}

struct Setup {
    caller: tail_caller::Client,
    callee: tail_callee::Client,
    started: Rc<Cell<u32>>,
    dropped: Rc<Cell<u32>>,
    caller_calls: Rc<Cell<u32>>,
    gate: Option<oneshot::Sender<()>>,
    _conns: (Connection, Connection),
}

/// A caller served on one side of a connection pair (with `cancellation`,
/// gated if `gated`), and a callee (hanging if `hang`) on the other.
async fn setup(cancellation: Cancellation, hang: bool, gated: bool) -> Setup {
    let (open, gate) = oneshot::channel();
    let caller_calls = Rc::new(Cell::new(0));
    let caller = Caller {
        gate: RefCell::new(gated.then_some(gate)),
        calls: caller_calls.clone(),
    };
    let server = ConnOptions::new()
        .main_interface(Capability::from_server::<tail_caller::Client, _>(caller))
        .cancellation(cancellation);
    let (client, server) = ConnActor::pair(ConnOptions::new(), server);
    let conns = (Connection::new(client), Connection::new(server));
    let caller: tail_caller::Client = conns.0.bootstrap().await.unwrap();
    let (started, dropped) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let callee: tail_callee::Client = capnp_actix::new_client(Callee {
        hang,
        started: started.clone(),
        dropped: dropped.clone(),
        sequencer: capnp_actix::new_client(SequencerImpl::new()),
    });
    Setup {
        caller,
        callee,
        started,
        dropped,
        caller_calls,
        gate: gated.then_some(open),
        _conns: conns,
    }
}

fn foo(setup: &Setup, i: i32) -> capnp::capability::RemotePromise<tail_callee::tail_result::Owned> {
    let mut request = setup.caller.foo_request();
    request.get().set_i(i);
    request.get().set_callee(setup.callee.clone());
    request.send()
}

fn next(
    seq: &sequencer::Client,
    expected: u32,
) -> capnp::capability::RemotePromise<sequencer::next_results::Owned> {
    let mut request = seq.next_request();
    request.get().set_expected(expected);
    request.send()
}

const LIMIT: Duration = Duration::from_secs(5);

// covers: P-13
#[test]
fn a_tail_call_returns_the_callees_results_and_pipelined_calls_follow_it() {
    run(async {
        let setup = setup(Cancellation::OnFinish, false, false).await;
        let promise = foo(&setup, 456);
        // Pipelined on the caller's answer before it returned.
        let dependent0 = next(&promise.pipeline.get_c(), 0);
        let response = promise.promise.await.unwrap();
        let results = response.get().unwrap();
        assert_eq!(results.get_i(), 456);
        assert_eq!(
            results.get_t().unwrap().to_str().unwrap(),
            "from TailCaller"
        );
        let dependent1 = next(&results.get_c().unwrap(), 1);
        assert_eq!(dependent0.promise.await.unwrap().get().unwrap().get_n(), 0);
        assert_eq!(dependent1.promise.await.unwrap().get().unwrap().get_n(), 1);
        assert_eq!((setup.caller_calls.get(), setup.started.get()), (1, 1));
    });
}

// covers: P-13
#[test]
fn a_tail_call_fails_the_original_call_with_its_error() {
    run(async {
        let setup = setup(Cancellation::OnFinish, false, false).await;
        // A callee of another kind: a capability that is broken.
        let mut request = setup.caller.foo_request();
        request.get().set_i(1);
        request
            .get()
            .set_callee(Capability::broken(capnp_actix::Error::overloaded("no callee")).client());
        let e = request
            .send()
            .promise
            .await
            .err()
            .expect("the tail call failed");
        assert!(e.to_string().contains("no callee"), "{e}");
    });
}

// covers: P-13
#[test]
fn cancelling_the_original_call_cancels_its_tail_call() {
    run(async {
        let setup = setup(Cancellation::OnFinish, true, false).await;
        let promise = foo(&setup, 1);
        eventually("the callee got the tail call", LIMIT, || {
            setup.started.get() == 1
        })
        .await;
        assert_eq!(setup.dropped.get(), 0);
        drop(promise);
        eventually("the tail call was cancelled", LIMIT, || {
            setup.dropped.get() == 1
        })
        .await;
        assert_eq!(setup.started.get(), 1);
    });
}

// covers: P-13, P-07
#[test]
fn a_call_run_to_completion_still_cancels_its_tail_call_when_its_caller_goes() {
    // The race of the reference's TailCallCancelRace: the caller goes while
    // the method (which runs to completion) is about to tail-call. Replayed
    // in both orders.
    run(async {
        // The method tail-calls first, then its caller goes.
        let mut setup = setup(Cancellation::RunToCompletion, true, true).await;
        let promise = foo(&setup, 1);
        eventually("the caller got the call", LIMIT, || {
            setup.caller_calls.get() == 1
        })
        .await;
        setup.gate.take().unwrap().send(()).unwrap();
        eventually("the callee got the tail call", LIMIT, || {
            setup.started.get() == 1
        })
        .await;
        drop(promise);
        eventually("the tail call was cancelled", LIMIT, || {
            setup.dropped.get() == 1
        })
        .await;

        // The caller goes first (its Finish is handled before the next
        // call's Return), then the method tail-calls.
        let mut setup = self::setup(Cancellation::RunToCompletion, true, true).await;
        let promise = foo(&setup, 1);
        eventually("the caller got the call", LIMIT, || {
            setup.caller_calls.get() == 1
        })
        .await;
        drop(promise);
        let fence = setup.caller.foo_request().send().promise; // (no callee: fails)
        assert!(fence.await.is_err());
        setup.gate.take().unwrap().send(()).unwrap();
        // The tail call is sent and finished at once: the callee's work, if
        // it started, is dropped; it never completes.
        let (started, dropped) = (setup.started.clone(), setup.dropped.clone());
        eventually("the tail call ended", LIMIT, || {
            started.get() == dropped.get()
        })
        .await;
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(setup.started.get(), setup.dropped.get());
    });
}

// covers: P-13
#[test]
fn a_tail_call_back_to_the_calling_peer_leaves_the_results_there() {
    // The callee lives on the caller's side: the tail call goes back with
    // sendResultsTo.yourself and the caller's Return says
    // takeFromOtherQuestion, so the results never cross to the server.
    run(async {
        let setup = setup(Cancellation::OnFinish, false, false).await;
        let big = "x".repeat(200_000);
        let padded: tail_callee::Client = capnp_actix::new_client(Padded(big.clone()));
        let mut request = setup.caller.foo_request();
        request.get().set_i(7);
        request.get().set_callee(padded);
        let before = setup._conns.1.stats().await.unwrap().bytes_in;
        let response = request.send().promise.await.unwrap();
        let results = response.get().unwrap();
        assert_eq!(results.get_i(), 7);
        assert_eq!(results.get_t().unwrap().len(), big.len());
        let crossed = setup._conns.1.stats().await.unwrap().bytes_in - before;
        assert!(crossed < 10_000, "{crossed} bytes reached the server");
    });
}

/// A callee whose results carry `self.0` as `t`.
struct Padded(String);

impl tail_callee::Server for Padded {
    async fn foo(
        self: Rc<Self>,
        params: tail_callee::FooParams,
        mut results: tail_callee::FooResults,
    ) -> Result<(), capnp::Error> {
        let i = params.get()?.get_i();
        results.get().set_i(i as u32);
        results.get().set_t(self.0.as_str());
        Ok(())
    }
}
