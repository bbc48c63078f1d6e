//! Flake references: the `spec.nix.flakeRef` of a Machine and the content of
//! `/etc/nix-flake-target`.
//!
//! A flake reference is parsed once, here, and everything downstream (the
//! renderer, bootstrap, the agent) works with the parsed form. The rules are
//! the ones a machine needs to converge unattended: the reference must name a
//! nixosConfiguration after `#`, must be fetchable without local state
//! (`path:` is refused), and must never carry a credential, because it is
//! written world-readable to `/etc/nix-flake-target` and into cloud-init.

use std::fmt;

use url::Url;

/// How the flake is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlakeScheme {
    /// `git+https://host/repo`
    GitHttps,
    /// `git+ssh://[user@]host/repo`
    GitSsh,
    /// `git+file:///path` (local tests only)
    GitFile,
    /// `github:owner/repo`
    GitHub,
    /// `gitlab:owner/repo`
    GitLab,
    /// `sourcehut:~user/repo`
    SourceHut,
    /// `https://host/archive.tar.gz` or `tarball+https://…`
    Tarball,
}

/// A validated flake reference naming a nixosConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRef {
    text: String,
    scheme: FlakeScheme,
    /// Everything before `?` / `#`, for git URLs without the `git+` prefix.
    location: String,
    params: Vec<(String, String)>,
    attr: String,
    /// For `github:`-style references, the ref or rev given as a path segment.
    path_ref: Option<String>,
}

/// Why a string is not an acceptable flake reference. The message says what is
/// wrong; [`FlakeRefError::hint`] says what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FlakeRefError {
    message: String,
    hint: String,
}

impl FlakeRefError {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What would be right.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

const ACCEPTED: &str = "use git+https://, git+ssh://, github:, gitlab:, sourcehut:, an https:// tarball, or git+file:// for local tests";
/// Where a token for the flake's host belongs instead of the reference: the
/// `access-tokens` entry of the host the user named (GitLab's fetcher wants
/// the token's type in front of it).
fn token_hint(scheme: FlakeScheme, host: Option<&str>) -> String {
    let entry = match (scheme, host) {
        (FlakeScheme::GitHub, _) => "github.com=<token>".to_string(),
        (FlakeScheme::GitLab, _) => "gitlab.com=PAT:<token>".to_string(),
        (FlakeScheme::SourceHut, _) => "git.sr.ht=<token>".to_string(),
        (_, Some(host)) if !host.is_empty() => format!("{host}=<token>"),
        _ => "<host>=<token>".to_string(),
    };
    match scheme {
        // The schemes whose token Fabric delivers (see crate::credential).
        FlakeScheme::GitHttps | FlakeScheme::GitHub | FlakeScheme::GitLab => format!("never put a token in the flake reference, which is stored world-readable on the machine; put the token in a Secret, as access-tokens: {entry}, and name it in spec.nix.credentialsSecretRef (Fabric gives it to Nix as `access-tokens = {entry}`), or use git+ssh:// with a deploy key"),
        _ => format!("never put a token in the flake reference, which is stored world-readable on the machine; give Nix the token instead with `access-tokens = {entry}` in nix.conf (or NIX_CONFIG), or use git+ssh:// with a deploy key"),
    }
}
const KNOWN_PARAMS: [&str; 4] = ["ref", "rev", "dir", "submodules"];

/// `user@host:path` (Git's scp-like syntax) as the `git+ssh://` URL Nix
/// reads, or `None` for anything else.
fn scp_like(body: &str) -> Option<String> {
    if body.contains("://") {
        return None;
    }
    let (user_host, path) = body.split_once(':')?;
    let (user, host) = user_host.split_once('@')?;
    if user.is_empty() || host.is_empty() || host.contains('/') || path.is_empty() {
        return None;
    }
    Some(format!(
        "git+ssh://{user}@{host}/{}",
        path.trim_start_matches('/')
    ))
}

impl FlakeRef {
    /// Parses and validates a flake reference.
    pub fn parse(text: &str) -> Result<Self, FlakeRefError> {
        if text.trim().is_empty() {
            return Err(FlakeRefError::new(
                "the flake reference is empty",
                "write e.g. git+https://github.com/org/fleet#dns01",
            ));
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(FlakeRefError::new(
                format!("the flake reference contains the character {c:?}"),
                "a flake reference is a URL: no spaces, control or non-ASCII characters (percent-encode them)",
            ));
        }
        let (body, attr) = match text.split_once('#') {
            Some((body, attr)) => (body, attr),
            None => {
                return Err(FlakeRefError::new(
                    format!("{text} does not name a nixosConfiguration"),
                    format!("append #<name>, e.g. {text}#dns01"),
                ))
            }
        };
        check_attr(attr)?;
        if let Some(url) = scp_like(body) {
            return Err(FlakeRefError::new(
                format!("{body} is Git's scp-like address, which Nix does not read as a flake"),
                format!("write it as a URL: {url}#{attr}"),
            ));
        }
        let (location, query) = match body.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (body, None),
        };
        let (scheme, location, path_ref) = classify(location)?;
        let params = parse_params(query, scheme, &location)?;
        if path_ref.is_some() && params.iter().any(|(k, _)| k == "ref" || k == "rev") {
            return Err(FlakeRefError::new(
                "the reference gives a branch or revision twice, in the path and in ?ref=/?rev=",
                "give it once, e.g. github:org/fleet?ref=main#dns01",
            ));
        }
        Ok(Self {
            text: text.to_string(),
            scheme,
            location,
            params,
            attr: attr.to_string(),
            path_ref,
        })
    }

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// How the flake is fetched.
    pub fn scheme(&self) -> FlakeScheme {
        self.scheme
    }

