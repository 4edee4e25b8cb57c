//! The `Server`: connections spread over worker arbiters, sharing one main
//! interface and each other's capabilities; per-connection bootstrap
//! factories; the connection limit; graceful shutdown; what its snapshot
//! counts; `connect` over TCP and Unix sockets.

mod support;

use capnp_actix::{connect, Capability, ConnInfo, Connection, ErrorKind, Server, ServerHandle};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::test_capnp;
use support::{try_echo, CounterImpl, Tally, TestImpl};
use test_capnp::{counter, test};

/// Runs `f` in a fresh actix system, failing after 20 s.
fn run<F: Future<Output = ()>>(f: F) {
    actix::System::new().block_on(async {
        actix_rt::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("the test timed out")
    });
}

/// Polls `check` until it gives `true`, failing after 5 s.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A server on a free loopback port with `workers` workers, serving one
/// `TestImpl` to every connection.
async fn test_server(workers: usize, tally: &Tally) -> ServerHandle {
    Server::builder()
        .listen("127.0.0.1:0")
        .unwrap()
        .workers(workers)
        .main_interface(Capability::from_server::<test::Client, _>(TestImpl::new(
            tally,
        )))
        .start()
        .await
        .unwrap()
}

#[test]
fn connections_spread_over_the_workers_share_the_main_interface_and_each_others_capabilities() {
    run(async {
        let tally = Tally::default();
        let server = test_server(2, &tally).await;
        let endpoint = server.endpoints()[0].clone();
        let (conn_a, a) = connect::<test::Client>(&endpoint).await.unwrap();
        assert_eq!(try_echo(&a, "a").await.unwrap(), "a");
        let (_conn_b, b) = connect::<test::Client>(&endpoint).await.unwrap();
        assert_eq!(try_echo(&b, "b").await.unwrap(), "b");

        // One connection on each worker.
        let snapshot = server.snapshot().await.unwrap();
        let mut workers: Vec<usize> = snapshot.connections.iter().map(|c| c.info.worker).collect();
        workers.sort();
        assert_eq!(workers, [0, 1]);

        // A hands the shared main interface a counter it hosts; B's call
        // reaches it: B's worker, the main interface's arbiter, A's worker,
        // then A itself.
        let counter: counter::Client = capnp_actix::new_client(CounterImpl::new(10, &tally));
        let mut hold = a.hold_request();
        hold.get().set_cap(counter.clone());
        hold.send().promise.await.unwrap();
        let mut call_held = b.call_held_request();
        call_held.get().set_by(5);
        let reply = call_held.send().promise.await.unwrap();
        assert_eq!(reply.get().unwrap().get_value(), 15);
        let mut get = counter.get_request();
        let _ = &mut get;
        let value = get.send().promise.await.unwrap().get().unwrap().get_value();
        assert_eq!(value, 15, "the call ran on A's own counter");

        // When A leaves, B's calls on what A gave fail, and B lives on.
        conn_a.close().await;
        let mut call_held = b.call_held_request();
        call_held.get().set_by(1);
        let failed = call_held.send().promise.await.err().unwrap();
        assert_eq!(failed.kind, capnp::ErrorKind::Disconnected, "{failed}");
        assert_eq!(try_echo(&b, "still here").await.unwrap(), "still here");
        server.stop(Duration::ZERO).await;
    });
}

#[test]
fn a_bootstrap_factory_runs_on_the_connection_worker_and_knows_the_peer() {
    run(async {
        let tally = Tally::default();
        let seen: Arc<Mutex<Vec<(ConnInfo, std::thread::ThreadId)>>> = Arc::default();
        let server = {
            let seen = seen.clone();
            let tally = tally.clone();
            Server::builder()
                .listen("127.0.0.1:0")
                .unwrap()
                .workers(2)
                .bootstrap_factory(move |info| {
                    seen.lock()
                        .unwrap()
                        .push((info.clone(), std::thread::current().id()));
                    Capability::from_server::<test::Client, _>(TestImpl::new(&tally))
                })
                .start()
                .await
                .unwrap()
        };
        let endpoint = server.endpoints()[0].clone();
        let (conn_a, a) = connect::<test::Client>(&endpoint).await.unwrap();
        let (_conn_b, b) = connect::<test::Client>(&endpoint).await.unwrap();
        // Each connection has an object of its own: what A holds, B cannot
        // call.
        let counter: counter::Client = capnp_actix::new_client(CounterImpl::new(1, &tally));
        let mut hold = a.hold_request();
        hold.get().set_cap(counter);
        hold.send().promise.await.unwrap();
        let mut call_held = b.call_held_request();
        call_held.get().set_by(1);
        let failed = call_held.send().promise.await.err().unwrap();
        assert!(failed.to_string().contains("nothing held"), "{failed}");

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        let here = std::thread::current().id();
        assert!(
            seen.iter().all(|(_, thread)| *thread != here),
            "ran on the workers"
        );
        assert_ne!(seen[0].1, seen[1].1, "on two workers");
        let snapshot = server.snapshot().await.unwrap();
        for (info, _) in &seen {
            let live = snapshot
                .connections
                .iter()
                .find(|c| c.info.id == info.id)
                .expect("the factory's connection id is the server's");
            assert_eq!(live.info.peer, info.peer);
            match &info.peer {
                capnp_actix::PeerAddr::Tcp(address) => assert!(address.ip().is_loopback()),
                other => panic!("a TCP peer expected, not {other}"),
            }
        }
        conn_a.close().await;
        server.stop(Duration::ZERO).await;
        // The per-connection objects went with their connections.
        until("the objects dropped", || async {
            tally.servers_dropped.load(Ordering::SeqCst) == 2
        })
        .await;
    });
}

