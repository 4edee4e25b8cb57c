//! Call deadlines: a connection's default (`ConnOptions::call_timeout`),
//! one call's (`PendingCall::timeout`, and `within` for typed calls). A
//! call past its deadline fails with an error naming it, and the callee is
//! cancelled (its question is finished).

mod support;

use capnp_actix::{Capability, ConnActor, ConnOptions, Connection};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::raw::{run, TEST_ID};
use support::test_capnp;
use support::{Tally, TestImpl};
use test_capnp::test;

/// `Test.hang`'s ordinal.
const HANG: u16 = 2;

/// A client connection with `options` to a server of `TestImpl`; gives the
/// connection, its bootstrap capability, and the server's tally.
async fn pair(options: ConnOptions) -> (Connection, Capability, Tally) {
    let tally = Tally::default();
    let main = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
    let (client, _server) = ConnActor::pair(options, ConnOptions::new().main_interface(main));
    let conn = Connection::new(client);
    let cap = conn
        .bootstrap::<test::Client>()
        .await
        .map(|c| Capability::from_client(&c))
        .unwrap();
    (conn, cap, tally)
}

/// `Test.hang` on `cap` with a deadline of its own: the error it fails
/// with.
async fn hang_within(cap: &Capability, timeout: Duration) -> capnp_actix::Error {
    let hung = cap.new_call(TEST_ID, HANG).send().timeout(timeout).await;
    hung.err().expect("a hung call cannot succeed")
}

/// Waits until the server has cancelled `n` hung calls, failing after 5 s.
async fn cancelled(tally: &Tally, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tally.cancellations.load(Ordering::SeqCst) != n {
        assert!(Instant::now() < deadline, "the callee was not cancelled");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_connection_call_timeout_fails_a_late_call_and_cancels_the_callee() {
    run(async {
        let timeout = Duration::from_millis(100);
        let (conn, cap, tally) = pair(ConnOptions::new().call_timeout(timeout)).await;
        let client: test::Client = cap.client();
        // A call that returns in time is not touched.
        let mut echo = client.echo_request();
        echo.get().set_text("quick");
        echo.send().promise.await.unwrap();

        let started = Instant::now();
        let err = client.hang_request().send().promise.await.err().unwrap();
        assert!(started.elapsed() >= timeout);
        assert_eq!(err.kind, capnp::ErrorKind::Overloaded);
        let text = err.to_string();
        assert!(
            text.contains("deadline exceeded")
                && text.contains("100ms")
                && text.contains("call_timeout"),
            "{text}"
        );
        cancelled(&tally, 1).await;
        assert_eq!(
            conn.stats().await.unwrap().questions,
            1,
            "only the bootstrap's is open"
        );
    });
}

#[test]
fn a_pending_call_timeout_fails_the_call_and_cancels_the_callee() {
    run(async {
        let (_conn, cap, tally) = pair(ConnOptions::new()).await;
        let err = hang_within(&cap, Duration::from_millis(50)).await;
        assert!(err.reason().contains("deadline exceeded"), "{err}");
        assert!(err.reason().contains("(timeout)"), "{err}");
        cancelled(&tally, 1).await;
    });
}

#[test]
fn within_bounds_a_typed_call_and_cancels_the_callee() {
    run(async {
        let (_conn, cap, tally) = pair(ConnOptions::new()).await;
        let client: test::Client = cap.client();
        let hung = client.hang_request().send().promise;
        let err = capnp_actix::within(Duration::from_millis(50), hung)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("deadline exceeded"), "{err}");
        cancelled(&tally, 1).await;

        // In time, `within` gives the call's own outcome.
        let mut echo = client.echo_request();
        echo.get().set_text("in time");
        let reply = capnp_actix::within(Duration::from_secs(5), echo.send().promise)
            .await
            .unwrap();
        assert_eq!(reply.get().unwrap().get_text().unwrap(), "in time");
    });
}

#[test]
fn a_deadline_on_a_local_call_drops_its_work() {
    run(async {
        let tally = Tally::default();
        let local = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
        let err = hang_within(&local, Duration::from_millis(50)).await;
        assert!(err.reason().contains("deadline exceeded"), "{err}");
        cancelled(&tally, 1).await;
    });
}

#[test]
fn a_call_deadline_of_its_own_replaces_the_connection_default() {
    run(async {
        let (_conn, cap, _tally) =
            pair(ConnOptions::new().call_timeout(Duration::from_millis(50))).await;
        let started = Instant::now();
        let err = hang_within(&cap, Duration::from_millis(300)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "longer than the default"
        );
        assert!(err.reason().contains("(timeout)"), "{err}");
        // And a shorter one.
        let started = Instant::now();
        let err = hang_within(&cap, Duration::from_millis(10)).await;
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(err.reason().contains("(timeout)"), "{err}");
    });
}
