//! External commands: typed argv (never a shell string), a timeout on every
//! call, the tail of stderr kept for the error, and cancellation by signal.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::credential::FetchAuth;

/// How much of a command's stderr an error keeps.
const TAIL_BYTES: usize = 4096;
/// How long a cancelled or timed-out child gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Variables that belong to this process under systemd and must not leak
/// into children (a child could otherwise report readiness on our behalf).
const PRIVATE_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// One external command, built as argv.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
    cancellable: bool,
    echo_stderr: bool,
    auth: Option<FetchAuth>,
}

impl Cmd {
    /// `program` is a name looked up on `PATH`, or an absolute path.
    pub fn new(program: impl AsRef<OsStr>, timeout: Duration) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            timeout,
            cancellable: true,
            echo_stderr: false,
            auth: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets a variable for the child only.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Give this fetching child (git, nix) the credential, through its
    /// environment only: never its argv, which `ps` shows and the runner
    /// records.
    pub fn fetch_auth(mut self, auth: Option<&FetchAuth>) -> Self {
        self.auth = auth.cloned();
        self
    }

    /// A command that must run to its end once started (activation, profile
    /// switch): SIGTERM to fabric does not interrupt it.
    pub fn uninterruptible(mut self) -> Self {
        self.cancellable = false;
        self
    }

    /// Copy the child's stderr lines to the log as they come (build and
    /// activation output belongs in the journal).
    pub fn echo_stderr(mut self) -> Self {
        self.echo_stderr = true;
        self
    }

    /// The program followed by its arguments, for tests and messages.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The argv as one line, each argument quoted only when needed.
    pub fn display(&self) -> String {
        self.argv()
            .iter()
            .map(|a| {
                if !a.is_empty()
                    && a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,%^~".contains(&b))
                {
                    a.clone()
                } else {
                    format!("'{}'", a.replace('\'', "'\\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// All of stdout.
    pub stdout: String,
    /// The last few KiB of stderr.
    pub stderr_tail: String,
    /// Wall time.
    pub duration: Duration,
}

/// A command could not be run to a successful end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommandError {
    /// The program is not on `PATH`.
    #[error("`{program}` was not found on PATH ({path}); install it or fix PATH")]
    NotFound {
        /// The program name.
        program: String,
        /// The PATH searched.
        path: String,
    },
    /// The program could not be started.
    #[error("could not start `{command}`: {reason}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        reason: String,
    },
    /// It exited non-zero or was killed.
    #[error("`{command}` {}{}", exit_words(*code), tail_words(tail))]
    Exit {
        /// The command line.
        command: String,
        /// The exit code, or `None` when a signal ended it.
        code: Option<i32>,
        /// The end of its stderr.
        tail: String,
    },
    /// It ran longer than its timeout and was stopped.
    #[error("`{command}` did not finish within {}; it was stopped{}", humantime::format_duration(*after), tail_words(tail))]
    Timeout {
        /// The command line.
        command: String,
        /// The timeout.
        after: Duration,
        /// The end of its stderr.
        tail: String,
    },
    /// fabric was asked to stop (SIGTERM/SIGINT) and stopped it.
    #[error("`{command}` was stopped because fabric received a termination signal")]
    Cancelled {
        /// The command line.
        command: String,
    },
}

fn exit_words(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited with code {c}"),
        None => "was killed by a signal".to_string(),
    }
}

fn tail_words(tail: &str) -> String {
    let t = tail.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        format!("; its output ended with:\n{t}")
    }
}

impl CommandError {
    /// The error in one line, without the output tail.
    pub fn summary(&self) -> String {
        let text = self.to_string();
        let first = text.lines().next().unwrap_or_default();
        first
            .strip_suffix("; its output ended with:")
            .unwrap_or(first)
            .to_string()
    }

    /// The command line, when one was started.
    pub fn command(&self) -> Option<&str> {
        match self {
            Self::NotFound { program, .. } => Some(program),
            Self::Spawn { command, .. }
            | Self::Exit { command, .. }
            | Self::Timeout { command, .. }
            | Self::Cancelled { command } => Some(command),
        }
    }

    /// The end of the command's stderr, if any.
    pub fn tail(&self) -> &str {
        match self {
            Self::Exit { tail, .. } | Self::Timeout { tail, .. } => tail,
            _ => "",
        }
    }

    /// The exit code, when the command exited on its own.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Exit { code, .. } => *code,
            _ => None,
        }
    }

