//! A real CrowdSec Local API for the fleet tests: Debian's `crowdsec` run
//! alone (`-no-cs`: no log processing, no Central API), with its own config
//! directory and SQLite database, listening on a lab address inside a
//! namespace; `cscli` against it; and a lab of two servers, an attacker
//! and the Local API on one bridged network.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, run};

/// The Local API's address on the fleet lab.
pub const LAPI_V4: &str = "198.18.0.10";
pub const LAPI_PORT: u16 = 8080;

/// A Local API process, stopped by pid (and its directory removed) on drop.
pub struct Lapi {
    dir: PathBuf,
    listen: String,
    tls: bool,
    child: Option<Child>,
}

impl Lapi {
    /// Starts a Local API inside `ns`, listening on `addr:port`, with its
    /// state in a fresh directory; returns once it answers /health.
    pub fn start(ns: &Netns, addr: &str, port: u16) -> anyhow::Result<Self> {
        Self::start_with(ns, addr, port, None)
    }

    /// [`Lapi::start`] serving https with this certificate and key (PEM).
    pub fn start_with(
        ns: &Netns,
        addr: &str,
        port: u16,
        tls: Option<(&Path, &Path)>,
    ) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("scanner-lapi-{}-{}", std::process::id(), ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let listen = format!("{addr}:{port}");
        let d = dir.display();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n\
                 config_paths:\n  config_dir: {d}\n  data_dir: {d}\n  hub_dir: {d}/hub\n  index_path: {d}/hub/.index.json\n\
                 db_config:\n  type: sqlite\n  db_path: {d}/crowdsec.db\n  use_wal: false\n\
                 api:\n  client:\n    insecure_skip_verify: true\n    credentials_path: {d}/local_api_credentials.yaml\n  \
                 server:\n    listen_uri: {listen}\n    profiles_path: {d}/profiles.yaml\n    console_path: {d}/console.yaml\n{tls}",
                tls = tls.map_or(String::new(), |(cert, key)| format!(
                    "    tls:\n      cert_file: {}\n      key_file: {}\n",
                    cert.display(),
                    key.display()
                ))
            ),
        )?;
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() in [\"Ip\", \"Range\"]\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )?;
        let mut lapi = Self {
            dir,
            listen,
            tls: tls.is_some(),
            child: None,
        };
        lapi.run(ns)?;
        // cscli's own machine: `decisions` and `alerts` go through the API.
        let url = lapi.url();
        lapi.cscli(
            ns,
            &[
                "machines",
                "add",
                "cscli-local",
                "--password",
                "cscli-local-pw",
                "-u",
                &url,
            ],
        )?;
        Ok(lapi)
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// Starts the process (again, on the same database) and waits for it.
    pub fn run(&mut self, ns: &Netns) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("lapi.log"))?;
        let child = ns
            .command("crowdsec")
            .arg("-c")
            .arg(self.config())
            .arg("-no-cs")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting crowdsec (cargo xtask setup installs it)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("crowdsec exited ({status}): {}", self.log_tail());
            }
            if ns.enter(|| health(&self.listen, self.tls))? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the Local API did not answer within 30 s: {}",
            self.log_tail()
        )
    }

    /// Stops the process by its pid (SIGTERM, then SIGKILL), keeping its
    /// database for [`Lapi::run`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
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

    /// `cscli -c CONFIG args` inside `ns` (where the API is reachable).
    pub fn cscli(&self, ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
        let out = run(ns.command("cscli").arg("-c").arg(self.config()).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A new bouncer's API key.
    pub fn bouncer_key(&self, ns: &Netns, name: &str) -> anyhow::Result<String> {
        let key = self.cscli(ns, &["bouncers", "add", name, "-o", "raw"])?;
        Ok(key.trim().to_owned())
    }

    /// A new machine (validated) with `password`.
    pub fn add_machine(&self, ns: &Netns, name: &str, password: &str) -> anyhow::Result<()> {
        // As docs/fleet.md registers one: `-f /dev/null` keeps cscli from
        // overwriting its own credentials with the new machine's.
        self.cscli(
            ns,
            &[
                "machines",
                "add",
                name,
                "--password",
                password,
                "-f",
                "/dev/null",
            ],
        )
        .map(drop)
    }

    /// Every alert, as JSON (`-a`: whatever the decisions' origin).
    pub fn alerts(&self, ns: &Netns) -> anyhow::Result<serde_json::Value> {
        let text = self.cscli(ns, &["alerts", "list", "-a", "-o", "json"])?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.listen)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("lapi.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `GET /health` answers 200 at `listen` (from this thread's
/// namespace); for https, whether it accepts connections.
fn health(listen: &str, tls: bool) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &match listen.parse() {
            Ok(a) => a,
            Err(_) => return false,
        },
        Duration::from_millis(500),
    ) else {
        return false;
    };
    if tls {
        return true;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// A test CA and a certificate it signed for `ip` (PEM files in `dir`):
/// (CA certificate, certificate, key). Made with the openssl command.
pub fn certificates(dir: &Path, ip: &str) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ext = p("ext.cnf");
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n"),
    )?;
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args)).map(drop);
    let (ca_key, ca, key, csr, cert) = (
        p("ca.key"),
        p("ca.pem"),
        p("lapi.key"),
        p("lapi.csr"),
        p("lapi.pem"),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=scanner test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ])?;
    openssl(&[
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=lapi", "-keyout", &key, "-out", &csr,
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ])?;
    Ok((ca.into(), cert.into(), key.into()))
}

/// Writes a secret file only its owner can read.
pub fn secret_file(dir: &Path, name: &str, value: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, value)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// Hosts on one bridged lab network (198.18.0.0/24, 2001:db8::/64): the
/// attacker (.1), server A (.2), server B (.3) and the Local API (.10).
/// Each server's interface is `veth-srv`.
pub struct FleetLab {
    pub attacker: Netns,
    pub a: Netns,
    pub b: Netns,
    pub lapi: Netns,
    /// Holds the bridge; dropped last.
    _switch: Netns,
}

impl FleetLab {
    pub const SERVER_IF: &str = "veth-srv";
    pub const ATTACKER_IF: &str = "veth-atk";
    pub const A_V4: &str = "198.18.0.2";
    pub const B_V4: &str = "198.18.0.3";

    pub fn new() -> anyhow::Result<Self> {
        let switch = Netns::new("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let attacker = Netns::new("atk")?;
        let a = Netns::new("srva")?;
        let b = Netns::new("srvb")?;
        let lapi = Netns::new("lapi")?;
        for (ns, ifname, port, n) in [
            (&attacker, Self::ATTACKER_IF, "p-atk", 1),
            (&a, Self::SERVER_IF, "p-a", 2),
            (&b, Self::SERVER_IF, "p-b", 3),
            (&lapi, "veth-lapi", "p-lapi", 10),
        ] {
            run(Command::new("ip").args([
                "link",
                "add",
                "name",
                ifname,
                "netns",
                ns.name(),
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                switch.name(),
            ]))?;
            switch.ip(&["link", "set", port, "master", "br0"])?;
            switch.ip(&["link", "set", port, "up"])?;
            ns.ip(&["addr", "add", &format!("198.18.0.{n}/24"), "dev", ifname])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("2001:db8::{n:x}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(Self {
            attacker,
            a,
            b,
            lapi,
            _switch: switch,
        })
    }
}
