//! Errors that mirror the wire `Exception` of `rpc.capnp`.
//!
//! A call that fails carries an [`Error`] to the caller; the same type is
//! what an `Abort` message carries when a connection ends. Its [`ErrorKind`]
//! is the exception's `type` field and survives the trip across the wire,
//! as does the reason text.

use crate::rpc_capnp::exception;
use std::fmt;

/// The kind of a failure, as the wire `Exception.Type` names it.
///
/// ```
/// use capnp_actix_proto::{Error, ErrorKind};
/// let e = Error::overloaded("try later");
/// assert_eq!(e.kind(), ErrorKind::Overloaded);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Something went wrong; retrying will not help.
    Failed,
    /// A resource limit was hit; retrying later may help.
    Overloaded,
    /// The connection to the capability's host was lost.
    Disconnected,
    /// The callee does not implement the method or message.
    Unimplemented,
}

/// A failure: its kind and a human-readable reason.
///
/// ```
/// use capnp_actix_proto::{Error, ErrorKind};
/// let e = Error::failed("no such user");
/// assert_eq!(e.reason(), "no such user");
/// assert_eq!(e.to_string(), "failed: no such user");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure this is; it travels as `Exception.type`.
    kind: ErrorKind,
    /// Why, in words; it travels as `Exception.reason`.
    reason: String,
}

