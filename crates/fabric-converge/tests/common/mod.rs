//! Fixtures for the converge integration tests.
//!
//! Everything is real except systemd: real Nix (offline, via NIX_CONFIG),
//! real local Git flakes, real `nix-env` profiles and real processes. The
//! flake's toplevel is a tiny derivation whose `bin/switch-to-configuration`
//! appends "<label> <args>" to a log and exits with a chosen code.
//!
//! FAKE: `systemctl` and `systemd-run` are shell stubs on PATH, because
//! systemd is not PID 1 here. They only append their arguments to a log;
//! `systemd-run` then runs the command it was given, as a transient unit
//! would.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fabric_converge::agent::{AgentOptions, FlakeSource};
use fabric_converge::bootstrap::BootstrapOptions;
use fabric_converge::deploy::ActivationMode;
use fabric_converge::nix::StorePath;
use fabric_converge::process::Runner;
use fabric_converge::remote::Backoff;
use fabric_converge::{layout, Root};

pub const NIX_CONFIG: &str =
    "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false";

// The builder runs as whichever `nixbld` user is free, which depends on
// the builds running beside it: it renames its pid into place (the signals
// directory is world-writable, not sticky) rather than write into a file an
// earlier build of another build user may own.
const BUILD_SH: &str = r#"set -e
if [ -n "$hold" ]; then
  echo $$ > "$started.$$"
  mv -f "$started.$$" "$started"
  while [ -e "$hold" ]; do sleep 0.05; done
fi
if [ "$fail" = 1 ]; then
  echo "error: deliberate build failure in $label" >&2
  exit 1
fi
mkdir -p $out/bin
ln -s /kernel-$kernel $out/kernel
ln -s /initrd-$kernel $out/initrd
cat > $out/bin/switch-to-configuration <<EOS
#!/bin/sh
if [ -n "$holdswitch" ]; then
  echo \$\$ > "$started"
  while [ -e "$holdswitch" ]; do sleep 0.05; done
fi
echo "$label \$*" >> $record
c=$code
if [ -e "$codeoverride" ]; then c=\$(cat "$codeoverride"); fi
exit \$c
EOS
chmod +x $out/bin/switch-to-configuration
"#;

/// One generation of the test flake.
#[derive(Debug, Clone)]
pub struct Gen {
    pub label: String,
    pub switch_code: i32,
    pub fail_build: bool,
    pub kernel: String,
    pub hold: bool,
    pub hold_switch: bool,
}

impl Gen {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.into(),
            switch_code: 0,
            fail_build: false,
            kernel: "1".into(),
            hold: false,
            hold_switch: false,
        }
    }
    pub fn switch_code(mut self, c: i32) -> Self {
        self.switch_code = c;
        self
    }
    pub fn broken(mut self) -> Self {
        self.fail_build = true;
        self
    }
    pub fn kernel(mut self, k: &str) -> Self {
        self.kernel = k.into();
        self
    }
    pub fn held(mut self) -> Self {
        self.hold = true;
        self
    }
    /// switch-to-configuration waits for the hold file to go away.
    pub fn switch_held(mut self) -> Self {
        self.hold_switch = true;
        self
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub stubs: PathBuf,
}

