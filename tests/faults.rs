//! Faults: the connection breaks at random points in the middle of calls
//! (a proxy between the two ends drops both sockets), or the peer process is
//! killed. Every pending call must fail with `disconnected` promptly, the
//! connection must end, and no actor may be left behind.
//!
//! One test in this file: it counts live actors process-wide.

mod support;

use capnp_actix::{live_actors, Bootstrap, Capability, ConnActor, ConnOptions, Watch};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use std::time::Duration;
// `test_capnp` at the crate root: the generated code names its types so.
use support::test_capnp::{self, test};
use support::{eventually, Tally, TestImpl};
use tokio::net::{TcpListener, TcpStream};

/// A proxy from a fresh port to `target`; dropping the returned handle cuts
/// both sockets at once.
async fn proxy(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, actix_rt::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = actix_rt::spawn(async move {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let mut outbound = TcpStream::connect(target).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    (address, task)
}

/// A small deterministic generator, for the cut points.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

// covers: F-03
#[test]
fn broken_connections_fail_every_pending_call_and_leave_nothing_behind() {
    actix::System::new().block_on(async {
        let baseline = live_actors();
        let tally = Tally::default();
        let main = Capability::from_server::<test::Client, _>(TestImpl::new(&tally));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_address = listener.local_addr().unwrap();
        let options = ConnOptions::new().main_interface(main);
        let accept = actix_rt::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                ConnActor::from_tcp(stream, options.clone());
            }
        });
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20 {
            let (address, link) = proxy(server_address).await;
            let conn = ConnActor::from_tcp(
                TcpStream::connect(address).await.unwrap(),
                ConnOptions::new(),
            );
            let ended = conn.send(Watch).await.unwrap();
            let t: test::Client = conn.send(Bootstrap).await.unwrap().unwrap().client();
            // Calls that never end, calls on promised results, and plain
            // ones, in flight when the link is cut.
            let mut pending = Vec::new();
            for i in 0..10 {
                pending.push(unit(t.hang_request().send().promise));
                let mut req = t.new_counter_request();
                req.get().set_start(i);
                let counter = req.send().pipeline.get_counter();
                pending.push(unit(counter.get_request().send().promise));
                let mut req = t.echo_request();
                req.get().set_text("x");
                pending.push(unit(req.send().promise));
            }
            actix_rt::time::sleep(Duration::from_micros(next(&mut seed) % 3000)).await;
            link.abort();
            for call in pending {
                // A call may have completed before the cut; none may hang,
                // and any failure must say `disconnected`.
                match actix_rt::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "round {round}: {e}")
                    }
                    Err(_) => panic!("round {round}: a call hung after the link was cut"),
                }
            }
            let why = actix_rt::time::timeout(Duration::from_secs(5), ended)
                .await
                .expect("the connection ends")
                .expect("with a reason");
            assert_eq!(why.kind(), capnp_actix::ErrorKind::Disconnected, "{why}");
        }
        accept.abort();
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        eventually(
            "every actor of the broken connections is gone",
            Duration::from_secs(10),
            || {
                // The main interface's own actor stays while `accept` held its
                // options; it is gone once that task is.
                live_actors() == baseline
            },
        )
        .await;
        assert_eq!(tally.counters.load(std::sync::atomic::Ordering::SeqCst), 0);
    });
}

/// A call's future with its results dropped.
fn unit<T: 'static>(
    call: impl std::future::Future<Output = Result<T, capnp::Error>> + 'static,
) -> LocalBoxFuture<'static, Result<(), capnp::Error>> {
    call.map(|r| r.map(|_| ())).boxed_local()
}
