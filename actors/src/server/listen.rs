//! Listening: binding the server's endpoints, the accept loops (one task
//! per listener, on the server's arbiter), and moving an accepted stream
//! to the worker that runs its connection.

use super::{Accepted, Server};
use crate::endpoint::{Endpoint, PeerAddr};
use actix::Addr;
use capnp_actix_proto::Error;
use futures::future::{AbortHandle, Abortable};
use std::time::Duration;

/// After a failed accept (out of file descriptors, say), the loop waits
/// this long before the next, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A bound listener.
pub(super) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// An accepted stream, detached from the accepting thread's reactor so
/// that it can move to a worker.
pub(crate) enum Stream {
    Tcp(std::net::TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

/// Binds `endpoint`. A Unix socket's stale file (no one listening on it)
/// is replaced.
pub(super) async fn bind(endpoint: &Endpoint) -> Result<Listener, Error> {
    let failed = |e: std::io::Error| Error::failed(format!("cannot listen on {endpoint}: {e}"));
    match endpoint {
        Endpoint::Tcp(address) => {
            let listener = tokio::net::TcpListener::bind(address.as_str())
                .await
                .map_err(failed)?;
            Ok(Listener::Tcp(listener))
        }
        #[cfg(unix)]
        Endpoint::Unix(path) => {
            // Only a socket no one listens on is stale; any other file
            // stays, and binding fails.
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
            let listener = tokio::net::UnixListener::bind(path).map_err(failed)?;
            Ok(Listener::Unix(listener, path.clone()))
        }
        #[cfg(not(unix))]
        Endpoint::Unix(_) => Err(Error::unimplemented(
            "Unix-domain sockets need a Unix system",
        )),
    }
}

impl Listener {
    /// The endpoint it is bound to (with the port the system chose, for
    /// port 0).
    pub(super) fn local(&self) -> Endpoint {
        match self {
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(address) => Endpoint::Tcp(address.to_string()),
                Err(_) => Endpoint::Tcp(String::new()),
            },
            #[cfg(unix)]
            Listener::Unix(_, path) => Endpoint::Unix(path.clone()),
        }
    }

    /// Starts accepting on the current arbiter: each connection goes to
    /// `server`. Aborting the handle stops it (and closes the listener).
    pub(super) fn accept_into(self, server: Addr<Server>) -> AbortHandle {
        let (handle, registration) = AbortHandle::new_pair();
        let local = self.local();
        let accepting = async move {
            loop {
                match self.accept().await {
                    Ok((stream, peer)) => server.do_send(Accepted { stream, peer }),
                    Err(e) => {
                        log::warn!("server: accepting on {local} failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        };
        actix_rt::spawn(Abortable::new(accepting, registration));
        handle
    }

    async fn accept(&self) -> std::io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Stream::Tcp(stream.into_std()?), PeerAddr::Tcp(peer)))
            }
            #[cfg(unix)]
            Listener::Unix(listener, _) => {
                let (stream, peer) = listener.accept().await?;
                let path = peer.as_pathname().map(|p| p.to_path_buf());
                Ok((Stream::Unix(stream.into_std()?), PeerAddr::Unix(path)))
            }
        }
    }
}

/// Removes a Unix listener's socket file when the server stops listening.
pub(super) fn unlink(endpoint: &Endpoint) {
    #[cfg(unix)]
    if let Endpoint::Unix(path) = endpoint {
        let _ = std::fs::remove_file(path);
    }
}

impl Stream {
    /// Starts the connection on the current arbiter (the worker's).
    pub(super) fn start(
        self,
        options: crate::ConnOptions,
        supervision: crate::conn::Supervision,
    ) -> std::io::Result<Addr<crate::ConnActor>> {
        use crate::ConnActor;
        Ok(match self {
            Stream::Tcp(stream) => {
                let stream = tokio::net::TcpStream::from_std(stream)?;
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                ConnActor::start_supervised(read, write, options, Some(supervision))
            }
            #[cfg(unix)]
            Stream::Unix(stream) => {
                let (read, write) = tokio::net::UnixStream::from_std(stream)?.into_split();
                ConnActor::start_supervised(read, write, options, Some(supervision))
            }
        })
    }

    /// Refuses the connection: the peer gets an `Abort` saying `why`, then
    /// the stream closes. Runs on the current arbiter, bounded in time.
    pub(super) fn refuse(self, why: Error) {
        use tokio::io::AsyncWriteExt;
        let mut bytes = Vec::new();
        capnp_actix_proto::frame::encode(&capnp_actix_proto::message::abort(&why), &mut bytes);
        actix_rt::spawn(async move {
            let written = async {
                match self {
                    Stream::Tcp(stream) => {
                        let mut stream = tokio::net::TcpStream::from_std(stream)?;
                        stream.write_all(&bytes).await?;
                        stream.shutdown().await
                    }
                    #[cfg(unix)]
                    Stream::Unix(stream) => {
                        let mut stream = tokio::net::UnixStream::from_std(stream)?;
                        stream.write_all(&bytes).await?;
                        stream.shutdown().await
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
        });
    }
}
