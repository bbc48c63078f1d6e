//! Prometheus metrics of the agent, served as text on a loopback address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::{Outcome, State};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
    store_path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    last_check: Gauge<f64, AtomicU64>,
    last_success: Gauge<f64, AtomicU64>,
    current: Family<RevisionLabels, Gauge>,
    rejected: Gauge,
    reboot_needed: Gauge,
    build_seconds: Gauge<f64, AtomicU64>,
    activation_seconds: Gauge<f64, AtomicU64>,
    polls: Counter,
    deployments: Family<OutcomeLabels, Counter>,
    rss: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics registered, at zero.
    pub fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("fabric_agent")),
            last_check: Gauge::default(),
            last_success: Gauge::default(),
            current: Family::default(),
            rejected: Gauge::default(),
            reboot_needed: Gauge::default(),
            build_seconds: Gauge::default(),
            activation_seconds: Gauge::default(),
            polls: Counter::default(),
            deployments: Family::default(),
            rss: Gauge::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register(
                "last_check_timestamp_seconds",
                "Unix time of the last look at the remote head",
                m.last_check.clone(),
            );
            r.register(
                "last_success_timestamp_seconds",
                "Unix time of the last cycle that ended with the machine on the remote head",
                m.last_success.clone(),
            );
            r.register(
                "current_revision",
                "The deployed revision and toplevel (value 1)",
                m.current.clone(),
            );
            r.register(
                "rejected_revisions",
                "Revisions rejected and not retried until the remote moves",
                m.rejected.clone(),
            );
            r.register(
                "reboot_needed",
                "1 when the running generation needs a reboot",
                m.reboot_needed.clone(),
            );
            r.register(
                "build_duration_seconds",
                "Duration of the last nix build",
                m.build_seconds.clone(),
            );
            r.register(
                "activation_duration_seconds",
                "Duration of the last activation (profile, switch, health, rollback)",
                m.activation_seconds.clone(),
            );
            r.register("polls", "Looks at the remote head", m.polls.clone());
            r.register(
                "deployments",
                "Deployments by outcome",
                m.deployments.clone(),
            );
            r.register(
                "resident_memory_bytes",
                "The agent's own resident set size",
                m.rss.clone(),
            );
        }
        m
    }

    /// A poll happened now.
    pub fn polled(&self) {
        self.polls.inc();
    }

    /// A deployment ended with `outcome`.
    pub fn deployed(&self, outcome: Outcome, build: Option<f64>, activation: Option<f64>) {
        self.deployments
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(b) = build {
            self.build_seconds.set(b);
        }
        if let Some(a) = activation {
            self.activation_seconds.set(a);
        }
    }

    /// Mirrors what the state file says.
    pub fn observe(&self, state: &State) {
        if let Some(t) = state.last_check {
            self.last_check.set(t.unix());
        }
        if let Some(t) = state.last_success {
            self.last_success.set(t.unix());
        }
        self.current.clear();
        if let Some(c) = &state.current {
            self.current
                .get_or_create(&RevisionLabels {
                    revision: c.revision.to_string(),
                    store_path: c.store_path.to_string(),
                })
                .set(1);
        }
        self.rejected.set(state.rejected.len() as i64);
        self.reboot_needed.set(i64::from(state.reboot_needed));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        self.rss.set(resident_bytes().unwrap_or(0) as i64);
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

/// This process's resident set size, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Serves `GET /metrics` on `addr` from a thread. Binding happens before
/// returning, so a taken port is an error at startup, not a silent gap.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &metrics);
            }
        })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, kind, body) =
        if request.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            )
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "try GET /metrics\n".to_string(),
            )
        };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_metrics_on_loopback() {
        let m = Arc::new(Metrics::new());
        let s = State {
            reboot_needed: true,
            ..State::default()
        };
        m.observe(&s);
        m.polled();
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&m)).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("fabric_agent_reboot_needed 1"), "{body}");
        assert!(body.contains("fabric_agent_polls_total 1"), "{body}");
        let rss_line = body
            .lines()
            .find(|l| l.starts_with("fabric_agent_resident_memory_bytes "))
            .unwrap();
        let rss: u64 = rss_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(rss > 0);
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 404"), "{body}");
    }
}