    /// True when the command was stopped because of a termination signal.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled { .. })
    }
}

/// Set by SIGTERM/SIGINT; checked by long waits and cancellable commands.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
}

impl Cancel {
    /// A token nobody has cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token set by SIGTERM or SIGINT. A second SIGINT ends the process at
    /// once (for an operator pressing Ctrl-C twice); SIGTERM never does, so
    /// an activation in progress runs to its end.
    pub fn on_termination_signals() -> std::io::Result<Self> {
        let cancel = Self::new();
        signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGINT,
            i32::from(crate::layout::exit::CANCELLED),
            Arc::clone(&cancel.flag),
        )?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&cancel.flag))?;
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&cancel.flag))?;
        Ok(cancel)
    }

    /// Asks everything holding this token to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether stopping was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`; returns false when cancelled meanwhile.
    pub fn sleep(&self, d: Duration, liveness: &Liveness) -> bool {
        let end = Instant::now() + d;
        loop {
            liveness.beat();
            if self.is_cancelled() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            thread::sleep((end - now).min(Duration::from_millis(200)));
        }
    }
}

/// The last moment the converge loop showed it was alive. The systemd
/// watchdog is fed only while this keeps moving, so a wedged loop gets the
/// agent restarted, but a long build (whose wait loop beats) does not.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    last: Arc<AtomicU64>,
}

