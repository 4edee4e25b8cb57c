//! The reconnecting client: one capability that stays valid while its
//! server is stopped and started again, calls that wait for a connection
//! or fail `disconnected` as configured, and streaming calls through it.

mod support;

#[allow(dead_code, clippy::all)]
mod calculator_capnp {
    include!(concat!(env!("OUT_DIR"), "/calculator_capnp.rs"));
}

#[allow(dead_code, clippy::all)]
mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

use capnp_actix::{
    within, Capability, Reconnect, ReconnectOptions, Reconnecting, Server, ServerHandle,
};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::test_capnp;
use support::{try_echo, Tally, TestImpl};
use test_capnp::test;

/// Runs `f` in a fresh actix system, failing after 30 s.
fn run<F: Future<Output = ()>>(f: F) {
    actix::System::new().block_on(async {
        actix_rt::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("the test timed out")
    });
}

/// A loopback endpoint nobody listens on (yet).
fn free_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

async fn test_server(endpoint: &str, tally: &Tally) -> ServerHandle {
    Server::builder()
        .listen(endpoint)
        .unwrap()
        .workers(1)
        .main_interface(Capability::from_server::<test::Client, _>(TestImpl::new(
            tally,
        )))
        .start()
        .await
        .unwrap()
}

/// Waits until `client` has seen its connection end, failing after 5 s.
async fn until_down(client: &Reconnecting) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.status().await.unwrap().connected {
        assert!(Instant::now() < deadline, "the end went unnoticed");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fast() -> ReconnectOptions {
    ReconnectOptions::new().backoff(Duration::from_millis(10), Duration::from_millis(100))
}

#[test]
fn a_reconnecting_client_recovers_when_its_server_stops_and_starts_again_mid_calls() {
    run(async {
        let endpoint = free_endpoint();
        let tally = Tally::default();
        let server = test_server(&endpoint, &tally).await;
        let client = Reconnect::start(
            endpoint.as_str(),
            fast().wait_while_down(Duration::from_secs(10)),
        )
        .unwrap();
        let calls: test::Client = client.bootstrap();
        assert_eq!(try_echo(&calls, "one").await.unwrap(), "one");

        // Calls in flight when the server goes fail `disconnected`.
        let hung = calls.hang_request().send().promise;
        server.stop(Duration::ZERO).await;
        let cut = within(Duration::from_secs(10), hung).await.err().unwrap();
        assert_eq!(cut.kind, capnp::ErrorKind::Disconnected, "{cut}");

        // Calls made while it is down wait for the next connection, in
        // order, on the same capability.
        let waiting: Vec<_> = (0..5)
            .map(|i| {
                let calls = calls.clone();
                actix_rt::spawn(async move { try_echo(&calls, &format!("w{i}")).await })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.status().await.unwrap().waiting < 5 {
            assert!(Instant::now() < deadline, "the calls did not wait");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!client.status().await.unwrap().connected);
        let restarted = test_server(&endpoint, &tally).await;
        for (i, call) in waiting.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), format!("w{i}"));
        }
        let status = client.status().await.unwrap();
        assert!(status.connected);
        assert_eq!(status.connections, 2);
        assert_eq!(try_echo(&calls, "two").await.unwrap(), "two");

        client.close().await;
        let closed = try_echo(&calls, "closed").await.err().unwrap();
        assert!(closed.to_string().contains("closed"), "{closed}");
        restarted.stop(Duration::ZERO).await;
    });
}

