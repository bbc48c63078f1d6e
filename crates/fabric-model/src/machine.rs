//! The validated Machine: every string parsed into what it means, every
//! default applied, every cross-field rule checked.
//!
//! [`Machine::from_yaml`] and [`Machine::from_json`] are the only ways in.
//! They never stop at the first problem: the caller gets every diagnostic of
//! the document, each with its field path (and position, for YAML).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::api::{
    self, MachineSpec, Metadata, SecretKeyRef, SecretRef, SizeClass, API_GROUP, API_VERSION,
};
use crate::diag::{self, Diagnostic, Pos};
use crate::flake::FlakeRef;
use crate::net::{self, MacAddress};
use crate::schema::{self, FieldPath, PathIndex};
use crate::source::{self, Node, Value};
use crate::sshkeys::{self, AuthorizedKey};

/// Which XR kind the manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineKind {
    /// Crossplane v2 namespaced XR.
    Machine,
    /// Legacy cluster-scoped XR.
    XMachine,
}

impl MachineKind {
    /// The kind as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineKind::Machine => "Machine",
            MachineKind::XMachine => "XMachine",
        }
    }
}

/// How strictly the envelope around the spec is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseMode {
    /// A manifest a user wrote: unknown metadata fields and a `status` are errors.
    Authored,
    /// An object as the cluster holds it (the function's observed XR):
    /// server-set metadata, `status` and Crossplane's spec fields are expected.
    Observed,
}

/// The label Crossplane puts on a legacy XR created through a claim.
pub const CLAIM_NAMESPACE_LABEL: &str = "crossplane.io/claim-namespace";

/// Fields Crossplane adds to the spec of every composite resource.
pub const CROSSPLANE_SPEC_FIELDS: [&str; 11] = [
    "crossplane",
    "compositionRef",
    "compositionRevisionRef",
    "compositionRevisionSelector",
    "compositionSelector",
    "compositionUpdatePolicy",
    "compositeDeletePolicy",
    "claimRef",
    "resourceRefs",
    "writeConnectionSecretToRef",
    "publishConnectionDetailsTo",
];

/// The fields whose positions a [`Machine`] keeps after validation.
pub const KEPT_POSITIONS: [&str; 7] = [
    "metadata.name",
    "spec.hostname",
    "spec.domain",
    "spec.network.macAddress",
    "spec.network.ip",
    "spec.network.ipv6.address",
    "spec.nix.flakeRef",
];

/// A validated machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Machine or XMachine.
    pub kind: MachineKind,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// The namespace of the claim a legacy XMachine was made through (its
    /// `crossplane.io/claim-namespace` label): where its keys Secret lives.
    pub claim_namespace: Option<String>,
    /// RFC 1123 label.
    pub hostname: String,
    /// DNS domain.
    pub domain: Option<String>,
    /// Cores per socket.
    pub cores: u32,
    /// Sockets.
    pub sockets: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Root disk in GiB.
    pub disk_gib: u32,
    /// Proxmox template name.
    pub image: String,
    /// Guest network.
    pub network: NetworkConfig,
    /// Proxmox placement.
    pub proxmox: Placement,
    /// The flake the machine converges on.
    pub flake: FlakeRef,
    /// Admin user name.
    pub admin_user: String,
    /// Inline SSH keys.
    pub ssh_keys: Vec<AuthorizedKey>,
    /// Keys held in a Secret.
    pub ssh_keys_secret: Option<SecretKeyRef>,
    /// The Secret holding the credential for a private flake
    /// (`spec.nix.credentialsSecretRef`), read by [`crate::credential`].
    pub credentials_secret: Option<SecretRef>,
    /// Proxmox tags.
    pub tags: BTreeMap<String, String>,
    /// The spec with defaults applied, as the API types hold it.
    pub spec: MachineSpec,
    /// Advisories that did not refuse the machine.
    pub warnings: Vec<Diagnostic>,
    /// Where the fields that checks across machines report on were
    /// written (empty for JSON input). Only these are kept: a fleet of
    /// thousands of machines should not hold thousands of source trees.
    pub positions: Vec<(&'static str, Pos)>,
}

/// Guest network, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// NIC name in the guest.
    pub interface: String,
    /// Pinned MAC address.
    pub mac: Option<MacAddress>,
    /// Static IPv4 (address with prefix) and gateway; `None` means DHCPv4.
    pub ipv4: Option<(Ipv4Net, Option<Ipv4Addr>)>,
    /// Static IPv6 (address with prefix) and gateway.
    pub ipv6: Option<(Ipv6Net, Option<Ipv6Addr>)>,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search_domains: Vec<String>,
}

