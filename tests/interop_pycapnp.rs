//! Interop with the C++ reference implementation, reached through the
//! `pycapnp` package (which bundles it), in both directions:
//! - the calculator: our `calculator-client` against a pycapnp server, and
//!   a pycapnp client against our `calculator-server`;
//! - the scenarios of `schema/test.capnp`: our client against a pycapnp
//!   server, and a pycapnp client against our server.
//!
//! The Python peers live in `tests/interop/`. The first test to need them
//! creates a virtual environment in `target/interop-venv` and installs
//! pycapnp from PyPI into it; without Python 3 (with venv and pip) the tests
//! fail and say what to install.

mod programs;

use programs::Process;

mod support;

use capnp_actix::{Bootstrap, Capability, ConnActor, ConnOptions, Stats};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
// `test_capnp` at the crate root: the generated code names its types so.
use support::test_capnp::{self, callback, counter, sequencer, test, FailureKind};
// The generated code names its types `crate::test_capnp::...`.
use support::{
    expect_in_order, send_next, CallbackImpl, CounterImpl, SequencerImpl, TailCallerImpl, Tally,
    TestImpl,
};
#[allow(unused_imports)]
use test_capnp as _;

/// The pycapnp version the peers are written against.
const PYCAPNP: &str = "pycapnp==2.2.4";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/debug` (or whichever profile), from this test's own path.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

/// The venv's Python with pycapnp, made on first use.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = build_dir().parent().expect("target/").join("interop-venv");
        let python = venv.join("bin").join("python");
        let ready = venv.join(".pycapnp-installed");
        if ready.exists() {
            return python;
        }
        let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let made = Command::new(&base).args(["-m", "venv"]).arg(&venv).output();
        match made {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "interop tests need Python 3 with the venv module (Debian: apt-get install \
                 python3 python3-venv); `{base} -m venv` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "interop tests need Python 3 (Debian: apt-get install python3 python3-venv; \
                 or set PYTHON to an interpreter): cannot run `{base}`: {e}"
            ),
        }
        let pip = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", PYCAPNP])
            .output()
            .expect("run pip in the interop venv");
        assert!(
            pip.status.success(),
            "interop tests need {PYCAPNP} from PyPI; `pip install` failed: {}",
            String::from_utf8_lossy(&pip.stderr)
        );
        std::fs::write(&ready, PYCAPNP).expect("mark the venv ready");
        python
    })
}

/// Starts a Python server script and waits for its "ready PORT" line.
fn python_server(script: &str, schema: &str) -> (Process, u16) {
    let mut child = Command::new(python())
        .arg(repo().join("tests/interop").join(script))
        .arg("127.0.0.1:0")
        .arg(repo().join("schema").join(schema))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python server");
    let stdout = child.stdout.take().expect("piped stdout");
    let process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's first line");
    let port = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{script} did not start: {line:?}"));
    (process, port)
}

/// Runs a Python client script to the end; gives its exit status and output.
fn python_client(script: &str, schema: &str, port: u16) -> (bool, String) {
    let out = Command::new(python())
        .arg(repo().join("tests/interop").join(script))
        .arg(format!("127.0.0.1:{port}"))
        .arg(repo().join("schema").join(schema))
        .output()
        .expect("run the Python client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asserts every expected check printed PASS and none FAIL.
fn assert_all_pass(output: &str, success: bool, checks: usize) {
    let passed = output.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(
        success && passed == checks && !output.contains("FAIL"),
        "expected {checks} PASS lines:\n{output}"
    );
}

// covers: P-01, P-02, P-03
#[test]
fn our_calculator_client_passes_against_a_pycapnp_server() {
    let (_server, port) = python_server("calculator_server.py", "calculator.capnp");
    let client = build_dir().join("examples").join("calculator-client");
    let out = Command::new(&client)
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap_or_else(|e| panic!("run {} (built by cargo test): {e}", client.display()));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_all_pass(&text, out.status.success(), 5);
}

// covers: P-01, P-02, P-03
#[test]
fn a_pycapnp_calculator_client_passes_against_our_server() {
    let server = build_dir().join("examples").join("calculator-server");
    let mut child = Command::new(&server)
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} (built by cargo test): {e}", server.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let _server = Process(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("calculator-server did not start: {line:?}"));
    let (success, output) = python_client("calculator_client.py", "calculator.capnp", port);
    assert_all_pass(&output, success, 5);
}

// covers: P-01, P-02, P-03, P-05, P-06, P-07, P-10, P-11, P-13, W-03
#[test]
fn pycapnp_client_scenarios_pass_against_our_server() {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let tally = Tally::default();
            let main = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let accept = async {
                while let Ok((stream, _)) = listener.accept().await {
                    ConnActor::from_tcp(stream, ConnOptions::new().main_interface(main.clone()));
                }
            };
            let stop = async {
                while stop_rx.try_recv().is_err() {
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                }
            };
            futures::future::select(Box::pin(accept), Box::pin(stop)).await;
        });
    });
    let port = port_rx.recv().unwrap();
    let (success, output) = python_client("test_client.py", "test.capnp", port);
    let _ = stop_tx.send(());
    server.join().unwrap();
    assert_all_pass(&output, success, 11);
}

/// Runs `scenario` with our client connected to a fresh pycapnp test server.
fn against_pycapnp<F, Fut>(scenario: F)
where
    F: FnOnce(test::Client, actix::Addr<ConnActor>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (_server, port) = python_server("test_server.py", "test.capnp");
    actix::System::new().block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let conn = ConnActor::from_tcp(stream, ConnOptions::new());
        let cap = conn.send(Bootstrap).await.unwrap().unwrap();
        actix_rt::time::timeout(Duration::from_secs(30), scenario(cap.client(), conn))
            .await
            .expect("the scenario timed out");
    });
}

async fn live_counters(t: &test::Client) -> u32 {
    t.live_counters_request()
        .send()
        .promise
        .await
        .unwrap()
        .get()
        .unwrap()
        .get_count()
}

// covers: P-01, P-02
#[test]
fn our_client_calls_a_pycapnp_server() {
    against_pycapnp(|t, _| async move {
        let mut req = t.echo_request();
        req.get().set_text("hello");
        let reply = req.send().promise.await.unwrap();
        assert_eq!(
            reply.get().unwrap().get_text().unwrap().to_str().unwrap(),
            "hello"
        );
    });
}

// covers: P-02
#[test]
fn exceptions_from_a_pycapnp_server_keep_their_reason() {
    // pycapnp reports every exception its Python servers raise as `failed`
    // (its server glue makes no other kind), so only the reason can be
    // checked in this direction; the kinds are checked the other way round,
    // by tests/interop/test_client.py against our server.
    against_pycapnp(|t, _| async move {
        for kind in [
            FailureKind::Failed,
            FailureKind::Overloaded,
            FailureKind::Disconnected,
            FailureKind::Unimplemented,
        ] {
            let mut req = t.fail_request();
            req.get().set_kind(kind);
            req.get().set_reason("the reason text");
            let err = req.send().promise.await.err().expect("fail must fail");
            assert_eq!(err.kind, capnp::ErrorKind::Failed);
            assert!(err.extra.contains("the reason text"), "{}", err.extra);
        }
    });
}

// covers: P-03, P-04, P-06, P-12
#[test]
fn capabilities_and_pipelining_with_a_pycapnp_server() {
    against_pycapnp(|t, conn| async move {
        let tally = Tally::default();
        let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(100, &tally));
        let mut req = t.echo_cap_request();
        req.get().set_cap(mine.clone());
        let back = req.send().promise.await.unwrap();
        let mut inc = back.get().unwrap().get_cap().unwrap().increment_request();
        inc.get().set_by(1);
        assert_eq!(
            inc.send().promise.await.unwrap().get().unwrap().get_value(),
            101
        );
        // Pipelined on a result that does not exist yet.
        let mut req = t.new_counter_request();
        req.get().set_start(40);
        let counter = req.send().pipeline.get_counter();
        let (a, b) = (counter.increment_request(), counter.increment_request());
        let (a, b) = futures::join!(a.send().promise, b.send().promise);
        let mut values = [
            a.unwrap().get().unwrap().get_value(),
            b.unwrap().get().unwrap().get_value(),
        ];
        values.sort();
        assert_eq!(values, [40, 40], "increment by 0 twice");
        let pair = t.nested_request().send().pipeline.get_pair();
        assert!(pair.get_right().get_request().send().promise.await.is_err());
        assert_eq!(
            pair.get_left()
                .get_request()
                .send()
                .promise
                .await
                .unwrap()
                .get()
                .unwrap()
                .get_value(),
            10
        );
        // The peer released what we sent once nobody there holds it.
        drop((back, mine));
        let exports = conn.send(Stats).await.unwrap().exports;
        assert!(exports <= 1, "{exports}");
    });
}

// covers: P-05
#[test]
fn dropping_a_pycapnp_servers_counter_releases_it() {
    against_pycapnp(|t, _| async move {
        let mut req = t.new_counter_request();
        req.get().set_start(1);
        let reply = req.send().promise.await.unwrap();
        let counter = reply.get().unwrap().get_counter().unwrap();
        assert_eq!(live_counters(&t).await, 1);
        drop((counter, reply));
        for _ in 0..200 {
            if live_counters(&t).await == 0 {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pycapnp server still holds the counter");
    });
}

// covers: P-07
#[test]
fn dropping_a_call_cancels_it_on_a_pycapnp_server() {
    against_pycapnp(|t, _| async move {
        let hanging = t.hang_request().send();
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        drop(hanging);
        for _ in 0..200 {
            let count = t.cancellations_request().send().promise.await.unwrap();
            if count.get().unwrap().get_count() == 1 {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pycapnp server did not cancel the call");
    });
}

// covers: P-11, P-13
#[test]
fn embargo_ordering_with_a_pycapnp_server() {
    against_pycapnp(|t, conn| async move {
        let seq: sequencer::Client = capnp_actix::new_client(SequencerImpl::new());
        let mut req = t.echo_seq_request();
        req.get().set_seq(seq);
        let echoed = req.send();
        let promised = echoed.pipeline.get_seq();
        let mut calls = send_next(&promised, 0..20);
        echoed.promise.await.unwrap();
        calls.extend(send_next(&promised, 20..60));
        expect_in_order(calls, "pycapnp").await;
        assert_eq!(conn.send(Stats).await.unwrap().embargoes_started, 1);
    });
}

// covers: P-10
#[test]
fn promises_resolve_both_ways_with_a_pycapnp_server() {
    against_pycapnp(|t, conn| async move {
        // Ours to theirs: a counter that exists only after 50 ms.
        let tally = Tally::default();
        let maker: test::Client =
            Capability::from_server::<test::Client, _>(TestImpl::new(&tally)).client();
        let mut req = maker.delayed_counter_request();
        req.get().set_millis(50);
        req.get().set_start(7);
        let later = req.send();
        let mut req = t.hold_request();
        req.get().set_cap(later.pipeline.get_counter());
        req.send().promise.await.unwrap();
        let mut req = t.call_held_request();
        req.get().set_by(1);
        assert_eq!(
            req.send().promise.await.unwrap().get().unwrap().get_value(),
            8
        );
        assert_eq!(conn.send(Stats).await.unwrap().resolves_sent, 1);
        // Theirs to ours.
        let mut req = t.promised_counter_request();
        req.get().set_millis(50);
        req.get().set_start(3);
        let reply = req.send().promise.await.unwrap();
        let counter = reply.get().unwrap().get_counter().unwrap();
        let mut inc = counter.increment_request();
        inc.get().set_by(1);
        assert_eq!(
            inc.send().promise.await.unwrap().get().unwrap().get_value(),
            4
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(conn.send(Stats).await.unwrap().resolves_received, 1);
        let mut inc = counter.increment_request();
        inc.get().set_by(1);
        assert_eq!(
            inc.send().promise.await.unwrap().get().unwrap().get_value(),
            5
        );
    });
}

// covers: F-04, W-03
#[test]
fn callbacks_and_large_messages_with_a_pycapnp_server() {
    against_pycapnp(|t, _| async move {
        let cb: callback::Client = capnp_actix::new_client(CallbackImpl { test: None });
        let mut req = t.call_back_request();
        req.get().set_cb(cb);
        req.get().set_value(7);
        assert_eq!(
            req.send()
                .promise
                .await
                .unwrap()
                .get()
                .unwrap()
                .get_result(),
            14
        );
        let data: Vec<u8> = (0..5 << 20).map(|i| i as u8).collect();
        let mut req = t.blob_request();
        req.get().set_data(&data);
        let reply = req.send().promise.await.unwrap();
        assert_eq!(reply.get().unwrap().get_data().unwrap(), &data[..]);
    });
}

// covers: F-03
#[test]
fn killing_the_peer_process_fails_pending_calls_promptly() {
    let (mut server, port) = python_server("test_server.py", "test.capnp");
    actix::System::new().block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let conn = ConnActor::from_tcp(stream, ConnOptions::new());
        let ended = conn.send(capnp_actix::Watch).await.unwrap();
        let t: test::Client = conn.send(Bootstrap).await.unwrap().unwrap().client();
        let hanging = t.hang_request().send();
        let counter = t.new_counter_request().send().pipeline.get_counter();
        assert_eq!(live_counters(&t).await, 1);
        // SIGKILL: no goodbye from the peer.
        server.0.kill().unwrap();
        let err = actix_rt::time::timeout(Duration::from_secs(5), hanging.promise)
            .await
            .expect("the pending call fails promptly")
            .err()
            .expect("the pending call fails");
        assert_eq!(err.kind, capnp::ErrorKind::Disconnected, "{err}");
        let err = counter.get_request().send().promise.await.err().unwrap();
        assert_eq!(err.kind, capnp::ErrorKind::Disconnected, "{err}");
        let why = actix_rt::time::timeout(Duration::from_secs(5), ended)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(why.kind(), capnp_actix::ErrorKind::Disconnected);
    });
}

// covers: P-13
#[test]
fn a_tail_call_back_to_a_pycapnp_client_leaves_the_results_with_it() {
    // The pycapnp client hosts the callee: our tail call goes back to it
    // with sendResultsTo.yourself and our Return says takeFromOtherQuestion,
    // so the callee's 300 KB of results never reach our server.
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let server = capnp_actix::Server::builder()
                .workers(1)
                .bootstrap_factory(|_| {
                    Capability::from_server::<test_capnp::tail_caller::Client, _>(TailCallerImpl)
                })
                .listen("127.0.0.1:0")
                .unwrap()
                .start()
                .await
                .unwrap();
            let endpoint = server.endpoints()[0].to_string();
            let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
            port_tx.send(port).unwrap();
            let _ = done_rx.await;
            let totals = server.snapshot().await.unwrap().totals;
            server.stop(Duration::from_secs(1)).await;
            totals
        })
    });
    let port = port_rx.recv().unwrap();
    let (success, output) = python_client("tail_client.py", "test.capnp", port);
    let _ = done_tx.send(());
    let totals = server.join().unwrap();
    assert_all_pass(&output, success, 4);
    // Out: the tail call, and the call pipelined on the answer before its
    // Return, sent on to the tail call's question (where the results are).
    assert_eq!(totals.calls_out, 2);
    assert!(
        totals.bytes_in < 50_000,
        "{} bytes reached the server: the results crossed",
        totals.bytes_in
    );
}

// covers: P-14
#[test]
fn calls_sent_only_to_pipeline_on_work_with_a_pycapnp_server() {
    // The C++ reference honours onlyPromisePipeline (it sends no Return);
    // calls pipelined on such a call reach its results, and dropping it
    // finishes it, with the connection going on.
    against_pycapnp(|t, conn| async move {
        use capnp_actix::SendForPipeline;
        for start in [10, 20, 30] {
            let mut req = t.new_counter_request();
            req.get().set_start(start);
            let counter = req.send_for_pipeline().get_counter();
            let mut inc = counter.increment_request();
            inc.get().set_by(1);
            let value = inc.send().promise.await.unwrap();
            assert_eq!(value.get().unwrap().get_value(), start + 1);
        }
        let mut echo = t.echo_request();
        echo.get().set_text("still here");
        echo.send().promise.await.unwrap();
        let stats = conn.send(Stats).await.unwrap();
        assert_eq!(stats.exceptions_received.total(), 0);
    });
}