#[test]
fn calls_keep_going_through_repeated_restarts_and_none_hangs() {
    run(async {
        let endpoint = free_endpoint();
        let tally = Tally::default();
        let client = Reconnect::start(
            endpoint.as_str(),
            fast().wait_while_down(Duration::from_secs(10)),
        )
        .unwrap();
        let calls: test::Client = client.bootstrap();
        let ok = Rc::new(Cell::new(0u32));
        let failed = Rc::new(Cell::new(0u32));
        let running = Rc::new(Cell::new(true));
        // A caller that keeps calling while the server comes and goes.
        let caller = {
            let (ok, failed, running) = (ok.clone(), failed.clone(), running.clone());
            actix_rt::spawn(async move {
                while running.get() {
                    match try_echo(&calls, "x").await {
                        Ok(_) => ok.set(ok.get() + 1),
                        Err(e) => {
                            assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
                            failed.set(failed.get() + 1)
                        }
                    }
                }
            })
        };
        for _ in 0..3 {
            let server = test_server(&endpoint, &tally).await;
            let before = ok.get();
            let deadline = Instant::now() + Duration::from_secs(5);
            while ok.get() < before + 20 {
                assert!(Instant::now() < deadline, "no calls got through");
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            server.stop(Duration::ZERO).await;
            actix_rt::time::sleep(Duration::from_millis(30)).await;
        }
        running.set(false);
        let server = test_server(&endpoint, &tally).await;
        caller.await.unwrap();
        assert!(ok.get() >= 60);
        // At most the call in flight at each stop failed.
        assert!(failed.get() <= 3, "{} calls failed", failed.get());
        assert_eq!(client.status().await.unwrap().connections, 4);
        server.stop(Duration::ZERO).await;
    });
}

#[test]
fn while_down_calls_fail_disconnected_after_the_wait_or_at_once() {
    run(async {
        let endpoint = free_endpoint();
        let waits = Reconnect::start(
            endpoint.as_str(),
            fast().wait_while_down(Duration::from_millis(150)),
        )
        .unwrap();
        let started = Instant::now();
        let err = try_echo(&waits.bootstrap(), "nobody").await.err().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(err.kind, capnp::ErrorKind::Disconnected);
        assert!(
            err.to_string()
                .contains(&format!("not connected to {endpoint}")),
            "{err}"
        );
        assert!(waits.status().await.unwrap().failures >= 1);

        let fails_fast =
            Reconnect::start(endpoint.as_str(), fast().wait_while_down(Duration::ZERO)).unwrap();
        let started = Instant::now();
        let err = try_echo(&fails_fast.bootstrap(), "nobody")
            .await
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(150));
        assert_eq!(err.kind, capnp::ErrorKind::Disconnected);
    });
}

/// A `Bench` whose sinks count the bytes written to them.
struct BenchImpl;

impl bench_capnp::bench::Server for BenchImpl {
    async fn sink(
        self: Rc<Self>,
        _: bench_capnp::bench::SinkParams,
        mut results: bench_capnp::bench::SinkResults,
    ) -> Result<(), capnp::Error> {
        results
            .get()
            .set_sink(capnp_actix::new_client(SinkImpl(Cell::new(0))));
        Ok(())
    }
}

struct SinkImpl(Cell<u64>);

impl bench_capnp::sink::Server for SinkImpl {
    async fn write(
        self: Rc<Self>,
        params: bench_capnp::sink::WriteParams,
    ) -> Result<(), capnp::Error> {
        self.0
            .set(self.0.get() + params.get()?.get_data()?.len() as u64);
        Ok(())
    }

    async fn done(
        self: Rc<Self>,
        _: bench_capnp::sink::DoneParams,
        mut results: bench_capnp::sink::DoneResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_bytes(self.0.get());
        Ok(())
    }
}

/// Streams `chunks` chunks of 1,000 bytes into a new sink of `bench`, and
/// gives what the sink counted.
async fn stream(bench: &bench_capnp::bench::Client, chunks: usize) -> Result<u64, capnp::Error> {
    let sink = bench.sink_request().send().pipeline.get_sink();
    for _ in 0..chunks {
        let mut write = sink.write_request();
        write.get().set_data(&[7; 1000]);
        within(Duration::from_secs(10), write.send()).await?;
    }
    let done = within(Duration::from_secs(10), sink.done_request().send().promise).await?;
    Ok(done.get()?.get_bytes())
}