impl NetworkConfig {
    /// True when any address is static (a network-config is then rendered).
    pub fn is_static(&self) -> bool {
        self.ipv4.is_some() || self.ipv6.is_some()
    }
}

/// Proxmox placement, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Node, when the machine says.
    pub node: Option<String>,
    /// VM disk datastore.
    pub storage: String,
    /// NIC bridge.
    pub bridge: String,
    /// VLAN tag.
    pub vlan: Option<u16>,
}

/// The result of reading one document.
#[derive(Debug)]
pub enum Parsed {
    /// A valid machine (it may carry warnings).
    Machine(Box<Machine>),
    /// A Machine manifest with problems. Errors come first, all of them.
    Invalid(Vec<Diagnostic>),
    /// Some other Kubernetes object (a Secret, a Composition...); not ours.
    NotAMachine {
        /// Its kind, if it has one.
        kind: Option<String>,
    },
}

impl Machine {
    /// Parses a YAML stream that should hold exactly one Machine.
    pub fn from_yaml(text: &str) -> Result<Machine, Vec<Diagnostic>> {
        let docs = parse_stream(text);
        let mut machines = Vec::new();
        let mut errors = Vec::new();
        for doc in docs {
            match doc {
                Parsed::Machine(m) => machines.push(m),
                Parsed::Invalid(d) => errors.extend(d),
                Parsed::NotAMachine { .. } => {}
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        match machines.len() {
            1 => Ok(*machines.remove(0)),
            0 => Err(vec![Diagnostic::error(
                "kind",
                None,
                "no Machine in this file",
            )
            .hint(format!(
                "a Machine manifest starts with apiVersion: {API_VERSION} and kind: Machine"
            ))]),
            n => Err(vec![Diagnostic::error(
                "",
                None,
                format!("{n} Machines in one file"),
            )
            .hint("give this command one machine per file")]),
        }
    }

    /// Validates an object as the cluster holds it (JSON, no positions).
    pub fn from_json(value: &Json) -> Result<Machine, Vec<Diagnostic>> {
        match parse_node(Node::from_json(value), ParseMode::Observed) {
            Parsed::Machine(m) => Ok(*m),
            Parsed::Invalid(d) => Err(d),
            Parsed::NotAMachine { kind } => Err(vec![Diagnostic::error(
                "kind",
                None,
                format!(
                    "{} is not a Machine",
                    kind.unwrap_or_else(|| "an object without kind".into())
                ),
            )
            .hint("the composite resource must be a Machine or XMachine")]),
        }
    }

    /// FQDN, when a domain is given.
    pub fn fqdn(&self) -> Option<String> {
        self.domain
            .as_ref()
            .map(|d| format!("{}.{d}", self.hostname))
    }

    /// cloud-init instance-id: stable for this machine (namespace, name and
    /// uid), different between machines. A new uid (the machine was deleted
    /// and created again) gives a new instance, so cloud-init runs again.
    pub fn instance_id(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.namespace.as_deref().unwrap_or(""),
            &self.name,
            self.uid.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("fabric-{}-{hex}", self.name)
    }

    /// Where a field was written, if it is one of [`KEPT_POSITIONS`].
    pub fn pos(&self, path: &str) -> Option<Pos> {
        self.positions
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, pos)| *pos)
    }
}

/// Reads every document of a YAML stream. Syntax errors become one diagnostic.
///
/// A text over [`source::MAX_MANIFEST_BYTES`] is refused unread.
pub fn parse_stream(text: &str) -> Vec<Parsed> {
    read_stream(text).unwrap_or_else(|d| vec![Parsed::Invalid(vec![d])])
}

/// Like [`parse_stream`], but a text that is not YAML at all (a syntax
/// error, or over [`source::MAX_MANIFEST_BYTES`]) is the error, apart from
/// manifests that are YAML and wrong: a command cannot use such a file.
pub fn read_stream(text: &str) -> Result<Vec<Parsed>, Diagnostic> {
    if let Err(e) = source::check_manifest_size(text.len() as u64) {
        return Err(Diagnostic::error("", None, e.to_string()).hint(e.hint()));
    }
    match source::parse_yaml(text) {
        Ok(docs) => Ok(docs
            .into_iter()
            .map(|d| parse_node(d, ParseMode::Authored))
            .collect()),
        Err(e) => Err(syntax_diagnostic(e)),
    }
}

