//! alerts (issue 13 part 3): a small SMTP client, sans-IO. [`Session`] takes the server's
//! replies and says what to send next: EHLO, STARTTLS (required: a server without it gets no
//! mail), EHLO again over TLS, AUTH PLAIN when configured (only over TLS), MAIL FROM, RCPT TO,
//! DATA, the dot-stuffed message, QUIT. [`send`] is the tokio shell (TCP, then rustls).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One server reply: its code and its lines' text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 250, 354, 535 …
    pub code: u16,
    /// The text of each line (after the code and separator).
    pub lines: Vec<String>,
}

/// Why a mail was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    /// A reply that is not SMTP.
    #[error("the mail server answered something that is not SMTP: {0:?}")]
    Garbled(String),
    /// The server refused a step.
    #[error("the mail server refused {step}: {code} {text}")]
    Refused {
        /// What was refused.
        step: &'static str,
        /// Its code.
        code: u16,
        /// Its text.
        text: String,
    },
    /// The server does not offer STARTTLS.
    #[error("the mail server does not offer STARTTLS; alerts are only sent encrypted")]
    NoStartTls,
    /// Connection, TLS or time-out.
    #[error("{0}")]
    Io(String),
}

impl SmtpError {
    /// A permanent refusal (5xx): trying again will not help.
    pub fn permanent(&self) -> bool {
        matches!(self, SmtpError::Refused { code, .. } if (500..600).contains(code))
            || matches!(self, SmtpError::NoStartTls)
    }
}

/// Reads one complete reply from the front of `buf`: `Some((reply, bytes used))`, `None` if more
/// is needed.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, SmtpError> {
    let mut lines = Vec::new();
    let mut at = 0;
    loop {
        let Some(end) = buf[at..].iter().position(|b| *b == b'\n') else {
            return Ok(None);
        };
        let line = &buf[at..at + end];
        at += end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line).into_owned();
        let code = text
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| SmtpError::Garbled(text.clone()))?;
        let sep = text.as_bytes().get(3).copied();
        if !matches!(sep, None | Some(b' ' | b'-')) {
            return Err(SmtpError::Garbled(text));
        }
        lines.push(text.get(4..).unwrap_or_default().to_owned());
        if sep != Some(b'-') {
            return Ok(Some((Reply { code, lines }, at)));
        }
    }
}

/// A message's body for DATA: CRLF line ends, lines starting with `.` doubled, ended by
/// `CRLF.CRLF`.
pub fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes, then read a reply.
    Send(Vec<u8>),
    /// Start TLS on the connection, then send this (the second EHLO) and read a reply.
    StartTls(Vec<u8>),
    /// The mail is accepted; write this (QUIT) and close.
    Done(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Ehlo,
    StartTls,
    EhloTls,
    Auth,
    MailFrom,
    RcptTo(usize),
    Data,
    Message,
}

/// One mail's conversation.
#[derive(Debug)]
pub struct Session {
    step: Step,
    helo: String,
    from: String,
    to: Vec<String>,
    auth: Option<(String, String)>,
    message: Vec<u8>,
}

impl Session {
    /// A conversation that sends `message` (headers and body, `\n` line ends) from `from` to
    /// `to`, introducing itself as `helo`.
    pub fn new(
        helo: &str,
        from: &str,
        to: &[String],
        auth: Option<(String, String)>,
        message: &str,
    ) -> Session {
        Session {
            step: Step::Greeting,
            helo: helo.to_owned(),
            from: from.to_owned(),
            to: to.to_vec(),
            auth,
            message: dot_stuff(message),
        }
    }

    fn expect(
        &self,
        r: &Reply,
        ok: impl Fn(u16) -> bool,
        step: &'static str,
    ) -> Result<(), SmtpError> {
        if ok(r.code) {
            Ok(())
        } else {
            Err(SmtpError::Refused {
                step,
                code: r.code,
                text: r.lines.join(" "),
            })
        }
    }

