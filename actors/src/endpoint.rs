//! [`Endpoint`]: where a server listens or a client connects (TCP or a
//! Unix-domain socket), and [`PeerAddr`]: who connected.

use capnp_actix_proto::Error;
use std::fmt;
use std::path::PathBuf;

/// A TCP address (`HOST:PORT`) or a Unix-domain socket (`unix:PATH`).
///
/// ```
/// use capnp_actix::Endpoint;
/// let tcp: Endpoint = "127.0.0.1:4000".parse().unwrap();
/// assert_eq!(tcp, Endpoint::Tcp("127.0.0.1:4000".into()));
/// let unix: Endpoint = "unix:/tmp/calc.sock".parse().unwrap();
/// assert_eq!(unix.to_string(), "unix:/tmp/calc.sock");
/// assert!("no-port".parse::<Endpoint>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `HOST:PORT`; the host may be a name, resolved when used.
    Tcp(String),
    /// A Unix-domain socket's path.
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Endpoint, Error> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Error::failed(
                    "`unix:` needs a path, as in unix:/tmp/rpc.sock",
                ));
            }
            return Ok(Endpoint::Unix(path.into()));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Endpoint::Tcp(text.to_string()))
            }
            _ => Err(Error::failed(format!(
                "`{text}` is no address: expected HOST:PORT or unix:PATH"
            ))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(address) => f.write_str(address),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Converts what users write (`"host:port"`, `"unix:/path"`, or an
/// [`Endpoint`]) into an endpoint.
///
/// ```
/// use capnp_actix::{Endpoint, IntoEndpoint};
/// assert!("127.0.0.1:1".into_endpoint().is_ok());
/// let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
/// assert_eq!(addr.into_endpoint().unwrap(), Endpoint::Tcp("127.0.0.1:1".into()));
/// ```
pub trait IntoEndpoint {
    /// The endpoint, or why this is none.
    fn into_endpoint(self) -> Result<Endpoint, Error>;
}

impl IntoEndpoint for Endpoint {
    fn into_endpoint(self) -> Result<Endpoint, Error> {
        Ok(self)
    }
}

impl IntoEndpoint for &Endpoint {
    fn into_endpoint(self) -> Result<Endpoint, Error> {
        Ok(self.clone())
    }
}

impl IntoEndpoint for &str {
    fn into_endpoint(self) -> Result<Endpoint, Error> {
        self.parse()
    }
}

impl IntoEndpoint for String {
    fn into_endpoint(self) -> Result<Endpoint, Error> {
        self.parse()
    }
}

impl IntoEndpoint for &String {
    fn into_endpoint(self) -> Result<Endpoint, Error> {
        self.parse()
    }
}

impl IntoEndpoint for std::net::SocketAddr {
    fn into_endpoint(self) -> Result<Endpoint, Error> {
        Ok(Endpoint::Tcp(self.to_string()))
    }
}

/// Who is at the other end of an accepted connection.
///
/// ```
/// use capnp_actix::PeerAddr;
/// let peer = PeerAddr::Tcp("10.0.0.7:5123".parse().unwrap());
/// assert_eq!(peer.to_string(), "10.0.0.7:5123");
/// assert_eq!(PeerAddr::Unix(None).to_string(), "unix:(unnamed)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(std::net::SocketAddr),
    /// A Unix-domain peer, with its path if its socket has one (clients'
    /// sockets usually do not).
    Unix(Option<PathBuf>),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(address) => write!(f, "{address}"),
            PeerAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}
