//! Names and addresses: hostnames, domains, interface and user names, MACs.
//!
//! Each check returns what is wrong as a phrase that follows the quoted value
//! ("\"Dns01\" has uppercase letters"), so callers can build located messages.

use std::fmt;

/// Checks an RFC 1123 label: a hostname.
pub fn check_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if s.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("has uppercase letters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("has characters other than lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("starts or ends with '-'");
    }
    Ok(())
}

/// Checks a DNS domain name (labels separated by dots, no trailing dot).
pub fn check_domain(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 253 {
        return Err("is longer than 253 characters");
    }
    if s.ends_with('.') {
        return Err("ends with a dot");
    }
    for label in s.split('.') {
        check_label(label).map_err(|_| {
            "is not a DNS name (lowercase labels of letters, digits and '-', separated by dots)"
        })?;
    }
    if s.rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("ends in an all-numeric label, which DNS names may not");
    }
    Ok(())
}

/// Checks a Kubernetes object name (RFC 1123 subdomain).
pub fn check_dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > 253 {
        return Err("is longer than 253 characters");
    }
    for label in s.split('.') {
        check_label(label).map_err(|_| "is not a valid Kubernetes name")?;
    }
    Ok(())
}

/// Checks a Linux network interface name.
pub fn check_interface(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 15 {
        return Err("is not 1 to 15 characters long");
    }
    if s == "."
        || s == ".."
        || s.chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err("is not a valid interface name");
    }
    Ok(())
}

/// Accounts that exist on NixOS (or commonly on Linux) and must not be
/// taken over by cloud-init.
const SYSTEM_USERS: [&str; 24] = [
    "root",
    "bin",
    "daemon",
    "adm",
    "lp",
    "sync",
    "shutdown",
    "halt",
    "mail",
    "news",
    "uucp",
    "operator",
    "games",
    "ftp",
    "nobody",
    "messagebus",
    "sshd",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "polkituser",
    "nixbld",
    "nscd",
    "systemd-oom",
];

/// Checks a POSIX user name that may be given to the admin user.
pub fn check_user_name(s: &str) -> Result<(), (&'static str, &'static str)> {
    let hint = "a POSIX user name: lowercase letter or '_' first, then lowercase letters, digits, '_' or '-', at most 32 characters, e.g. admin";
    if s.is_empty() || s.len() > 32 {
        return Err(("is not 1 to 32 characters long", hint));
    }
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(("is not a POSIX user name", hint));
    }
    if SYSTEM_USERS.contains(&s) || s.starts_with("nixbld") || s.starts_with("systemd-") {
        return Err((
            "is a system account",
            "choose a personal admin name such as admin or ops",
        ));
    }
    Ok(())
}

/// The registered IEEE MA-L prefixes (see `data/regenerate-oui.sh`).
static OUI: &[u8] = include_bytes!("../data/oui.bin");

fn oui_registered(prefix: [u8; 3]) -> bool {
    let n = OUI.len() / 3;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let entry = [OUI[mid * 3], OUI[mid * 3 + 1], OUI[mid * 3 + 2]];
        match entry.cmp(&prefix) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    false
}

/// A unicast MAC address that is locally administered or has a registered OUI.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// Parses `AA:BB:CC:DD:EE:FF` (or with '-'); returns what is wrong and a hint.
    pub fn parse(s: &str) -> Result<Self, (String, String)> {
        let format_hint = "six hex octets separated by ':', e.g. BC:24:11:5E:00:01".to_string();
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(("is not six hex octets".into(), format_hint));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            b[i] = u8::from_str_radix(p, 16).map_err(|_| {
                (
                    "has a part that is not hex".to_string(),
                    format_hint.clone(),
                )
            })?;
        }
        if b[0] & 1 == 1 {
            return Err((
                "is a multicast address (the lowest bit of the first octet is set)".into(),
                "use a unicast address, e.g. BC:24:11:xx:xx:xx (Proxmox) or 52:54:00:xx:xx:xx (locally administered)".into(),
            ));
        }
        if b == [0; 6] {
            return Err((
                "is the all-zero address".into(),
                "use a real address such as BC:24:11:5E:00:01".into(),
            ));
        }
        let local = b[0] & 2 == 2;
        if !local && !oui_registered([b[0], b[1], b[2]]) {
            return Err((
                format!("has the prefix {:02X}:{:02X}:{:02X}, which is neither locally administered nor a registered OUI", b[0], b[1], b[2]),
                "use Proxmox's BC:24:11 prefix, or a locally administered one (second-lowest bit of the first octet set, e.g. 02:.. or 52:54:00)".into(),
            ));
        }
        Ok(Self(b))
    }

    /// The octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Uppercase form, as Proxmox shows it.
    pub fn to_upper(&self) -> String {
        self.to_string().to_ascii_uppercase()
    }
}

impl fmt::Display for MacAddress {
    /// Lowercase colon form, as cloud-init and udev compare it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddress({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_domains() {
        assert!(check_label("dns01").is_ok());
        assert!(check_label("no").is_ok());
        assert!(check_label("Dns01").is_err());
        assert!(check_label(&"a".repeat(64)).is_err());
        assert!(check_label("-a").is_err());
        assert!(check_domain("homelab.local").is_ok());
        assert!(check_domain("yes.lan").is_ok());
        assert!(check_domain("a..b").is_err());
        assert!(check_domain("a.123").is_err());
    }

    #[test]
    fn macs() {
        assert!(MacAddress::parse("BC:24:11:5E:00:01").is_ok());
        assert!(MacAddress::parse("52:54:00:12:34:56").is_ok());
        assert!(MacAddress::parse("00:50:56:00:00:01").is_ok());
        assert!(MacAddress::parse("01:00:5e:00:00:01")
            .unwrap_err()
            .0
            .contains("multicast"));
        assert!(MacAddress::parse("FF:FF:FF:FF:FF:FF").is_err());
        assert!(MacAddress::parse("00:00:00:00:00:00").is_err());
        assert!(MacAddress::parse("BC:24:11:5E:00").is_err());
        assert!(MacAddress::parse("zz:24:11:5E:00:01").is_err());
        // 0x00 prefixes are universally administered; FC:FF:FF is not assigned.
        assert!(MacAddress::parse("FC:FF:FF:00:00:01")
            .unwrap_err()
            .0
            .contains("OUI"));
        assert_eq!(
            MacAddress::parse("BC:24:11:5E:00:01").unwrap().to_string(),
            "bc:24:11:5e:00:01"
        );
    }

    #[test]
    fn users() {
        assert!(check_user_name("admin").is_ok());
        assert!(check_user_name("off").is_ok());
        assert!(check_user_name("root").is_err());
        assert!(check_user_name("nixbld1").is_err());
        assert!(check_user_name("Admin").is_err());
        assert!(check_user_name("1admin").is_err());
    }
}
