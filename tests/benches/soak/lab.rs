//! The soak's lab: the fleet lab's bridged network (attacker, server A, a
//! benign client in B's namespace, the Local API), server A routing all of
//! 198.18.0.0/15 and 2001:db8::/32 on its link so that every scan can come
//! from an address of its own, a second watched interface that comes and
//! goes, the services the benign client uses, and the daemon's config.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use scanner_tests::{
    Daemon, TempDir,
    crowdsec::{FleetLab, LAPI_PORT, LAPI_V4, Lapi, secret_file},
    soak::FLAP_IF,
};

const FLAP_PEER: &str = "veth-x1";
/// Server A's services: HTTP (benign requests; blocks are checked
/// against it), a held-open session, and UDP echo.
pub(crate) const HTTP_PORT: u16 = 80;
pub(crate) const SESSION_PORT: u16 = 22;
pub(crate) const UDP_PORT: u16 = 53;

/// Everything the soak runs against, torn down on drop.
pub(crate) struct SoakLab {
    pub(crate) net: FleetLab,
    pub(crate) lapi: Lapi,
    pub(crate) dir: TempDir,
    pub(crate) config: PathBuf,
    pub(crate) history: PathBuf,
    stop: Arc<AtomicBool>,
    services: Vec<JoinHandle<()>>,
    pull_toggle: bool,
    key: PathBuf,
    password: PathBuf,
}

impl SoakLab {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let net = FleetLab::new()?;
        // Replies to every scan's own address go out on the link (the
        // attacker answers ARP and neighbour solicitations for them).
        net.a
            .ip(&["route", "add", "198.18.0.0/15", "dev", FleetLab::SERVER_IF])?;
        net.a.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8::/32",
            "dev",
            FleetLab::SERVER_IF,
        ])?;
        add_flap_pair(&net)?;
        let lapi = Lapi::start(&net.lapi, LAPI_V4, LAPI_PORT)?;
        let key = lapi.bouncer_key(&net.lapi, "soak")?;
        lapi.add_machine(&net.lapi, "soak", "soak-password")?;
        let dir = TempDir::new("soak")?;
        let key = secret_file(&dir.0, "soak.key", &key)?;
        let password = secret_file(&dir.0, "soak.password", "soak-password")?;
        let history = dir.0.join("history.db");
        let config = dir.0.join("scanner.toml");
        let stop = Arc::new(AtomicBool::new(false));
        let services = serve(&net, &stop)?;
        let mut lab = Self {
            net,
            lapi,
            dir,
            config,
            history,
            stop,
            services,
            pull_toggle: false,
            key,
            password,
        };
        lab.write_config()?;
        Ok(lab)
    }

    /// Writes the config file; each call flips the pull interval between
    /// 2 s and 3 s, so that every SIGHUP changes the `[crowdsec]` section
    /// (the fleet tasks start again on their outbox).
    pub(crate) fn write_config(&mut self) -> anyhow::Result<()> {
        let pull = if self.pull_toggle { "3s" } else { "2s" };
        self.pull_toggle = !self.pull_toggle;
        // The kernel forgets a source idle for a minute, before its block
        // (90 s) lapses, as at the defaults (an hour each): a source whose
        // block lapsed is a new one, and a connection from it goes through.
        // (With a block shorter than the memory, its next probe would be
        // dropped and blocked again, as docs/operations.md says.)
        let text = format!(
            "[detection]\nidle_timeout = \"60s\"\n\n[crowdsec]\nurl = \"http://{LAPI_V4}:{LAPI_PORT}/\"\nbouncer_key_file = \"{}\"\n\
             pull_interval = \"{pull}\"\nmachine_id = \"soak\"\npassword_file = \"{}\"\noutbox = \"{}\"\n",
            self.key.display(),
            self.password.display(),
            self.dir.0.join("outbox.db").display()
        );
        std::fs::write(&self.config, text).context("writing the soak's config")
    }

    /// `scanner run` on server A as an operator would run it, with blocks
    /// of `block_ttl`; attached to both interfaces.
    pub(crate) fn start_daemon(&self, block_ttl: &str) -> anyhow::Result<Daemon> {
        let config = self.config.to_string_lossy().into_owned();
        let history = self.history.to_string_lossy().into_owned();
        let mut daemon = Daemon::start(
            &self.net.a,
            &[
                "run",
                "--iface",
                FleetLab::SERVER_IF,
                "--iface",
                FLAP_IF,
                "--events",
                "json",
                "--quiet-after",
                "5s",
                "--block",
                "--block-ttl",
                block_ttl,
                "--history",
                &history,
                "--config",
                &config,
            ],
        )?;
        daemon.wait_attached(FleetLab::SERVER_IF)?;
        Ok(daemon)
    }

    /// Removes the second watched interface.
    pub(crate) fn unplug(&self) -> anyhow::Result<()> {
        self.net.a.ip(&["link", "del", FLAP_IF]).map(drop)
    }

    /// Adds it again.
    pub(crate) fn plug(&self) -> anyhow::Result<()> {
        add_flap_pair(&self.net)
    }
}

impl Drop for SoakLab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for service in self.services.drain(..) {
            let _ = service.join();
        }
    }
}

fn add_flap_pair(net: &FleetLab) -> anyhow::Result<()> {
    net.a.ip(&[
        "link", "add", FLAP_IF, "type", "veth", "peer", "name", FLAP_PEER,
    ])?;
    net.a.ip(&["link", "set", FLAP_IF, "up"])?;
    net.a.ip(&["link", "set", FLAP_PEER, "up"])?;
    Ok(())
}

/// Server A's services, each on a thread inside its namespace until
/// `stop`: HTTP on 80, a line echo on 22 (the held-open session), UDP echo
/// on 53; all on every address.
fn serve(net: &FleetLab, stop: &Arc<AtomicBool>) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let any = |port| SocketAddr::from(([0u16; 8], port));
    let http = net.a.enter(|| TcpListener::bind(any(HTTP_PORT)))??;
    let session = net.a.enter(|| TcpListener::bind(any(SESSION_PORT)))??;
    let udp = net.a.enter(|| UdpSocket::bind(any(UDP_PORT)))??;
    let mut threads = Vec::new();
    for (listener, reply) in [(http, Reply::Http), (session, Reply::Echo)] {
        listener.set_nonblocking(true)?;
        let stop = Arc::clone(stop);
        threads.push(std::thread::spawn(move || accept(&listener, reply, &stop)));
    }
    udp.set_read_timeout(Some(Duration::from_millis(200)))?;
    let stop = Arc::clone(stop);
    threads.push(std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }
    }));
    Ok(threads)
}

#[derive(Clone, Copy)]
enum Reply {
    Http,
    Echo,
}

fn accept(listener: &TcpListener, reply: Reply, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                std::thread::spawn(move || answer(conn, reply));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(mut conn: TcpStream, reply: Reply) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let mut buf = [0u8; 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let out: &[u8] = match reply {
            Reply::Http => b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            Reply::Echo => &buf[..n],
        };
        if conn.write_all(out).is_err() {
            return;
        }
        if matches!(reply, Reply::Http) {
            return;
        }
    }
}