    /// The nixosConfiguration name after `#`.
    pub fn attr(&self) -> &str {
        &self.attr
    }

    /// The `ref=` query parameter, or the ref written as a path segment of a
    /// `github:`-style reference (when it is not a commit hash).
    pub fn git_ref(&self) -> Option<&str> {
        self.param("ref")
            .or(self.path_ref.as_deref().filter(|r| !is_commit_hash(r)))
    }

    /// The `rev=` query parameter, or a commit hash written as a path segment.
    pub fn rev(&self) -> Option<&str> {
        self.param("rev")
            .or(self.path_ref.as_deref().filter(|r| is_commit_hash(r)))
    }

    /// The `dir=` query parameter.
    pub fn dir(&self) -> Option<&str> {
        self.param("dir")
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True for `git+file://`, which only makes sense for local tests.
    pub fn is_local_file(&self) -> bool {
        self.scheme == FlakeScheme::GitFile
    }

    /// Advisories that do not make the reference invalid.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.is_local_file() {
            w.push(
                "git+file:// points at a path on the machine itself; it is meant for local tests"
                    .to_string(),
            );
        }
        w
    }

    /// A URL that `git ls-remote` accepts, or `None` for tarballs.
    pub fn git_remote(&self) -> Option<String> {
        match self.scheme {
            FlakeScheme::GitHttps | FlakeScheme::GitSsh | FlakeScheme::GitFile => {
                Some(self.location.clone())
            }
            FlakeScheme::GitHub => Some(format!("https://github.com/{}.git", self.location)),
            FlakeScheme::GitLab => Some(format!("https://gitlab.com/{}.git", self.location)),
            FlakeScheme::SourceHut => Some(format!("https://git.sr.ht/{}", self.location)),
            FlakeScheme::Tarball => None,
        }
    }

    /// The flake URL (no fragment) pinned to `rev`, keeping `ref`, `dir` and
    /// `submodules`, so that what is built is exactly what was detected.
    pub fn pinned(&self, rev: &str) -> String {
        let mut params: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| k != "rev")
            .cloned()
            .collect();
        let base = match self.scheme {
            FlakeScheme::GitHttps | FlakeScheme::GitSsh | FlakeScheme::GitFile => {
                params.push(("rev".into(), rev.into()));
                format!("git+{}", self.location)
            }
            FlakeScheme::GitHub | FlakeScheme::GitLab | FlakeScheme::SourceHut => {
                // These fetchers take either a ref or a rev; the rev wins.
                params.retain(|(k, _)| k != "ref");
                params.push(("rev".into(), rev.into()));
                format!("{}:{}", self.scheme_prefix(), self.location)
            }
            FlakeScheme::Tarball => return self.without_attr(),
        };
        join_query(base, &params)
    }

    /// The reference without its `#attr` fragment.
    pub fn without_attr(&self) -> String {
        self.text
            .split_once('#')
            .map(|(b, _)| b.to_string())
            .unwrap_or_else(|| self.text.clone())
    }

    /// The installable for the system toplevel of this reference's
    /// nixosConfiguration, given the flake URL to use (pinned or not).
    pub fn toplevel_installable(&self, flake_url: &str) -> String {
        format!(
            "{flake_url}#nixosConfigurations.\"{}\".config.system.build.toplevel",
            self.attr
        )
    }

    fn scheme_prefix(&self) -> &'static str {
        match self.scheme {
            FlakeScheme::GitHub => "github",
            FlakeScheme::GitLab => "gitlab",
            FlakeScheme::SourceHut => "sourcehut",
            _ => "",
        }
    }
}