#[test]
fn streaming_calls_go_through_a_reconnecting_client() {
    run(async {
        let endpoint = free_endpoint();
        let start = || async {
            Server::builder()
                .listen(endpoint.as_str())
                .unwrap()
                .workers(1)
                .bootstrap_factory(|_| {
                    Capability::from_server::<bench_capnp::bench::Client, _>(BenchImpl)
                })
                .start()
                .await
                .unwrap()
        };
        let server = start().await;
        let client = Reconnect::start(endpoint.as_str(), fast()).unwrap();
        let bench: bench_capnp::bench::Client = client.bootstrap();
        assert_eq!(stream(&bench, 20).await.unwrap(), 20_000);
        server.stop(Duration::ZERO).await;
        // (Once the client has seen the connection end: a call made before
        // would go to the old connection, and fail.)
        until_down(&client).await;
        let server = start().await;
        assert_eq!(stream(&bench, 30).await.unwrap(), 30_000);
        server.stop(Duration::ZERO).await;
    });
}

/// `calculator-server` as a child process on `endpoint`, killed when
/// dropped.
struct CalculatorServer(std::process::Child);

impl CalculatorServer {
    fn start(endpoint: &str) -> CalculatorServer {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap();
        let path = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples")
            .join("calculator-server");
        let mut child = std::process::Command::new(&path)
            .args([endpoint, "--workers", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {} (built by cargo test): {e}", path.display()));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("listening on {endpoint}"));
        CalculatorServer(child)
    }

    /// SIGKILL: no goodbye to anyone.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for CalculatorServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Evaluates the literal `value` on `calc`, bounded in time.
async fn evaluate(
    calc: &calculator_capnp::calculator::Client,
    value: f64,
) -> Result<f64, capnp::Error> {
    let mut request = calc.evaluate_request();
    request.get().init_expression().set_literal(value);
    let read = request
        .send()
        .pipeline
        .get_value()
        .read_request()
        .send()
        .promise;
    let reply = within(Duration::from_secs(10), read).await?;
    Ok(reply.get()?.get_value())
}

#[test]
fn a_reconnecting_client_recovers_when_its_server_process_is_killed_and_restarted() {
    run(async {
        let endpoint = free_endpoint();
        let server = CalculatorServer::start(&endpoint);
        let client = Reconnect::start(
            endpoint.as_str(),
            fast().wait_while_down(Duration::from_secs(10)),
        )
        .unwrap();
        let calc: calculator_capnp::calculator::Client = client.bootstrap();
        assert_eq!(evaluate(&calc, 1.0).await.unwrap(), 1.0);

        // Killed mid-calls: a caller keeps calling, and the kill lands
        // while its calls go back and forth.
        let ok = Rc::new(Cell::new(0u32));
        let failed = Rc::new(Cell::new(0u32));
        let running = Rc::new(Cell::new(true));
        let caller = {
            let (calc, ok, failed, running) =
                (calc.clone(), ok.clone(), failed.clone(), running.clone());
            actix_rt::spawn(async move {
                let mut i = 0.0;
                while running.get() {
                    i += 1.0;
                    match evaluate(&calc, i).await {
                        Ok(value) => {
                            assert_eq!(value, i);
                            ok.set(ok.get() + 1)
                        }
                        Err(e) => {
                            assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
                            failed.set(failed.get() + 1)
                        }
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while ok.get() < 20 {
            assert!(Instant::now() < deadline, "no calls got through");
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill();
        until_down(&client).await;
        // Calls made while it is dead wait for the new process.
        let waiting = {
            let calc = calc.clone();
            actix_rt::spawn(async move { evaluate(&calc, 42.0).await })
        };
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let _restarted = CalculatorServer::start(&endpoint);
        assert_eq!(waiting.await.unwrap().unwrap(), 42.0);
        // The caller's calls get through again.
        let before = ok.get();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ok.get() < before + 20 {
            assert!(
                Instant::now() < deadline,
                "no calls got through after the restart"
            );
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        running.set(false);
        caller.await.unwrap();
        assert!(
            failed.get() <= 1,
            "only the call in flight at the kill fails"
        );
        assert_eq!(client.status().await.unwrap().connections, 2);
    });
}

#[test]
fn streaming_on_the_reconnecting_capability_itself_works_across_a_restart() {
    run(async {
        let endpoint = free_endpoint();
        let start = || async {
            Server::builder()
                .listen(endpoint.as_str())
                .unwrap()
                .workers(1)
                .bootstrap_factory(|_| {
                    Capability::from_server::<bench_capnp::sink::Client, _>(SinkImpl(Cell::new(0)))
                })
                .start()
                .await
                .unwrap()
        };
        let write_all = |sink: bench_capnp::sink::Client, chunks: usize| async move {
            for _ in 0..chunks {
                let mut write = sink.write_request();
                write.get().set_data(&[1; 500]);
                within(Duration::from_secs(10), write.send()).await?;
            }
            let done = within(Duration::from_secs(10), sink.done_request().send().promise).await?;
            Ok::<u64, capnp::Error>(done.get()?.get_bytes())
        };
        let server = start().await;
        let client = Reconnect::start(endpoint.as_str(), fast()).unwrap();
        // The stream's target is the stable capability: the server's sink.
        assert_eq!(write_all(client.bootstrap(), 10).await.unwrap(), 5_000);
        server.stop(Duration::ZERO).await;
        until_down(&client).await;
        let server = start().await;
        // A new stream (a new client of the same capability) on the new
        // connection's sink.
        assert_eq!(write_all(client.bootstrap(), 20).await.unwrap(), 10_000);
        server.stop(Duration::ZERO).await;
    });
}

#[test]
fn a_server_that_accepts_then_refuses_counts_as_a_failed_dial_and_backs_off() {
    run(async {
        let endpoint = free_endpoint();
        let server = Server::builder()
            .listen(endpoint.as_str())
            .unwrap()
            .workers(1)
            .max_connections(0)
            .start()
            .await
            .unwrap();
        let client = Reconnect::start(
            endpoint.as_str(),
            ReconnectOptions::new()
                .backoff(Duration::from_millis(20), Duration::from_secs(1))
                .wait_while_down(Duration::from_millis(400)),
        )
        .unwrap();
        // Calls wait their full time (the refusing server is no connection).
        let started = Instant::now();
        let err = client
            .capability()
            .new_call(1, 0)
            .send()
            .await
            .err()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400), "{err}");
        assert!(err.reason().contains("max_connections"), "{err}");
        let status = client.status().await.unwrap();
        assert_eq!(status.connections, 0);
        assert!(status.failures >= 2, "{status:?}");
        // Backing off: 20 + 40 + 80 + 160 ms ... so few dials in 400 ms.
        let refused = server.snapshot().await.unwrap().refused;
        assert!(refused <= 6, "{refused} dials in 400 ms");
        client.close().await;
        server.stop(Duration::ZERO).await;
    });
}

#[test]
fn a_peer_that_accepts_and_never_answers_is_a_failed_dial_after_the_dial_timeout() {
    run(async {
        // A listener that accepts and then says nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let held = Rc::new(RefCell::new(Vec::new()));
        let accepting = {
            let held = held.clone();
            actix_rt::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    held.borrow_mut().push(stream);
                }
            })
        };
        let client = Reconnect::start(
            endpoint.as_str(),
            fast()
                .dial_timeout(Duration::from_millis(100))
                .wait_while_down(Duration::from_millis(50)),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = client.status().await.unwrap();
            if status.failures >= 2 {
                let why = status.last_error.unwrap();
                assert!(why.reason().contains("dial_timeout"), "{why}");
                assert_eq!(status.connections, 0);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the dial never gave up: {status:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        client.close().await;
        accepting.abort();
    });
}