impl Liveness {
    /// Records "alive now".
    pub fn beat(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn since_last(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// Runs commands from `PATH`. Tests give it their own `PATH` (with stub
/// `systemctl`/`systemd-run`) and extra variables such as `NIX_CONFIG`,
/// without touching this process's environment.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    path: Option<OsString>,
    env: Vec<(OsString, OsString)>,
    liveness: Liveness,
    journal: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Runner {
    /// A runner that uses this process's environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this `PATH` to find programs, and give it to children.
    pub fn with_path(mut self, path: impl Into<OsString>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Give children this variable too.
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The liveness beaten while commands run.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Every argv this runner started, oldest first (tests and `--verbose`
    /// diagnostics read it).
    pub fn started(&self) -> Vec<Vec<String>> {
        self.journal.lock().map(|j| j.clone()).unwrap_or_default()
    }

    /// Forgets [`Runner::started`].
    pub fn clear_started(&self) {
        if let Ok(mut j) = self.journal.lock() {
            j.clear();
        }
    }

    fn search_path(&self) -> OsString {
        self.path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"))
    }

    /// Finds `program` on PATH (or checks it when it is a path).
    pub fn resolve(&self, program: &OsStr) -> Result<PathBuf, CommandError> {
        let p = Path::new(program);
        if p.components().count() > 1 {
            return Ok(p.to_path_buf());
        }
        let path = self.search_path();
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(p);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        Err(CommandError::NotFound {
            program: program.to_string_lossy().into_owned(),
            path: path.to_string_lossy().into_owned(),
        })
    }

    /// Runs `cmd`; any exit code is returned as `Ok`.
    pub fn run_status(&self, cmd: &Cmd, cancel: &Cancel) -> Result<Output, CommandError> {
        let command = cmd.display();
        let exe = self.resolve(&cmd.program)?;
        if let Ok(mut j) = self.journal.lock() {
            j.push(cmd.argv());
        }
        tracing::debug!(command = %command, "running");
        let mut c = Command::new(&exe);
        c.args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in PRIVATE_ENV {
            c.env_remove(k);
        }
        if let Some(path) = &self.path {
            c.env("PATH", path);
        }
        for (k, v) in self.env.iter().chain(&cmd.env) {
            c.env(k, v);
        }
        if let Some(auth) = &cmd.auth {
            for (k, v) in auth.env() {
                c.env(k, v);
            }
            if let Some(extra) = auth.nix_config() {
                // Appended to whatever NIX_CONFIG the child would have had,
                // so the machine's (or the test's) settings stay in force.
                let base = cmd
                    .env
                    .iter()
                    .rev()
                    .chain(self.env.iter().rev())
                    .find(|(k, _)| k == "NIX_CONFIG")
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var_os("NIX_CONFIG"))
                    .unwrap_or_default();
                let mut merged = base;
                if !merged.is_empty() {
                    merged.push("\n");
                }
                merged.push(extra);
                c.env("NIX_CONFIG", merged);
            }
        }
        let started = Instant::now();
        let mut child = c.spawn().map_err(|e| CommandError::Spawn {
            command: command.clone(),
            reason: e.to_string(),
        })?;
        let (out_rx, err_rx) = collect_streams(&mut child, cmd.echo_stderr, &cmd.program);

        // A thread blocks in wait() so that the exit is seen at once; this
        // loop only wakes to beat the liveness and check cancel/timeout.
        let pid = rustix::process::Pid::from_child(&child);
        let (exit_tx, exit_rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });
        let ended = loop {
            match exit_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(status)) => break Ok(status),
                Ok(Err(e)) => {
                    return Err(CommandError::Spawn {
                        command,
                        reason: e.to_string(),
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(CommandError::Spawn {
                        command,
                        reason: "lost track of the child process".into(),
                    })
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.liveness.beat();
            if cmd.cancellable && cancel.is_cancelled() {
                stop(pid, &exit_rx);
                break Err(Stopped::Cancelled);
            }
            if started.elapsed() >= cmd.timeout {
                stop(pid, &exit_rx);
                break Err(Stopped::Timeout);
            }
        };
        // A grandchild may keep the pipes open after the child is gone; wait
        // for the readers only briefly then.
        let grace = if ended.is_ok() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        let stdout = out_rx.recv_timeout(grace).unwrap_or_default();
        let stderr_tail = err_rx.recv_timeout(grace).unwrap_or_default();
        let duration = started.elapsed();
        match ended {
            Ok(status) => Ok(Output {
                code: status.code(),
                stdout,
                stderr_tail,
                duration,
            }),
            Err(Stopped::Cancelled) => Err(CommandError::Cancelled { command }),
            Err(Stopped::Timeout) => Err(CommandError::Timeout {
                command,
                after: cmd.timeout,
                tail: stderr_tail,
            }),
        }
    }

    /// Runs `cmd` and requires exit code 0.
    pub fn run(&self, cmd: &Cmd, cancel: &Cancel) -> Result<Output, CommandError> {
        let out = self.run_status(cmd, cancel)?;
        if out.code == Some(0) {
            Ok(out)
        } else {
            Err(CommandError::Exit {
                command: cmd.display(),
                code: out.code,
                tail: out.stderr_tail,
            })
        }
    }
}

enum Stopped {
    Cancelled,
    Timeout,
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// SIGTERM, a grace period, then SIGKILL. The child is still unreaped (its
/// waiter has not reported), so its pid cannot have been reused.
fn stop(
    pid: rustix::process::Pid,
    exited: &mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
) {
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    if exited.recv_timeout(KILL_GRACE).is_ok() {
        return;
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    let _ = exited.recv_timeout(KILL_GRACE);
}

fn collect_streams(
    child: &mut Child,
    echo: bool,
    program: &OsStr,
) -> (mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let (out_tx, out_rx) = mpsc::channel();
    let (err_tx, err_rx) = mpsc::channel();
    if let Some(mut out) = child.stdout.take() {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            let _ = out_tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    }
    if let Some(err) = child.stderr.take() {
        let name = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        thread::spawn(move || {
            let mut tail = String::new();
            let mut reader = BufReader::new(err);
            let mut line = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line);
                if echo {
                    tracing::info!(target: "fabric::child", "{name}: {}", text.trim_end());
                }
                tail.push_str(&text);
                if tail.len() > 2 * TAIL_BYTES {
                    tail = keep_tail(&tail, TAIL_BYTES);
                }
                line.clear();
            }
            let _ = err_tx.send(keep_tail(&tail, TAIL_BYTES));
        });
    }
    (out_rx, err_rx)
}

/// The last `max` bytes of `s`, cut at a line start when possible.
pub fn keep_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let cut = &s[start..];
    match cut.find('\n') {
        Some(i) if i + 1 < cut.len() => cut[i + 1..].to_string(),
        _ => cut.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_kept_exactly_and_displayed_quoted() {
        let c = Cmd::new("nix", Duration::from_secs(1))
            .args(["build", "--json"])
            .arg("git+file:///r?ref=main#nixosConfigurations.\"h\".x");
        assert_eq!(
            c.argv()[3],
            "git+file:///r?ref=main#nixosConfigurations.\"h\".x"
        );
        assert_eq!(
            c.display(),
            "nix build --json 'git+file:///r?ref=main#nixosConfigurations.\"h\".x'"
        );
    }

    #[test]
    fn keeps_stderr_tail_and_exit_code() {
        let r = Runner::new();
        let c = Cmd::new("/bin/sh", Duration::from_secs(10))
            .args(["-c", "echo out; echo first >&2; echo last >&2; exit 3"]);
        let e = r.run(&c, &Cancel::new()).unwrap_err();
        assert_eq!(e.code(), Some(3));
        assert!(e.tail().contains("last"), "{e}");
        assert!(e.to_string().contains("exited with code 3"), "{e}");
        assert_eq!(
            e.summary(),
            "`/bin/sh -c 'echo out; echo first >&2; echo last >&2; exit 3'` exited with code 3"
        );
        let ok = r
            .run(
                &Cmd::new("/bin/sh", Duration::from_secs(10)).args(["-c", "echo hi"]),
                &Cancel::new(),
            )
            .unwrap();
        assert_eq!(ok.stdout, "hi\n");
    }

    #[test]
    fn timeout_stops_the_child() {
        let r = Runner::new();
        let c = Cmd::new("/bin/sh", Duration::from_millis(300)).args(["-c", "exec sleep 30"]);
        let t = Instant::now();
        let e = r.run(&c, &Cancel::new()).unwrap_err();
        assert!(matches!(e, CommandError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn cancel_stops_cancellable_commands_only() {
        let r = Runner::new();
        let cancel = Cancel::new();
        cancel.cancel();
        let c = Cmd::new("/bin/sh", Duration::from_secs(30)).args(["-c", "exec sleep 30"]);
        assert!(r.run(&c, &cancel).unwrap_err().is_cancelled());
        let c = Cmd::new("/bin/sh", Duration::from_secs(30))
            .args(["-c", "sleep 0.2; exit 0"])
            .uninterruptible();
        assert!(r.run(&c, &cancel).is_ok());
    }

    #[test]
    fn missing_program_names_path() {
        let r = Runner::new().with_path("/nonexistent");
        let e = r
            .run(&Cmd::new("nix", Duration::from_secs(1)), &Cancel::new())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("`nix` was not found on PATH (/nonexistent)"),
            "{e}"
        );
    }

    #[test]
    fn tail_cuts_at_line_start() {
        let s = "aaaa\nbbbb\ncccc\n";
        assert_eq!(keep_tail(s, 7), "cccc\n");
        assert_eq!(keep_tail(s, 100), s);
    }
}
