//! An HTTP/1.1 keep-alive load generator on raw tokio sockets: one request in flight per
//! connection (no pipelining), each connection carrying the cookie of its own logged-in
//! session, closed-loop for a fixed time after a warm-up that is not measured.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::Summary;

/// Which request a phase sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET /read`: the handler reads one attribute of the session.
    Read,
    /// `POST /write`: the handler increments a counter attribute.
    Write,
    /// A new visitor logs in, as the app's login page is used: `GET /visit` (an anonymous
    /// session is created; Ratatoskr answers its CSRF token), then `POST /login/{n}` with that
    /// session's cookie and token (the session is rotated to a new key and the user set). One
    /// operation, two requests; its latency is the pair's.
    Login,
}

/// One keep-alive connection and the session it carries.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    host: String,
    cookies: Vec<(String, String)>,
    csrf: String,
    read_req: Vec<u8>,
    write_req: Vec<u8>,
    /// Successful writes on this connection so far (warm-up included).
    pub writes_ok: u64,
    /// The counter the server last answered to a write.
    pub last_counter: Option<u64>,
    /// The user number this connection logged in as.
    pub user: usize,
}

/// A parsed response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    /// Connect and log in as user `user` (`POST /login/{user}`); the response's cookies and
    /// its body (a CSRF token, for servers that want one) are kept for every later request.
    pub async fn login(addr: SocketAddr, user: usize) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            stream,
            buf: vec![0; 16 * 1024],
            filled: 0,
            host: addr.to_string(),
            cookies: Vec::new(),
            csrf: String::new(),
            read_req: Vec::new(),
            write_req: Vec::new(),
            writes_ok: 0,
            last_counter: None,
            user,
        };
        let req = format!(
            "POST /login/{user} HTTP/1.1\r\nHost: {}\r\nSec-Fetch-Site: same-origin\r\n\
             Content-Length: 0\r\n\r\n",
            c.host
        );
        let resp = c.send(req.as_bytes()).await?;
        if resp.status != 200 {
            return Err(io::Error::other(format!(
                "login answered {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )));
        }
        c.csrf = String::from_utf8_lossy(&resp.body).trim().to_owned();
        c.rebuild();
        Ok(c)
    }

    fn cookie_line(&self) -> String {
        let cookie = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if cookie.is_empty() {
            String::new()
        } else {
            format!("Cookie: {cookie}\r\n")
        }
    }

    /// A same-origin `POST` with the session's cookie and CSRF token.
    fn post(&self, path: &str) -> Vec<u8> {
        let csrf = if self.csrf.is_empty() {
            String::new()
        } else {
            format!("X-CSRF-Token: {}\r\n", self.csrf)
        };
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{}Sec-Fetch-Site: same-origin\r\n\
             {csrf}Content-Length: 0\r\n\r\n",
            self.host,
            self.cookie_line()
        )
        .into_bytes()
    }

    fn rebuild(&mut self) {
        self.read_req = format!(
            "GET /read HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            self.host,
            self.cookie_line()
        )
        .into_bytes();
        self.write_req = self.post("/write");
    }

    /// [`Op::Login`]: forget the session, visit, log in. The answer of the step that failed, or
    /// of the login.
    async fn login_again(&mut self) -> io::Result<Response> {
        self.cookies.clear();
        self.csrf.clear();
        let visit = format!("GET /visit HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        let resp = self.send(visit.as_bytes()).await?;
        if resp.status != 200 {
            return Ok(resp);
        }
        self.csrf = String::from_utf8_lossy(&resp.body).trim().to_owned();
        let login = self.post(&format!("/login/{}", self.user));
        let resp = self.send(&login).await?;
        if resp.status == 200 {
            self.csrf = String::from_utf8_lossy(&resp.body).trim().to_owned();
        }
        self.rebuild();
        Ok(resp)
    }

    pub async fn request(&mut self, op: Op) -> io::Result<Response> {
        let req = match op {
            Op::Read => std::mem::take(&mut self.read_req),
            Op::Write => std::mem::take(&mut self.write_req),
            Op::Login => return self.login_again().await,
        };
        let result = self.send(&req).await;
        match op {
            Op::Read if self.read_req.is_empty() => self.read_req = req,
            Op::Write if self.write_req.is_empty() => self.write_req = req,
            _ => {} // rebuilt after a Set-Cookie
        }
        let resp = result?;
        if op == Op::Write && resp.status == 200 {
            self.writes_ok += 1;
            self.last_counter = std::str::from_utf8(&resp.body)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
        Ok(resp)
    }

    async fn send(&mut self, req: &[u8]) -> io::Result<Response> {
        self.stream.write_all(req).await?;
        loop {
            if let Some((resp, used, set_cookies, close)) = self.parse()? {
                if used < self.filled {
                    self.buf.copy_within(used..self.filled, 0);
                }
                self.filled -= used;
                if !set_cookies.is_empty() {
                    self.apply_set_cookies(&set_cookies);
                }
                if close {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "server closed the connection",
                    ));
                }
                return Ok(resp);
            }
            if self.filled == self.buf.len() {
                if self.buf.len() >= 1 << 20 {
                    return Err(io::Error::other("response larger than 1 MiB"));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.filled += n;
        }
    }

    /// A complete response at the start of the buffer: it, the bytes it used, its
    /// `Set-Cookie` values and whether the server will close the connection.
    #[allow(clippy::type_complexity)]
    fn parse(&self) -> io::Result<Option<(Response, usize, Vec<String>, bool)>> {
        let data = &self.buf[..self.filled];
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let head = match parsed.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(io::Error::other(format!("bad response: {e}"))),
        };
        let status = parsed.code.unwrap_or(0);
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        let mut set_cookies = Vec::new();
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.eq_ignore_ascii_case(b"chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                close = h.value.eq_ignore_ascii_case(b"close");
            } else if h.name.eq_ignore_ascii_case("set-cookie") {
                set_cookies.push(String::from_utf8_lossy(h.value).into_owned());
            }
        }
        let rest = &data[head..];
        let (body, used) = if chunked {
            match dechunk(rest)? {
                Some((body, n)) => (body, head + n),
                None => return Ok(None),
            }
        } else {
            let len = length.unwrap_or(0);
            if rest.len() < len {
                return Ok(None);
            }
            (rest[..len].to_vec(), head + len)
        };
        Ok(Some((Response { status, body }, used, set_cookies, close)))
    }

    fn apply_set_cookies(&mut self, values: &[String]) {
        for v in values {
            let pair = v.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            let removed = value.is_empty()
                || v.split(';').any(|a| {
                    let a = a.trim().to_ascii_lowercase();
                    a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970")
                });
            self.cookies.retain(|(n, _)| *n != name);
            if !removed {
                self.cookies.push((name, value));
            }
        }
        self.rebuild();
    }
}

