//! The `scanner` daemon running inside a namespace, its output as a stream.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::PathBuf,
    process::{Child, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::netns::Netns;
pub use crate::netns::{BPFFS_DIR, SOCKET_DIR, pin_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A running `scanner run`. Killed (SIGKILL) on drop if still running.
pub struct Daemon {
    child: Child,
    lines: Receiver<(Stream, String, SystemTime)>,
    stdout: Vec<String>,
    /// When each stdout line was read from the pipe.
    stdout_at: Vec<SystemTime>,
    stderr: Vec<String>,
    echo: bool,
    socket: PathBuf,
}

/// The pin directory of the daemon watching `ns`; removed with `ns`.
pub fn pin_dir(ns: &Netns) -> anyhow::Result<PathBuf> {
    static MOUNTED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    MOUNTED
        .get_or_init(|| mount_bpffs().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(pin_path(ns.name()))
}

fn mount_bpffs() -> anyhow::Result<()> {
    std::fs::create_dir_all(BPFFS_DIR).with_context(|| format!("creating {BPFFS_DIR}"))?;
    let path = std::ffi::CString::new(BPFFS_DIR)?;
    // SAFETY: a valid path and a zeroed statfs buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statfs writes only into `st`.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type == 0xcafe_4a11 {
        return Ok(());
    }
    crate::netns::run(std::process::Command::new("mount").args(["-t", "bpf", "bpf", BPFFS_DIR]))?;
    Ok(())
}

/// The scanner binary: `$SCANNER_BIN`, else the workspace's debug build.
pub fn scanner_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("SCANNER_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/scanner"),
    };
    if !path.exists() {
        bail!(
            "scanner binary not found at {} (build it with `cargo build -p scanner-userspace`, or run `cargo xtask test`)",
            path.display()
        );
    }
    Ok(path)
}

/// `scanner <args> --socket <socket>` run here (not in a namespace):
/// (success, stdout, stderr).
pub fn cli(socket: &std::path::Path, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let out = std::process::Command::new(scanner_binary()?)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The row of `address` in a `scanner list --json` answer (null when it is
/// not listed).
pub fn listed(list: &Value, address: &str) -> Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == address)
        .cloned()
        .unwrap_or_default()
}

/// [`cli`] that must succeed; its stdout.
pub fn cli_ok(socket: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let (success, stdout, stderr) = cli(socket, args)?;
    anyhow::ensure!(success, "scanner {args:?} failed: {stderr}");
    Ok(stdout)
}

/// Relays `reader`'s lines, each with the time it was read: a line is
/// read as soon as the daemon's write reaches the pipe.
fn forward(stream: Stream, reader: impl Read, tx: Sender<(Stream, String, SystemTime)>) {
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        if tx.send((stream, line, SystemTime::now())).is_err() {
            break;
        }
    }
}

impl Daemon {
    /// Starts `scanner <args>` inside `ns`. `scanner run` gets a control
    /// socket of its own (see [`Daemon::socket`]) unless `args` name one.
    pub fn start(ns: &Netns, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_via(ns, &[], &[], args)
    }

    /// [`Daemon::start`] through a `wrapper` command (e.g. setpriv) and
    /// with more environment variables.
    pub fn start_via(
        ns: &Netns,
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn(ns, wrapper, env, args, Stdio::piped())
    }

    /// [`Daemon::start`] with stdout a pipe nobody reads from any more (its
    /// read end closed before the daemon starts): every write to it fails
    /// with EPIPE. Only the log (stderr) is read.
    pub fn start_with_closed_stdout(ns: &Netns, args: &[&str]) -> anyhow::Result<Self> {
        let (reader, writer) = std::io::pipe().context("creating a pipe")?;
        drop(reader);
        Self::spawn(ns, &[], &[], args, Stdio::from(writer))
    }