#[test]
fn over_the_connection_limit_a_peer_is_refused_with_a_reason_and_others_go_on() {
    run(async {
        let tally = Tally::default();
        let server = Server::builder()
            .listen("127.0.0.1:0")
            .unwrap()
            .workers(1)
            .max_connections(1)
            .main_interface(Capability::from_server::<test::Client, _>(TestImpl::new(
                &tally,
            )))
            .start()
            .await
            .unwrap();
        let endpoint = server.endpoints()[0].clone();
        let (conn_a, a) = connect::<test::Client>(&endpoint).await.unwrap();
        assert_eq!(try_echo(&a, "a").await.unwrap(), "a");

        let (conn_b, b) = connect::<test::Client>(&endpoint).await.unwrap();
        let refused = try_echo(&b, "b").await.err().unwrap();
        assert!(
            refused
                .to_string()
                .contains("limit of 1 connections (max_connections)"),
            "{refused}"
        );
        let why = conn_b.ended().await;
        assert!(why.reason().contains("max_connections"), "{why}");
        assert_eq!(try_echo(&a, "a again").await.unwrap(), "a again");

        // With A gone, there is room again.
        conn_a.close().await;
        until("A's end", || async {
            server.snapshot().await.unwrap().connections.is_empty()
        })
        .await;
        let (_conn_c, c) = connect::<test::Client>(&endpoint).await.unwrap();
        assert_eq!(try_echo(&c, "c").await.unwrap(), "c");
        let snapshot = server.snapshot().await.unwrap();
        assert_eq!((snapshot.accepted, snapshot.refused), (2, 1));
        server.stop(Duration::ZERO).await;
    });
}

#[test]
fn a_graceful_stop_lets_running_calls_finish_then_closes_and_drops_the_main_interface_once() {
    run(async {
        let tally = Tally::default();
        let server = test_server(2, &tally).await;
        let endpoint = server.endpoints()[0].clone();
        let (conn, client) = connect::<test::Client>(&endpoint).await.unwrap();
        let (idle_conn, idle) = connect::<test::Client>(&endpoint).await.unwrap();
        assert_eq!(try_echo(&idle, "idle").await.unwrap(), "idle");

        // Two calls in flight: one returns within the grace period, one
        // never does.
        let mut delayed = client.delayed_counter_request();
        delayed.get().set_millis(300);
        delayed.get().set_start(7);
        let delayed = delayed.send().promise;
        let hang = client.hang_request().send().promise;
        until("both calls running", || async {
            let snapshot = server.snapshot().await.unwrap();
            snapshot.totals.calls_in >= 3 && snapshot.totals.answers >= 2
        })
        .await;

        let started = Instant::now();
        let stopping = {
            let server = server.clone();
            actix_rt::spawn(async move { server.stop(Duration::from_millis(1500)).await })
        };
        // The idle connection closes at once.
        let why = idle_conn.ended().await;
        assert!(why.reason().contains("the peer closed"), "{why}");
        assert!(started.elapsed() < Duration::from_millis(1000));
        // New connections are not accepted.
        until("the listener closed", || async {
            Connection::dial(&endpoint, Default::default())
                .await
                .is_err()
        })
        .await;

        // The call that returns in time does.
        let counter = delayed.await.unwrap().get().unwrap().get_counter().unwrap();
        assert_eq!(tally.servers_dropped.load(Ordering::SeqCst), 0);
        // New calls on a draining connection fail.
        let late = try_echo(&client, "late").await.err().unwrap();
        assert_eq!(late.kind, capnp::ErrorKind::Disconnected);
        assert!(late.to_string().contains("shutting down"), "{late}");
        drop(counter);

        // The one that never returns is cut off at the end of the grace
        // period: the caller sees `disconnected`, the method is cancelled.
        let cut = hang.await.err().unwrap();
        assert_eq!(cut.kind, capnp::ErrorKind::Disconnected, "{cut}");
        assert!(started.elapsed() >= Duration::from_millis(1400));
        stopping.await.unwrap();
        assert!(conn.is_ended() || conn.ended().await.kind() == ErrorKind::Disconnected);
        until("the hung method cancelled", || async {
            tally.cancellations.load(Ordering::SeqCst) == 1
        })
        .await;
        until("the main interface dropped", || async {
            tally.servers_dropped.load(Ordering::SeqCst) == 1
        })
        .await;
        // Once.
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(tally.servers_dropped.load(Ordering::SeqCst), 1);
        assert!(server.snapshot().await.is_err(), "the server actor stopped");
        server.stop(Duration::ZERO).await; // stopping again resolves at once
    });
}

