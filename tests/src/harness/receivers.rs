//! Real local receivers for what the analyzer sends out: syslog over UDP, TCP and TLS (RFC
//! 6587 octet counting, parsed into RFC 5424 parts) and an HTTP server that records every
//! request (method, path, headers, body) and answers with a status the test controls, or is
//! down (not listening) until the test starts it again on the same port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// One RFC 5424 message, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    pub pri: u16,
    pub version: String,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    pub structured_data: String,
    /// MSG without the BOM.
    pub msg: String,
    /// Whether MSG started with the UTF-8 BOM.
    pub bom: bool,
}

/// Parses one RFC 5424 message; None when it is not one.
pub fn parse_5424(raw: &[u8]) -> Option<SyslogMessage> {
    let text = std::str::from_utf8(raw).ok()?;
    let rest = text.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    let pri: u16 = pri.parse().ok()?;
    let mut parts = rest.splitn(7, ' ');
    let version = parts.next()?.to_owned();
    let timestamp = parts.next()?.to_owned();
    let hostname = parts.next()?.to_owned();
    let app_name = parts.next()?.to_owned();
    let procid = parts.next()?.to_owned();
    let msgid = parts.next()?.to_owned();
    let rest = parts.next()?;
    // STRUCTURED-DATA: "-" or [..] elements whose values may hold escaped "]".
    let (sd, msg) = if let Some(r) = rest.strip_prefix("- ") {
        ("-".to_owned(), r)
    } else if rest == "-" {
        ("-".to_owned(), "")
    } else {
        let bytes = rest.as_bytes();
        let mut i = 0;
        let mut in_quotes = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_quotes => i += 1,
                b'"' => in_quotes = !in_quotes,
                b']' if !in_quotes && bytes.get(i + 1) != Some(&b'[') => break,
                _ => {}
            }
            i += 1;
        }
        let sd = &rest[..=i.min(rest.len() - 1)];
        (sd.to_owned(), rest.get(i + 2..).unwrap_or(""))
    };
    let (bom, msg) = match msg.strip_prefix('\u{feff}') {
        Some(m) => (true, m),
        None => (false, msg),
    };
    Some(SyslogMessage {
        pri,
        version,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data: sd,
        msg: msg.to_owned(),
        bom,
    })
}

/// A syslog listener collecting parsed messages.
pub struct SyslogReceiver {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<SyslogMessage>>>,
    /// Frames that did not parse (the test should assert it is empty).
    pub garbage: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn keep(
    messages: &Arc<Mutex<Vec<SyslogMessage>>>,
    garbage: &Arc<Mutex<Vec<Vec<u8>>>>,
    raw: Vec<u8>,
) {
    match parse_5424(&raw) {
        Some(m) => messages.lock().unwrap_or_else(|e| e.into_inner()).push(m),
        None => garbage.lock().unwrap_or_else(|e| e.into_inner()).push(raw),
    }
}

/// Reads octet-counted frames (`LEN SP MSG`) until EOF.
async fn read_frames<S: AsyncRead + Unpin>(
    s: S,
    messages: Arc<Mutex<Vec<SyslogMessage>>>,
    garbage: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut r = BufReader::new(s);
    loop {
        let mut len = Vec::new();
        match r.read_until(b' ', &mut len).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Some(n) = std::str::from_utf8(&len[..len.len() - 1])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            garbage.lock().unwrap_or_else(|e| e.into_inner()).push(len);
            return;
        };
        let mut buf = vec![0u8; n];
        if r.read_exact(&mut buf).await.is_err() {
            return;
        }
        keep(&messages, &garbage, buf);
    }
}

impl SyslogReceiver {
    pub async fn udp() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = sock.local_addr().expect("addr");
        let (messages, garbage) = (Arc::default(), Arc::default());
        let (m, g) = (Arc::clone(&messages), Arc::clone(&garbage));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                keep(&m, &g, buf[..n].to_vec());
            }
        });
        Self {
            addr,
            messages,
            garbage,
            task,
        }
    }

    pub async fn tcp() -> Self {
        Self::stream(None).await
    }

    /// TLS with the certificate and key (PEM files) of `localhost`/`127.0.0.1`.
    pub async fn tls(cert: &Path, key: &Path) -> Self {
        let acceptor =
            fleetpulse_analyzer::api::server::tls_acceptor(cert, key).expect("tls acceptor");
        Self::stream(Some(acceptor)).await
    }

    async fn stream(tls: Option<fleetpulse_analyzer::api::server::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let addr = listener.local_addr().expect("addr");
        let (messages, garbage) = (Arc::default(), Arc::default());
        let (m, g) = (Arc::clone(&messages), Arc::clone(&garbage));
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (m, g, tls) = (Arc::clone(&m), Arc::clone(&g), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(a) => {
                            if let Ok(s) = a.accept(s).await {
                                read_frames(s, m, g).await;
                            }
                        }
                        None => read_frames(s, m, g).await,
                    }
                });
            }
        });
        Self {
            addr,
            messages,
            garbage,
            task,
        }
    }

    pub fn received(&self) -> Vec<SyslogMessage> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    pub fn garbage(&self) -> Vec<Vec<u8>> {
        self.garbage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A request the HTTP receiver saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the HTTP receiver answers a request: status and body.
pub type Responder = Arc<dyn Fn(&HttpRequest) -> (u16, String) + Send + Sync>;

/// An HTTP/1.1 server recording requests.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<HttpRequest>>>,
    responder: Arc<Mutex<Responder>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve_one(
    s: TcpStream,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    responder: Arc<Mutex<Responder>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let mut it = line.split_whitespace();
    let method = it.next().unwrap_or_default().to_owned();
    let path = it.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    let req = HttpRequest {
        method,
        path,
        headers,
        body,
    };
    let f = responder.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (status, text) = f(&req);
    requests.lock().unwrap_or_else(|e| e.into_inner()).push(req);
    let resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut s = r.into_inner();
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

impl HttpReceiver {
    /// Starts on a free port, answering 200 `{}` until told otherwise.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let addr = listener.local_addr().expect("addr");
        let mut me = Self {
            addr,
            requests: Arc::default(),
            responder: Arc::new(Mutex::new(Arc::new(|_: &HttpRequest| {
                (200, "{}".to_owned())
            }))),
            task: None,
        };
        me.listen(listener);
        me
    }

    fn listen(&mut self, listener: TcpListener) {
        let (reqs, resp) = (Arc::clone(&self.requests), Arc::clone(&self.responder));
        self.task = Some(tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (reqs, resp) = (Arc::clone(&reqs), Arc::clone(&resp));
                tokio::spawn(async move {
                    let _ = serve_one(s, reqs, resp).await;
                });
            }
        }));
    }

    /// Sets how requests are answered.
    pub fn respond(&self, f: impl Fn(&HttpRequest) -> (u16, String) + Send + Sync + 'static) {
        *self.responder.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(f);
    }

    /// Stops listening: connections are refused (the destination is down).
    pub async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind http");
        self.listen(listener);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<HttpRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
