//! A streaming server on the schema and command line of capnp-rpc's own
//! streaming example (`capnp-rpc/examples/streaming`), so that it serves
//! that example's client as well as `streaming-client`.
//!
//! `streaming-server [server] ADDRESS` (ADDRESS: `HOST:PORT` or
//! `unix:PATH`) serves a `Receiver` on every connection. Its
//! `writeStream()` publishes a fresh `ByteStream` at once (`setPipeline`),
//! so that the client pipelines its writes on the call; `write(bytes)` is a
//! streaming method (`-> stream`): its calls arrive one at a time, in
//! order, and are hashed with SHA-256; `end()` makes `writeStream()`
//! return with the hash. Prints `received N bytes with hash H` for each
//! stream. SIGINT or SIGTERM stops it gracefully.

mod streaming;

// The generated code names its types `crate::streaming_capnp::...`.
use streaming::streaming_capnp;

use capnp_actix::{Capability, Server};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use streaming::{hex, Sha256};
use streaming_capnp::{byte_stream, receiver};

/// One stream: the hash so far, and where `end()` sends the digest.
struct ByteStreamImpl {
    hash: RefCell<Option<Sha256>>,
    received: std::cell::Cell<u64>,
    ended: RefCell<Option<futures::channel::oneshot::Sender<[u8; 32]>>>,
}

impl byte_stream::Server for ByteStreamImpl {
    async fn write(self: Rc<Self>, params: byte_stream::WriteParams) -> Result<(), capnp::Error> {
        let bytes = params.get()?.get_bytes()?;
        match self.hash.borrow_mut().as_mut() {
            Some(hash) => hash.update(bytes),
            None => return Err(capnp::Error::failed("write() after end()".into())),
        }
        self.received.set(self.received.get() + bytes.len() as u64);
        Ok(())
    }

    async fn end(
        self: Rc<Self>,
        _: byte_stream::EndParams,
        _: byte_stream::EndResults,
    ) -> Result<(), capnp::Error> {
        let hash = self.hash.borrow_mut().take();
        let digest = hash
            .ok_or_else(|| capnp::Error::failed("end() twice".into()))?
            .finish();
        println!(
            "received {} bytes with hash {}",
            self.received.get(),
            hex(&digest)
        );
        if let Some(ended) = self.ended.borrow_mut().take() {
            let _ = ended.send(digest);
        }
        Ok(())
    }
}

struct ReceiverImpl;

impl receiver::Server for ReceiverImpl {
    async fn write_stream(
        self: Rc<Self>,
        _: receiver::WriteStreamParams,
        mut results: receiver::WriteStreamResults,
    ) -> Result<(), capnp::Error> {
        let (ended, digest) = futures::channel::oneshot::channel();
        let stream: byte_stream::Client = capnp_actix::new_client(ByteStreamImpl {
            hash: RefCell::new(Some(Sha256::new())),
            received: Default::default(),
            ended: RefCell::new(Some(ended)),
        });
        results.get().set_stream(stream);
        // The client's writes go to the stream before this call returns.
        results.set_pipeline()?;
        let digest = digest
            .await
            .map_err(|_| capnp::Error::failed("the stream went away before end()".into()))?;
        results.get().set_sha256(&digest);
        Ok(())
    }
}

#[actix::main]
async fn main() {
    streaming::check_sha256();
    let args = streaming::args_after("server");
    let [address] = args.as_slice() else {
        eprintln!("usage: streaming-server [server] ADDRESS   (HOST:PORT or unix:PATH)");
        std::process::exit(2);
    };
    let builder = Server::builder()
        .bootstrap_factory(|_| Capability::from_server::<receiver::Client, _>(ReceiverImpl))
        .shutdown_on_signals(Duration::from_secs(3));
    let server = match builder.listen(address.as_str()) {
        Ok(builder) => builder.start().await,
        Err(e) => Err(e),
    };
    let server = server.unwrap_or_else(|e| {
        eprintln!("streaming-server: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", server.endpoints()[0]);
    server.stopped().await;
}
