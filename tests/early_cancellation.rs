//! `Finish.requireEarlyCancellationWorkaround` (capnp-rpc sets it on
//! every `Finish`; Cap'n Proto 1.0 and up, and we, never): a call that
//! is on its way to its object when the `Finish` comes is delivered
//! first and cancelled after, so that its method starts (and could
//! refuse under `RunToCompletion`); without the flag it is cancelled
//! before it starts. Replayed on the wire: the call waits behind a
//! streaming call of the same object, which ends only once the
//! `Finish` was handled.

mod support;

#[allow(dead_code, clippy::all)]
mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

use bench_capnp::sink;
use capnp::traits::HasTypeId;
use capnp_actix::{Cancellation, Capability, ConnOptions};
use capnp_actix_proto::rpc_capnp::{message, return_};
use capnp_actix_proto::MessageTarget;
use futures::channel::oneshot;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use support::raw::{self, run, Peer};
#[allow(unused_imports)]
use support::test_capnp;
use support::Dropped;

/// A sink whose first write waits for its gate, and whose `done`
/// counts its starts and the work dropped, and never returns.
struct GatedSink {
    gate: RefCell<Option<oneshot::Receiver<()>>>,
    started: Rc<Cell<u32>>,
    dropped: Rc<Cell<u32>>,
}

impl sink::Server for GatedSink {
    async fn write(self: Rc<Self>, _: sink::WriteParams) -> Result<(), capnp::Error> {
        let gate = self.gate.borrow_mut().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        Ok(())
    }

    async fn done(
        self: Rc<Self>,
        _: sink::DoneParams,
        _: sink::DoneResults,
    ) -> Result<(), capnp::Error> {
        self.started.set(self.started.get() + 1);
        let _dropped = Dropped(self.dropped.clone());
        futures::future::pending::<()>().await;
        Ok(())
    }
}

/// Reads the connection's messages up to the `Return` for `last`, noting
/// for each `Return` whether it said `canceled`.
async fn returns_until(
    peer: &mut Peer,
    seen: &mut std::collections::HashMap<u32, bool>,
    last: u32,
) {
    loop {
        let frame = raw::next_return(peer).await;
        let ret = raw::expect_return_any(&frame);
        let id = ret.get_answer_id();
        seen.insert(id, matches!(ret.which(), Ok(return_::Canceled(()))));
        if id == last {
            return;
        }
    }
}

fn finish(question_id: u32, workaround: bool) -> capnp_actix_proto::message::OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    let mut f = m.init_root::<message::Builder>().init_finish();
    f.set_question_id(question_id);
    f.set_release_result_caps(true);
    f.set_require_early_cancellation_workaround(workaround);
    m
}

/// Runs the scenario with the flag `workaround` under `policy`; gives
/// how often `done` started and how often its work was dropped.
async fn scenario(workaround: bool, policy: Cancellation) -> (u32, u32) {
    let (open, gate) = oneshot::channel();
    let (started, dropped) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let main = Capability::from_server::<sink::Client, _>(GatedSink {
        gate: RefCell::new(Some(gate)),
        started: started.clone(),
        dropped: dropped.clone(),
    });
    let options = ConnOptions::new().main_interface(main).cancellation(policy);
    let mut peer = Peer::connect(options).await;
    let sink = MessageTarget::ImportedCap(peer.bootstrap(0).await);
    let id = sink::Client::TYPE_ID;
    peer.send(&raw::raw_call(1, sink.clone(), id, 0, &[], |c| {
        c.init_as::<sink::write_params::Builder>().set_data(b"x");
    }))
    .await;
    peer.send(&raw::raw_call(2, sink, id, 1, &[], |c| {
        c.init_as::<sink::done_params::Builder>();
    }))
    .await;
    peer.send(&finish(2, workaround)).await;
    // A second bootstrap, answered by the connection itself: once its
    // Return is back, question 2's Finish was handled.
    peer.send(&capnp_actix_proto::message::bootstrap(3)).await;
    let mut canceled = std::collections::HashMap::new();
    returns_until(&mut peer, &mut canceled, 3).await;
    assert_eq!(started.get(), 0, "done waits behind the write");
    open.send(()).unwrap();
    returns_until(&mut peer, &mut canceled, 1).await;
    if policy == Cancellation::OnFinish {
        if !canceled.contains_key(&2) {
            returns_until(&mut peer, &mut canceled, 2).await;
        }
        assert!(canceled[&2], "question 2 returns canceled");
    } else {
        // It runs on (and never returns).
        support::eventually("done started", std::time::Duration::from_secs(5), || {
            started.get() == 1
        })
        .await;
        assert!(!canceled.contains_key(&2));
    }
    (started.get(), dropped.get())
}

// covers: P-07
#[test]
fn with_the_workaround_a_call_on_its_way_is_delivered_then_cancelled() {
    run(async {
        assert_eq!(scenario(true, Cancellation::OnFinish).await, (1, 1));
    });
}

// covers: P-07
#[test]
fn without_the_workaround_a_call_on_its_way_is_cancelled_before_it_starts() {
    run(async {
        assert_eq!(scenario(false, Cancellation::OnFinish).await, (0, 0));
    });
}

// covers: P-07
#[test]
fn under_run_to_completion_a_call_on_its_way_runs_on_after_delivery() {
    run(async {
        assert_eq!(scenario(true, Cancellation::RunToCompletion).await, (1, 0));
    });
}
