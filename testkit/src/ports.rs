//! Free TCP ports on 127.0.0.1 and waiting for a port to listen.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port that is free on 127.0.0.1 now and was never handed out before in this process
/// (so that parallel tests of one binary never get the same port). The kernel picks it from
/// the ephemeral range; bind it soon.
pub fn free_port() -> u16 {
    let mut handed = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    loop {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if handed.insert(port) {
            return port;
        }
    }
}

/// Whether some socket listens on `port` (any local address, IPv4 or IPv6), read from
/// `/proc/net/tcp{,6}` so that probing does not open a connection to the peer.
pub fn is_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .map(|text| listening_in(&text, port))
            .unwrap_or(false)
    })
}

fn listening_in(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        match (local, state) {
            (Some(local), Some("0A")) => {
                local
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    == Some(port)
            }
            _ => false,
        }
    })
}

/// One look of a wait for `port`: `Ok(true)` once it listens, `Ok(false)` to look again, an
/// error when the peer exited (`alive` failed) or `timeout` passed since `started`.
fn listening_yet(
    port: u16,
    started: Instant,
    timeout: Duration,
    alive: &mut impl FnMut() -> Result<()>,
) -> Result<bool> {
    if is_listening(port) {
        return Ok(true);
    }
    alive().with_context(|| format!("while waiting for port {port} to listen"))?;
    if started.elapsed() > timeout {
        bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
    }
    Ok(false)
}

/// Waits until something listens on `port`, at most `timeout`. `alive` is polled too: when it
/// returns an error (the peer exited), waiting stops with that error.
pub async fn wait_listening(
    port: u16,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    while !listening_yet(port, started, timeout, &mut alive)? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// [`wait_listening`] for code that is not async (a broker started from a plain test).
pub fn wait_listening_blocking(
    port: u16,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    while !listening_yet(port, started, timeout, &mut alive)? {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        TcpListener::bind(("127.0.0.1", a)).expect("port a is free");
    }

    #[test]
    fn a_bound_listener_is_seen_listening_and_a_closed_one_is_not() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(is_listening(port));
        drop(listener);
        assert!(!is_listening(port));
    }

    #[test]
    fn proc_net_tcp_lines_are_parsed() {
        let table = "  sl  local_address rem_address   st tx_queue\n\
                     0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
                     1: 0100007F:1F91 0100007F:D431 01 00000000:00000000\n";
        assert!(listening_in(table, 0x1F90));
        assert!(!listening_in(table, 0x1F91), "established, not listening");
    }
}
