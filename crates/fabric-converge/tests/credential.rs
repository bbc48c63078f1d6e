//! The fleet credential against real servers: a real `sshd` on loopback
//! that accepts only the deploy key and serves the fleet repository, and
//! `git http-backend` behind lighttpd with TLS and basic auth that accepts
//! only the token. Bootstrap and the agent converge through them with real
//! Nix and Git (see `common`: only systemd is faked).
//!
//! A spy directory first on PATH wraps git, nix, nix-env, systemctl,
//! systemd-run and the health check: each records its argv and environment,
//! then runs the real program, so the tests see which children got the
//! credential and that none got it on its command line.

mod common;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Fixture, Gen, NIX_CONFIG};
use fabric_converge::agent::{Agent, CycleResult};
use fabric_converge::bootstrap::{bootstrap, BootstrapError, BootstrapOptions, BootstrapReport};
use fabric_converge::credential::CredentialSummary;
use fabric_converge::deploy::{ActivationMode, HealthCheck};
use fabric_converge::doctor::{self, DoctorOptions, Verdict};
use fabric_converge::layout::{self, exit};
use fabric_converge::process::{Cancel, Runner};
use fabric_converge::remote::Backoff;
use fabric_converge::state::{self, Phase};
use fabric_converge::status;

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new ed25519 key pair at `path` (and `path.pub`); returns the public
/// key line.
fn keygen(path: &Path) -> String {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "fabric-test", "-f"])
            .arg(path),
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// `SHA256:…` of a public key file, as ssh-keygen computes it.
fn fingerprint(pub_file: &Path) -> String {
    let out = run_ok(Command::new("ssh-keygen").arg("-lf").arg(pub_file));
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// A server process killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command(port)` until it listens on 127.0.0.1:port.
fn start_server(name: &str, dir: &Path, mut command: impl FnMut(u16) -> Command) -> Server {
    let log = dir.join(format!("{name}.log"));
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = command(port);
        let out = std::fs::File::create(&log).unwrap();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Server { child, port, log };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "{name} never listened: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// sshd on 127.0.0.1 with its own host key, accepting only `deploy_pub`
/// and only for `git-upload-pack` of `repo`.
fn start_sshd(dir: &Path, host_key: &Path, deploy_pub: &str, repo: &Path) -> Server {
    // Privilege separation needs it; Debian creates it only when sshd runs
    // as a service.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let authorized = dir.join("authorized_keys");
    write_mode(
        &authorized,
        &format!(
            "restrict,command=\"/usr/bin/git-upload-pack '{}'\" {deploy_pub}\n",
            repo.display()
        ),
        0o600,
    );
    let config = dir.join("sshd_config");
    start_server("sshd", dir, |port| {
        write_mode(
            &config,
            &format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {}\n\
                 AuthorizedKeysFile {}\n\
                 PidFile none\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 AllowUsers root\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 LogLevel VERBOSE\n",
                host_key.display(),
                authorized.display()
            ),
            0o600,
        );
        let mut c = Command::new("/usr/sbin/sshd");
        c.arg("-D").arg("-e").arg("-f").arg(&config);
        c
    })
}

/// The spy directory: wrappers that record argv and environment, one file
/// per call, then run the real program.
struct Spy {
    dir: PathBuf,
    calls: PathBuf,
}

struct Call {
    program: String,
    argv: Vec<String>,
    env: String,
}

impl Spy {
    fn new(f: &Fixture) -> Self {
        let dir = f.path("spy");
        let calls = f.path("spy-calls");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&calls).unwrap();
        let record = |name: &str, then: &str| {
            write_exe(
                &dir.join(name),
                &format!(
                    "#!/bin/sh\nf=\"{calls}/{name}.$$.$(date +%s%N)\"\n{{ echo argv:; for a in \"$@\"; do printf '%s\\n' \"$a\"; done; echo env:; env; }} > \"$f.tmp\"\nmv \"$f.tmp\" \"$f\"\n{then}\n",
                    calls = calls.display()
                ),
            )
        };
        for real in ["git", "nix", "nix-env"] {
            record(
                real,
                &format!("exec {} \"$@\"", common::which(real).display()),
            );
        }
        for stub in ["systemctl", "systemd-run"] {
            record(
                stub,
                &format!("exec {} \"$@\"", f.stubs.join(stub).display()),
            );
        }
        record("health", "exit 0");
        Self { dir, calls }
    }

    fn path_var(&self, f: &Fixture) -> String {
        format!("{}:{}", self.dir.display(), f.path_var())
    }

    fn calls(&self) -> Vec<Call> {
        let mut v: Vec<Call> = std::fs::read_dir(&self.calls)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) != Some("tmp"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let (argv, env) = text.split_once("\nenv:\n").unwrap();
                Call {
                    program: p
                        .file_name()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .split('.')
                        .next()
                        .unwrap()
                        .to_string(),
                    argv: argv.lines().skip(1).map(str::to_string).collect(),
                    env: env.to_string(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.program.cmp(&b.program));
        v
    }

    fn clear(&self) {
        for e in std::fs::read_dir(&self.calls).unwrap() {
            let _ = std::fs::remove_file(e.unwrap().path());
        }
    }
}

/// Bootstrap options for these tests: activation through (the stub)
/// systemd-run, so that the switch's environment is recorded too, and the
/// spy health check.
fn opts(f: &Fixture, timeout: Duration) -> BootstrapOptions {
    let mut o = f.bootstrap_opts();
    o.activator.mode = ActivationMode::TransientUnit;
    o.activator.health_checks = vec![HealthCheck::parse("health").unwrap()];
    o.backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(500),
        timeout,
        attempt_timeout: Duration::from_secs(30),
    };
    o
}

