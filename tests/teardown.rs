//! What a connection leaves behind when it dies. One test in this file:
//! it counts live actors process-wide, so no other test may run beside it.

mod support;

use capnp_actix::{live_actors, Bootstrap, Capability, ConnActor, ConnOptions, Watch};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::test_capnp::test;
use support::*;

// covers: F-03, P-09, T-01
#[test]
fn a_dead_connection_leaves_no_actor_and_closes_the_main_interface_once() {
    actix::System::new().block_on(async {
        let baseline = live_actors();
        let tally = Tally::default();
        let main = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
        let (client, server) =
            ConnActor::pair(ConnOptions::new(), ConnOptions::new().main_interface(main));
        let client_ended = client.send(Watch).await.unwrap();
        let server_ended = server.send(Watch).await.unwrap();
        let remote: test::Client = client.send(Bootstrap).await.unwrap().unwrap().client();

        // Leave work in every table: a hanging call (a question here, an
        // answer there), a counter exported by the server, one held by it.
        let hanging = remote.hang_request().send();
        let mut req = remote.new_counter_request();
        req.get().set_start(1);
        let reply = req.send().promise.await.unwrap();
        let counter = reply.get().unwrap().get_counter().unwrap();
        let mine: support::test_capnp::counter::Client =
            capnp_actix::new_client(CounterImpl::new(0, &tally));
        let mut req = remote.hold_request();
        req.get().set_cap(mine);
        req.send().promise.await.unwrap();
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        let busy = live_actors();
        assert!(busy.questions > baseline.questions, "{busy:?}");
        assert!(busy.answers > baseline.answers, "{busy:?}");
        assert_eq!(tally.counters.load(Ordering::SeqCst), 2);

        // Kill the server's side.
        server.send(capnp_actix::Close).await.unwrap();

        // The pending call fails with `disconnected`, promptly.
        let err = actix_rt::time::timeout(Duration::from_secs(5), hanging.promise)
            .await
            .expect("the pending call must fail promptly")
            .err()
            .expect("the pending call must fail");
        assert_eq!(err.kind, capnp::ErrorKind::Disconnected, "{err}");
        // Both ends learn why.
        let why = actix_rt::time::timeout(Duration::from_secs(5), server_ended)
            .await
            .unwrap()
            .unwrap();
        assert!(why.reason().contains("closed locally"), "{why}");
        let why = actix_rt::time::timeout(Duration::from_secs(5), client_ended)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(why.kind(), capnp_actix::ErrorKind::Disconnected, "{why}");
        // Calls on what the dead connection gave us fail; nothing hangs.
        let err = counter.get_request().send().promise.await.err().unwrap();
        assert_eq!(err.kind, capnp::ErrorKind::Disconnected, "{err}");
        drop((counter, reply, remote));

        // The main interface was closed, exactly once, and every actor of
        // both connections is gone.
        let t = tally.clone();
        eventually(
            "the main interface is closed",
            Duration::from_secs(5),
            || t.servers_dropped.load(Ordering::SeqCst) == 1,
        )
        .await;
        eventually("every actor is gone", Duration::from_secs(5), || {
            live_actors() == baseline
        })
        .await;
        assert_eq!(
            tally.counters.load(Ordering::SeqCst),
            0,
            "exports were released"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(tally.servers_dropped.load(Ordering::SeqCst), 1);
    });
}