impl fmt::Display for FlakeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for FlakeRef {
    type Err = FlakeRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn join_query(base: String, params: &[(String, String)]) -> String {
    if params.is_empty() {
        return base;
    }
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{base}?{}", q.join("&"))
}

/// True for a full SHA-1 or SHA-256 commit hash in lowercase hex.
pub fn is_commit_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_attr(attr: &str) -> Result<(), FlakeRefError> {
    let hint = "name the nixosConfiguration after #, e.g. #dns01 (letters, digits, _ and -)";
    if attr.is_empty() {
        return Err(FlakeRefError::new(
            "nothing follows # in the flake reference",
            hint,
        ));
    }
    if attr.starts_with("nixosConfigurations.") {
        return Err(FlakeRefError::new(
            format!("#{attr} is an attribute path"),
            format!(
                "write only the configuration name: #{}",
                attr.trim_start_matches("nixosConfigurations.")
            ),
        ));
    }
    let ok_first = attr
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_first
        || attr.len() > 253
        || !attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(FlakeRefError::new(
            format!("#{attr} is not a nixosConfiguration name"),
            hint,
        ));
    }
    Ok(())
}

fn classify(location: &str) -> Result<(FlakeScheme, String, Option<String>), FlakeRefError> {
    let Some((scheme, rest)) = location.split_once(':') else {
        return Err(FlakeRefError::new(
            format!("{location} has no scheme"),
            ACCEPTED,
        ));
    };
    match scheme {
        "git+https" | "git+ssh" | "git+file" => {
            let url_text = &location[4..];
            let url = Url::parse(url_text).map_err(|e| {
                FlakeRefError::new(
                    format!("{location} is not a valid URL: {e}"),
                    "write e.g. git+https://github.com/org/fleet",
                )
            })?;
            let scheme = match scheme {
                "git+https" => FlakeScheme::GitHttps,
                "git+ssh" => FlakeScheme::GitSsh,
                _ => FlakeScheme::GitFile,
            };
            check_credentials(&url, scheme)?;
            if scheme != FlakeScheme::GitFile && url.host_str().is_none_or(str::is_empty) {
                return Err(FlakeRefError::new(
                    format!("{location} names no host"),
                    "write e.g. git+https://github.com/org/fleet",
                ));
            }
            if url.path().trim_matches('/').is_empty() {
                return Err(FlakeRefError::new(
                    format!("{location} names no repository"),
                    "add the repository path, e.g. git+https://github.com/org/fleet",
                ));
            }
            Ok((scheme, url_text.to_string(), None))
        }
        "github" | "gitlab" | "sourcehut" => {
            let kind = match scheme {
                "github" => FlakeScheme::GitHub,
                "gitlab" => FlakeScheme::GitLab,
                _ => FlakeScheme::SourceHut,
            };
            if rest.contains('@') {
                return Err(FlakeRefError::new(
                    format!("{location} carries a user name or token"),
                    token_hint(kind, None),
                ));
            }
            let parts: Vec<&str> = rest.split('/').collect();
            let example = format!("{scheme}:org/fleet or {scheme}:org/fleet/main");
            if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(FlakeRefError::new(
                    format!("{location} is not {scheme}:OWNER/REPO[/REF]"),
                    format!("write e.g. {example}"),
                ));
            }
            for p in &parts[..2] {
                let owner_ok = p.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphanumeric()
                        || c == '-'
                        || c == '_'
                        || c == '.'
                        || (i == 0 && c == '~' && kind == FlakeScheme::SourceHut)
                });
                if !owner_ok {
                    return Err(FlakeRefError::new(
                        format!("{p:?} in {location} is not a valid owner or repository name"),
                        format!("write e.g. {example}"),
                    ));
                }
            }
            let path_ref = match parts.get(2) {
                Some(r) => {
                    check_git_ref(r).map_err(|m| {
                        FlakeRefError::new(
                            format!("{r:?} in {location} {m}"),
                            "give a branch, tag or 40-hex commit",
                        )
                    })?;
                    Some((*r).to_string())
                }
                None => None,
            };
            Ok((kind, format!("{}/{}", parts[0], parts[1]), path_ref))
        }
        "https" | "tarball+https" => {
            let url_text = location.strip_prefix("tarball+").unwrap_or(location);
            let url = Url::parse(url_text).map_err(|e| {
                FlakeRefError::new(
                    format!("{location} is not a valid URL: {e}"),
                    "write e.g. https://example.org/fleet.tar.gz",
                )
            })?;
            check_credentials(&url, FlakeScheme::Tarball)?;
            let path = url.path();
            let archive = [
                ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst", ".tar", ".zip",
            ]
            .iter()
            .any(|ext| path.ends_with(ext));
            if !archive && scheme == "https" {
                return Err(FlakeRefError::new(
                    format!("{location} is neither a Git repository nor a tarball"),
                    "for a Git repository over HTTPS write git+https://…; for a tarball, the URL must end in .tar.gz, .tar.xz, .tar.zst or .zip (or use tarball+https://)",
                ));
            }
            Ok((FlakeScheme::Tarball, url_text.to_string(), None))
        }
        "path" => Err(FlakeRefError::new(
            format!("{location} is a path: flake, which exists only on the machine that wrote it"),
            ACCEPTED,
        )),
        "http" | "git+http" | "tarball+http" => Err(FlakeRefError::new(
            format!("{location} is fetched over plain HTTP, which anyone on the path can alter"),
            "use https:// (git+https:// for Git repositories)",
        )),
        _ if location.starts_with('/') || location.starts_with('.') => Err(FlakeRefError::new(
            format!("{location} is a local path"),
            ACCEPTED,
        )),
        other => Err(FlakeRefError::new(
            format!("the scheme {other}: is not supported"),
            ACCEPTED,
        )),
    }
}

