//! The streaming examples against each other: `streaming-client` streams to
//! `streaming-server` (capnp-rpc's streaming example's schema and command
//! line), with the adaptive window and with a fixed one, and both sides
//! report the same SHA-256 of the same number of bytes.

mod programs;

use programs::{example, Process};

use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Command, Stdio};

/// Starts the server (capnp-rpc's form: `server ADDRESS`) on a free port;
/// gives it, its address, and the rest of its output.
fn server() -> (Process, String, BufReader<ChildStdout>) {
    let path = example("streaming-server");
    let mut child = Command::new(&path)
        .args(["server", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} (built by cargo test): {e}", path.display()));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let process = Process(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let listening = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("streaming-server did not start: {line:?}"))
        .to_string();
    (process, listening, stdout)
}

// covers: P-15
#[test]
fn the_client_streams_to_the_server_and_both_hash_the_same_bytes() {
    let (_server, address, mut server_out) = server();
    for (size, window) in [("1000003", "0"), ("300000", "65536"), ("0", "adaptive")] {
        let out = Command::new(example("streaming-client"))
            .args(["client", &address, size, window])
            .output()
            .expect("run streaming-client");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{size} {window}: {stdout} {out:?}"
        );
        let wrote = stdout.lines().next().unwrap_or_default();
        let hash = wrote
            .strip_prefix(&format!("wrote {size} bytes with hash "))
            .unwrap_or_else(|| panic!("{wrote:?}"));
        assert_eq!(hash.len(), 64, "{wrote}");
        assert!(stdout.contains("hashes match"), "{stdout}");
        let mut received = String::new();
        server_out.read_line(&mut received).unwrap();
        assert_eq!(
            received.trim(),
            format!("received {size} bytes with hash {hash}")
        );
    }
}

#[test]
fn the_examples_exit_2_on_a_usage_error() {
    for (name, args) in [
        (
            "streaming-client",
            &["client", "127.0.0.1:1", "ten", "0"][..],
        ),
        ("streaming-client", &["127.0.0.1:1"][..]),
        ("streaming-server", &[][..]),
    ] {
        let status = Command::new(example(name))
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{name} {args:?}");
    }
}
