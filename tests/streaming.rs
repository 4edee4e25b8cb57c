//! Streaming calls (`-> stream`, P-15) as the callee runs them: one at a
//! time per object, in arrival order; an ordinary call waits for the
//! streaming calls before it; after one fails, later calls on the object
//! fail with its error. Each test runs on a local capability and through a
//! connection.

mod support;

#[allow(dead_code, clippy::all)]
mod bench_capnp {
    include!(concat!(env!("OUT_DIR"), "/bench_capnp.rs"));
}

use bench_capnp::sink;
use capnp_actix::{Capability, ConnActor, ConnOptions, Connection};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use support::raw::run;
#[allow(unused_imports)]
use support::test_capnp;

/// What a sink saw.
#[derive(Default)]
struct Seen {
    /// The first byte of each write, in the order the writes started.
    order: RefCell<Vec<u8>>,
    /// Writes running now, and the most at once.
    running: Cell<u32>,
    most: Cell<u32>,
    bytes: Cell<u64>,
}

/// A sink whose writes take a while; an empty write fails.
struct SlowSink(Rc<Seen>);

impl sink::Server for SlowSink {
    async fn write(self: Rc<Self>, params: sink::WriteParams) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?.to_vec();
        let Some(&first) = data.first() else {
            return Err(capnp::Error::failed("an empty write".into()));
        };
        let seen = &self.0;
        seen.order.borrow_mut().push(first);
        seen.running.set(seen.running.get() + 1);
        seen.most.set(seen.most.get().max(seen.running.get()));
        actix_rt::time::sleep(Duration::from_millis(3)).await;
        seen.running.set(seen.running.get() - 1);
        seen.bytes.set(seen.bytes.get() + data.len() as u64);
        Ok(())
    }

    async fn done(
        self: Rc<Self>,
        _: sink::DoneParams,
        mut results: sink::DoneResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_bytes(self.0.bytes.get());
        Ok(())
    }
}

/// A sink, called locally (`false`) or through a connection (`true`).
async fn sink(remote: bool, seen: &Rc<Seen>) -> (sink::Client, Option<Connection>) {
    let local = Capability::from_server::<sink::Client, _>(SlowSink(seen.clone()));
    if !remote {
        return (local.client(), None);
    }
    let (client, _server) =
        ConnActor::pair(ConnOptions::new(), ConnOptions::new().main_interface(local));
    let conn = Connection::new(client);
    let sink = conn.bootstrap::<sink::Client>().await.unwrap();
    (sink, Some(conn))
}

/// Sends a write of `len` bytes, each `first`, without waiting for it.
fn write(
    sink: &sink::Client,
    first: u8,
    len: usize,
) -> capnp::capability::Promise<(), capnp::Error> {
    let mut request = sink.write_request();
    request.get().set_data(&vec![first; len]);
    request.send()
}

// covers: P-15
#[test]
fn streaming_calls_to_one_object_run_one_at_a_time_in_arrival_order() {
    for remote in [false, true] {
        run(async move {
            let seen = Rc::new(Seen::default());
            let (sink, _conn) = sink(remote, &seen).await;
            let writes: Vec<_> = (0..10).map(|i| write(&sink, i, 100)).collect();
            for sent in futures::future::join_all(writes).await {
                sent.unwrap();
            }
            // (A send completes when the call goes out; an ordinary call
            // after them returns once they have run.)
            sink.done_request().send().promise.await.unwrap();
            assert_eq!(
                *seen.order.borrow(),
                (0..10).collect::<Vec<u8>>(),
                "remote: {remote}"
            );
            assert_eq!(seen.most.get(), 1, "one at a time (remote: {remote})");
        });
    }
}

// covers: P-15
#[test]
fn an_ordinary_call_waits_for_the_streaming_calls_before_it() {
    for remote in [false, true] {
        run(async move {
            let seen = Rc::new(Seen::default());
            let (sink, _conn) = sink(remote, &seen).await;
            let writes: Vec<_> = (0..3).map(|i| write(&sink, i + 1, 1000)).collect();
            let done = sink.done_request().send().promise;
            let bytes = done.await.unwrap().get().unwrap().get_bytes();
            assert_eq!(
                bytes, 3000,
                "done() ran after the writes (remote: {remote})"
            );
            for write in futures::future::join_all(writes).await {
                write.unwrap();
            }
        });
    }
}