fn check_credentials(url: &Url, scheme: FlakeScheme) -> Result<(), FlakeRefError> {
    let hint = || token_hint(scheme, url.host_str());
    if url.password().is_some() {
        return Err(FlakeRefError::new(
            "the flake reference carries a password or token",
            hint(),
        ));
    }
    // A bare user is normal for ssh (git@host); over https a lone user part is
    // how tokens are usually smuggled (https://<token>@host).
    if !url.username().is_empty() && scheme != FlakeScheme::GitSsh {
        return Err(FlakeRefError::new(
            format!(
                "the flake reference carries user information ({}@) in an {} URL",
                "…",
                url.scheme()
            ),
            hint(),
        ));
    }
    Ok(())
}

fn parse_params(
    query: Option<&str>,
    scheme: FlakeScheme,
    location: &str,
) -> Result<Vec<(String, String)>, FlakeRefError> {
    let mut params: Vec<(String, String)> = Vec::new();
    let Some(query) = query else {
        return Ok(params);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !KNOWN_PARAMS.contains(&k) {
            let lower = k.to_ascii_lowercase();
            if lower.contains("token") || lower.contains("password") || lower.contains("secret") {
                return Err(FlakeRefError::new(
                    format!("the query parameter {k} looks like a credential"),
                    // Parsed again only here: the host is needed for this hint alone.
                    token_hint(
                        scheme,
                        Url::parse(location).ok().as_ref().and_then(Url::host_str),
                    ),
                ));
            }
            let near = KNOWN_PARAMS
                .iter()
                .find(|p| strsim::levenshtein(p, k) <= 2)
                .map(|p| format!("did you mean {p}? "))
                .unwrap_or_default();
            return Err(FlakeRefError::new(
                format!("unknown query parameter {k}"),
                format!("{near}Fabric understands ref, rev, dir and submodules"),
            ));
        }
        if params.iter().any(|(pk, _)| pk == k) {
            return Err(FlakeRefError::new(
                format!("the query parameter {k} is given twice"),
                "give it once",
            ));
        }
        match k {
            "ref" => check_git_ref(v).map_err(|m| {
                FlakeRefError::new(
                    format!("ref={v} {m}"),
                    "give a branch or tag name, e.g. ref=main",
                )
            })?,
            "rev" if !is_commit_hash(v) => {
                return Err(FlakeRefError::new(
                    format!("rev={v} is not a full commit hash"),
                    "give all 40 lowercase hex digits of the commit, e.g. rev=0123456789abcdef0123456789abcdef01234567",
                ));
            }
            "dir"
                if v.is_empty()
                    || v.starts_with('/')
                    || v.split('/').any(|seg| seg == ".." || seg.is_empty()) =>
            {
                return Err(FlakeRefError::new(
                    format!("dir={v} is not a relative path inside the repository"),
                    "give a subdirectory such as dir=hosts",
                ));
            }
            "submodules" => {
                if !matches!(
                    scheme,
                    FlakeScheme::GitHttps | FlakeScheme::GitSsh | FlakeScheme::GitFile
                ) {
                    return Err(FlakeRefError::new(
                        "submodules= only applies to git+ references",
                        "use a git+https:// or git+ssh:// reference to fetch submodules",
                    ));
                }
                if !matches!(v, "0" | "1" | "true" | "false") {
                    return Err(FlakeRefError::new(
                        format!("submodules={v} is not a boolean"),
                        "write submodules=1 or submodules=0",
                    ));
                }
            }
            _ => {}
        }
        if scheme == FlakeScheme::Tarball && (k == "ref" || k == "rev") {
            return Err(FlakeRefError::new(
                format!("{k}= does not apply to a tarball"),
                "use a git+https:// reference to follow a branch",
            ));
        }
        params.push((k.to_string(), v.to_string()));
    }
    Ok(params)
}