fn system() -> String {
    let arch = std::env::consts::ARCH;
    format!("{arch}-linux")
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.email=t@example.org",
            "-c",
            "user.name=test",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fabric-converge-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let repo = dir.path().join("repo");
        let stubs = dir.path().join("stubs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(&stubs).unwrap();
        // Nix builds as a nixbld user: it must reach the hold/started files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let signals = dir.path().join("signals");
        std::fs::create_dir_all(&signals).unwrap();
        std::fs::set_permissions(&signals, std::fs::Permissions::from_mode(0o777)).unwrap();
        let calls = dir.path().join("systemd-calls.log");
        write_exe(
            &stubs.join("systemctl"),
            &format!(
                "#!/bin/sh\necho \"systemctl $*\" >> '{}'\n",
                calls.display()
            ),
        );
        write_exe(
            &stubs.join("systemd-run"),
            &format!(
                "#!/bin/sh\necho \"systemd-run $*\" >> '{}'\nwhile [ $# -gt 0 ]; do case \"$1\" in --*) shift;; *) break;; esac; done\nexec \"$@\"\n",
                calls.display()
            ),
        );
        Self {
            dir,
            root,
            repo,
            stubs,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> Root {
        Root::new(&self.root).unwrap()
    }

    pub fn flake_ref(&self) -> String {
        format!("git+file://{}?ref=main#host", self.repo.display())
    }

    /// Writes the flake target (owned by root: the tests run as root).
    pub fn write_target(&self, mode: u32) {
        self.write_target_text(&format!("{}\n", self.flake_ref()), mode);
    }

    pub fn write_target_text(&self, text: &str, mode: u32) {
        let p = self.root.join("etc/nix-flake-target");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Write an exit code here to make an already built generation's
    /// switch-to-configuration exit with it from now on.
    pub fn code_override(&self, label: &str) -> PathBuf {
        self.path(&format!("signals/code-{label}"))
    }

    pub fn hold_file(&self) -> PathBuf {
        self.path("signals/hold")
    }

    pub fn started_file(&self) -> PathBuf {
        self.path("signals/build-started")
    }

    /// Commits `gen` as the new head of main; returns the commit hash.
    pub fn commit(&self, gen: &Gen) -> String {
        if !self.repo.join(".git").exists() {
            std::fs::create_dir_all(&self.repo).unwrap();
            git(&self.repo, &["init", "-q", "-b", "main"]);
        }
        if gen.hold || gen.hold_switch {
            std::fs::write(self.hold_file(), "").unwrap();
        }
        std::fs::write(self.repo.join("build.sh"), BUILD_SH).unwrap();
        std::fs::write(
            self.repo.join("flake.lock"),
            "{\"nodes\":{\"root\":{}},\"root\":\"root\",\"version\":7}\n",
        )
        .unwrap();
        let flake = format!(
            r#"{{
  outputs = {{ self }}: {{
    nixosConfigurations.host.config.system.build.toplevel = builtins.derivation {{
      name = "nixos-system-host-{label}";
      system = "{system}";
      builder = "/bin/sh";
      args = [ ./build.sh ];
      PATH = "/usr/bin:/bin";
      label = "{label}";
      code = "{code}";
      fail = "{fail}";
      kernel = "{kernel}";
      record = "{record}";
      hold = "{hold}";
      holdswitch = "{holdswitch}";
      codeoverride = "{codeoverride}";
      started = "{started}";
    }};
  }};
}}
"#,
            label = gen.label,
            system = system(),
            code = gen.switch_code,
            fail = u8::from(gen.fail_build),
            kernel = gen.kernel,
            record = self.switch_log_path().display(),
            hold = if gen.hold {
                self.hold_file().display().to_string()
            } else {
                String::new()
            },
            holdswitch = if gen.hold_switch {
                self.hold_file().display().to_string()
            } else {
                String::new()
            },
            started = self.started_file().display(),
            codeoverride = self.code_override(&gen.label).display(),
        );
        std::fs::write(self.repo.join("flake.nix"), flake).unwrap();
        git(&self.repo, &["add", "-A"]);
        git(
            &self.repo,
            &["commit", "-q", "--allow-empty", "-m", &gen.label],
        );
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    /// A commit that changes no derivation input.
    pub fn commit_readme(&self, text: &str) -> String {
        std::fs::write(self.repo.join("README"), text).unwrap();
        git(&self.repo, &["add", "README"]);
        // README is not part of the derivation: build.sh and the attrs are.
        git(&self.repo, &["commit", "-q", "-m", "readme"]);
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    pub fn switch_log_path(&self) -> PathBuf {
        self.path("switch.log")
    }

    /// "<label> <args>" per switch-to-configuration run.
    pub fn switches(&self) -> Vec<String> {
        std::fs::read_to_string(self.switch_log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn systemd_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("systemd-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// PATH: the systemd stubs first, then the real tools.
    pub fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    pub fn runner(&self) -> Runner {
        Runner::new()
            .with_path(self.path_var())
            .with_env("NIX_CONFIG", NIX_CONFIG)
    }

    /// A runner whose PATH holds only the systemd stubs and `git`: any
    /// attempt to run nix or nix-env fails.
    pub fn runner_without_nix(&self) -> Runner {
        let only_git = self.path("only-git");
        if !only_git.exists() {
            std::fs::create_dir_all(&only_git).unwrap();
            let git = which("git");
            std::os::unix::fs::symlink(git, only_git.join("git")).unwrap();
        }
        Runner::new()
            .with_path(format!("{}:{}", self.stubs.display(), only_git.display()))
            .with_env("NIX_CONFIG", NIX_CONFIG)
    }

    /// A runner that can run nothing but the systemd stubs.
    pub fn runner_without_tools(&self) -> Runner {
        Runner::new().with_path(self.stubs.display().to_string())
    }

    pub fn bootstrap_opts(&self) -> BootstrapOptions {
        let mut o = BootstrapOptions::new(self.root());
        o.activator.mode = ActivationMode::Direct;
        o.backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(20),
        };
        o.build_timeout = Duration::from_secs(120);
        o
    }

    pub fn agent_opts(&self) -> AgentOptions {
        let mut o = AgentOptions::new(self.root());
        o.activator.mode = ActivationMode::Direct;
        o.flake = FlakeSource::TargetFile(PathBuf::from(layout::FLAKE_TARGET));
        o.build_timeout = Duration::from_secs(120);
        o
    }

    pub fn profile(&self) -> PathBuf {
        self.root.join("nix/var/nix/profiles/system")
    }

    /// Where the system profile points, through its generation link.
    pub fn profile_target(&self) -> Option<String> {
        let gen = std::fs::read_link(self.profile()).ok()?;
        let target = std::fs::read_link(self.profile().parent()?.join(gen)).ok()?;
        Some(target.display().to_string())
    }

    pub fn current_system(&self) -> Option<String> {
        std::fs::read_link(self.root.join("run/current-system"))
            .ok()
            .map(|p| p.display().to_string())
    }

    pub fn state_file(&self, name: &str) -> PathBuf {
        self.root.join("var/lib/fabric").join(name)
    }

    pub fn marker(&self) -> PathBuf {
        self.root.join("var/lib/nixos-bootstrap-complete")
    }

    /// The driver binary, with the test's PATH and NIX_CONFIG.
    pub fn driver(&self, args: &[&str]) -> Command {
        // option_env: the `fabric` CLI's tests share these fixtures, and
        // Cargo builds this driver only for fabric-converge's own tests.
        let Some(driver) = option_env!("CARGO_BIN_EXE_fabric-converge-driver") else {
            panic!("the driver exists in fabric-converge's tests only");
        };
        let mut c = Command::new(driver);
        c.args(args)
            .env("PATH", self.path_var())
            .env("NIX_CONFIG", NIX_CONFIG);
        c
    }

    /// Waits until the held build (or switch) has started; returns its pid.
    pub fn wait_build_started(&self) -> i32 {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(t) = std::fs::read_to_string(self.started_file()) {
                if let Ok(pid) = t.trim().parse() {
                    return pid;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the held build never started");
    }

    pub fn release_build(&self) {
        let _ = std::fs::remove_file(self.hold_file());
    }
}

pub fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}

pub fn store_path(s: &str) -> StorePath {
    StorePath::parse(s).unwrap()
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
}

/// The nix-env profile and nix store are shared by every test in this run;
/// bail out early with a clear message if Nix cannot build at all here.
pub fn require_nix() {
    let out = Command::new("nix")
        .args(["--version"])
        .output()
        .expect("nix (Debian nix-bin) must be installed: apt-get install nix-bin");
    assert!(out.status.success());
    for d in [
        "/nix/store",
        "/nix/var/nix/profiles",
        "/nix/var/nix/gcroots",
    ] {
        std::fs::create_dir_all(d).expect("the tests run as root and may create /nix");
    }
}

/// A port free right now on 127.0.0.1. A server started on it is retried
/// on another when something took it meanwhile.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