    fn after_tls_ehlo(&mut self) -> Action {
        match &self.auth {
            Some((user, pass)) => {
                self.step = Step::Auth;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
                Action::Send(format!("AUTH PLAIN {token}\r\n").into_bytes())
            }
            None => self.mail_from(),
        }
    }

    fn mail_from(&mut self) -> Action {
        self.step = Step::MailFrom;
        Action::Send(format!("MAIL FROM:<{}>\r\n", self.from).into_bytes())
    }

    fn rcpt(&mut self, i: usize) -> Action {
        self.step = Step::RcptTo(i);
        Action::Send(format!("RCPT TO:<{}>\r\n", self.to[i]).into_bytes())
    }

    /// The next action after a reply.
    pub fn on_reply(&mut self, r: &Reply) -> Result<Action, SmtpError> {
        match self.step {
            Step::Greeting => {
                self.expect(r, |c| c == 220, "the connection")?;
                self.step = Step::Ehlo;
                Ok(Action::Send(format!("EHLO {}\r\n", self.helo).into_bytes()))
            }
            Step::Ehlo => {
                self.expect(r, |c| c == 250, "EHLO")?;
                let offers = r.lines.iter().any(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|w| w.eq_ignore_ascii_case("STARTTLS"))
                });
                if !offers {
                    return Err(SmtpError::NoStartTls);
                }
                self.step = Step::StartTls;
                Ok(Action::Send(b"STARTTLS\r\n".to_vec()))
            }
            Step::StartTls => {
                self.expect(r, |c| c == 220, "STARTTLS")?;
                self.step = Step::EhloTls;
                Ok(Action::StartTls(
                    format!("EHLO {}\r\n", self.helo).into_bytes(),
                ))
            }
            Step::EhloTls => {
                self.expect(r, |c| c == 250, "EHLO")?;
                Ok(self.after_tls_ehlo())
            }
            Step::Auth => {
                self.expect(
                    r,
                    |c| c == 235,
                    "AUTH PLAIN (check alerts.email.username and its password)",
                )?;
                Ok(self.mail_from())
            }
            Step::MailFrom => {
                self.expect(r, |c| c == 250, "MAIL FROM")?;
                Ok(self.rcpt(0))
            }
            Step::RcptTo(i) => {
                self.expect(r, |c| c == 250 || c == 251, "RCPT TO")?;
                if i + 1 < self.to.len() {
                    Ok(self.rcpt(i + 1))
                } else {
                    self.step = Step::Data;
                    Ok(Action::Send(b"DATA\r\n".to_vec()))
                }
            }
            Step::Data => {
                self.expect(r, |c| c == 354, "DATA")?;
                self.step = Step::Message;
                Ok(Action::Send(std::mem::take(&mut self.message)))
            }
            Step::Message => {
                self.expect(r, |c| c == 250, "the message")?;
                Ok(Action::Done(b"QUIT\r\n".to_vec()))
            }
        }
    }
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Server {
    /// `host:port`.
    pub address: String,
    /// The name its certificate must carry.
    pub server_name: String,
    /// TLS trust.
    pub tls: Arc<rustls::ClientConfig>,
    /// AUTH PLAIN user and password.
    pub auth: Option<(String, String)>,
    /// Our name in EHLO.
    pub helo: String,
}

/// Each step's time limit.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn io(e: impl std::fmt::Display) -> SmtpError {
    SmtpError::Io(e.to_string())
}

async fn read_reply<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
    buf: &mut Vec<u8>,
) -> Result<Reply, SmtpError> {
    loop {
        if let Some((reply, used)) = parse_reply(buf)? {
            buf.drain(..used);
            return Ok(reply);
        }
        if buf.len() > 64 * 1024 {
            return Err(SmtpError::Garbled("a reply longer than 64 KiB".into()));
        }
        let n = tokio::time::timeout(STEP_TIMEOUT, r.read_until(b'\n', buf))
            .await
            .map_err(|_| io("the mail server did not answer within 30 s"))?
            .map_err(io)?;
        if n == 0 {
            return Err(io("the mail server closed the connection"));
        }
    }
}