fn agent(f: &Fixture, runner: &Runner) -> Agent {
    let mut o = f.agent_opts();
    o.activator.mode = ActivationMode::TransientUnit;
    o.activator.health_checks = vec![HealthCheck::parse("health").unwrap()];
    Agent::new(o, runner.clone(), Cancel::new())
}

/// Fails the test when `secret` shows in `text`.
fn assert_absent(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "a secret ({}…) appears in {what}",
            &s[..6.min(s.len())]
        );
    }
}

/// The lines of an OpenSSH private key's body: what must never leak.
fn key_secrets(key: &Path) -> Vec<String> {
    std::fs::read_to_string(key)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// Every file under `dir` (state, marker), as text.
fn files_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&t));
            }
        }
    }
    out
}

struct SshFleet {
    f: Fixture,
    spy: Spy,
    sshd: Server,
    key: PathBuf,
    known_hosts: PathBuf,
    host_pub: String,
}

impl SshFleet {
    fn new() -> Self {
        common::require_nix();
        let f = Fixture::new();
        f.commit(&Gen::new("v1"));
        let keys = f.path("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let host_pub = keygen(&keys.join("host"));
        let deploy_pub = keygen(&keys.join("deploy"));
        let sshd = start_sshd(&keys, &keys.join("host"), &deploy_pub, &f.repo);
        // The first-boot files, where cloud-init writes them.
        let key = f.root.join(layout::SSH_KEY_FILE.trim_start_matches('/'));
        let known_hosts = f
            .root
            .join(layout::KNOWN_HOSTS_FILE.trim_start_matches('/'));
        write_mode(
            &key,
            &std::fs::read_to_string(keys.join("deploy")).unwrap(),
            0o600,
        );
        let fleet = Self {
            spy: Spy::new(&f),
            f,
            sshd,
            key,
            known_hosts,
            host_pub,
        };
        fleet.pin(&fleet.host_pub.clone());
        fleet
            .f
            .write_target_text(&format!("{}\n", fleet.flake()), 0o644);
        fleet
    }

    fn host(&self) -> String {
        format!("[127.0.0.1]:{}", self.sshd.port)
    }

    fn flake(&self) -> String {
        format!(
            "git+ssh://root@127.0.0.1:{}{}?ref=main#host",
            self.sshd.port,
            self.f.repo.display()
        )
    }

    /// known_hosts pinning `host_pub` (type and key; the comment dropped).
    fn pin(&self, host_pub: &str) {
        let mut words = host_pub.split_whitespace();
        let (t, k) = (words.next().unwrap(), words.next().unwrap());
        write_mode(
            &self.known_hosts,
            &format!("# pinned by the test\n{} {t} {k}\n", self.host()),
            0o600,
        );
    }

    fn runner(&self) -> Runner {
        Runner::new()
            .with_path(self.spy.path_var(&self.f))
            .with_env("NIX_CONFIG", NIX_CONFIG)
    }

    fn sshd_log(&self) -> String {
        std::fs::read_to_string(&self.sshd.log).unwrap_or_default()
    }
}

#[test]
fn ssh_bootstrap_and_agent_converge_with_the_deploy_key_and_only_fetchers_get_it() {
    let fl = SshFleet::new();
    let f = &fl.f;
    let runner = fl.runner();

    let report = bootstrap(&opts(f, Duration::from_secs(60)), &runner, &Cancel::new())
        .unwrap_or_else(|e| panic!("{e}\nsshd: {}", fl.sshd_log()));
    assert!(
        matches!(&report, BootstrapReport::Completed { .. }),
        "{report:?}"
    );
    let v2 = f.commit(&Gen::new("v2"));
    let r = agent(f, &runner).cycle();
    assert!(
        matches!(&r, CycleResult::Deployed { revision, .. } if revision.as_str() == v2),
        "{r:?}\nsshd: {}",
        fl.sshd_log()
    );
    assert_eq!(f.switches(), ["v1 switch", "v2 switch"]);
    // sshd saw the deploy key, and nothing else was accepted.
    let fp = fingerprint(&f.path("keys/deploy.pub"));
    assert!(
        fl.sshd_log().contains("Accepted publickey for root"),
        "{}",
        fl.sshd_log()
    );
    assert!(fl.sshd_log().contains(&fp), "{}", fl.sshd_log());

    // Who got the credential: every git and nix (including the git that
    // nix runs to fetch), and nothing else: not nix-env, the switch, the
    // health check or systemctl.
    let ssh_command = format!(
        "GIT_SSH_COMMAND=ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        fl.key.display(),
        fl.known_hosts.display()
    );
    let calls = fl.spy.calls();
    let count = |p: &str| calls.iter().filter(|c| c.program == p).count();
    assert!(count("git") >= 4, "ls-remote twice, fetch by nix twice");
    assert!(
        count("nix") == 2 && count("nix-env") == 2,
        "two builds, two profile sets"
    );
    assert!(count("systemd-run") == 2 && count("health") == 2 && count("systemctl") == 1);
    let secrets = key_secrets(&fl.key);
    for c in &calls {
        let fetches = c.program == "git" || c.program == "nix";
        assert_eq!(
            c.env.lines().any(|l| l == ssh_command),
            fetches,
            "{} {:?} env:\n{}",
            c.program,
            c.argv,
            c.env
        );
        if !fetches {
            assert!(
                !c.env
                    .contains(layout::CREDENTIALS_DIR.trim_start_matches('/')),
                "{} got a credential path",
                c.program
            );
        }
        assert_absent(&format!("{} argv", c.program), &c.argv.join(" "), &secrets);
        assert!(!c.argv.join(" ").contains("ssh -i"), "{:?}", c.argv);
    }
    assert!(
        calls
            .iter()
            .any(|c| c.program == "git" && c.argv.iter().any(|a| a == "fetch")),
        "nix fetched through the git CLI"
    );

    // Status, doctor and the state show the fingerprint and host, never
    // the key.
    let want = CredentialSummary::SshKey {
        fingerprint: fp.clone(),
        host: fl.host(),
    };
    let s = status::status(&f.root());
    assert_eq!(s.credential.as_ref(), Some(&want));
    let text = s.render();
    assert!(
        text.contains(&format!("credential:    ssh key {fp} for {}", fl.host())),
        "{text}"
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["credential"]["kind"], "ssh-key");
    assert_eq!(json["credential"]["fingerprint"], fp.as_str());
    let d = doctor::doctor(&DoctorOptions::new(f.root()), &runner);
    let check = |name: &str| d.checks.iter().find(|c| c.name == name).unwrap().clone();
    assert_eq!(check("credential").verdict, Verdict::Pass, "{}", d.render());
    assert!(check("credential").detail.contains(&fp), "{}", d.render());
    assert_eq!(check("remote").verdict, Verdict::Pass, "{}", d.render());
    assert_eq!(d.credential.as_ref(), Some(&want));
    for (what, text) in [
        ("status", s.render()),
        ("status --json", serde_json::to_string(&s).unwrap()),
        ("doctor", d.render()),
        ("doctor --json", serde_json::to_string(&d).unwrap()),
        ("state and marker", files_text(&f.root.join("var"))),
        ("runner argv", format!("{:?}", runner.started())),
    ] {
        assert_absent(what, &text, &secrets);
    }

    // The journal: a separate process with the engine's logging, its
    // credential taken from the first-boot files by default.
    let v3 = f.commit(&Gen::new("v3"));
    let out = f
        .driver(&["agent-once", f.root.to_str().unwrap()])
        .env("PATH", fl.spy.path_var(f))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains(&v3), "{log}");
    assert!(
        log.contains(&format!("credential: ssh key {fp} for {}", fl.host())),
        "{log}"
    );
    assert_absent("the journal", &log, &secrets);
    assert_absent("state", &files_text(&f.root.join("var")), &secrets);
}

