//! Queries that carry external data: a temporary table sent with the query as one part of a
//! multipart POST (ClickHouse's HTTP interface, 18.16 and current releases alike), which the
//! `clickhouse` crate does not offer. The table is RowBinary; so is the answer.
//!
//! Why: a flush's duplicate lookup asks about up to 100,000 event ids. Written into the SQL as
//! literals (an array of UUID texts, about 40 bytes each) ClickHouse spent most of the lookup
//! parsing them: 77,000 ids took 215-449 ms as an array literal against 103-256 ms as an
//! external table, interleaved runs on this machine (BENCHMARKS.md, "Duplicate lookups with
//! external data").

use bytes::{BufMut, Bytes, BytesMut};
use fleetpulse_net::ClickHouseConnector;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode, header};
use hyper_util::client::legacy::Client as HyperClient;

/// The largest error text kept from a failed answer.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The largest answer read: a lookup answers at most its own ids (up to 100,000 rows of a
/// tenant name and a UUID).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why an external-data query failed.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("invalid ClickHouse URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("network error: {0}")]
    Network(String),
    #[error("ClickHouse answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("undecodable answer: {0}")]
    Decode(String),
}

/// One temporary table sent with a query: its name in the SQL, its structure
/// (`name Type, ...`) and its rows in RowBinary.
pub struct ExternalTable<'a> {
    pub name: &'a str,
    pub structure: &'a str,
    pub rows: Bytes,
}

/// Sends SQL with an external table to one ClickHouse server, with the store's URL,
/// credentials, database and session settings.
#[derive(Clone)]
pub struct ExternalQuery {
    http: HyperClient<ClickHouseConnector, Full<Bytes>>,
    /// The server URL with `database` and the session settings as query parameters.
    base: url::Url,
    user: Option<String>,
    password: Option<String>,
}

impl ExternalQuery {
    pub fn new(
        connector: ClickHouseConnector,
        url: &str,
        database: &str,
        user: Option<&str>,
        password: Option<&str>,
        settings: &[(&str, &str)],
    ) -> Result<Self, ExternalError> {
        let mut base = url::Url::parse(url).map_err(|e| ExternalError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        {
            let mut q = base.query_pairs_mut();
            q.append_pair("database", database);
            for (name, value) in settings {
                q.append_pair(name, value);
            }
        }
        Ok(Self {
            http: fleetpulse_net::clickhouse_http_builder().build(connector),
            base,
            user: user.map(str::to_owned),
            password: password.map(str::to_owned),
        })
    }

    /// Runs `sql` (which names `table.name` and ends with a `FORMAT`) and returns the answer's
    /// bytes.
    pub async fn fetch(&self, sql: &str, table: ExternalTable<'_>) -> Result<Bytes, ExternalError> {
        let mut url = self.base.clone();
        url.query_pairs_mut()
            .append_pair("query", sql)
            .append_pair(&format!("{}_structure", table.name), table.structure)
            .append_pair(&format!("{}_format", table.name), "RowBinary");
        let (boundary, body) = multipart(table.name, &table.rows);
        let mut request = Request::post(url.as_str()).header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        );
        // The same headers as the `clickhouse` crate sends.
        if let Some(user) = &self.user {
            request = request.header("X-ClickHouse-User", user);
        }
        if let Some(password) = &self.password {
            request = request.header("X-ClickHouse-Key", password);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ExternalError::Network(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ExternalError::Network(error_chain(&e)))?;
        let status = response.status();
        let limit = if status == StatusCode::OK {
            MAX_ANSWER_BYTES
        } else {
            MAX_ERROR_BODY
        };
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| ExternalError::Network(format!("reading the answer: {e}")))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(ExternalError::Server {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(body)
    }
}

/// `error: cause: cause`, as hyper's errors say little at the top.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A multipart/form-data body with one file part named `name` holding `data`, and its
/// boundary: random, and checked not to occur in `data` (a fresh one is drawn if it does).
fn multipart(name: &str, data: &[u8]) -> (String, Bytes) {
    let boundary = loop {
        let b = format!("fleetpulse-{:032x}", rand::random::<u128>());
        if memchr::memmem::find(data, b.as_bytes()).is_none() {
            break b;
        }
    };
    let mut body = BytesMut::with_capacity(data.len() + 256);
    body.put_slice(b"--");
    body.put_slice(boundary.as_bytes());
    body.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
    body.put_slice(name.as_bytes());
    body.put_slice(b"\"; filename=\"");
    body.put_slice(name.as_bytes());
    body.put_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.put_slice(data);
    body.put_slice(b"\r\n--");
    body.put_slice(boundary.as_bytes());
    body.put_slice(b"--\r\n");
    (boundary, body.freeze())
}

/// RowBinary writers and readers for the few types the lookups send and read.
pub mod rowbinary {
    use bytes::{Buf, BufMut, BytesMut};
    use uuid::Uuid;

    /// A String: LEB128 length, then the bytes.
    pub fn put_str(out: &mut BytesMut, s: &str) {
        put_len(out, s.len());
        out.put_slice(s.as_bytes());
    }

    /// A String's or an Array's length: LEB128.
    pub fn put_len(out: &mut BytesMut, len: usize) {
        let mut n = len as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.put_u8(byte);
                return;
            }
            out.put_u8(byte | 0x80);
        }
    }

