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
            for done in futures::future::join_all(writes).await {
                done.unwrap();
            }
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
            first.await.unwrap();
            let failed = failing.await.unwrap_err();
            assert!(failed.to_string().contains("an empty write"), "{failed}");
            let later = after.await.unwrap_err();
            assert!(later.to_string().contains("an empty write"), "{later}");
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
