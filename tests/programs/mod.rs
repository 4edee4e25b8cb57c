//! Running the example programs (and other child processes) from tests:
//! where cargo built an example, and a child process killed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;

/// The path of example `name`, built by `cargo test` beside the tests.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join("examples")
        .join(name)
}

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
