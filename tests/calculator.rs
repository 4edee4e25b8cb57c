//! The calculator examples against each other: `calculator-client` runs the
//! five standard checks against `calculator-server`, over TCP and over a
//! Unix socket. (Against the C++ reference: tests/interop_pycapnp.rs.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join("examples")
        .join(name)
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on `address`; gives it and the address it listens on.
fn server(address: &str) -> (Process, String) {
    let path = example("calculator-server");
    let mut child = Command::new(&path)
        .arg(address)
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