    fn spawn(
        ns: &Netns,
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
        stdout: Stdio,
    ) -> anyhow::Result<Self> {
        let bin = scanner_binary()?;
        let bin = bin.to_str().context("scanner path is not UTF-8")?;
        let socket = PathBuf::from(SOCKET_DIR).join(format!("{}.sock", ns.name()));
        let mut args: Vec<&str> = args.to_vec();
        let socket_str = socket.to_str().context("socket path is not UTF-8")?;
        let pins = pin_dir(ns)?;
        let pins_str = pins.to_str().context("pin path is not UTF-8")?;
        if args.first() == Some(&"run") {
            if !args.contains(&"--socket") {
                args.extend(["--socket", socket_str]);
            }
            if !args.contains(&"--pin-dir") {
                args.extend(["--pin-dir", pins_str]);
            }
            // Logs on stderr, where the fixture reads them, whether or not
            // a journal runs on this machine.
            if !args.contains(&"--log") {
                args.extend(["--log", "stderr"]);
            }
            // Tests keep history only where they test it, in a file of
            // their own: never in the machine's /var/lib/scanner.
            if !args.contains(&"--history") && !args.contains(&"--no-history") {
                args.push("--no-history");
            }
        }
        // `ip netns exec` execs the program: the child's pid is the daemon's
        // (wrappers like setpriv exec it too).
        let (program, rest) = match wrapper.split_first() {
            Some((w, rest)) => (*w, [rest, &[bin]].concat()),
            None => (bin, Vec::new()),
        };
        let mut child = ns
            .command(program)
            .args(&rest)
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the scanner daemon")?;
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().context("daemon stderr")?;
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || forward(Stream::Stdout, out, tx));
        }
        std::thread::spawn(move || forward(Stream::Stderr, err, tx));
        Ok(Self {
            child,
            lines,
            stdout: Vec::new(),
            stdout_at: Vec::new(),
            stderr: Vec::new(),
            echo: false,
            socket,
        })
    }

    /// The daemon's control socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Print every line as it arrives (the demo shows the daemon live).
    pub fn echo(mut self, on: bool) -> Self {
        self.echo = on;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line so far.
    pub fn stdout(&self) -> &[String] {
        &self.stdout
    }

    /// Every stdout line so far that parses as JSON.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every stdout line so far that parses as JSON, with the time it
    /// was read from the daemon's stdout.
    pub fn timed_events(&self) -> Vec<(SystemTime, Value)> {
        self.stdout_at
            .iter()
            .zip(&self.stdout)
            .filter_map(|(at, l)| Some((*at, serde_json::from_str(l).ok()?)))
            .collect()
    }

    fn record(&mut self, stream: Stream, line: String, at: SystemTime) {
        if self.echo {
            match stream {
                Stream::Stdout => println!("[scanner] {line}"),
                Stream::Stderr => println!("[scanner log] {line}"),
            }
        }
        match stream {
            Stream::Stdout => {
                self.stdout.push(line);
                self.stdout_at.push(at);
            }
            Stream::Stderr => self.stderr.push(line),
        }
    }

    /// The daemon's recent log lines, for failure messages.
    pub fn log_tail(&self) -> String {
        let from = self.stderr.len().saturating_sub(30);
        self.stderr[from..].join("\n")
    }

    /// Takes every line that has arrived, without waiting; how many.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Ok((stream, line, at)) = self.lines.try_recv() {
            self.record(stream, line, at);
            n += 1;
        }
        n
    }

    /// Waits for a stdout line matching `pred`; earlier lines are kept.
    pub fn wait_for_line(
        &mut self,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.wait_on(Stream::Stdout, pred, timeout)
    }

    /// Waits for a log (stderr) line containing `text`.
    pub fn wait_for_log(&mut self, text: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_on(Stream::Stderr, |l| l.contains(text), timeout)
    }

    /// Waits for a line of `stream` matching `pred`, among those read so far
    /// and those to come.
    fn wait_on(
        &mut self,
        stream: Stream,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let seen = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        if let Some(line) = seen.iter().find(|l| pred(l)) {
            return Ok(line.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((from, line, at)) => {
                    let hit = from == stream && pred(&line);
                    self.record(from, line.clone(), at);
                    if hit {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "no matching daemon {stream:?} line within {timeout:?}; stdout so far:\n{}\nlog:\n{}",
                        self.stdout.join("\n"),
                        self.log_tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "daemon exited ({status:?}) before the expected output; stdout:\n{}\nlog:\n{}",
                        self.stdout.join("\n"),
                        self.log_tail()
                    )
                }
            }
        }
    }

    /// Waits for a JSON event matching `pred`.
    pub fn wait_for_event(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let line = self.wait_for_line(
            |l| serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v)),
            timeout,
        )?;
        serde_json::from_str(&line).map_err(|e| anyhow!("{e}: {line}"))
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the daemon.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: kill(2) with our own child's pid.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Every log (stderr) line so far.
    pub fn log(&self) -> &[String] {
        &self.stderr
    }

    /// Waits up to `timeout` for the daemon to exit by itself; its status.
    pub fn wait_status(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                while let Ok((stream, line, at)) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.record(stream, line, at);
                }
                return Ok(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the daemon did not exit within {timeout:?}; log:\n{}",
                    self.log_tail()
                );
            }
            // Output arrives while it runs; its end is the exit.
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok((stream, line, at)) => self.record(stream, line, at),
                Err(RecvTimeoutError::Timeout) => {}
                // Every output closed: the process is on its way out.
                Err(RecvTimeoutError::Disconnected) => {
                    return self.child.wait().context("reaping the daemon");
                }
            }
        }
    }

    /// Waits until the program is attached to `iface`.
    pub fn wait_attached(&mut self, iface: &str) -> anyhow::Result<Value> {
        self.wait_for_event(
            |e| e["event"] == "attached" && e["iface"] == iface,
            Duration::from_secs(60),
        )
    }

    /// SIGKILL (a crash: no cleanup at all), then reaps the daemon.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.wait_exit()
    }

    /// Reads the output to its end and reaps the daemon (after a signal).
    pub fn wait_exit(&mut self) -> anyhow::Result<()> {
        while let Ok((stream, line, at)) = self.lines.recv_timeout(Duration::from_secs(30)) {
            self.record(stream, line, at);
        }
        self.child.wait().context("reaping the daemon")?;
        Ok(())
    }

    /// SIGTERM, then reads the output to its end and reaps the daemon.
    /// Returns its exit status; every line stays available.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((stream, line, at)) => self.record(stream, line, at),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    bail!(
                        "daemon did not exit within 30 s of SIGTERM; log:\n{}",
                        self.log_tail()
                    );
                }
            }
        }
        self.child.wait().context("reaping the daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
