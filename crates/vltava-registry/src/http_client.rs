//! A small HTTP/1.1 client for talking to a registry: followers send writes to the leader
//! with it and relay its answer (only the leader writes to `_schemas`, which keeps ids
//! unique), and `vltava schema` uses it. One request per connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::RegistryError;

/// An answer: status, content type and body.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

fn failed(reason: impl std::fmt::Display) -> RegistryError {
    RegistryError::ForwardingFailed {
        reason: reason.to_string(),
    }
}

/// Largest answer relayed; answers are small.
const MAX_ANSWER_BYTES: u64 = 4 << 20;

/// Sends one request to `base_url` (`http://host:port`) and reads the whole answer.
pub async fn request(
    base_url: &str,
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, RegistryError> {
    let authority = base_url
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/'))
        .ok_or_else(|| failed(format!("URL {base_url} is not http://host:port")))?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| failed(format!("connecting to {base_url}: {e}")))?;
        let mut request = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(ct) = content_type {
            request.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.map_err(failed)?;
        stream.write_all(body).await.map_err(failed)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(failed)?;
        parse_answer(&raw)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("{base_url} did not answer in time")))?
}

/// The registry's answer as JSON, or its error as `(message, error_code)` text.
async fn call_json(
    base_url: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, RegistryError> {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/vnd.schemaregistry.v1+json");
    let answer = request(base_url, method, path, ct, bytes.as_bytes(), timeout).await?;
    let value: serde_json::Value = serde_json::from_slice(&answer.body).map_err(failed)?;
    if answer.status >= 300 {
        return Err(failed(format!(
            "{} (error_code {})",
            value["message"].as_str().unwrap_or(""),
            value["error_code"]
        )));
    }
    Ok(value)
}

/// Registers a schema of `schema_type` (`AVRO`, `JSON`, `PROTOBUF`) under `subject` (or
/// finds it registered) and returns its id.
pub async fn register(
    base_url: &str,
    subject: &str,
    schema_type: &str,
    schema: &str,
    timeout: Duration,
) -> Result<i32, RegistryError> {
    let path = format!("/subjects/{}/versions", path_segment(subject));
    let answer = call_json(
        base_url,
        "POST",
        &path,
        Some(serde_json::json!({ "schema": schema, "schemaType": schema_type })),
        timeout,
    )
    .await?;
    answer["id"]
        .as_i64()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| failed("the registry's answer has no id"))
}

/// The text and type of schema `id`.
pub async fn schema_by_id(
    base_url: &str,
    id: i32,
    timeout: Duration,
) -> Result<(String, String), RegistryError> {
    let answer = call_json(
        base_url,
        "GET",
        &format!("/schemas/ids/{id}"),
        None,
        timeout,
    )
    .await?;
    let schema = answer["schema"]
        .as_str()
        .ok_or_else(|| failed("the registry's answer has no schema"))?;
    let schema_type = answer["schemaType"].as_str().unwrap_or("AVRO");
    Ok((schema_type.to_string(), schema.to_string()))
}

/// Percent-encodes a path segment (subjects may hold any character).
pub fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a `Connection: close` HTTP/1.1 answer with a `Content-Length` body.
fn parse_answer(raw: &[u8]) -> Result<Answer, RegistryError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| failed("malformed answer from the registry"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(failed)?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| failed("malformed status line from the registry"))?;
    let mut content_type = None;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(failed("chunked answers are not relayed"));
            }
        }
    }
    let body = match length {
        Some(n) if n <= rest.len() => rest[..n].to_vec(),
        Some(_) => return Err(failed("truncated answer from the registry")),
        None => rest.to_vec(),
    };
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let a = parse_answer(b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!(
            (a.status, a.content_type.as_deref(), a.body.as_slice()),
            (409, Some("application/json"), &b"{}"[..])
        );
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_answer(b"garbage").is_err());
        assert!(parse_answer(b"HTTP/1.1 x\r\n\r\n").is_err());
    }
}