/// Runs the conversation on `stream` until it wants TLS (returns the EHLO to send after it) or
/// is done.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    session: &mut Session,
    first: Option<Vec<u8>>,
) -> Result<(S, Option<Vec<u8>>), SmtpError> {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    if let Some(b) = first {
        r.get_mut().write_all(&b).await.map_err(io)?;
        r.get_mut().flush().await.map_err(io)?;
    }
    loop {
        let reply = read_reply(&mut r, &mut buf).await?;
        match session.on_reply(&reply)? {
            Action::Send(b) => {
                r.get_mut().write_all(&b).await.map_err(io)?;
                r.get_mut().flush().await.map_err(io)?;
            }
            Action::StartTls(next) => {
                if !buf.is_empty() || !r.buffer().is_empty() {
                    // Bytes after the 220 before TLS: a command injection attempt.
                    return Err(SmtpError::Garbled("data after STARTTLS's reply".into()));
                }
                return Ok((r.into_inner(), Some(next)));
            }
            Action::Done(quit) => {
                let s = r.get_mut();
                let _ = s.write_all(&quit).await;
                let _ = s.flush().await;
                return Ok((r.into_inner(), None));
            }
        }
    }
}

/// Sends one mail: plain TCP up to STARTTLS, then TLS.
pub async fn send(
    server: &Server,
    from: &str,
    to: &[String],
    message: &str,
) -> Result<(), SmtpError> {
    let mut session = Session::new(&server.helo, from, to, server.auth.clone(), message);
    let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(&server.address))
        .await
        .map_err(|_| io(format!("{}: no connection within 30 s", server.address)))?
        .map_err(|e| io(format!("{}: {e}", server.address)))?;
    let (tcp, next) = converse(tcp, &mut session, None).await?;
    let Some(next) = next else {
        return Err(SmtpError::NoStartTls);
    };
    let name = rustls::pki_types::ServerName::try_from(server.server_name.clone())
        .map_err(|e| io(format!("alerts.email.server_name: {e}")))?;
    let tls = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_rustls::TlsConnector::from(server.tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| io("TLS handshake with the mail server took over 30 s"))?
    .map_err(|e| io(format!("TLS with the mail server: {e}")))?;
    let (mut tls, _) = converse(tls, &mut session, Some(next)).await?;
    let _ = tls.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(s: &str) -> Reply {
        parse_reply(s.as_bytes())
            .expect("parses")
            .expect("complete")
            .0
    }

    #[test]
    fn replies_single_and_multi_line() {
        assert_eq!(
            parse_reply(b"250-mx.example\r\n250-STARTT").expect("ok"),
            None
        );
        let (r, used) = parse_reply(b"250-mx.example\r\n250-STARTTLS\r\n250 SIZE 1000\r\nxyz")
            .expect("ok")
            .expect("complete");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["mx.example", "STARTTLS", "SIZE 1000"]);
        assert_eq!(used, 45);
        assert_eq!(reply("354\r\n").lines, vec![""]);
        assert!(matches!(
            parse_reply(b"HTTP/1.1 400\r\n"),
            Err(SmtpError::Garbled(_))
        ));
        assert!(matches!(
            parse_reply(b"250x\r\n"),
            Err(SmtpError::Garbled(_))
        ));
    }

    #[test]
    fn lines_starting_with_a_dot_are_doubled() {
        assert_eq!(
            dot_stuff("Subject: x\n\n.hidden\nok\r\n."),
            b"Subject: x\r\n\r\n..hidden\r\nok\r\n..\r\n.\r\n".to_vec()
        );
    }

    #[test]
    fn the_whole_conversation_with_auth_and_two_recipients() {
        let to = vec!["a@x.example".to_string(), "b@x.example".to_string()];
        let mut s = Session::new(
            "fleet.example",
            "medgate@x.example",
            &to,
            Some(("u".into(), "p".into())),
            "Subject: s\n\nbody",
        );
        let send = |a: Action| match a {
            Action::Send(b) => String::from_utf8(b).expect("utf-8"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            send(s.on_reply(&reply("220 mx ESMTP\r\n")).expect("ok")),
            "EHLO fleet.example\r\n"
        );
        assert_eq!(
            send(
                s.on_reply(&reply("250-mx\r\n250 STARTTLS\r\n"))
                    .expect("ok")
            ),
            "STARTTLS\r\n"
        );
        assert_eq!(
            s.on_reply(&reply("220 go ahead\r\n")).expect("ok"),
            Action::StartTls(b"EHLO fleet.example\r\n".to_vec())
        );
        assert_eq!(
            send(
                s.on_reply(&reply("250-mx\r\n250 AUTH PLAIN\r\n"))
                    .expect("ok")
            ),
            "AUTH PLAIN AHUAcA==\r\n"
        );
        assert_eq!(
            send(s.on_reply(&reply("235 ok\r\n")).expect("ok")),
            "MAIL FROM:<medgate@x.example>\r\n"
        );
        assert_eq!(
            send(s.on_reply(&reply("250 ok\r\n")).expect("ok")),
            "RCPT TO:<a@x.example>\r\n"
        );
        assert_eq!(
            send(s.on_reply(&reply("250 ok\r\n")).expect("ok")),
            "RCPT TO:<b@x.example>\r\n"
        );
        assert_eq!(
            send(s.on_reply(&reply("250 ok\r\n")).expect("ok")),
            "DATA\r\n"
        );
        assert_eq!(
            send(s.on_reply(&reply("354 go\r\n")).expect("ok")),
            "Subject: s\r\n\r\nbody\r\n.\r\n"
        );
        assert_eq!(
            s.on_reply(&reply("250 queued\r\n")).expect("ok"),
            Action::Done(b"QUIT\r\n".to_vec())
        );
    }

    /// A server that offers no STARTTLS gets no MAIL FROM: the shell stops after EHLO.
    #[tokio::test]
    async fn a_server_without_starttls_gets_nothing() {
        use tokio::io::AsyncReadExt;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = l.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            s.write_all(b"220 plain ESMTP\r\n").await.expect("greet");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"\r\n") && got.starts_with(b"EHLO") && got.len() < 100 {
                    s.write_all(b"250-plain\r\n250 AUTH PLAIN\r\n")
                        .await
                        .expect("ehlo");
                }
            }
            String::from_utf8_lossy(&got).to_string()
        });
        let tls = rustls::ClientConfig::builder_with_provider(crate::pem::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let s = Server {
            address,
            server_name: "localhost".into(),
            tls: Arc::new(tls),
            auth: Some(("u".into(), "secret".into())),
            helo: "fleet".into(),
        };
        let e = send(
            &s,
            "a@b.example",
            &["c@d.example".into()],
            "Subject: x\n\nsecret words",
        )
        .await
        .expect_err("refused");
        assert_eq!(e, SmtpError::NoStartTls);
        let seen = server.await.expect("server");
        assert_eq!(seen, "EHLO fleet\r\n", "nothing but EHLO went in the clear");
    }

    #[test]
    fn no_starttls_no_mail_and_refusals_say_which_step() {
        let mut s = Session::new("f", "a@b.c", &["d@e.f".into()], None, "x");
        s.on_reply(&reply("220 mx\r\n")).expect("ok");
        let e = s
            .on_reply(&reply("250-mx\r\n250 SIZE 10\r\n"))
            .expect_err("refused");
        assert_eq!(e, SmtpError::NoStartTls);
        assert!(e.permanent());
        let mut s = Session::new("f", "a@b.c", &["d@e.f".into()], None, "x");
        s.on_reply(&reply("220 mx\r\n")).expect("ok");
        s.on_reply(&reply("250 STARTTLS\r\n")).expect("ok");
        s.on_reply(&reply("220 go\r\n")).expect("ok");
        s.on_reply(&reply("250 mx\r\n")).expect("ok");
        let e = s
            .on_reply(&reply("451 try later\r\n"))
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "the mail server refused MAIL FROM: 451 try later"
        );
        assert!(!e.permanent());
    }
}