// covers: P-15
#[test]
fn after_a_streaming_call_fails_later_calls_on_the_object_fail_with_its_error() {
    for remote in [false, true] {
        run(async move {
            let seen = Rc::new(Seen::default());
            let (sink, _conn) = sink(remote, &seen).await;
            let first = write(&sink, 1, 10);
            let failing = write(&sink, 0, 0);
            let after = write(&sink, 2, 10);
            let done = sink.done_request().send().promise;
            // (The sends complete as the calls go out, before they return.)
            first.await.unwrap();
            failing.await.unwrap();
            after.await.unwrap();
            let done = done.await.err().unwrap();
            assert!(done.to_string().contains("an empty write"), "{done}");
            assert_eq!(
                *seen.order.borrow(),
                vec![1],
                "nothing ran after the failure"
            );
        });
    }
}

/// A sink whose every write waits for a token.
struct GatedSink(
    futures::lock::Mutex<futures::channel::mpsc::UnboundedReceiver<()>>,
    Rc<Seen>,
);

impl sink::Server for GatedSink {
    async fn write(self: Rc<Self>, params: sink::WriteParams) -> Result<(), capnp::Error> {
        use futures::StreamExt;
        let data = params.get()?.get_data()?.to_vec();
        let Some(&first) = data.first() else {
            return Err(capnp::Error::failed("an empty write".into()));
        };
        self.1.order.borrow_mut().push(first);
        let token = self.0.lock().await.next().await;
        token.ok_or_else(|| capnp::Error::failed("no more tokens".into()))
    }
}

/// A gated sink through a connection: the client, the token sender, what
/// the sink saw, and the server's connection (for its counts).
async fn gated_with(
    client_options: ConnOptions,
) -> (
    sink::Client,
    futures::channel::mpsc::UnboundedSender<()>,
    Rc<Seen>,
    actix::Addr<ConnActor>,
    Connection,
) {
    let (tokens, gate) = futures::channel::mpsc::unbounded();
    let seen = Rc::new(Seen::default());
    let local = Capability::from_server::<sink::Client, _>(GatedSink(
        futures::lock::Mutex::new(gate),
        seen.clone(),
    ));
    let (client, server) =
        ConnActor::pair(client_options, ConnOptions::new().main_interface(local));
    let conn = Connection::new(client);
    let sink = conn.bootstrap::<sink::Client>().await.unwrap();
    (sink, tokens, seen, server, conn)
}

/// [`gated_with`] the default options.
async fn gated() -> (
    sink::Client,
    futures::channel::mpsc::UnboundedSender<()>,
    Rc<Seen>,
    actix::Addr<ConnActor>,
    Connection,
) {
    gated_with(ConnOptions::new()).await
}

// covers: P-15
#[test]
fn a_streaming_send_completes_when_the_window_has_room_not_when_the_call_returns() {
    use futures::FutureExt;
    run(async {
        let options = ConnOptions::new().stream_window(64 * 1024);
        let (sink, tokens, seen, server, _conn) = gated_with(options).await;
        // Seven writes of 10,000 bytes fit a fixed 64 KiB window and one
        // more write (the peers' rule): each send completes though no write
        // has returned (none may, yet).
        for i in 0..7 {
            capnp_actix::within(Duration::from_secs(5), write(&sink, i, 10_000))
                .await
                .unwrap();
        }
        // The eighth fills it: it is sent, but its send waits.
        let mut eighth = write(&sink, 7, 10_000);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert!((&mut eighth).now_or_never().is_none(), "the window is full");
        let sent = server.send(capnp_actix::Stats).await.unwrap().calls_in;
        assert_eq!(sent, 8, "all eight went out");
        // One write returns: room for it.
        tokens.unbounded_send(()).unwrap();
        capnp_actix::within(Duration::from_secs(5), eighth)
            .await
            .unwrap();
        for _ in 0..7 {
            tokens.unbounded_send(()).unwrap();
        }
        let done = sink.done_request().send().promise.await;
        assert!(done.is_err(), "GatedSink has no done()");
        assert_eq!(*seen.order.borrow(), (0..8).collect::<Vec<u8>>());
    });
}