    /// A UUID: its high 64 bits, then its low 64 bits, each little-endian (ClickHouse stores
    /// a UUID as two UInt64).
    pub fn put_uuid(out: &mut BytesMut, id: &Uuid) {
        let (high, low) = id.as_u64_pair();
        out.put_u64_le(high);
        out.put_u64_le(low);
    }

    pub fn get_str(input: &mut &[u8]) -> Result<String, String> {
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            if !input.has_remaining() {
                return Err("a String's length is cut short".into());
            }
            let byte = input.get_u8();
            len |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("a String's length does not fit 64 bits".into());
            }
        }
        let len = usize::try_from(len).map_err(|_| "a String is longer than memory".to_owned())?;
        if input.remaining() < len {
            return Err(format!(
                "a String of {len} bytes with {} left",
                input.remaining()
            ));
        }
        let (text, rest) = input.split_at(len);
        *input = rest;
        String::from_utf8(text.to_vec()).map_err(|e| format!("a String is not UTF-8: {e}"))
    }

    pub fn get_uuid(input: &mut &[u8]) -> Result<Uuid, String> {
        if input.remaining() < 16 {
            return Err(format!("a UUID with {} bytes left", input.remaining()));
        }
        let high = input.get_u64_le();
        let low = input.get_u64_le();
        Ok(Uuid::from_u64_pair(high, low))
    }
}

#[cfg(test)]
mod tests {
    use super::rowbinary::*;
    use super::*;
    use uuid::Uuid;

    #[test]
    fn rowbinary_round_trips_strings_and_uuids() {
        let id = Uuid::parse_str("0123456789abcdef0011223344556677").unwrap();
        let long = "x".repeat(300);
        let mut out = BytesMut::new();
        put_str(&mut out, "contoso");
        put_uuid(&mut out, &id);
        put_str(&mut out, &long);
        put_str(&mut out, "");
        // 300 = 0b10_0101100: two LEB128 bytes.
        assert_eq!(&out[..8], b"\x07contoso");
        assert_eq!(&out[8..16], &0x0123456789abcdefu64.to_le_bytes());
        assert_eq!(&out[24..26], &[0xac, 0x02]);
        let mut input: &[u8] = &out;
        assert_eq!(get_str(&mut input).unwrap(), "contoso");
        assert_eq!(get_uuid(&mut input).unwrap(), id);
        assert_eq!(get_str(&mut input).unwrap(), long);
        assert_eq!(get_str(&mut input).unwrap(), "");
        assert!(input.is_empty());
    }

    #[test]
    fn truncated_rowbinary_is_an_error_not_a_panic() {
        let mut out = BytesMut::new();
        put_str(&mut out, "contoso");
        let mut input: &[u8] = &out[..4];
        assert_eq!(
            get_str(&mut input).unwrap_err(),
            "a String of 7 bytes with 3 left"
        );
        let mut input: &[u8] = &[1, 2, 3];
        assert_eq!(
            get_uuid(&mut input).unwrap_err(),
            "a UUID with 3 bytes left"
        );
        let mut input: &[u8] = &[0x80, 0x80];
        assert_eq!(
            get_str(&mut input).unwrap_err(),
            "a String's length is cut short"
        );
    }

    #[test]
    fn the_multipart_body_frames_the_data_with_a_boundary_it_does_not_contain() {
        let (boundary, body) = multipart("keys", b"\x00\x01--data\r\n");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"keys\"; filename=\"keys\"\r\n"
        )));
        assert!(text.ends_with(&format!("\r\n\x00\x01--data\r\n\r\n--{boundary}--\r\n")));
        assert_eq!(text.matches(&boundary).count(), 2);
    }
}