#[test]
fn the_snapshot_counts_calls_bytes_and_exceptions_per_connection_and_summed() {
    run(async {
        let tally = Tally::default();
        let server = test_server(1, &tally).await;
        let endpoint = server.endpoints()[0].clone();
        let (conn, client) = connect::<test::Client>(&endpoint).await.unwrap();
        for text in ["a", "b", "c"] {
            try_echo(&client, text).await.unwrap();
        }
        let mut fail = client.fail_request();
        fail.get()
            .set_kind(support::test_capnp::FailureKind::Overloaded);
        fail.get().set_reason("busy");
        fail.send().promise.await.err().unwrap();

        // Gauges: a counter the client keeps (an export of the server's), a
        // counter of the client's the server holds (an import), a call
        // that runs (an answer beside the bootstrap's, a question of the
        // client's).
        let mut new_counter = client.new_counter_request();
        new_counter.get().set_start(1);
        let kept = new_counter.send().promise.await.unwrap();
        let mut hold = client.hold_request();
        hold.get()
            .set_cap(capnp_actix::new_client(CounterImpl::new(1, &tally)));
        hold.send().promise.await.unwrap();
        let hang = client.hang_request().send().promise;
        until("the hang running", || async {
            server.snapshot().await.unwrap().totals.calls_in == 7
        })
        .await;
        let snapshot = server.snapshot().await.unwrap();
        let stats = snapshot.connections[0].stats;
        // (Exports: the main interface and the counter.)
        assert_eq!((stats.exports, stats.imports), (2, 1));
        assert!(stats.answers >= 2, "{stats:?}");
        let ours = conn.stats().await.unwrap();
        assert!(
            ours.questions >= 2,
            "the bootstrap's and the hang's: {ours:?}"
        );
        assert_eq!((ours.imports, ours.exports), (2, 1));
        drop((kept, hang));

        assert_eq!(snapshot.connections.len(), 1);
        assert_eq!(stats.calls_in, 7);
        assert_eq!(stats.calls_out, 0);
        assert_eq!(stats.exceptions_sent.overloaded, 1);
        assert_eq!(stats.exceptions_sent.total(), 1);
        assert!(stats.bytes_in > 0 && stats.bytes_out > 0);

        let ours = conn.stats().await.unwrap();
        assert_eq!(ours.calls_out, 7);
        assert_eq!(ours.exceptions_received.overloaded, 1);
        assert!(ours.bytes_out >= stats.bytes_in);

        // The totals keep what ended connections counted.
        conn.close().await;
        until("the connection's end", || async {
            server.snapshot().await.unwrap().ended == 1
        })
        .await;
        let snapshot = server.snapshot().await.unwrap();
        assert!(snapshot.connections.is_empty());
        assert_eq!(snapshot.totals.calls_in, 7);
        assert_eq!(snapshot.totals.exceptions_sent.overloaded, 1);
        assert_eq!(
            snapshot.totals.answers, 0,
            "gauges count live connections only"
        );
        assert_eq!(
            snapshot.totals.bytes_in, ours.bytes_out,
            "in the end, it read all we sent"
        );
        server.stop(Duration::ZERO).await;
    });
}