/// Checks the rules of `git check-ref-format` that matter for a ref given in a
/// flake reference. Returns what is wrong.
fn check_git_ref(r: &str) -> Result<(), &'static str> {
    if r.is_empty() {
        return Err("is empty");
    }
    if r.starts_with('-') || r.starts_with('/') || r.ends_with('/') || r.ends_with('.') {
        return Err("is not a valid Git ref name");
    }
    if r.ends_with(".lock") || r.contains("..") || r.contains("//") || r.contains("@{") {
        return Err("is not a valid Git ref name");
    }
    if r.chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
    {
        return Err("contains a character Git does not allow in ref names");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> FlakeRefError {
        FlakeRef::parse(s).expect_err(s)
    }

    #[test]
    fn an_scp_like_address_gets_its_url() {
        let e = FlakeRef::parse("git@github.com:org/fleet#dns01").unwrap_err();
        assert_eq!(
            e.hint,
            "write it as a URL: git+ssh://git@github.com/org/fleet#dns01"
        );
        assert!(e.message.contains("scp-like"), "{}", e.message);
    }

    #[test]
    fn accepts_the_documented_schemes() {
        for ok in [
            "git+https://github.com/org/fabric#dns01",
            "git+https://github.com/org/fabric?ref=main&dir=hosts#dns01",
            "git+ssh://git@github.com/org/fabric?ref=release/v1#dns01",
            "git+file:///srv/fleet?ref=main#host",
            "github:org/fabric#dns01",
            "github:org/fabric/main#dns01",
            "gitlab:org/fabric?dir=nix#dns01",
            "sourcehut:~user/fleet#dns01",
            "https://example.org/fleet.tar.gz#dns01",
            "git+https://example.org/fleet?rev=0123456789abcdef0123456789abcdef01234567#a",
        ] {
            FlakeRef::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn a_token_hint_names_the_host_the_reference_names() {
        for (r, entry) in [
            (
                "git+https://user:tok@github.com/o/r#h",
                "github.com=<token>",
            ),
            ("git+https://glpat-x@gitlab.com/o/r#h", "gitlab.com=<token>"),
            (
                "git+https://oauth2:tok@gitlab.example.org/o/r#h",
                "gitlab.example.org=<token>",
            ),
            ("gitlab:tok@o/r#h", "gitlab.com=PAT:<token>"),
            ("github:tok@o/r#h", "github.com=<token>"),
            ("sourcehut:tok@~o/r#h", "git.sr.ht=<token>"),
            (
                "https://tok@files.example.net/f.tar.gz#h",
                "files.example.net=<token>",
            ),
            (
                "git+https://git.example.org/o/r?private_token=x#h",
                "git.example.org=<token>",
            ),
            ("gitlab:o/r?private_token=x#h", "gitlab.com=PAT:<token>"),
        ] {
            let hint = err(r).hint().to_string();
            assert!(
                hint.contains(&format!("`access-tokens = {entry}`")),
                "{r}: {hint}"
            );
            if !r.contains("github") {
                assert!(!hint.contains("github.com"), "{r}: {hint}");
            }
        }
    }

    #[test]
    fn refuses_paths_credentials_and_missing_attr() {
        assert!(err("path:/etc/nixos#host").message().contains("path:"));
        assert!(err("git+https://user:tok@github.com/o/r#h")
            .hint()
            .contains("access-tokens"));
        assert!(err("git+https://ghp_abc@github.com/o/r#h")
            .hint()
            .contains("access-tokens"));
        assert!(err("git+https://github.com/o/r").hint().contains("#"));
        assert!(err("git+https://github.com/o/r#")
            .message()
            .contains("nothing follows"));
        assert!(err("git+https://github.com/o/r?reff=main#h")
            .hint()
            .contains("did you mean ref"));
        assert!(err("git+https://github.com/o/r?rev=abc#h")
            .message()
            .contains("commit"));
        assert!(err("git+https://github.com/o/r?dir=../x#h")
            .message()
            .contains("dir="));
        assert!(err("git+https://github.com/o/r?access_token=x#h")
            .hint()
            .contains("access-tokens"));
        assert!(err("http://example.org/x.tar.gz#h")
            .message()
            .contains("HTTP"));
        assert!(
            err("/etc/nixos#h").message().contains("scheme")
                || err("/etc/nixos#h").message().contains("path")
        );
    }

    #[test]
    fn ssh_user_is_normal_and_file_warns() {
        let f = FlakeRef::parse("git+ssh://git@example.org/org/fleet#h").unwrap();
        assert_eq!(f.git_remote().unwrap(), "ssh://git@example.org/org/fleet");
        assert!(f.warnings().is_empty());
        let f = FlakeRef::parse("git+file:///srv/fleet?ref=main#h").unwrap();
        assert!(f.is_local_file());
        assert_eq!(f.warnings().len(), 1);
    }

    #[test]
    fn pins_to_a_revision_keeping_ref_and_dir() {
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let f = FlakeRef::parse("git+file:///srv/fleet?ref=main&dir=hosts#h").unwrap();
        assert_eq!(
            f.pinned(rev),
            format!("git+file:///srv/fleet?ref=main&dir=hosts&rev={rev}")
        );
        assert_eq!(f.git_ref(), Some("main"));
        let g = FlakeRef::parse("github:org/fleet/main#h").unwrap();
        assert_eq!(g.git_ref(), Some("main"));
        assert_eq!(g.pinned(rev), format!("github:org/fleet?rev={rev}"));
        assert_eq!(g.git_remote().unwrap(), "https://github.com/org/fleet.git");
        assert_eq!(
            g.toplevel_installable("X"),
            "X#nixosConfigurations.\"h\".config.system.build.toplevel"
        );
    }
}
