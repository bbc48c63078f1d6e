//! Checks across machines: what no single manifest can know.
//!
//! Every check is one pass with a hash map, so validating a fleet stays
//! linear in its size.

use std::collections::HashMap;

use crate::diag::{Diagnostic, Pos};
use crate::machine::Machine;

/// A machine and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// File name as the user gave it.
    pub file: &'a str,
    /// The validated machine.
    pub machine: &'a Machine,
}

/// A problem found across machines, reported on one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Index of the member the diagnostic belongs to.
    pub member: usize,
    /// The diagnostic, naming the other members involved.
    pub diagnostic: Diagnostic,
}

/// How many of the other members a clash's error names. Naming all of them
/// made the report quadratic: 5,000 copies of one machine gave 25 million
/// file names. Every member still gets its own error.
const NAMED_OTHERS: usize = 8;

/// Finds hostnames, FQDNs, static addresses and MAC addresses used by more
/// than one machine (two NICs with one MAC on a bridge break each other's
/// network; MACs compare as the bytes they are, whatever the case written).
/// Each member of a clash gets its own error, naming the other files (the
/// first [`NAMED_OTHERS`] of them, then how many more).
pub fn conflicts(members: &[Member<'_>]) -> Vec<Conflict> {
    let mut out = Vec::new();
    let mut by_host: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_v4: HashMap<std::net::Ipv4Addr, Vec<usize>> = HashMap::new();
    let mut by_v6: HashMap<std::net::Ipv6Addr, Vec<usize>> = HashMap::new();
    let mut by_mac: HashMap<crate::net::MacAddress, Vec<usize>> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        by_host
            .entry(m.machine.hostname.as_str())
            .or_default()
            .push(i);
        if let Some((net, _)) = m.machine.network.ipv4 {
            by_v4.entry(net.addr()).or_default().push(i);
        }
        if let Some((net, _)) = m.machine.network.ipv6 {
            by_v6.entry(net.addr()).or_default().push(i);
        }
        if let Some(mac) = m.machine.network.mac {
            by_mac.entry(mac).or_default().push(i);
        }
    }
    let mut report =
        |group: &[usize], path: &str, what: &dyn Fn(&Machine) -> String, hint: &str| {
            if group.len() < 2 {
                return;
            }
            for &i in group {
                let mut others: Vec<String> = group
                    .iter()
                    .filter(|&&j| j != i)
                    .take(NAMED_OTHERS)
                    .map(|&j| locate(members[j].file, members[j].machine.pos(path)))
                    .collect();
                let more = group.len() - 1 - others.len();
                if more > 0 {
                    others.push(format!("and {more} more"));
                }
                let m = members[i].machine;
                out.push(Conflict {
                    member: i,
                    diagnostic: Diagnostic::error(
                        path,
                        m.pos(path),
                        format!("{} is also used by {}", what(m), others.join(", ")),
                    )
                    .hint(hint),
                });
            }
        };
    for group in by_host.values() {
        // Same hostname means same FQDN too when the domains match; say which.
        report(
            group,
            "spec.hostname",
            &|m: &Machine| match m.fqdn() {
                Some(f) => format!("hostname {} (FQDN {f})", m.hostname),
                None => format!("hostname {}", m.hostname),
            },
            "give every machine its own hostname",
        );
    }
    for group in by_v4.values() {
        report(
            group,
            "spec.network.ip",
            &|m: &Machine| {
                format!(
                    "static address {}",
                    m.network
                        .ipv4
                        .map(|(n, _)| n.addr().to_string())
                        .unwrap_or_default()
                )
            },
            "give every machine its own address",
        );
    }
    for group in by_v6.values() {
        report(
            group,
            "spec.network.ipv6.address",
            &|m: &Machine| {
                format!(
                    "static address {}",
                    m.network
                        .ipv6
                        .map(|(n, _)| n.addr().to_string())
                        .unwrap_or_default()
                )
            },
            "give every machine its own address",
        );
    }
    for group in by_mac.values() {
        report(
            group,
            "spec.network.macAddress",
            &|m: &Machine| {
                format!(
                    "MAC address {}",
                    m.network.mac.map(|a| a.to_string()).unwrap_or_default()
                )
            },
            "give every machine its own MAC address, e.g. change its last octet",
        );
    }
    // Hash-map order is not stable; reports must be.
    out.sort_by(|a, b| {
        (a.member, a.diagnostic.pos, &a.diagnostic.path).cmp(&(
            b.member,
            b.diagnostic.pos,
            &b.diagnostic.path,
        ))
    });
    out
}

fn locate(file: &str, pos: Option<Pos>) -> String {
    match pos {
        Some(p) => format!("{file}:{p}"),
        None => file.to_string(),
    }
}
