//! Pieces shared by the benchmark examples, `bench-server` and
//! `bench-client`, which keep the cross-implementation benchmark contract
//! (`../shared/bench/CONTRACT.md`): the generated code of
//! `schema/bench.capnp`, the `HOST:PORT` argument, and (for the client) its
//! options and its result line.

pub mod options;
pub mod report;

#[allow(dead_code, clippy::all)]
pub mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

/// The implementation's name in result lines and in `bench/impls.json`.
pub const IMPL_NAME: &str = "capnp-actix";

/// Splits `HOST:PORT` at its last `:`; `None` unless HOST is non-empty and
/// PORT a decimal port number.
pub fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host, port.parse().ok()?))
}