#[cfg(unix)]
#[test]
fn a_server_listens_on_a_unix_socket_and_removes_it_when_stopped() {
    run(async {
        let tally = Tally::default();
        let path = std::env::temp_dir().join(format!("capnp-actix-{}.sock", std::process::id()));
        let endpoint = format!("unix:{}", path.display());
        let server = Server::builder()
            .listen(endpoint.as_str())
            .unwrap()
            .workers(1)
            .main_interface(Capability::from_server::<test::Client, _>(TestImpl::new(
                &tally,
            )))
            .start()
            .await
            .unwrap();
        let (_conn, client) = connect::<test::Client>(endpoint.as_str()).await.unwrap();
        assert_eq!(try_echo(&client, "unix").await.unwrap(), "unix");
        let snapshot = server.snapshot().await.unwrap();
        assert!(matches!(
            snapshot.connections[0].info.peer,
            capnp_actix::PeerAddr::Unix(_)
        ));
        server.stop(Duration::ZERO).await;
        assert!(!path.exists(), "the socket file is removed");
    });
}

#[test]
fn connect_fails_with_a_disconnected_error_naming_the_endpoint() {
    run(async {
        // A port nobody listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("127.0.0.1:{port}");
        let err = connect::<test::Client>(endpoint.as_str())
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Disconnected);
        assert!(err.reason().contains(&endpoint), "{err}");
        let err = connect::<test::Client>("not an address")
            .await
            .err()
            .unwrap();
        assert!(err.reason().contains("HOST:PORT"), "{err}");
    });
}

#[test]
fn a_connection_that_starts_after_the_grace_period_is_closed_and_stop_resolves() {
    run(async {
        let tally = Tally::default();
        let slow_tally = tally.clone();
        let server = Server::builder()
            .listen("127.0.0.1:0")
            .unwrap()
            .workers(1)
            .bootstrap_factory(move |_| {
                // A slow factory: the connection starts after the stop.
                std::thread::sleep(Duration::from_millis(200));
                Capability::from_server::<test::Client, _>(TestImpl::new(&slow_tally))
            })
            .start()
            .await
            .unwrap();
        let endpoint = server.endpoints()[0].clone();
        let conn = Connection::dial(&endpoint, Default::default())
            .await
            .unwrap();
        let client: test::Client = conn.bootstrap().await.unwrap();
        let hang = client.hang_request().send().promise;
        // (Accepted, not started yet.)
        until("accepted", || async {
            server.snapshot().await.unwrap().accepted == 1
        })
        .await;
        server.stop(Duration::ZERO).await;
        let cut = hang.await.err().unwrap();
        assert_eq!(cut.kind, capnp::ErrorKind::Disconnected, "{cut}");
    });
}

#[test]
fn a_panicking_bootstrap_factory_refuses_that_connection_only() {
    run(async {
        let tally = Tally::default();
        let panics = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let server = {
            let (tally, panics) = (tally.clone(), panics.clone());
            Server::builder()
                .listen("127.0.0.1:0")
                .unwrap()
                .workers(1)
                .bootstrap_factory(move |_| {
                    if panics.swap(false, Ordering::SeqCst) {
                        panic!("a buggy factory");
                    }
                    Capability::from_server::<test::Client, _>(TestImpl::new(&tally))
                })
                .start()
                .await
                .unwrap()
        };
        let endpoint = server.endpoints()[0].clone();
        let (conn, first) = connect::<test::Client>(&endpoint).await.unwrap();
        assert!(try_echo(&first, "x").await.is_err());
        assert_eq!(conn.ended().await.kind(), ErrorKind::Disconnected);
        // The worker lives on: the next connection is served.
        let (_conn, second) = connect::<test::Client>(&endpoint).await.unwrap();
        assert_eq!(try_echo(&second, "y").await.unwrap(), "y");
        until("the refused one's end recorded", || async {
            server.snapshot().await.unwrap().ended == 1
        })
        .await;
        server.stop(Duration::from_secs(1)).await;
    });
}

#[test]
fn stop_takes_any_grace_period_even_the_longest() {
    run(async {
        let tally = Tally::default();
        let server = test_server(1, &tally).await;
        let (conn, client) = connect::<test::Client>(&server.endpoints()[0])
            .await
            .unwrap();
        assert_eq!(try_echo(&client, "x").await.unwrap(), "x");
        // No call runs: the connection closes at once, and stop resolves.
        server.stop(Duration::MAX).await;
        assert_eq!(conn.ended().await.kind(), ErrorKind::Disconnected);
    });
}

#[cfg(unix)]
#[test]
fn a_unix_endpoint_never_removes_a_file_that_is_no_socket() {
    run(async {
        let path = std::env::temp_dir().join(format!("capnp-actix-file-{}", std::process::id()));
        std::fs::write(&path, b"keep me").unwrap();
        let endpoint = format!("unix:{}", path.display());
        let failed = Server::builder()
            .listen(endpoint.as_str())
            .unwrap()
            .start()
            .await
            .err()
            .unwrap();
        assert!(failed.reason().contains("cannot listen"), "{failed}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        std::fs::remove_file(&path).unwrap();
    });
}
