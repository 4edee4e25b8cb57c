//! The actors that host local objects: a thread keeps those whose object
//! went and gives each one the next object made there, so these tests
//! check that a kept actor never serves anything of its last object, and
//! that an object still lives for every call made through its references.

mod support;

use std::sync::atomic::Ordering;
use support::raw::run;
// The generated code names its own types as `crate::test_capnp::...`.
use support::test_capnp;
use support::{CounterImpl, Tally};
use test_capnp::counter;

/// Increments `client` by `by` and gives the value it reports.
async fn increment(client: &counter::Client, by: i64) -> i64 {
    let mut request = client.increment_request();
    request.get().set_by(by);
    let response = request.send().promise.await.expect("increment");
    response.get().expect("results").get_value()
}

/// Lets the actors on this thread handle what was sent to them, until
/// `done` holds (a bounded number of turns: the runtime is single-threaded,
/// so each turn lets every ready actor run).
async fn turns_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        actix_rt::task::yield_now().await;
    }
    done()
}

/// Objects made one after another (each after the last went, so each new
/// one is hosted by the actor of the one before) answer with their own
/// state, and each is dropped once its last reference goes.
#[test]
fn each_object_a_kept_actor_hosts_is_its_own() {
    run(async {
        let tally = Tally::default();
        for round in 0..300i64 {
            let start = round * 1000;
            let client: counter::Client = capnp_actix::new_client(CounterImpl::new(start, &tally));
            assert_eq!(increment(&client, 1).await, start + 1, "round {round}");
            assert_eq!(increment(&client, 2).await, start + 3, "round {round}");
            drop(client);
            assert!(
                turns_until(|| tally.counters.load(Ordering::SeqCst) == 0).await,
                "round {round}: the object outlived its last reference"
            );
        }
    });
}

/// With several objects alive, one going and a new one made in its place
/// leaves the others serving their own state.
#[test]
fn a_new_object_in_a_kept_actor_leaves_the_others_alone() {
    run(async {
        let tally = Tally::default();
        let kept: Vec<counter::Client> = (0..5)
            .map(|i| capnp_actix::new_client(CounterImpl::new(i * 100, &tally)))
            .collect();
        for round in 0..100i64 {
            let passing: counter::Client =
                capnp_actix::new_client(CounterImpl::new(-round, &tally));
            assert_eq!(increment(&passing, 0).await, -round, "round {round}");
            drop(passing);
            assert!(turns_until(|| tally.counters.load(Ordering::SeqCst) == 5).await);
        }
        for (i, client) in kept.iter().enumerate() {
            assert_eq!(increment(client, 1).await, i as i64 * 100 + 1, "object {i}");
        }
    });
}

/// Calls made through an object's last reference still reach it when the
/// reference goes before they return: the object goes only after them.
#[test]
fn calls_made_before_the_last_reference_went_reach_the_object() {
    run(async {
        let tally = Tally::default();
        for round in 0..100i64 {
            let client: counter::Client = capnp_actix::new_client(CounterImpl::new(round, &tally));
            let pending: Vec<_> = (0..3)
                .map(|_| {
                    let mut request = client.increment_request();
                    request.get().set_by(1);
                    request.send().promise
                })
                .collect();
            drop(client);
            let mut values = Vec::new();
            for response in pending {
                let response = response.await.expect("a call made before the drop");
                values.push(response.get().unwrap().get_value());
            }
            assert_eq!(
                values,
                vec![round + 1, round + 2, round + 3],
                "round {round}"
            );
            assert!(turns_until(|| tally.counters.load(Ordering::SeqCst) == 0).await);
        }
    });
}
