//! Inbound message handling: a connection serving a capability gets the
//! input as a stream of framed messages (the input is split into messages
//! by its own length bytes, so the fuzzer can build valid RPC messages and
//! mutate their fields). The connection must answer, abort, or keep
//! serving, and never panic or hang.
#![no_main]

use capnp_actix::{Capability, ConnActor, ConnOptions, Watch};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    actix::System::new().block_on(async {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(ours);
        // A capability to call: calls on it fail, which is enough to drive
        // every table (questions, answers, exports, imports, embargoes).
        let conn = ConnActor::start(
            read,
            write,
            ConnOptions::new()
                .main_interface(Capability::broken(capnp_actix_proto::Error::failed("x")))
                .max_answers(64)
                .max_imports(64),
        );
        let ended = conn.send(Watch).await.ok();
        let _ = theirs.write_all(data).await;
        let mut buf = vec![0u8; 1 << 16];
        // Read what comes back until the connection is quiet.
        loop {
            match actix_rt::time::timeout(Duration::from_millis(5), theirs.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(_)) => {}
            }
        }
        drop(theirs);
        if let Some(ended) = ended {
            // The connection must end once the peer hangs up.
            let waited = actix_rt::time::timeout(Duration::from_secs(5), ended).await;
            assert!(waited.is_ok(), "the connection hung after its peer left");
        }
    });
});