// covers: P-15
#[test]
fn after_a_streaming_call_fails_later_streaming_calls_fail_with_its_error_unsent() {
    run(async {
        let (sink, _tokens, _seen, server, _conn) = gated().await;
        let failed = write(&sink, 0, 0).await; // admitted at once: it goes
        assert!(failed.is_ok(), "a send completes before its call returns");
        // Wait for its return (the server counts it as an exception sent).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while server
            .send(capnp_actix::Stats)
            .await
            .unwrap()
            .exceptions_sent
            .failed
            == 0
        {
            assert!(std::time::Instant::now() < deadline);
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        let calls_before = server.send(capnp_actix::Stats).await.unwrap().calls_in;
        for i in 1..4 {
            let later = write(&sink, i, 10).await.unwrap_err();
            assert!(later.to_string().contains("an empty write"), "{later}");
        }
        // And a clone of the client shares the failure.
        let clone = sink.clone();
        assert!(write(&clone, 9, 10).await.is_err());
        let calls_after = server.send(capnp_actix::Stats).await.unwrap().calls_in;
        assert_eq!(calls_after, calls_before, "the later calls were not sent");
    });
}

// covers: P-15
#[test]
fn an_ordinary_call_never_overtakes_a_streaming_call_whose_send_waits() {
    run(async {
        let seen = Rc::new(Seen::default());
        let (sink, _conn) = sink(true, &seen).await;
        // Writes as large as the window: the later ones' sends wait, but
        // the calls go out in order, so done() counts them all.
        let writes: Vec<_> = (0..3).map(|i| write(&sink, i + 1, 40_000)).collect();
        let done = sink.done_request().send().promise;
        let bytes = done.await.unwrap().get().unwrap().get_bytes();
        assert_eq!(bytes, 120_000);
        for sent in futures::future::join_all(writes).await {
            sent.unwrap();
        }
    });
}

// covers: P-15
#[test]
fn a_connection_stream_window_lets_more_bytes_be_in_flight() {
    use futures::FutureExt;
    run(async {
        let options = ConnOptions::new().stream_window(1 << 20);
        let (sink, tokens, _seen, server, _conn) = gated_with(options).await;
        // No write returns until it gets a token: sends go on at once while
        // the window has room. With 1 MiB, about a hundred 10,000-byte
        // writes do (the default 64 KiB window holds the eighth, see above).
        let mut went_on = 0u32;
        let waiting = loop {
            let mut sent = write(&sink, (went_on % 250) as u8, 10_000);
            if (&mut sent).now_or_never().is_none() {
                break sent;
            }
            went_on += 1;
            assert!(went_on < 200, "the window never filled");
        };
        assert!(
            (100..=106).contains(&went_on),
            "{went_on} sends went on at once"
        );
        for _ in 0..=went_on {
            tokens.unbounded_send(()).unwrap();
        }
        capnp_actix::within(Duration::from_secs(5), waiting)
            .await
            .unwrap();
        // Every write went out (and reaches the server in time).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while server.send(capnp_actix::Stats).await.unwrap().calls_in != went_on as u64 + 1 {
            assert!(std::time::Instant::now() < deadline, "writes went missing");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

// covers: P-15
#[test]
fn by_default_the_window_is_adaptive_and_never_passes_its_bound() {
    use capnp_actix::{Adaptive, FlowControl};
    use futures::FutureExt;
    run(async {
        // The default: the adaptive window, which starts at 1 MiB.
        let (sink, _tokens, _seen, _server, _conn) = gated().await;
        assert!(capnp_actix::stream_state(&sink).is_none(), "no call yet");
        write(&sink, 0, 10).await.unwrap();
        let state = capnp_actix::stream_state(&sink).unwrap();
        assert_eq!(state.window, 1 << 20);
        assert!(
            (10..200).contains(&state.in_flight),
            "{state:?}: the write's message"
        );
        // With a bound of 300,000 bytes, writes that never return fill it
        // and no more: the send that passes it waits, and nothing more than
        // the bound and that one write is ever in flight.
        let bound = 300_000;
        let options = ConnOptions::new()
            .flow_control(FlowControl::Adaptive(Adaptive::default().max_window(bound)));
        let (sink, _tokens, _seen, _server, _conn) = gated_with(options).await;
        let mut went_on = 0u32;
        let _waiting = loop {
            let mut sent = write(&sink, went_on as u8, 10_000);
            if (&mut sent).now_or_never().is_none() {
                break sent;
            }
            went_on += 1;
            assert!(went_on < 1000, "the window never filled");
        };
        let state = capnp_actix::stream_state(&sink).unwrap();
        assert_eq!(state.window, bound);
        assert!(state.in_flight >= bound, "{state:?}");
        assert!(state.in_flight < bound + 10_000 + 200, "{state:?}");
    });
}
