//! The server's resident memory, for `idle`: from /proc for a local pid, or from a Prometheus
//! `/metrics` endpoint (`process_resident_memory_bytes`) over a tiny HTTP/1.0 GET, bounded in
//! size and time. The parsing is pure; only [`RssSource::read`] does I/O.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gauge read from /metrics.
pub const METRIC: &str = "process_resident_memory_bytes";

/// The most of a /metrics answer read (ldmd's is a few KiB).
const RESPONSE_BYTES_MAX: usize = 4 << 20;

/// The longest a /metrics scrape may take, connection included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server's resident memory comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RssSource {
    Proc(u32),
    Metrics(MetricsUrl),
}

/// An `http://host:port/path` URL (no TLS, no user info).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsUrl {
    /// `host:port`, as connected to and sent in `Host`.
    pub authority: String,
    pub path: String,
}

/// Reads `http://host[:port][/path]`; the port defaults to 80 and the path to `/metrics`.
pub fn parse_url(text: &str) -> Result<MetricsUrl, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{text}' is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/metrics"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return Err(format!("'{text}' is not an http://host:port/path URL"));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.ends_with(':') && port.parse::<u16>().is_ok());
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(MetricsUrl {
        authority,
        path: path.to_owned(),
    })
}

impl RssSource {
    /// The server's resident memory in bytes, or why it could not be read.
    pub async fn read(&self) -> Result<u64, String> {
        match self {
            RssSource::Proc(pid) => proc_rss(*pid).ok_or_else(|| format!("no VmRSS for pid {pid}")),
            RssSource::Metrics(url) => scrape_within(url, SCRAPE_TIMEOUT).await,
        }
    }
}

async fn scrape_within(url: &MetricsUrl, limit: Duration) -> Result<u64, String> {
    tokio::time::timeout(limit, scrape(url))
        .await
        .map_err(|_| format!("{}: no answer within {limit:?}", url.authority))?
}

/// VmRSS of a process, from /proc.
fn proc_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn scrape(url: &MetricsUrl) -> Result<u64, String> {
    let body = fetch(url).await?;
    let value = sample(&body, METRIC)
        .ok_or_else(|| format!("no {METRIC} in {}{}", url.authority, url.path))?;
    Ok(value as u64)
}

/// The whole /metrics text, bounded in size and time.
pub async fn scrape_body(url: &MetricsUrl) -> Result<String, String> {
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch(url))
        .await
        .map_err(|_| format!("{}: no answer within {SCRAPE_TIMEOUT:?}", url.authority))?
}

async fn fetch(url: &MetricsUrl) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", url.authority);
    let mut stream = TcpStream::connect(&url.authority).await.map_err(fail)?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
        url.path, url.authority
    );
    stream.write_all(request.as_bytes()).await.map_err(fail)?;
    let mut response = Vec::new();
    // One byte past the limit tells a full answer from a cut one.
    (&mut stream)
        .take(RESPONSE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut response)
        .await
        .map_err(fail)?;
    if response.len() > RESPONSE_BYTES_MAX {
        return Err(format!(
            "{}: answer over {RESPONSE_BYTES_MAX} bytes",
            url.authority
        ));
    }
    body(&response)
        .map(str::to_owned)
        .map_err(|e| format!("{}: {e}", url.authority))
}

/// The body of a `200` HTTP answer.
fn body(response: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(response).map_err(|_| "the answer is not UTF-8".to_owned())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "the answer has no header end".to_owned())?;
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(body),
        _ => Err(format!("answered '{status}'")),
    }
}

/// The value of the first sample of `name` (with or without labels) in Prometheus text format.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labels) => &labels[labels.find('}')? + 1..],
                None => rest,
            };
            if !rest.starts_with([' ', '\t']) {
                return None; // another metric whose name starts with this one
            }
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .filter(|v| v.is_finite() && *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::net::TcpListener;

    #[test]
    fn urls_give_an_authority_and_a_path() {
        let url = |t| parse_url(t).map(|u| (u.authority, u.path));
        assert_eq!(
            url("http://127.0.0.1:9482/metrics"),
            Ok(("127.0.0.1:9482".into(), "/metrics".into()))
        );
        assert_eq!(
            url("http://localhost"),
            Ok(("localhost:80".into(), "/metrics".into()))
        );
        assert_eq!(
            url("http://[::1]:9482/m"),
            Ok(("[::1]:9482".into(), "/m".into()))
        );
        for bad in [
            "https://x/metrics",
            "127.0.0.1:9482",
            "http://",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_gauge_is_found_with_or_without_labels_and_not_by_prefix() {
        let body = "# HELP process_resident_memory_bytes Resident memory.\n\
                    # TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes_total 1\n\
                    process_resident_memory_bytes 6.4e7\n";
        assert_eq!(sample(body, METRIC), Some(64_000_000.0));
        let labelled = "process_resident_memory_bytes{pid=\"7\"} 1234 1700000000000\n";
        assert_eq!(sample(labelled, METRIC), Some(1234.0));
        assert_eq!(sample("process_resident_memory_bytes NaN\n", METRIC), None);
        assert_eq!(sample("ldmd_connections 3\n", METRIC), None);
    }

    #[test]
    fn only_a_200_answer_has_a_body() {
        assert_eq!(body(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nx 1\n"), Ok("x 1\n"));
        assert!(
            body(b"HTTP/1.1 404 Not Found\r\n\r\n")
                .unwrap_err()
                .contains("404")
        );
        assert!(body(b"HTTP/1.0 200 OK\r\n").is_err());
    }

    #[tokio::test]
    async fn metrics_are_scraped_with_an_http_1_0_get() {
        // A server that keeps the request it read, to check it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = parse_url(&format!(
            "http://{}/metrics",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&chunk[..n]);
            }
            let body = "ldmd_sessions 5\nprocess_resident_memory_bytes 52428800\n";
            let response = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}");
            stream.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let rss = RssSource::Metrics(url.clone()).read().await;
        assert_eq!(rss, Ok(52_428_800));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /metrics HTTP/1.0\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("Host: {}\r\n", url.authority)),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_scrape_without_the_gauge_says_so() {
        let url = parse_url(&crate::testing::serve_metrics("other 1\n").await).unwrap();
        let error = RssSource::Metrics(url).read().await.unwrap_err();
        assert!(error.contains(METRIC), "{error}");
    }

    #[tokio::test]
    async fn a_silent_server_is_given_up_on() {
        // Accepts and never answers: the scrape ends at its time limit.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = parse_url(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let _held = tokio::spawn(async move { listener.accept().await });
        let error = scrape_within(&url, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(error.contains("no answer within 100ms"), "{error}");
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = proc_rss(std::process::id()).unwrap();
        assert!(rss > 1 << 20, "{rss}");
    }
}