/// Decode a chunked body; `None` while incomplete.
fn dechunk(mut data: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let total = data.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text =
            std::str::from_utf8(&data[..eol]).map_err(|_| io::Error::other("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| io::Error::other("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            // No trailers are expected: the final CRLF follows.
            if data.len() < 2 {
                return Ok(None);
            }
            return Ok(Some((body, total - data.len() + 2)));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// What one connection did during a phase.
struct Tally {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

/// Run `op` on every client for `warmup + duration`; count only what started after the
/// warm-up and finished before the end. Clients whose connection failed are not returned.
pub async fn phase(
    clients: Vec<Client>,
    op: Op,
    warmup: Duration,
    duration: Duration,
) -> (Vec<Client>, Summary) {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let expected = (duration.as_secs_f64() * 20_000.0) as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in clients {
        tasks.spawn(async move {
            let mut t = Tally {
                ok: 0,
                errors: 0,
                latencies_us: Vec::with_capacity(expected.min(1 << 20)),
                first_error: None,
            };
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = c.request(op).await;
                let done = Instant::now();
                let counted = sent >= measure_from && done <= end;
                match result {
                    Ok(resp) if resp.status == 200 => {
                        if counted {
                            t.ok += 1;
                            t.latencies_us.push(
                                u32::try_from(done.duration_since(sent).as_micros())
                                    .unwrap_or(u32::MAX),
                            );
                        }
                    }
                    Ok(resp) => {
                        if counted {
                            t.errors += 1;
                        }
                        t.first_error.get_or_insert_with(|| {
                            format!(
                                "HTTP {}: {}",
                                resp.status,
                                String::from_utf8_lossy(&resp.body)
                            )
                        });
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert_with(|| e.to_string());
                        return (None, t);
                    }
                }
            }
            (Some(c), t)
        });
    }
    let mut alive = Vec::new();
    let mut ok = 0;
    let mut errors = 0;
    let mut latencies = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (c, t) = joined.expect("load task panicked");
        alive.extend(c);
        ok += t.ok;
        errors += t.errors;
        latencies.extend_from_slice(&t.latencies_us);
        if first_error.is_none() {
            first_error = t.first_error;
        }
    }
    alive.sort_by_key(|c| c.user);
    let summary = Summary::new(ok, errors, duration, latencies, first_error);
    (alive, summary)
}

/// Log every connection in, concurrently.
pub async fn login_all(addr: SocketAddr, n: usize) -> io::Result<Vec<Client>> {
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..n {
        tasks.spawn(Client::login(addr, user));
    }
    let mut clients = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        clients.push(joined.map_err(io::Error::other)??);
    }
    clients.sort_by_key(|c| c.user);
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunked_bodies_decode_and_partial_ones_wait() {
        let data = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nNEXT";
        let (body, used) = dechunk(data).unwrap().unwrap();
        assert_eq!(body, b"abcde");
        assert_eq!(&data[used..], b"NEXT");
        assert!(dechunk(b"3\r\nab").unwrap().is_none());
        assert!(dechunk(b"0\r\n").unwrap().is_none());
    }
}
