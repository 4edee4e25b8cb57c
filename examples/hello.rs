//! A server and a client doing real Cap'n Proto RPC over TCP, in one
//! process: a `Server` listens on a loopback port, the client connects
//! (getting the server's bootstrap capability as a typed client) and makes
//! a few calls, printing what happens; then the server stops.
//!
//! Run it with `cargo run --example hello`.

use capnp_actix::{Capability, Server};
use std::cell::Cell;
use std::rc::Rc;

#[allow(dead_code, clippy::all)]
mod test_capnp {
    include!(concat!(env!("OUT_DIR"), "/test_capnp.rs"));
}
use test_capnp::{counter, test};

/// A counter: the server hands these out as capabilities.
struct Counter(Cell<i64>);

impl counter::Server for Counter {
    async fn increment(
        self: Rc<Self>,
        params: counter::IncrementParams,
        mut results: counter::IncrementResults,
    ) -> Result<(), capnp::Error> {
        self.0.set(self.0.get() + params.get()?.get_by());
        results.get().set_value(self.0.get());
        Ok(())
    }
}

/// The server's main interface; methods it does not implement answer
/// `unimplemented`.
struct Service;

impl test::Server for Service {
    async fn echo(
        self: Rc<Self>,
        params: test::EchoParams,
        mut results: test::EchoResults,
    ) -> Result<(), capnp::Error> {
        let text = params.get()?.get_text()?.to_str()?;
        println!("server: echo({text:?})");
        results.get().set_text(text);
        Ok(())
    }

    async fn new_counter(
        self: Rc<Self>,
        params: test::NewCounterParams,
        mut results: test::NewCounterResults,
    ) -> Result<(), capnp::Error> {
        let start = params.get()?.get_start();
        println!("server: newCounter({start})");
        results
            .get()
            .set_counter(capnp_actix::new_client(Counter(Cell::new(start))));
        Ok(())
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Server: one main interface for every connection, on a free port.
    let server = Server::builder()
        .listen("127.0.0.1:0")?
        .main_interface(Capability::from_server::<test::Client, _>(Service))
        .workers(1)
        .start()
        .await?;
    let endpoint = server.endpoints()[0].clone();
    println!("server: listening on {endpoint}");

    // Client: connect and get the server's main interface, typed.
    let (conn, service) = capnp_actix::connect::<test::Client>(&endpoint).await?;

    let mut request = service.echo_request();
    request.get().set_text("hello, capnp-actix");
    let reply = request.send().promise.await?;
    println!(
        "client: echo replied {:?}",
        reply.get()?.get_text()?.to_str()?
    );

    // Promise pipelining: call the counter before newCounter has returned.
    let mut request = service.new_counter_request();
    request.get().set_start(40);
    let counter = request.send().pipeline.get_counter();
    let mut increment = counter.increment_request();
    increment.get().set_by(2);
    let value = increment.send().promise.await?.get()?.get_value();
    println!("client: pipelined increment gave {value}");

    // A method the server does not implement fails that call only.
    let unimplemented = service.hang_request().send().promise.await;
    println!(
        "client: hang() failed as expected: {}",
        unimplemented
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    );

    conn.close().await;
    println!("client: closed the connection");
    let snapshot = server.snapshot().await?;
    println!(
        "server: served {} calls; stopping",
        snapshot.totals.calls_in
    );
    server.stop(std::time::Duration::from_secs(1)).await;
    assert_eq!(value, 42);
    Ok(())
}
