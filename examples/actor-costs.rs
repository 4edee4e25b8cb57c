//! What the actor design costs, beside capnp-rpc doing the same work in the
//! same process and the same run (issue 4's benchmarks of our own).
//!
//! `cargo run --release --example actor-costs [CALLS]` measures, with the
//! `Bench.noop()` call of `schema/bench.capnp`:
//! - **local**: calls to an object in this process, one at a time: for us a
//!   message to its `ExportActor`; for capnp-rpc a local client.
//! - **in-memory round trip**: calls over two connections joined by an
//!   in-memory duplex, one at a time: for us the connection actor, a
//!   question actor and an answer actor per call.
//! - **in-memory, 128 in flight**: the same with 128 calls outstanding, where
//!   batching counts.
//!
//! Each case runs 5 times, the implementations interleaved; the table gives
//! the median time per call and the spread ((max - min) / median).
//!
//! `actor-costs CALLS --only CASE ours|theirs` runs just one case (0, 1 or
//! 2, in the order above) of one implementation, once, after a warm-up of
//! CALLS / 10, and prints nothing: for instruction counts under
//! `valgrind --tool=callgrind` (see `bench/callgrind.py`).

// Only the generated code of the shared module is needed here.
#[allow(dead_code)]
mod bench;

// The generated code names its types `crate::bench_capnp::...`.
use bench::bench_capnp;
use bench_capnp::bench as bench_if;
use capnp_actix::{Bootstrap, ConnActor, ConnOptions};
use futures::StreamExt;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// A `Bench` whose `noop` does nothing.
struct Noop;

impl bench_if::Server for Noop {
    async fn noop(
        self: Rc<Self>,
        _: bench_if::NoopParams,
        _: bench_if::NoopResults,
    ) -> Result<(), capnp::Error> {
        Ok(())
    }
}

/// Time per call of `calls` noops, `window` at a time.
async fn run(client: &bench_if::Client, calls: usize, window: usize) -> Duration {
    let started = Instant::now();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut sent = 0;
    while sent < calls || !in_flight.is_empty() {
        while sent < calls && in_flight.len() < window {
            in_flight.push(client.noop_request().send().promise);
            sent += 1;
        }
        if let Some(result) = in_flight.next().await {
            result.expect("noop");
        }
    }
    started.elapsed() / calls as u32
}

/// Our client over an in-memory connection pair to a fresh `Noop`.
async fn ours_in_memory() -> bench_if::Client {
    let server = capnp_actix::Capability::from_server::<bench_if::Client, _>(Noop);
    let (client, _server) = ConnActor::pair(
        ConnOptions::new(),
        ConnOptions::new().main_interface(server),
    );
    client.send(Bootstrap).await.unwrap().unwrap().client()
}

/// A capnp-rpc client over an in-memory duplex to a capnp-rpc `Noop`.
fn theirs_in_memory() -> bench_if::Client {
    use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let server_net = twoparty::VatNetwork::new(
        br.compat(),
        bw.compat_write(),
        Side::Server,
        Default::default(),
    );
    let main: bench_if::Client = capnp_rpc::new_client(Noop);
    let server = RpcSystem::new(Box::new(server_net), Some(main.client));
    tokio::task::spawn_local(server);
    let client_net = twoparty::VatNetwork::new(
        ar.compat(),
        aw.compat_write(),
        Side::Client,
        Default::default(),
    );
    let mut client = RpcSystem::new(Box::new(client_net), None);
    let bench: bench_if::Client = client.bootstrap(Side::Server);
    tokio::task::spawn_local(client);
    bench
}

fn median_and_spread(mut samples: Vec<Duration>) -> (Duration, f64) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let spread = (samples[samples.len() - 1] - samples[0]).as_secs_f64() / median.as_secs_f64();
    (median, spread)
}

#[actix::main]
async fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("CALLS is a number"))
        .unwrap_or(20_000);
    let ours_local: bench_if::Client = capnp_actix::new_client(Noop);
    let theirs_local: bench_if::Client = capnp_rpc::new_client(Noop);
    let ours_remote = ours_in_memory().await;
    let theirs_remote = theirs_in_memory();
    let cases: [(&str, &bench_if::Client, &bench_if::Client, usize); 3] = [
        ("local call", &ours_local, &theirs_local, 1),
        ("in-memory round trip", &ours_remote, &theirs_remote, 1),
        (
            "in-memory, 128 in flight",
            &ours_remote,
            &theirs_remote,
            128,
        ),
    ];
    let args: Vec<String> = std::env::args().collect();
    if args.get(2).map(String::as_str) == Some("--only") {
        let case: usize = args
            .get(3)
            .and_then(|c| c.parse().ok())
            .filter(|c| *c < cases.len())
            .expect("--only CASE: 0, 1 or 2");
        let (_, ours, theirs, window) = cases[case];
        let client = match args.get(4).map(String::as_str) {
            Some("ours") => ours,
            Some("theirs") => theirs,
            _ => panic!("--only CASE ours|theirs"),
        };
        run(client, calls / 10, window).await;
        run(client, calls, window).await;
        return;
    }
    // Warm up.
    for (_, ours, theirs, window) in &cases {
        run(ours, calls / 10, *window).await;
        run(theirs, calls / 10, *window).await;
    }
    println!("{calls} noop calls per repetition, 5 repetitions, interleaved\n");
    println!("| case | capnp-actix ns/call | spread | capnp-rpc ns/call | spread | ratio (theirs/ours) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, ours, theirs, window) in &cases {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for rep in 0..5 {
            if rep % 2 == 0 {
                a.push(run(ours, calls, *window).await);
                b.push(run(theirs, calls, *window).await);
            } else {
                b.push(run(theirs, calls, *window).await);
                a.push(run(ours, calls, *window).await);
            }
        }
        let (a, sa) = median_and_spread(a);
        let (b, sb) = median_and_spread(b);
        println!(
            "| {name} | {} | {:.0}% | {} | {:.0}% | {:.2} |",
            a.as_nanos(),
            sa * 100.0,
            b.as_nanos(),
            sb * 100.0,
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}