/// A YAML syntax error as a diagnostic.
pub fn syntax_diagnostic(e: source::SyntaxError) -> Diagnostic {
    let message = if e.is_refused_yaml() {
        e.message.clone()
    } else {
        format!("invalid YAML: {}", e.message)
    };
    let hint = e.hint.unwrap_or_else(|| "fix the YAML syntax".into());
    Diagnostic::error("", Some(e.pos), message).hint(hint)
}

/// Reads many YAML streams, on every core: a fleet's files are independent,
/// and parsing dominates `fabric validate`. Results are in input order.
pub fn parse_many<S: AsRef<str> + Sync>(texts: &[S]) -> Vec<Vec<Parsed>> {
    read_many(texts)
        .into_iter()
        .map(|r| r.unwrap_or_else(|d| vec![Parsed::Invalid(vec![d])]))
        .collect()
}

/// [`read_stream`] of many texts, on every core, in input order.
pub fn read_many<S: AsRef<str> + Sync>(texts: &[S]) -> Vec<Result<Vec<Parsed>, Diagnostic>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || texts.len() < 64 {
        return texts.iter().map(|t| read_stream(t.as_ref())).collect();
    }
    let chunk = texts.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = texts
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|t| read_stream(t.as_ref()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker only panics if read_stream does, which would be a bug
            // here; re-raise it rather than return a partial fleet.
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Reads one document.
pub fn parse_node(doc: Node, mode: ParseMode) -> Parsed {
    let mut diags = Vec::new();
    let index = PathIndex::new(doc);
    let Some(doc) = index.root() else {
        return Parsed::NotAMachine { kind: None };
    };
    let Value::Map(entries) = &doc.value else {
        return Parsed::NotAMachine { kind: None };
    };
    let kind_text = doc.get("kind").and_then(Node::as_text).map(str::to_string);
    let api_version = doc
        .get("apiVersion")
        .and_then(Node::as_text)
        .map(str::to_string);
    let ours = api_version
        .as_deref()
        .is_some_and(|v| v.split('/').next() == Some(API_GROUP));
    let kind = match kind_text.as_deref() {
        Some("Machine") => MachineKind::Machine,
        Some("XMachine") => MachineKind::XMachine,
        other if ours => {
            let k = doc.get("kind");
            let msg = match other {
                Some(o) => format!("{o} is not a kind of {API_GROUP}"),
                None => "is required but missing".to_string(),
            };
            let near = other.and_then(|o| schema::closest(o, ["Machine", "XMachine"].into_iter()));
            let hint = match near {
                Some(n) => format!("did you mean {n}?"),
                None => "write kind: Machine (or XMachine for a legacy cluster-scoped XR)".into(),
            };
            return Parsed::Invalid(vec![Diagnostic::error(
                "kind",
                k.and_then(|k| k.pos).or(doc.pos),
                msg,
            )
            .hint(hint)]);
        }
        _ => return Parsed::NotAMachine { kind: kind_text },
    };
    match api_version.as_deref() {
        Some(API_VERSION) => {}
        _ => {
            let node = doc.get("apiVersion");
            diags.push(
                Diagnostic::error(
                    "apiVersion",
                    node.and_then(|n| n.pos).or(doc.pos),
                    match &api_version {
                        Some(v) => format!("{v} is not the Machine API version"),
                        None => "is required but missing".into(),
                    },
                )
                .hint(format!("write apiVersion: {API_VERSION}")),
            );
        }
    }
    for (key, _) in entries {
        let known = matches!(
            key.text.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec"
        );
        if !(known || key.text == "status" && mode == ParseMode::Observed) {
            let hint = match schema::closest(
                &key.text,
                ["apiVersion", "kind", "metadata", "spec"].into_iter(),
            ) {
                Some(n) => format!("did you mean {n}?"),
                None if key.text == "status" => {
                    "status is written by the cluster; remove it".into()
                }
                None => "a Machine has apiVersion, kind, metadata and spec".into(),
            };
            diags.push(Diagnostic::error(&key.text, key.pos, "unknown field").hint(hint));
        }
    }

    // Generating a schema costs far more than checking a document against it.
    static META_SCHEMA: LazyLock<Json> = LazyLock::new(schema::schema_for::<Metadata>);
    static SPEC_SCHEMA: LazyLock<Json> = LazyLock::new(schema::schema_for::<MachineSpec>);
    let meta_schema: &Json = &META_SCHEMA;
    let strict_meta = |_: &str, _: &str| mode == ParseMode::Observed;
    let metadata: Option<Metadata> = match doc.get("metadata").filter(|n| n.value != Value::Null) {
        Some(node) => schema::check(
            node,
            meta_schema,
            &FieldPath::root("metadata"),
            &strict_meta,
            &mut diags,
        )
        .and_then(|v| serde_json::from_value(v).ok()),
        None => {
            diags.push(
                Diagnostic::error("metadata", doc.pos, "is required but missing")
                    .hint("add metadata: {name: <machine name>}"),
            );
            None
        }
    };
    if let Some(m) = &metadata {
        check_object_name("metadata.name", &m.name, &index, &mut diags);
        if let Some(ns) = &m.namespace {
            check_object_name("metadata.namespace", ns, &index, &mut diags);
            if kind == MachineKind::XMachine {
                diags.push(
                    Diagnostic::error(
                        "metadata.namespace",
                        index.pos("metadata.namespace"),
                        "an XMachine is cluster-scoped",
                    )
                    .hint("remove metadata.namespace, or use kind: Machine"),
                );
            }
        }
    }

    let spec_schema: &Json = &SPEC_SCHEMA;
    let tolerate = |path: &str, key: &str| path == "spec" && CROSSPLANE_SPEC_FIELDS.contains(&key);
    let spec: Option<MachineSpec> = match doc.get("spec").filter(|n| n.value != Value::Null) {
        Some(node) => schema::check(
            node,
            spec_schema,
            &FieldPath::root("spec"),
            &tolerate,
            &mut diags,
        )
        .and_then(|v| {
            if diags.iter().any(Diagnostic::is_error) {
                return None;
            }
            match serde_json::from_value(v) {
                Ok(s) => Some(s),
                Err(e) => {
                    diags.push(Diagnostic::error(
                        "spec",
                        node.pos,
                        format!("does not match the Machine API: {e}"),
                    ));
                    None
                }
            }
        }),
        None => {
            diags.push(
                Diagnostic::error("spec", doc.pos, "is required but missing")
                    .hint("add the machine's spec"),
            );
            None
        }
    };

    let (Some(metadata), Some(spec)) = (metadata, spec) else {
        diag::sort(&mut diags);
        return Parsed::Invalid(diags);
    };
    if diags.iter().any(Diagnostic::is_error) {
        diag::sort(&mut diags);
        return Parsed::Invalid(diags);
    }
    match validate(kind, metadata, spec, index, diags) {
        Ok(m) => Parsed::Machine(Box::new(m)),
        Err(d) => Parsed::Invalid(d),
    }
}

struct Check<'a> {
    index: &'a PathIndex,
    diags: Vec<Diagnostic>,
}