#[test]
fn ssh_refuses_a_changed_host_key_and_a_key_others_can_read() {
    let fl = SshFleet::new();
    let f = &fl.f;
    let runner = fl.runner();
    bootstrap(&opts(f, Duration::from_secs(60)), &runner, &Cancel::new())
        .unwrap_or_else(|e| panic!("{e}\nsshd: {}", fl.sshd_log()));

    // The server's host key is not the pinned one: refused by ssh, nothing
    // built; and converging again once the right key is pinned.
    let other = keygen(&f.path("keys/impostor"));
    fl.pin(&other);
    f.commit(&Gen::new("v2"));
    let a = agent(f, &runner);
    let r = a.cycle();
    let CycleResult::RemoteFailed { message } = &r else {
        panic!("expected RemoteFailed, got {r:?}");
    };
    assert!(
        message.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || message.contains("Host key verification failed"),
        "{message}"
    );
    assert_eq!(f.switches(), ["v1 switch"]);
    fl.pin(&fl.host_pub);
    assert!(matches!(a.cycle(), CycleResult::Deployed { .. }));

    // A key file others can read: refused before anything runs, naming the
    // file, by bootstrap (exit 2) and the agent.
    std::fs::set_permissions(&fl.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    f.commit(&Gen::new("v3"));
    let r = a.cycle();
    let CycleResult::CredentialRefused { message } = &r else {
        panic!("expected CredentialRefused, got {r:?}");
    };
    assert!(
        message.starts_with(&format!(
            "{}: the SSH deploy key is readable by group and others (mode 0644)",
            fl.key.display()
        )),
        "{message}"
    );
    assert_eq!(r.exit_code(), exit::USAGE);

    std::fs::remove_file(f.marker()).unwrap();
    let quiet = fl.runner();
    fl.spy.clear();
    let e = bootstrap(&opts(f, Duration::from_secs(60)), &quiet, &Cancel::new()).unwrap_err();
    assert!(matches!(e, BootstrapError::Credential(_)), "{e}");
    assert_eq!(e.exit_code(), exit::USAGE);
    assert!(e.to_string().contains("chmod 0600"), "{e}");
    assert!(quiet.started().is_empty(), "{:?}", quiet.started());
    let st = state::load(&f.state_file("bootstrap.json"))
        .unwrap()
        .unwrap();
    let failed = st.history.last().unwrap().error.clone().unwrap();
    assert_eq!(failed.phase, Phase::ReadTarget);
    assert!(
        failed.message.contains(fl.key.to_str().unwrap()),
        "{failed:?}"
    );

    // A fresh machine whose known_hosts pins another key never converges.
    std::fs::set_permissions(&fl.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    fl.pin(&other);
    let e = bootstrap(&opts(f, Duration::from_secs(2)), &quiet, &Cancel::new()).unwrap_err();
    let BootstrapError::Failed { failure, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(failure.phase, Phase::WaitRemote);
    assert!(
        failure.tail.contains("Host key verification failed"),
        "{failure:?}"
    );
    assert!(
        failure.message.contains(&format!(
            "the server's host key is not the one pinned for {}",
            fl.host()
        )),
        "{failure:?}"
    );
    assert!(!f.marker().exists());
}

/// lighttpd with TLS (a certificate made here) serving `git http-backend`
/// for the fixture's repository behind basic auth: user x-access-token,
/// password `token`.
fn start_https(f: &Fixture, token: &str) -> (Server, PathBuf) {
    let dir = f.path("https");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    write_mode(
        &dir.join("users"),
        &format!("x-access-token:{token}\n"),
        0o600,
    );
    let config = dir.join("lighttpd.conf");
    let project_root = f.repo.parent().unwrap().to_path_buf();
    let server = start_server("lighttpd", &dir, |port| {
        write_mode(
            &config,
            &format!(
                r#"server.document-root = "{dir}/www"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{dir}/error.log"
server.modules = ("mod_auth", "mod_authn_file", "mod_alias", "mod_setenv", "mod_cgi", "mod_openssl")
ssl.engine = "enable"
ssl.pemfile = "{cert}"
ssl.privkey = "{key}"
auth.backend = "plain"
auth.backend.plain.userfile = "{dir}/users"
auth.require = ("/git/" => ("method" => "basic", "realm" => "fleet", "require" => "valid-user"))
alias.url = ("/git" => "/usr/lib/git-core/git-http-backend")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.set-environment = ("GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
"#,
                dir = dir.display(),
                cert = cert.display(),
                key = key.display(),
                root = project_root.display(),
            ),
            0o600,
        );
        let mut c = Command::new("/usr/sbin/lighttpd");
        c.arg("-D").arg("-f").arg(&config);
        c
    });
    (server, cert)
}

#[test]
fn https_bootstrap_needs_the_token_and_gets_it_through_the_environment_only() {
    common::require_nix();
    let f = Fixture::new();
    f.commit(&Gen::new("v1"));
    let token = format!("fabric-test-token-{:016x}", fastrand::u64(..));
    let (server, cert) = start_https(&f, &token);
    let spy = Spy::new(&f);
    let host = format!("127.0.0.1:{}", server.port);
    let flake = format!(
        "git+https://{host}/git/{}?ref=main#host",
        f.repo.file_name().unwrap().to_str().unwrap()
    );
    f.write_target_text(&format!("{flake}\n"), 0o644);
    // The test's CA, for git (and Nix, were it to fetch over HTTPS itself).
    let runner = Runner::new()
        .with_path(spy.path_var(&f))
        .with_env("NIX_CONFIG", NIX_CONFIG)
        .with_env("GIT_SSL_CAINFO", &cert)
        .with_env("NIX_SSL_CERT_FILE", &cert)
        .with_env("SSL_CERT_FILE", &cert);
    let tokens = f
        .root
        .join(layout::ACCESS_TOKENS_FILE.trim_start_matches('/'));

    // No token: the server says no, clearly, and nothing is built.
    let e = bootstrap(&opts(&f, Duration::from_secs(2)), &runner, &Cancel::new()).unwrap_err();
    let BootstrapError::Failed { failure, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(failure.phase, Phase::WaitRemote);
    assert!(
        failure.tail.contains("could not read Username"),
        "{failure:?}"
    );
    assert!(
        failure
            .message
            .contains("the server asks for credentials: give an access token"),
        "{failure:?}"
    );
    // The wrong token: sent, and refused by the server (git then asks for
    // a user name it cannot prompt for).
    write_mode(&tokens, &format!("{host}=not-{token}\n"), 0o600);
    spy.clear();
    let e = bootstrap(&opts(&f, Duration::from_secs(2)), &runner, &Cancel::new()).unwrap_err();
    assert!(e.to_string().contains("could not read Username"), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("the server refused the access token for {host}")),
        "{e}"
    );
    let wrong = format!(
        "GIT_CONFIG_VALUE_0=Authorization: Basic {}",
        base64_of(&format!("x-access-token:not-{token}"))
    );
    assert!(spy
        .calls()
        .iter()
        .any(|c| c.env.lines().any(|l| l == wrong)));
    assert!(f.switches().is_empty());

    // The token: converged.
    write_mode(
        &tokens,
        &format!("# for the fleet\n{host}={token}\n"),
        0o600,
    );
    spy.clear();
    let report = bootstrap(&opts(&f, Duration::from_secs(60)), &runner, &Cancel::new())
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nlighttpd: {}",
                std::fs::read_to_string(f.path("https/error.log")).unwrap_or_default()
            )
        });
    assert!(
        matches!(report, BootstrapReport::Completed { .. }),
        "{report:?}"
    );
    assert_eq!(f.switches(), ["v1 switch"]);

    let header = format!(
        "GIT_CONFIG_VALUE_0=Authorization: Basic {}",
        base64_of(&format!("x-access-token:{token}"))
    );
    let calls = spy.calls();
    assert!(calls.iter().any(|c| c.program == "nix"));
    for c in &calls {
        let fetches = c.program == "git" || c.program == "nix";
        assert_eq!(
            c.env.lines().any(|l| l == header),
            fetches,
            "{} {:?}",
            c.program,
            c.argv
        );
        assert_eq!(
            c.env
                .lines()
                .any(|l| l == format!("GIT_CONFIG_KEY_0=http.https://{host}/.extraHeader")),
            fetches
        );
        // Nix's own setting, appended to the test's NIX_CONFIG.
        if c.program == "nix" {
            assert!(
                c.env.contains(&format!(
                    "sandbox = false\naccess-tokens = {host}={token}\n"
                )),
                "{}",
                c.env
            );
        }
        assert!(
            !c.env.contains(&token) || fetches,
            "{} got the token",
            c.program
        );
        assert_absent(
            &format!("{} argv", c.program),
            &c.argv.join(" "),
            std::slice::from_ref(&token),
        );
    }
    let s = status::status(&f.root());
    assert_eq!(
        s.credential,
        Some(CredentialSummary::AccessToken { host: host.clone() })
    );
    assert!(s
        .render()
        .contains(&format!("credential:    access token for {host}")));
    let secrets = [token.clone(), base64_of(&format!("x-access-token:{token}"))];
    for (what, text) in [
        ("status", s.render()),
        ("status --json", serde_json::to_string(&s).unwrap()),
        ("state and marker", files_text(&f.root.join("var"))),
        ("runner argv", format!("{:?}", runner.started())),
    ] {
        assert_absent(what, &text, &secrets);
    }
}

fn base64_of(s: &str) -> String {
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("printf '%s' \"$1\" | base64 -w0")
            .arg("sh")
            .arg(s),
    );
    out.trim().to_string()
}