impl Error {
    /// A failure of the given kind.
    ///
    /// ```
    /// use capnp_actix_proto::{Error, ErrorKind};
    /// assert_eq!(Error::new(ErrorKind::Failed, "x"), Error::failed("x"));
    /// ```
    pub fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        Error {
            kind,
            reason: reason.into(),
        }
    }

    /// A `failed` error.
    ///
    /// ```
    /// assert!(capnp_actix_proto::Error::failed("x").reason() == "x");
    /// ```
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, reason)
    }

    /// An `overloaded` error.
    ///
    /// ```
    /// use capnp_actix_proto::{Error, ErrorKind};
    /// assert_eq!(Error::overloaded("x").kind(), ErrorKind::Overloaded);
    /// ```
    pub fn overloaded(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Overloaded, reason)
    }

    /// A `disconnected` error.
    ///
    /// ```
    /// use capnp_actix_proto::{Error, ErrorKind};
    /// assert_eq!(Error::disconnected("x").kind(), ErrorKind::Disconnected);
    /// ```
    pub fn disconnected(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Disconnected, reason)
    }

    /// An `unimplemented` error.
    ///
    /// ```
    /// use capnp_actix_proto::{Error, ErrorKind};
    /// assert_eq!(Error::unimplemented("x").kind(), ErrorKind::Unimplemented);
    /// ```
    pub fn unimplemented(reason: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, reason)
    }

    /// The kind of failure.
    ///
    /// ```
    /// use capnp_actix_proto::{Error, ErrorKind};
    /// assert_eq!(Error::failed("x").kind(), ErrorKind::Failed);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The reason text.
    ///
    /// ```
    /// assert_eq!(capnp_actix_proto::Error::failed("why").reason(), "why");
    /// ```
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Reads a wire `Exception`. A malformed one still gives an error (a
    /// `failed` one saying so), never a panic.
    ///
    /// ```
    /// use capnp_actix_proto::{rpc_capnp::exception, Error};
    /// let mut msg = capnp::message::Builder::new_default();
    /// Error::overloaded("busy").write(msg.init_root::<exception::Builder>());
    /// let read = Error::read(msg.get_root_as_reader().unwrap());
    /// assert_eq!(read, Error::overloaded("busy"));
    /// ```
    pub fn read(reader: exception::Reader<'_>) -> Self {
        let kind = match reader.get_type() {
            Ok(exception::Type::Failed) => ErrorKind::Failed,
            Ok(exception::Type::Overloaded) => ErrorKind::Overloaded,
            Ok(exception::Type::Disconnected) => ErrorKind::Disconnected,
            Ok(exception::Type::Unimplemented) => ErrorKind::Unimplemented,
            Err(_) => ErrorKind::Failed,
        };
        let reason = match reader.get_reason() {
            Ok(text) => match text.to_str() {
                Ok(s) => s.to_string(),
                Err(_) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
            },
            Err(e) => format!("(unreadable exception reason: {e})"),
        };
        Error { kind, reason }
    }

    /// Writes this error as a wire `Exception`.
    ///
    /// ```
    /// use capnp_actix_proto::{rpc_capnp::exception, Error};
    /// let mut msg = capnp::message::Builder::new_default();
    /// Error::failed("boom").write(msg.init_root::<exception::Builder>());
    /// let r: exception::Reader = msg.get_root_as_reader().unwrap();
    /// assert_eq!(r.get_reason().unwrap().to_str().unwrap(), "boom");
    /// ```
    pub fn write(&self, mut builder: exception::Builder<'_>) {
        builder.set_reason(self.reason.as_str());
        builder.set_type(match self.kind {
            ErrorKind::Failed => exception::Type::Failed,
            ErrorKind::Overloaded => exception::Type::Overloaded,
            ErrorKind::Disconnected => exception::Type::Disconnected,
            ErrorKind::Unimplemented => exception::Type::Unimplemented,
        });
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Failed => "failed",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Unimplemented => "unimplemented",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for Error {}

impl From<capnp::Error> for Error {
    fn from(e: capnp::Error) -> Self {
        let kind = match e.kind {
            capnp::ErrorKind::Overloaded => ErrorKind::Overloaded,
            capnp::ErrorKind::Disconnected => ErrorKind::Disconnected,
            capnp::ErrorKind::Unimplemented => ErrorKind::Unimplemented,
            _ => ErrorKind::Failed,
        };
        // capnp's own errors (malformed pointers, limits) carry their text in
        // the kind; user errors carry it in `extra`.
        let reason = match e.kind {
            capnp::ErrorKind::Failed
            | capnp::ErrorKind::Overloaded
            | capnp::ErrorKind::Disconnected
            | capnp::ErrorKind::Unimplemented => e.extra,
            _ if e.extra.is_empty() => e.kind.to_string(),
            _ => format!("{}: {}", e.kind, e.extra),
        };
        Error { kind, reason }
    }
}

impl From<capnp::NotInSchema> for Error {
    fn from(e: capnp::NotInSchema) -> Self {
        Error::failed(format!("unknown union member or enumerant: {e}"))
    }
}

impl From<Error> for capnp::Error {
    fn from(e: Error) -> Self {
        match e.kind {
            ErrorKind::Failed => capnp::Error::failed(e.reason),
            ErrorKind::Overloaded => capnp::Error::overloaded(e.reason),
            ErrorKind::Disconnected => capnp::Error::disconnected(e.reason),
            ErrorKind::Unimplemented => capnp::Error::unimplemented(e.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: P-02
    #[test]
    fn every_kind_and_reason_survive_the_wire_form() {
        for kind in [
            ErrorKind::Failed,
            ErrorKind::Overloaded,
            ErrorKind::Disconnected,
            ErrorKind::Unimplemented,
        ] {
            let original = Error::new(kind, format!("reason for {kind}"));
            let mut msg = capnp::message::Builder::new_default();
            original.write(msg.init_root());
            let back = Error::read(msg.get_root_as_reader().unwrap());
            assert_eq!(back, original);
        }
    }

    #[test]
    fn capnp_errors_keep_kind_and_text_both_ways() {
        let e: Error = capnp::Error::overloaded("slow down".into()).into();
        assert_eq!(e, Error::overloaded("slow down"));
        let c: capnp::Error = Error::unimplemented("nope").into();
        assert_eq!(c.kind, capnp::ErrorKind::Unimplemented);
        assert_eq!(c.extra, "nope");
    }
}