impl Check<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(path, self.index.pos(path), message).hint(hint));
    }
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(path, self.index.pos(path), message));
    }
}

fn check_object_name(path: &str, name: &str, index: &PathIndex, diags: &mut Vec<Diagnostic>) {
    if let Err(why) = net::check_dns_subdomain(name) {
        diags.push(
            Diagnostic::error(path, index.pos(path), format!("{name:?} {why}"))
                .hint("Kubernetes names are lowercase letters, digits, '-' and '.', at most 253 characters"),
        );
    }
}

fn validate(
    kind: MachineKind,
    metadata: Metadata,
    mut spec: MachineSpec,
    index: PathIndex,
    diags: Vec<Diagnostic>,
) -> Result<Machine, Vec<Diagnostic>> {
    let mut c = Check {
        index: &index,
        diags,
    };

    // Identity.
    if let Err(why) = net::check_label(&spec.hostname) {
        c.err("spec.hostname", format!("{:?} {why}", spec.hostname), "an RFC 1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters");
    }
    if let Some(domain) = &spec.domain {
        if let Err(why) = net::check_domain(domain) {
            c.err(
                "spec.domain",
                format!("{domain:?} {why}"),
                "a DNS name such as homelab.local",
            );
        } else if spec.hostname.len() + 1 + domain.len() > 253 {
            c.err(
                "spec.domain",
                "hostname.domain is longer than 253 characters",
                "use a shorter domain",
            );
        }
    }

    // Size.
    let class = spec.class.map(SizeClass::size);
    let cores = match (&spec.cpu, class) {
        (Some(cpu), _) => cpu.cores,
        (None, Some((cores, _, _))) => cores,
        (None, None) => {
            c.err(
                "spec.cpu",
                "is required unless class is set",
                "add cpu: {cores: 2} or class: small",
            );
            0
        }
    };
    let sockets = spec.cpu.as_ref().map_or(1, |cpu| cpu.sockets);
    let memory_mib = match (&spec.memory, class) {
        (Some(m), _) => m.size,
        (None, Some((_, mem, _))) => mem,
        (None, None) => {
            c.err(
                "spec.memory",
                "is required unless class is set",
                "add memory: {size: 4096} (MiB) or class: small",
            );
            0
        }
    };
    let disk_gib = spec
        .disk
        .as_ref()
        .map_or(class.map_or(32, |(_, _, d)| d), |d| d.size);
    if spec.image.trim().is_empty() {
        c.err(
            "spec.image",
            "is empty",
            "name the Proxmox NixOS template, e.g. nixos-template",
        );
    }

    // Network.
    let network = check_network(&mut c, &spec);

    // Proxmox.
    let proxmox = match &spec.proxmox {
        Some(p) => Placement {
            node: p.node.clone(),
            storage: p.storage.clone(),
            bridge: p.bridge.clone(),
            vlan: p.vlan,
        },
        None => Placement {
            node: None,
            storage: "local-zfs".into(),
            bridge: "vmbr0".into(),
            vlan: None,
        },
    };
    for (path, value) in [
        ("spec.proxmox.node", proxmox.node.as_deref()),
        ("spec.proxmox.storage", Some(proxmox.storage.as_str())),
        ("spec.proxmox.bridge", Some(proxmox.bridge.as_str())),
    ] {
        if let Some(v) = value {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                c.err(
                    path,
                    format!("{v:?} is not a Proxmox identifier"),
                    "letters, digits, '-', '_' and '.'",
                );
            }
        }
    }

    // Flake.
    let flake = match FlakeRef::parse(&spec.nix.flake_ref) {
        Ok(f) => {
            for w in f.warnings() {
                c.warn("spec.nix.flakeRef", w);
            }
            Some(f)
        }
        Err(e) => {
            c.err("spec.nix.flakeRef", e.message(), e.hint());
            None
        }
    };

    if let Some(r) = &spec.nix.credentials_secret_ref {
        check_object_name(
            "spec.nix.credentialsSecretRef.name",
            &r.name,
            &index,
            &mut c.diags,
        );
        if let Some(f) = &flake {
            if crate::credential::ReferenceHost::of(f).is_none() {
                c.err(
                    "spec.nix.credentialsSecretRef",
                    format!(
                        "{} is fetched without a credential Fabric can deliver",
                        f.without_attr()
                    ),
                    "a credential is for git+ssh:// (an SSH deploy key) or git+https://, github: and gitlab: (an access token) references; remove credentialsSecretRef or change the reference",
                );
            }
        }
    }

    // Admin user and keys.
    if let Err((why, hint)) = net::check_user_name(&spec.bootstrap.admin_user) {
        c.err(
            "spec.bootstrap.adminUser",
            format!("{:?} {why}", spec.bootstrap.admin_user),
            hint,
        );
    }
    let mut ssh_keys = Vec::new();
    for (i, line) in spec.bootstrap.ssh_authorized_keys.iter().enumerate() {
        let path = format!("spec.bootstrap.sshAuthorizedKeys[{i}]");
        match sshkeys::parse(line) {
            Ok(k) => ssh_keys.push(k),
            Err(e) => c.err(&path, e.message, e.hint),
        }
    }
    if let Some(r) = &spec.bootstrap.ssh_authorized_keys_secret_ref {
        check_object_name(
            "spec.bootstrap.sshAuthorizedKeysSecretRef.name",
            &r.name,
            &index,
            &mut c.diags,
        );
        if r.key.is_empty()
            || !r
                .key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            c.err(
                "spec.bootstrap.sshAuthorizedKeysSecretRef.key",
                format!("{:?} is not a valid Secret key", r.key),
                "letters, digits, '-', '_' and '.'",
            );
        }
    }
    if spec.bootstrap.ssh_authorized_keys.is_empty()
        && spec.bootstrap.ssh_authorized_keys_secret_ref.is_none()
    {
        c.err(
            "spec.bootstrap.sshAuthorizedKeys",
            "the machine has no SSH key, so nobody could log in",
            "add a key to sshAuthorizedKeys, or name a Secret in sshAuthorizedKeysSecretRef",
        );
    }

    // Tags.
    for (k, v) in &spec.tags {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                })
        };
        let path = format!("spec.tags.{k}");
        if !ok(k) {
            c.err(
                &path,
                format!("the tag key {k:?} has characters Proxmox tags do not allow"),
                "lowercase letters, digits, '-' and '_'",
            );
        } else if !ok(v) {
            c.err(
                &path,
                format!("the tag value {v:?} has characters Proxmox tags do not allow"),
                "lowercase letters, digits, '-' and '_'",
            );
        }
    }

    let mut diags = c.diags;
    if diags.iter().any(Diagnostic::is_error) {
        diag::sort(&mut diags);
        return Err(diags);
    }
    let Some(flake) = flake else {
        return Err(diags);
    };
    let Some(network) = network else {
        return Err(diags);
    };

    // Resolve defaults into the spec so every consumer sees the same values.
    if spec
        .network
        .as_ref()
        .is_some_and(|n| n.search_domains.is_none())
    {
        if let Some(n) = spec.network.as_mut() {
            n.search_domains = Some(network.search_domains.clone());
        }
    }

    Ok(Machine {
        kind,
        name: metadata.name,
        claim_namespace: metadata
            .labels
            .get(CLAIM_NAMESPACE_LABEL)
            .filter(|ns| !ns.is_empty())
            .cloned(),
        namespace: metadata.namespace,
        uid: metadata.uid,
        hostname: spec.hostname.clone(),
        domain: spec.domain.clone(),
        cores,
        sockets,
        memory_mib,
        disk_gib,
        image: spec.image.clone(),
        network,
        proxmox,
        flake,
        admin_user: spec.bootstrap.admin_user.clone(),
        ssh_keys,
        ssh_keys_secret: spec.bootstrap.ssh_authorized_keys_secret_ref.clone(),
        credentials_secret: spec.nix.credentials_secret_ref.clone(),
        tags: spec.tags.clone(),
        spec,
        warnings: diags,
        positions: KEPT_POSITIONS
            .iter()
            .filter_map(|p| index.exact(p).map(|pos| (*p, pos)))
            .collect(),
    })
}

