//! A real CrowdSec agent (Debian's `crowdsec` with `-no-api`) that runs
//! scanner's collection (packaging/crowdsec) against a [`Lapi`]: from a
//! private configuration directory holding the collection's files copied
//! in, as docs/fleet.md installs it, plus the two hub parsers it builds on
//! (crowdsecurity/syslog-logs and dateparse-enrich, from Debian's copy of
//! the hub). It either replays a file of syslog lines (`-dsn`) or listens
//! on a syslog address in a namespace.

use std::{
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    crowdsec::Lapi,
    netns::{Netns, run},
};

/// Debian's copy of the hub (the crowdsec package ships it).
const HUB: &str = "/usr/share/crowdsec/hub";

/// The collection in the source tree.
pub fn collection_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/crowdsec")
}

/// An agent's configuration directory, and its process when it runs.
pub struct Agent {
    dir: PathBuf,
    child: Option<Child>,
    metrics_port: Option<u16>,
}

impl Agent {
    /// A configuration for machine `name` of `lapi` (registered here), with
    /// the collection installed; `acquis` is its acquisition file's text.
    pub fn new(lapi: &Lapi, ns: &Netns, name: &str, acquis: &str) -> anyhow::Result<Self> {
        // The namespace's name too: tests running at once each name their
        // agent "central".
        let dir = std::env::temp_dir().join(format!(
            "scanner-agent-{}-{}-{name}",
            std::process::id(),
            ns.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "parsers/s00-raw",
            "parsers/s01-parse",
            "parsers/s02-enrich",
            "scenarios",
            "data",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let password = format!("{name}-password");
        lapi.add_machine(ns, name, &password)?;
        let d = dir.display();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n\
                 config_paths:\n  config_dir: {d}\n  data_dir: {d}/data\n  hub_dir: {HUB}\n  index_path: {HUB}/.index.json\n  simulation_path: {d}/simulation.yaml\n\
                 crowdsec_service:\n  acquisition_path: {d}/acquis.yaml\n  parser_routines: 1\n\
                 db_config:\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n\
                 prometheus:\n  enabled: false\n\
                 api:\n  client:\n    credentials_path: {d}/local_api_credentials.yaml\n"
            ),
        )?;
        std::fs::write(
            dir.join("local_api_credentials.yaml"),
            format!("url: {}\nlogin: {name}\npassword: {password}\n", lapi.url()),
        )?;
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n")?;
        std::fs::write(dir.join("acquis.yaml"), acquis)?;
        run(std::process::Command::new("cp")
            .arg("-r")
            .arg("/etc/crowdsec/patterns")
            .arg(&dir))?;
        for (from, to) in [
            (
                "parsers/s00-raw/crowdsecurity/syslog-logs.yaml",
                "parsers/s00-raw",
            ),
            (
                "parsers/s02-enrich/crowdsecurity/dateparse-enrich.yaml",
                "parsers/s02-enrich",
            ),
        ] {
            std::fs::copy(
                Path::new(HUB).join(from),
                dir.join(to)
                    .join(Path::new(from).file_name().unwrap_or_default()),
            )
            .with_context(|| format!("copying {from} from Debian's hub"))?;
        }
        let collection = collection_dir();
        for sub in ["parsers/s01-parse", "scenarios"] {
            for entry in std::fs::read_dir(collection.join(sub))? {
                let path = entry?.path();
                std::fs::copy(
                    &path,
                    dir.join(sub).join(path.file_name().unwrap_or_default()),
                )?;
            }
        }
        Ok(Self {
            dir,
            child: None,
            metrics_port: None,
        })
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// Replays `lines` (syslog lines as a file holds them) through the
    /// collection inside `ns`; the agent's output.
    pub fn replay(&self, ns: &Netns, lines: &str) -> anyhow::Result<String> {
        let file = self.dir.join("replay.log");
        std::fs::write(&file, lines)?;
        let out: Output = ns
            .command("timeout")
            .arg("120")
            .arg("crowdsec")
            .arg("-c")
            .arg(self.config())
            .arg("-dsn")
            .arg(format!("file://{}", file.display()))
            .args(["-type", "syslog", "-no-api"])
            .stdin(Stdio::null())
            .output()
            .context("running crowdsec (cargo xtask setup installs it)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("the replay failed ({}): {text}", out.status);
        }
        Ok(text)
    }

    /// `cscli explain` of one line, with this agent's parsers.
    pub fn explain(&self, ns: &Netns, line: &str) -> anyhow::Result<String> {
        let out = run(ns
            .command("cscli")
            .arg("-c")
            .arg(self.config())
            .args(["explain", "--log", line, "--type", "syslog"]))?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Runs the agent on its acquisition inside `ns` until dropped; returns
    /// once its log says it reads its sources.
    pub fn start(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("agent.log"))?;
        let child = ns
            .command("crowdsec")
            .arg("-c")
            .arg(self.config())
            .arg("-no-api")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the crowdsec agent")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("the agent exited ({status}): {}", self.log());
            }
            if self.log().contains("Starting processing data") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the agent did not start within 60 s: {}", self.log())
    }

