//! A minimal HTTP/1.0 GET client for health, readiness and metrics endpoints.
//!
//! Tests only need status + body of small plaintext responses; a full HTTP client stack would
//! cost build time for nothing. HTTP/1.0 with `Connection: close` makes the body end at EOF;
//! chunked bodies are still decoded in case a server answers with HTTP/1.1 framing anyway.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::HarnessError;

/// Status and body of an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. 200 or 503.
    pub status: u16,
    /// Response headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The decoded body as UTF-8 (lossy).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn request_bytes(addr: SocketAddr, path_and_query: &str) -> Vec<u8> {
    format!(
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// `GET path_and_query` on `addr`, async.
pub async fn get(addr: SocketAddr, path_and_query: &str) -> Result<HttpResponse, HarnessError> {
    let io = |e| HarnessError::Http(format!("GET http://{addr}{path_and_query}"), e);
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        stream
            .write_all(&request_bytes(addr, path_and_query))
            .await
            .map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(io)?;
        parse(&raw).map_err(|reason| {
            HarnessError::Http(
                format!("GET http://{addr}{path_and_query}"),
                std::io::Error::other(reason),
            )
        })
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| {
            io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within 10 s",
            ))
        })?
}

/// `GET path_and_query` on `addr`, blocking (for synchronous start-up polling).
pub fn get_blocking(addr: SocketAddr, path_and_query: &str) -> Result<HttpResponse, HarnessError> {
    let io = |e| HarnessError::Http(format!("GET http://{addr}{path_and_query}"), e);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    stream
        .write_all(&request_bytes(addr, path_and_query))
        .map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    parse(&raw).map_err(|reason| io(std::io::Error::other(reason)))
}

fn parse(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("response has no header terminator ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| format!("bad chunk size {size_hex:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(format!("chunk of {size} bytes truncated at {}", data.len()));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let plain = parse(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n{\"a\":1}",
        )
        .unwrap();
        assert_eq!(plain.status, 503);
        assert_eq!(plain.header("content-type"), Some("application/json"));
        assert_eq!(plain.body, "{\"a\":1}");

        let chunked =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(chunked.status, 200);
        assert_eq!(chunked.body, "abcde");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            parse(b"nonsense").unwrap_err(),
            "response has no header terminator (8 bytes)"
        );
    }
}

/// The value of metric `name` in a Prometheus text body, summed over its label sets (`None`
/// when no sample of that name is present). Comment lines and metrics whose name merely
/// starts with `name` are ignored.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            *series == name
                || series
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{'))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .reduce(|a, b| a + b)
}

#[cfg(test)]
mod metric_tests {
    use super::metric_value;

    #[test]
    fn metric_values_are_summed_over_labels() {
        let text =
            "# HELP x_total X.\nx_total{reason=\"a\"} 2\nx_total{reason=\"b\"} 3\nx_totalother 9\n";
        assert_eq!(metric_value(text, "x_total"), Some(5.0));
        assert_eq!(metric_value(text, "y_total"), None);
    }
}