fn check_network(c: &mut Check<'_>, spec: &MachineSpec) -> Option<NetworkConfig> {
    let default = api::Network {
        dhcp: None,
        interface: "ens18".into(),
        mac_address: None,
        ip: None,
        cidr: 24,
        gateway: None,
        dns: vec!["1.1.1.1".into(), "8.8.8.8".into()],
        search_domains: None,
        ipv6: None,
    };
    let n = spec.network.as_ref().unwrap_or(&default);
    let mut ok = true;

    if let Err(why) = net::check_interface(&n.interface) {
        c.err(
            "spec.network.interface",
            format!("{:?} {why}", n.interface),
            "a Linux interface name such as ens18: at most 15 characters, no '/', ':' or spaces",
        );
        ok = false;
    }
    let mac = match &n.mac_address {
        Some(text) => match MacAddress::parse(text) {
            Ok(mac) => Some(mac),
            Err((why, hint)) => {
                c.err("spec.network.macAddress", format!("{text} {why}"), hint);
                ok = false;
                None
            }
        },
        None => None,
    };

    let static_asked = n.ip.is_some() || n.ipv6.is_some() || n.gateway.is_some();
    if n.dhcp == Some(true) && static_asked {
        for (field, present) in [
            ("ip", n.ip.is_some()),
            ("gateway", n.gateway.is_some()),
            ("ipv6", n.ipv6.is_some()),
        ] {
            if present {
                c.err(
                    &format!("spec.network.{field}"),
                    "is set together with dhcp: true",
                    "remove it, or set dhcp: false for a static address",
                );
            }
        }
        ok = false;
    }
    if n.dhcp == Some(false) && n.ip.is_none() && n.ipv6.is_none() {
        c.err(
            "spec.network.ip",
            "dhcp is false but no static address is given",
            "add ip (and ipv6 if wanted), or set dhcp: true",
        );
        ok = false;
    }
    if n.gateway.is_some() && n.ip.is_none() && n.dhcp != Some(true) {
        c.err(
            "spec.network.gateway",
            "is set without ip",
            "add the machine's static ip, or remove the gateway",
        );
        ok = false;
    }

    let mut ipv4 = None;
    if let Some(ip_text) = &n.ip {
        match ip_text.parse::<Ipv4Addr>() {
            Err(_) => {
                let hint = if ip_text.contains('/') {
                    "write the address alone and the prefix length in cidr, e.g. ip: 10.0.1.10 and cidr: 24".to_string()
                } else if ip_text.parse::<Ipv6Addr>().is_ok() {
                    "an IPv6 address goes in ipv6.address".to_string()
                } else {
                    "an IPv4 address such as 10.0.1.10".to_string()
                };
                c.err(
                    "spec.network.ip",
                    format!("{ip_text} is not an IPv4 address"),
                    hint,
                );
                ok = false;
            }
            Ok(ip) => {
                let net = Ipv4Net::new(ip, n.cidr).ok();
                match net {
                    None => ok = false,
                    Some(net) => {
                        let subnet = net.trunc();
                        if n.cidr < 31 && (ip == subnet.network() || ip == subnet.broadcast()) {
                            let what = if ip == subnet.network() {
                                "network"
                            } else {
                                "broadcast"
                            };
                            c.err(
                                "spec.network.ip",
                                format!("{ip} is the {what} address of {subnet}"),
                                format!(
                                    "use a host address between {} and {}",
                                    hosts_v4(subnet).0,
                                    hosts_v4(subnet).1
                                ),
                            );
                            ok = false;
                        }
                        if ip.is_unspecified()
                            || ip.is_multicast()
                            || ip.is_loopback()
                            || ip == Ipv4Addr::BROADCAST
                        {
                            c.err(
                                "spec.network.ip",
                                format!("{ip} cannot be a host address"),
                                "use a unicast address of the machine's subnet",
                            );
                            ok = false;
                        }
                        let mut gw = None;
                        if let Some(gw_text) = &n.gateway {
                            match gw_text.parse::<Ipv4Addr>() {
                                Err(_) => {
                                    c.err(
                                        "spec.network.gateway",
                                        format!("{gw_text} is not an IPv4 address"),
                                        format!("an address inside {subnet}"),
                                    );
                                    ok = false;
                                }
                                Ok(g) if g == ip => {
                                    c.err(
                                        "spec.network.gateway",
                                        format!("{g} is the machine's own address"),
                                        format!("the router's address inside {subnet}"),
                                    );
                                    ok = false;
                                }
                                Ok(g) if !subnet.contains(&g) => {
                                    c.err(
                                        "spec.network.gateway",
                                        format!("{g} is outside {subnet}"),
                                        format!(
                                            "an address inside {subnet}, or a different ip/cidr"
                                        ),
                                    );
                                    ok = false;
                                }
                                Ok(g)
                                    if n.cidr < 31
                                        && (g == subnet.network() || g == subnet.broadcast()) =>
                                {
                                    c.err(
                                        "spec.network.gateway",
                                        format!(
                                            "{g} is the network or broadcast address of {subnet}"
                                        ),
                                        "the router's host address",
                                    );
                                    ok = false;
                                }
                                Ok(g) => gw = Some(g),
                            }
                        }
                        ipv4 = Some((net, gw));
                    }
                }
            }
        }
    }

    let mut ipv6 = None;
    if let Some(v6) = &n.ipv6 {
        match v6.address.parse::<Ipv6Addr>() {
            Err(_) => {
                let hint = if v6.address.contains('/') {
                    "write the address alone and the prefix length in prefix"
                } else {
                    "an IPv6 address such as fd00::10"
                };
                c.err(
                    "spec.network.ipv6.address",
                    format!("{} is not an IPv6 address", v6.address),
                    hint,
                );
                ok = false;
            }
            Ok(addr) if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() => {
                c.err(
                    "spec.network.ipv6.address",
                    format!("{addr} cannot be a host address"),
                    "use a unicast address",
                );
                ok = false;
            }
            Ok(addr) => match Ipv6Net::new(addr, v6.prefix) {
                Err(_) => ok = false,
                Ok(net) => {
                    let mut gw = None;
                    if let Some(g) = &v6.gateway {
                        match g.parse::<Ipv6Addr>() {
                            Err(_) => {
                                c.err(
                                    "spec.network.ipv6.gateway",
                                    format!("{g} is not an IPv6 address"),
                                    "an address such as fd00::1",
                                );
                                ok = false;
                            }
                            Ok(g) if g == addr => {
                                c.err(
                                    "spec.network.ipv6.gateway",
                                    format!("{g} is the machine's own address"),
                                    "the router's address",
                                );
                                ok = false;
                            }
                            Ok(g) if !(net.trunc().contains(&g) || is_link_local(g)) => {
                                c.err("spec.network.ipv6.gateway", format!("{g} is outside {}", net.trunc()), format!("an address inside {}, or the router's link-local fe80:: address", net.trunc()));
                                ok = false;
                            }
                            Ok(g) => gw = Some(g),
                        }
                    }
                    ipv6 = Some((net, gw));
                }
            },
        }
    }

    let mut dns = Vec::new();
    for (i, d) in n.dns.iter().enumerate() {
        match d.parse::<IpAddr>() {
            Ok(ip) => dns.push(ip),
            Err(_) => {
                c.err(
                    &format!("spec.network.dns[{i}]"),
                    format!("{d} is not an IP address"),
                    "DNS servers are given by address, e.g. 1.1.1.1",
                );
                ok = false;
            }
        }
    }
    let search_domains = match &n.search_domains {
        Some(list) => {
            for (i, d) in list.iter().enumerate() {
                if let Err(why) = net::check_domain(d) {
                    c.err(
                        &format!("spec.network.searchDomains[{i}]"),
                        format!("{d:?} {why}"),
                        "a DNS name such as homelab.local",
                    );
                    ok = false;
                }
            }
            list.clone()
        }
        None => spec.domain.iter().cloned().collect(),
    };

    ok.then_some(NetworkConfig {
        interface: n.interface.clone(),
        mac,
        ipv4,
        ipv6,
        dns,
        search_domains,
    })
}

