//! The calculator examples against each other: `calculator-client` runs the
//! five standard checks against `calculator-server`, over TCP and over a
//! Unix socket. (Against the C++ reference: tests/interop_pycapnp.rs.)

mod programs;

use programs::{example, Process};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the server on `address`; gives it and the address it listens on.
fn server(address: &str) -> (Process, String) {
    server_with(&[address])
}

/// Starts the server with these arguments; gives it and the address it
/// listens on.
fn server_with(args: &[&str]) -> (Process, String) {
    let path = example("calculator-server");
    let mut child = Command::new(&path)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} (built by cargo test): {e}", path.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let listening = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("calculator-server did not start: {line:?}"))
        .to_string();
    (process, listening)
}

fn client(address: &str) -> (i32, String) {
    let out = Command::new(example("calculator-client"))
        .arg(address)
        .output()
        .expect("run calculator-client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

// covers: P-01, P-02, P-03, W-04
#[test]
fn the_client_passes_all_five_checks_over_tcp() {
    let (_server, address) = server("127.0.0.1:0");
    let (code, output) = client(&address);
    assert_eq!(code, 0, "{output}");
    assert_eq!(
        output.lines().filter(|l| l.starts_with("PASS")).count(),
        5,
        "{output}"
    );
}

// covers: W-04
#[test]
fn the_client_passes_all_five_checks_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("capnp-actix-calc-{}.sock", std::process::id()));
    let address = format!("unix:{}", path.display());
    let (_server, listening) = server(&address);
    assert_eq!(listening, address);
    let (code, output) = client(&address);
    assert_eq!(code, 0, "{output}");
    assert_eq!(
        output.lines().filter(|l| l.starts_with("PASS")).count(),
        5,
        "{output}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_client_exits_1_when_nothing_listens_and_2_on_a_usage_error() {
    assert_eq!(client("127.0.0.1:1").0, 1);
    assert_eq!(client("not an address").0, 2);
}

/// Sends `signal` to the server, and gives its exit code and how long it
/// took to exit (failing after 10 s).
fn signal_and_wait(server: &mut Process, signal: &str) -> (Option<i32>, Duration) {
    let sent = Instant::now();
    let status = Command::new("kill")
        .args([signal, &server.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            return (status.code(), sent.elapsed());
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_server_takes_a_worker_count_and_exits_0_within_5_s_on_sigterm() {
    let (mut server, address) = server_with(&["127.0.0.1:0", "--workers", "2"]);
    let (code, output) = client(&address);
    assert_eq!(code, 0, "{output}");
    let (code, took) = signal_and_wait(&mut server, "-TERM");
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn the_server_exits_0_on_sigint_with_a_connection_open() {
    let (mut server, address) = server_with(&["127.0.0.1:0", "--workers", "1"]);
    // An idle client connection stays open across the signal: the server
    // closes it and exits.
    let idle = std::net::TcpStream::connect(&address).unwrap();
    let (code, took) = signal_and_wait(&mut server, "-INT");
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(idle);
}

#[test]
fn the_server_exits_2_on_a_usage_error() {
    for args in [
        &["127.0.0.1:0", "--workers"][..],
        &["127.0.0.1:0", "--workers", "0"],
        &["x"],
    ] {
        let status = Command::new(example("calculator-server"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}
