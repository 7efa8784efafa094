//! Test helpers: a prepared publish of a small sparse raw, a fake AWS endpoint with canned
//! answers per call, and captured logs. No AWS, no root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use super::options::AwsSettings;
use super::prepare::{Prepared, Request, prepare};

/// A 16 MiB raw with data in its first MiB and at 10 MiB, prepared with `settings`.
pub fn prepared(dir: &std::path::Path, settings: AwsSettings) -> Prepared {
    let raw = dir.join("t.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(16 << 20).unwrap();
    f.write_all_at(&[7u8; 1 << 20], 0).unwrap();
    f.write_all_at(b"data", 10 << 20).unwrap();
    let settings = AwsSettings { name_template: Some("test-{name}".into()), architecture: Some(super::options::Arch::X86_64), ..settings };
    let req = Request { image: raw, settings, endpoint_url: None, parent: None, ancestor_ami: None, force: false, dry_run: false };
    prepare(&req).unwrap()
}

/// An EC2 error answer (query protocol).
pub fn ec2_error(code: &str) -> (u16, String) {
    (
        403,
        format!(
            "<Response><Errors><Error><Code>{code}</Code><Message>refused by the test</Message></Error></Errors><RequestID>r</RequestID></Response>"
        ),
    )
}

/// An EC2 answer `<{action}Response>` with `inner`.
pub fn ec2_ok(action: &str, inner: &str) -> (u16, String) {
    (
        200,
        format!("<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId>{inner}</{action}Response>"),
    )
}

/// A fake AWS endpoint on 127.0.0.1: answers each call (EC2's `Action`, else `METHOD /path`)
/// with its canned answer (400 when it has none) and records the calls.
pub struct Fake {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The calls, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
}

fn read_request(c: &mut std::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = c.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = c.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Starts the endpoint; it serves until the test process ends.
pub fn fake(answers: BTreeMap<String, (u16, String)>) -> Fake {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let Some(req) = read_request(&mut c) else { continue };
            let body = req.split("\r\n\r\n").nth(1).unwrap_or("");
            let call = match body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
                Some(a) => a.to_string(),
                None => req.split(' ').take(2).collect::<Vec<_>>().join(" "),
            };
            log.lock().unwrap().push(call.clone());
            let (status, text) = answers.get(&call).cloned().unwrap_or_else(|| ec2_error("UnexpectedCall"));
            let kind = if text.starts_with('{') { "application/json" } else { "text/xml" };
            let error = if status == 200 { "" } else { "x-amzn-ErrorType: AccessDeniedException\r\n" };
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\n{error}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    Fake { url, seen }
}

/// SDK config for `url` in eu-west-1 with static test credentials and no SDK retries.
pub fn sdk_config(url: &str) -> aws_config::SdkConfig {
    use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
    use aws_smithy_http_client::tls;
    let http =
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https();
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("AKIDTEST", "test-secret", None, None, "test")))
        .endpoint_url(url)
        .http_client(http)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build()
}

/// Logs written while the guard lives (on this thread).
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's logs (use a current-thread runtime).
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(move || Sink(b.clone())).finish();
    (Logs(buf), tracing::subscriber::set_default(sub))
}