fn is_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

fn hosts_v4(net: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let first = u32::from(net.network()).saturating_add(1);
    let last = u32::from(net.broadcast()).saturating_sub(1);
    (Ipv4Addr::from(first), Ipv4Addr::from(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::probe;

    fn with_tags(n: usize) -> String {
        let mut text = String::from(
            "apiVersion: infra.kubelize.io/v1alpha1\nkind: Machine\nmetadata: {name: m}\nspec:\n  hostname: m\n  class: small\n  image: t\n  nix: {flakeRef: 'github:o/r#m'}\n  bootstrap: {sshAuthorizedKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKgbSVplTIryI0rlsezozbM059+F0MeTz+99B8cYy6s a']}\n  tags:\n",
        );
        for i in 0..n {
            text.push_str(&format!("    Bad{i}: v\n"));
        }
        text
    }

    #[test]
    fn locating_a_diagnostic_per_key_is_linear() {
        // Every tag is refused, and every refusal looks its key up to give
        // the position: a scan per lookup was quadratic in the tags.
        let n = 5_000;
        let text = with_tags(n);
        let (docs, probes) = probe::during(|| parse_stream(&text));
        let [Parsed::Invalid(diags)] = docs.as_slice() else {
            panic!("expected one invalid machine")
        };
        assert_eq!(diags.len(), n);
        assert_eq!(
            diags[7].pos,
            Some(Pos { line: 18, col: 11 }),
            "{}",
            diags[7]
        );
        assert!(probes <= 20 * n as u64, "{probes} comparisons for {n} tags");
    }

    #[test]
    fn an_oversized_stream_is_refused_unread() {
        let mut text = with_tags(1);
        text.push_str(&"#".repeat(source::MAX_MANIFEST_BYTES));
        let docs = parse_stream(&text);
        let [Parsed::Invalid(diags)] = docs.as_slice() else {
            panic!("expected the size to be refused")
        };
        assert_eq!(diags.len(), 1);
        let line = diags[0].located("big.yaml");
        assert!(
            line.starts_with("big.yaml: the file is 4.0 MiB (")
                && line.contains("more than the 4 MiB a manifest may have"),
            "{line}"
        );
        let secret = format!("kind: Secret\n{}", "#".repeat(source::MAX_MANIFEST_BYTES));
        let e = crate::secret::keys_from_yaml(&secret, "s", "k").unwrap_err();
        assert!(e[0].message.contains("more than the 4 MiB"), "{:?}", e[0]);
    }
}
