//! systemd's notification protocol (`sd_notify`), implemented directly: newline-separated
//! `KEY=VALUE` lines in one datagram to the unix socket named by `$NOTIFY_SOCKET`. Used for
//! `READY=1`, `WATCHDOG=1` (systemd's watchdog, `WatchdogSec=`), `STATUS=...` and `STOPPING=1`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMessage {
    /// Start-up is complete (`Type=notify` units are "started" only then).
    Ready,
    /// Keep-alive for systemd's watchdog.
    Watchdog,
    /// A one-line status shown by `systemctl status`.
    Status(String),
    /// A clean stop has begun.
    Stopping,
}

impl NotifyMessage {
    /// The `KEY=VALUE` line (sans-IO). A status loses its line breaks, which would end it.
    pub fn encode(&self) -> String {
        match self {
            NotifyMessage::Ready => "READY=1".to_owned(),
            NotifyMessage::Watchdog => "WATCHDOG=1".to_owned(),
            NotifyMessage::Stopping => "STOPPING=1".to_owned(),
            NotifyMessage::Status(s) => {
                let one_line: String = s
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                format!("STATUS={one_line}")
            }
        }
    }
}

/// Encodes several notifications into one datagram.
pub fn encode(messages: &[NotifyMessage]) -> String {
    messages
        .iter()
        .map(NotifyMessage::encode)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failed notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is not a form we speak.
    #[error(
        "NOTIFY_SOCKET={value:?} is neither an absolute path nor an abstract socket (@name); \
         run under systemd with Type=notify, or unset it"
    )]
    BadAddress {
        /// The variable's value.
        value: OsString,
    },
    /// The socket could not be created or the datagram not sent.
    #[error("notifying systemd through {socket} failed: {source}")]
    Send {
        /// The socket, as given.
        socket: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct SdNotify {
    socket: UnixDatagram,
    addr: SocketAddr,
    name: String,
}

impl SdNotify {
    /// From `$NOTIFY_SOCKET`; `Ok(None)` when not run by systemd with `Type=notify`.
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Self::connect(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// To a given socket: an absolute path, or `@name` for the abstract namespace.
    pub fn connect(notify_socket: &OsStr) -> Result<Self, NotifyError> {
        let bytes = notify_socket.as_bytes();
        let name = notify_socket.to_string_lossy().into_owned();
        let send_err = |source| NotifyError::Send {
            socket: name.clone(),
            source,
        };
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(notify_socket).map_err(send_err)?,
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(&bytes[1..]).map_err(send_err)?
            }
            _ => {
                return Err(NotifyError::BadAddress {
                    value: notify_socket.to_owned(),
                });
            }
        };
        let socket = UnixDatagram::unbound().map_err(send_err)?;
        Ok(Self { socket, addr, name })
    }

    /// Sends notifications in one datagram.
    pub fn send(&self, messages: &[NotifyMessage]) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(encode(messages).as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                socket: self.name.clone(),
                source,
            })
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&[
            NotifyMessage::Ready,
            NotifyMessage::Status(status.to_owned()),
        ])
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send(&[NotifyMessage::Watchdog])
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&[NotifyMessage::Status(status.to_owned())])
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send(&[NotifyMessage::Stopping])
    }
}

/// systemd's watchdog timeout from `WATCHDOG_USEC` and `WATCHDOG_PID` (sans-IO): `None` when
/// unset, invalid, zero, or meant for another process.
pub fn watchdog_timeout(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.to_str()?.parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// [`watchdog_timeout`] from this process's environment.
pub fn watchdog_timeout_from_env() -> Option<Duration> {
    watchdog_timeout(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_messages() {
        let m = [
            NotifyMessage::Ready,
            NotifyMessage::Status("receiving\non 104".into()),
        ];
        assert_eq!(encode(&m), "READY=1\nSTATUS=receiving on 104");
        assert_eq!(NotifyMessage::Watchdog.encode(), "WATCHDOG=1");
        assert_eq!(NotifyMessage::Stopping.encode(), "STOPPING=1");
    }

    #[test]
    fn watchdog_timeout_from_values() {
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(
            watchdog_timeout(s("30000000").as_deref(), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_timeout(s("30000000").as_deref(), s("7").as_deref(), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_timeout(s("30000000").as_deref(), s("8").as_deref(), 7),
            None
        );
        assert_eq!(watchdog_timeout(s("0").as_deref(), None, 7), None);
        assert_eq!(watchdog_timeout(s("x").as_deref(), None, 7), None);
        assert_eq!(watchdog_timeout(None, None, 7), None);
    }

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = SdNotify::connect(path.as_os_str()).expect("connect");
        n.ready("receiving").expect("send");
        n.watchdog().expect("send");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=receiving");
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn sends_datagrams_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("medgate-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let server = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = SdNotify::connect(OsStr::new(&format!("@{name}"))).expect("connect");
        n.stopping().expect("send");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STOPPING=1");
    }

    #[test]
    fn bad_and_dead_sockets_give_clear_errors() {
        let err = SdNotify::connect(OsStr::new("vsock:2:1234")).expect_err("bad");
        assert!(
            err.to_string()
                .starts_with("NOTIFY_SOCKET=\"vsock:2:1234\" is neither"),
            "{err}"
        );
        let n = SdNotify::connect(OsStr::new("/nonexistent/notify")).expect("address is fine");
        let err = n.watchdog().expect_err("nobody listens");
        assert!(
            err.to_string()
                .starts_with("notifying systemd through /nonexistent/notify failed"),
            "{err}"
        );
    }
}
