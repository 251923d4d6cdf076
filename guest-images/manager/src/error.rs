//! What can go wrong talking to the control interface.

use std::fmt;

use crate::protocol::{Op, Status};

/// An error of the client library: every variant says what failed in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device tree has no `microvisor,control-v1` node: this slice is not the manager.
    NoControlInterface,
    /// The control interface is there but cannot be used: `/dev/mem`, `mmap`, the lock file,
    /// an `ID` or `VERSION` this client does not speak.
    Interface(String),
    /// The hypervisor refused the request: its status and its one-line message.
    Refused {
        op: Op,
        status: Status,
        message: String,
    },
    /// The hypervisor's answer does not follow docs/control.md (a bug on one side).
    Protocol(String),
    /// An argument refused before anything was sent (a name, a command line, a size).
    InvalidArgument(String),
    /// A bounded wait ran out.
    Timeout(String),
}

impl Error {
    /// The status of a refusal.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoControlInterface => {
                write!(f, "this slice has no control interface (not the manager)")
            }
            Error::Interface(what) => write!(f, "control interface: {what}"),
            Error::Refused {
                op,
                status,
                message,
            } => {
                if message.is_empty() {
                    write!(f, "{}: refused ({status})", op.name())
                } else {
                    write!(f, "{message} ({status})")
                }
            }
            Error::Protocol(what) => write!(f, "malformed answer from the hypervisor: {what}"),
            Error::InvalidArgument(what) => write!(f, "{what}"),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// The one line of a refusal's payload as it can be shown: UTF-8 (lossy), the first line,
/// control characters dropped, at most 512 characters.
pub fn message_line(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_show_the_hypervisors_line_and_the_status() {
        let e = Error::Refused {
            op: Op::On,
            status: Status::WrongState,
            message: "slice \"web\": already on".into(),
        };
        assert_eq!(e.to_string(), "slice \"web\": already on (WRONG_STATE)");
        assert_eq!(e.status(), Some(Status::WrongState));
        let e = Error::Refused {
            op: Op::Erase,
            status: Status::Other(42),
            message: String::new(),
        };
        assert_eq!(e.to_string(), "ERASE: refused (STATUS_42)");
        assert_eq!(
            Error::NoControlInterface.to_string(),
            "this slice has no control interface (not the manager)"
        );
    }

    #[test]
    fn messages_are_one_clean_line() {
        assert_eq!(
            message_line(b"slice \"a\": off\nsecond"),
            "slice \"a\": off"
        );
        assert_eq!(message_line(b"\x1b[2Jbad\xff"), "[2Jbad\u{fffd}");
        assert_eq!(message_line(b""), "");
        assert_eq!(message_line(&[b'x'; 2000]).len(), 512);
    }
}
