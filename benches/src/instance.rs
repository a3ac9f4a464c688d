//! `echotrace run` processes started by the end-to-end benchmarks, and what they report.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::Duration;

/// A process, killed when dropped.
pub struct Instance(pub Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Instance {
    /// Its resident memory now, in bytes (0 once it has exited).
    pub fn resident_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|status| resident_kib(&status))
            .unwrap_or(0)
            * 1024
    }
}

/// `VmRSS` of a `/proc/PID/status`, in KiB.
pub fn resident_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// An instance's `/metrics`, or `None` while it does not answer.
pub fn metrics(http: SocketAddr) -> Option<String> {
    get(http, "/metrics")
}

/// Whether an instance answers `/readyz` with 200.
pub fn ready(http: SocketAddr) -> bool {
    get(http, "/readyz").is_some_and(|response| response.starts_with("HTTP/1.1 200"))
}

/// The response (head and body) to `GET path`, or `None` while the instance does not answer.
pub fn get(http: SocketAddr, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = TcpStream::connect(http).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}
