//! network-config version 2 for a static network.
//!
//! Default routes are written as `to: 0.0.0.0/0` and `to: ::/0`: NixOS
//! ships cloud-init 25.2, which cannot read `to: default` (25.3+), and
//! `gateway4`/`gateway6` are deprecated.

use std::collections::BTreeMap;

use fabric_model::NetworkConfig;
use serde::Serialize;

#[derive(Serialize)]
pub(crate) struct NetworkV2 {
    version: u8,
    ethernets: BTreeMap<String, Ethernet>,
}

#[derive(Serialize)]
struct Ethernet {
    #[serde(rename = "match")]
    matching: Match,
    #[serde(rename = "set-name", skip_serializing_if = "Option::is_none")]
    set_name: Option<String>,
    dhcp4: bool,
    dhcp6: bool,
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<Nameservers>,
}

#[derive(Serialize)]
struct Match {
    #[serde(skip_serializing_if = "Option::is_none")]
    macaddress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Serialize)]
struct Route {
    to: &'static str,
    via: String,
}

#[derive(Serialize)]
struct Nameservers {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    search: Vec<String>,
}

/// The v2 document, or `None` when no address is static (cloud-init's
/// fallback DHCP then applies).
pub(crate) fn network_config(net: &NetworkConfig) -> Option<NetworkV2> {
    if !net.is_static() {
        return None;
    }
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    if let Some((addr, gw)) = &net.ipv4 {
        addresses.push(addr.to_string());
        if let Some(gw) = gw {
            routes.push(Route {
                to: "0.0.0.0/0",
                via: gw.to_string(),
            });
        }
    }
    if let Some((addr, gw)) = &net.ipv6 {
        addresses.push(addr.to_string());
        if let Some(gw) = gw {
            routes.push(Route {
                to: "::/0",
                via: gw.to_string(),
            });
        }
    }
    // A pinned MAC is the reliable match: the guest's NIC name depends on
    // the PCI slot. `set-name` then gives the NIC the declared name.
    let (matching, set_name) = match &net.mac {
        Some(mac) => (
            Match {
                macaddress: Some(mac.to_string()),
                name: None,
            },
            Some(net.interface.clone()),
        ),
        None => (
            Match {
                macaddress: None,
                name: Some(net.interface.clone()),
            },
            None,
        ),
    };
    let nameservers =
        (!net.dns.is_empty() || !net.search_domains.is_empty()).then(|| Nameservers {
            addresses: net.dns.iter().map(ToString::to_string).collect(),
            search: net.search_domains.clone(),
        });
    let ethernet = Ethernet {
        matching,
        set_name,
        // A family without a static address keeps DHCP (IPv4) or stays off
        // (DHCPv6; router advertisements still configure SLAAC).
        dhcp4: net.ipv4.is_none(),
        dhcp6: false,
        addresses,
        routes,
        nameservers,
    };
    Some(NetworkV2 {
        version: 2,
        ethernets: BTreeMap::from([(net.interface.clone(), ethernet)]),
    })
}