    /// Serves the agent's Prometheus metrics on 127.0.0.1:`port` of the
    /// namespace it runs in (call before [`Agent::start`]).
    pub fn enable_metrics(&mut self, port: u16) -> anyhow::Result<()> {
        let path = self.config();
        let text = std::fs::read_to_string(&path)?;
        let on = format!(
            "prometheus:\n  enabled: true\n  level: full\n  listen_addr: 127.0.0.1\n  listen_port: {port}\n"
        );
        anyhow::ensure!(text.contains("prometheus:\n  enabled: false\n"), "{text}");
        std::fs::write(&path, text.replace("prometheus:\n  enabled: false\n", &on))?;
        self.metrics_port = Some(port);
        Ok(())
    }

    /// The sum of the agent's samples of `metric` whose labels contain
    /// `label` (`name="scanner/scanner-logs"`): 0 when there is none yet.
    pub fn metric_sum(&self, ns: &Netns, metric: &str, label: &str) -> anyhow::Result<f64> {
        let port = self.metrics_port.context("the agent's metrics are off")?;
        let body = crate::traffic::http_exchange(
            ns,
            "127.0.0.1",
            port,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }

    /// The running agent's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Stops the running agent by its pid.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: a signal to the child this fixture spawned.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The file format CrowdSec's syslog parser reads, `prog[pid]: msg`: the
/// traditional format writes an RFC 5424 message's tag without the colon
/// (docs/fleet.md gives operators the same line). DNS is off: rsyslog
/// resolves each new sender's address, which stalls a session for as long
/// as the resolver takes to fail.
const TEMPLATE: &str = "template(name=\"crowdsec\" type=\"string\" \
    string=\"%TIMESTAMP% %HOSTNAME% %APP-NAME%[%PROCID%]:%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n\")";

/// rsyslog as a central collector (`rsyslogd -n`, a private configuration,
/// no system socket): TCP with octet counting on `listen`, every message
/// written to one file in the traditional format, which an [`Agent`]'s
/// `file` datasource reads. Stopped by its pid on drop.
pub struct Rsyslog {
    dir: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    /// Starts it inside `ns` on `addr:port`; returns once it listens.
    pub fn start(ns: &Netns, addr: &str, port: u16) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("scanner-rsyslog-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        std::fs::write(
            dir.join("rsyslog.conf"),
            format!(
                "global(workDirectory=\"{d}\" net.enableDNS=\"off\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"{addr}\" port=\"{port}\" ruleset=\"scanner\")\n\
                 {TEMPLATE}\n\
                 ruleset(name=\"scanner\") {{\n  action(type=\"omfile\" file=\"{d}/scanner.log\" template=\"crowdsec\")\n}}\n"
            ),
        )?;
        std::fs::write(dir.join("scanner.log"), "")?;
        let log = std::fs::File::create(dir.join("rsyslogd.log"))?;
        let child = ns
            .command("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rsyslogd (cargo xtask setup installs it)")?;
        let mut me = Self {
            dir,
            child: Some(child),
        };
        let to: std::net::SocketAddr = format!("{addr}:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = &mut me.child
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "rsyslogd exited ({status}): {}",
                    std::fs::read_to_string(me.dir.join("rsyslogd.log")).unwrap_or_default()
                );
            }
            if ns.enter(|| {
                std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok()
            })? {
                return Ok(me);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "rsyslogd did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The file it writes.
    pub fn file(&self) -> PathBuf {
        self.dir.join("scanner.log")
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: a signal to the child this fixture spawned.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
