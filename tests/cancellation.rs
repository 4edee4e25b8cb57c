//! What a peer's `Finish` does to a call whose method still runs (P-07),
//! by the callee's `Cancellation`: `OnFinish` (the default) cancels it;
//! `RunToCompletion` (the C++ reference 1.x's default) lets it finish,
//! unless the method called `allow_cancellation`.

mod support;

use capnp_actix::{Cancellation, Capability, ConnActor, ConnOptions, Connection};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::raw::run;
use support::test_capnp;
use support::{Dropped, Tally, TestImpl};
use test_capnp::{callback, test};

/// A client of a `TestImpl` server whose connection has `cancellation`,
/// and the server's connection.
async fn client(cancellation: Cancellation, tally: &Tally) -> (test::Client, Connection) {
    let main = Capability::from_server::<test::Client, _>(TestImpl::new(tally));
    let server = ConnOptions::new()
        .main_interface(main)
        .cancellation(cancellation);
    let (client, server) = ConnActor::pair(ConnOptions::new(), server);
    let conn = Connection::new(client);
    (conn.bootstrap().await.unwrap(), Connection::new(server))
}

/// Waits until the server has received `n` calls.
async fn received(server: &Connection, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().await.unwrap().calls_in < n {
        assert!(Instant::now() < deadline, "the call never arrived");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `check` holds, failing after 5 s.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A callback whose method takes a while, then notes that it finished;
/// dropped before that, it counts the work dropped.
struct Slow(Rc<Cell<bool>>, Rc<Cell<u32>>);

impl callback::Server for Slow {
    async fn call(
        self: Rc<Self>,
        _: callback::CallParams,
        _: callback::CallResults,
    ) -> Result<(), capnp::Error> {
        let dropped = Dropped(self.1.clone());
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        std::mem::forget(dropped);
        self.0.set(true);
        Ok(())
    }
}

/// Calls a `Slow` callback over a connection whose server side has
/// `cancellation`, and lets go of the call once the server has it. Gives
/// whether the method finished, and how often its work was dropped.
async fn slow_call_let_go(cancellation: Cancellation) -> (Rc<Cell<bool>>, Rc<Cell<u32>>) {
    let (finished, dropped) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(0)));
    let main =
        Capability::from_server::<callback::Client, _>(Slow(finished.clone(), dropped.clone()));
    let options = ConnOptions::new()
        .main_interface(main)
        .cancellation(cancellation);
    let (client, server) = ConnActor::pair(ConnOptions::new(), options);
    let (client, server) = (Connection::new(client), Connection::new(server));
    let callback: callback::Client = client.bootstrap().await.unwrap();
    let pending = callback.call_request().send();
    received(&server, 1).await;
    drop(pending);
    // Either way, the method has ended (or been dropped) 50 ms on; its
    // state tells which.
    let (f, d) = (finished.clone(), dropped.clone());
    until("the method's end", move || f.get() || d.get() > 0).await;
    (finished, dropped)
}

// covers: P-07
#[test]
fn with_run_to_completion_a_finished_call_still_runs_to_its_end() {
    run(async {
        let (finished, dropped) = slow_call_let_go(Cancellation::RunToCompletion).await;
        assert!(finished.get());
        assert_eq!(dropped.get(), 0);
    });
}

// covers: P-07
#[test]
fn by_default_a_finish_cancels_the_slow_method() {
    run(async {
        let (finished, dropped) = slow_call_let_go(Cancellation::OnFinish).await;
        assert!(!finished.get());
        assert_eq!(dropped.get(), 1);
    });
}

// covers: P-07
#[test]
fn by_default_a_finish_cancels_the_running_method() {
    run(async {
        let tally = Tally::default();
        let (client, server) = client(Cancellation::OnFinish, &tally).await;
        // `hang` counts the work dropped before it completes.
        let hang = client.hang_request().send();
        received(&server, 1).await;
        drop(hang);
        let cancellations = tally.cancellations.clone();
        until("the hang cancelled", move || {
            cancellations.load(Ordering::SeqCst) == 1
        })
        .await;
    });
}

/// A callback whose method allows its cancellation, then waits forever;
/// it counts the work dropped.
struct Cancellable(Rc<Cell<u32>>, Rc<Cell<bool>>);

impl callback::Server for Cancellable {
    async fn call(
        self: Rc<Self>,
        _: callback::CallParams,
        _: callback::CallResults,
    ) -> Result<(), capnp::Error> {
        self.1.set(capnp_actix::allow_cancellation());
        let dropped = Dropped(self.0.clone());
        futures::future::pending::<()>().await;
        drop(dropped);
        Ok(())
    }
}

// covers: P-07
#[test]
fn with_run_to_completion_a_method_that_allows_it_is_cancelled() {
    run(async {
        let dropped = Rc::new(Cell::new(0));
        let allowed = Rc::new(Cell::new(false));
        let main = Capability::from_server::<callback::Client, _>(Cancellable(
            dropped.clone(),
            allowed.clone(),
        ));
        let server = ConnOptions::new()
            .main_interface(main)
            .cancellation(Cancellation::RunToCompletion);
        let (client, _server) = ConnActor::pair(ConnOptions::new(), server);
        let conn = Connection::new(client);
        let callback: callback::Client = conn.bootstrap().await.unwrap();
        let pending = callback.call_request().send();
        {
            let allowed = allowed.clone();
            until("the method started", move || allowed.get()).await;
        }
        drop(pending);
        let dropped_now = dropped.clone();
        until("the method cancelled", move || dropped_now.get() == 1).await;
    });
}
