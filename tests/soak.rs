//! The soak test: many calls with capabilities passed both ways over one
//! connection, and many connects and disconnects; afterwards the tables are
//! empty, no actor is left over, and resident memory stayed within a bound.
//!
//! The default (in CI) is a short run. The full one, on demand:
//! `SOAK=full cargo test --release --test soak -- --nocapture`
//! (100,000 calls, 1,000 connections).
//!
//! One test in this file: it counts live actors process-wide.

mod support;

use capnp_actix::{live_actors, Bootstrap, Capability, ConnActor, ConnOptions, Stats};
use futures::FutureExt;
use std::sync::atomic::Ordering;
use std::time::Duration;
// `test_capnp` at the crate root: the generated code names its types so.
use support::test_capnp::{self, counter, test};
use support::{eventually, CounterImpl, Tally, TestImpl};

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn round_of_calls(t: &test::Client, tally: &Tally) {
    // Theirs to us: a counter made by the server.
    let mut req = t.new_counter_request();
    req.get().set_start(1);
    let counter = req.send().pipeline.get_counter();
    let mut inc = counter.increment_request();
    inc.get().set_by(1);
    assert_eq!(
        inc.send().promise.await.unwrap().get().unwrap().get_value(),
        2
    );
    // Ours to them and back.
    let mine: counter::Client = capnp_actix::new_client(CounterImpl::new(0, tally));
    let mut req = t.echo_cap_request();
    req.get().set_cap(mine);
    let back = req.send().promise.await.unwrap();
    let mut inc = back.get().unwrap().get_cap().unwrap().increment_request();
    inc.get().set_by(3);
    assert_eq!(
        inc.send().promise.await.unwrap().get().unwrap().get_value(),
        3
    );
}

// covers: F-03, F-06, T-01
#[test]
fn many_calls_and_connections_leave_nothing_behind() {
    let full = std::env::var("SOAK").is_ok_and(|v| v == "full");
    // Each round makes 4 calls, with capabilities both ways.
    let (rounds, connections, rss_bound_kib) = if full {
        (25_000, 1_000, 64 * 1024)
    } else {
        (500, 50, 64 * 1024)
    };
    actix::System::new().block_on(async move {
        let baseline = live_actors();
        let server_tally = Tally::default();
        let client_tally = Tally::default();
        let main = Capability::from_server::<test::Client, _>(TestImpl::new(&server_tally));
        let options = ConnOptions::new().main_interface(main);

        // Warm up allocators and caches before taking the memory baseline.
        let (client, server) = ConnActor::pair(ConnOptions::new(), options.clone());
        let t: test::Client = client.send(Bootstrap).await.unwrap().unwrap().client();
        for _ in 0..50 {
            round_of_calls(&t, &client_tally).await;
        }
        let rss_before = rss_kib();

        for _ in 0..rounds {
            round_of_calls(&t, &client_tally).await;
        }
        for _ in 0..connections {
            let (c, _s) = ConnActor::pair(ConnOptions::new(), options.clone());
            let other: test::Client = c.send(Bootstrap).await.unwrap().unwrap().client();
            round_of_calls(&other, &client_tally).await;
            c.send(capnp_actix::Close).await.unwrap();
        }
        let rss_after = rss_kib();

        // Everything the calls made is released: only the bootstrap
        // capability stays exported, nothing else held either way.
        let (st, ct) = (server_tally.clone(), client_tally.clone());
        eventually("every counter is released", Duration::from_secs(10), || {
            st.counters.load(Ordering::SeqCst) == 0 && ct.counters.load(Ordering::SeqCst) == 0
        })
        .await;
        let server_stats = server.send(Stats).await.unwrap();
        let client_stats = client.send(Stats).await.unwrap();
        assert_eq!(
            (server_stats.answers, server_stats.exports, server_stats.imports),
            (1, 1, 0),
            "server tables: {server_stats:?}"
        );
        assert_eq!(
            (client_stats.exports, client_stats.imports),
            (0, 1),
            "client tables: {client_stats:?}"
        );
        drop((t, options));
        client.send(capnp_actix::Close).await.unwrap();
        let gone = async {
            eventually("every actor is gone", Duration::from_secs(10), || {
                live_actors() == baseline
            })
            .await
        };
        if std::panic::AssertUnwindSafe(gone).catch_unwind().await.is_err() {
            panic!("actors left: {:?}, baseline {baseline:?}", live_actors());
        }
        let grown = rss_after.saturating_sub(rss_before);
        println!(
            "soak: {} calls, {connections} connections, resident memory {rss_before} -> {rss_after} KiB",
            rounds * 4
        );
        assert!(
            grown < rss_bound_kib,
            "resident memory grew by {grown} KiB (bound {rss_bound_kib} KiB)"
        );
    });
}
