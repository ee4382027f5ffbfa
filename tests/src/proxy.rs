//! A TCP proxy that loses answers: it forwards every connection to an
//! upstream server, but for the first `cuts` requests that start with a
//! given line (`POST /v1/alerts`) it forwards the request, then closes the
//! client's connection instead of passing the answer on. The server did
//! the work; the client never hears of it.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

/// The running proxy; stopped on drop.
pub struct CutProxy {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

/// What the connections share.
struct Rule {
    request: &'static [u8],
    /// Cuts still to make.
    left: AtomicU32,
    /// Cuts made.
    done: Arc<AtomicU32>,
}

impl CutProxy {
    /// Listens on `listen` inside `ns`, forwarding to `upstream` (reached
    /// from `ns` too); cuts the answers of the first `cuts` requests that
    /// start with `request`.
    pub fn start(
        ns: &Netns,
        listen: SocketAddr,
        upstream: SocketAddr,
        request: &'static str,
        cuts: u32,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU32::new(0));
        let rule = Arc::new(Rule {
            request: request.as_bytes(),
            left: AtomicU32::new(cuts),
            done: done.clone(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = ns.spawn_in(move || {
            let listener = match TcpListener::bind(listen).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let rule = rule.clone();
                        std::thread::spawn(move || {
                            let _ = relay(client, upstream, &rule);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
        })?;
        rx.recv_timeout(Duration::from_secs(10))??;
        Ok(Self {
            stop,
            done,
            thread: Some(thread),
        })
    }

    /// Answers cut so far.
    pub fn cuts(&self) -> u32 {
        self.done.load(Ordering::Relaxed)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One client connection: requests go up as they come; answers come back
/// unless the request they answer was marked to be cut.
fn relay(client: TcpStream, upstream: SocketAddr, rule: &Rule) -> std::io::Result<()> {
    let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    let cutting = Arc::new(AtomicBool::new(false));
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    let flag = cutting.clone();
    let request = rule.request;
    let left = &rule.left;
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                let n = match from_client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Marked before it goes up, so its answer cannot come back
                // first.
                if buf[..n].starts_with(request)
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                        .is_ok()
                {
                    flag.store(true, Ordering::SeqCst);
                }
                if to_server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(Shutdown::Write);
        });
        let (mut from_server, mut to_client) = (&server, &client);
        let mut buf = [0u8; 16384];
        loop {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cutting.load(Ordering::SeqCst) {
                rule.done.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    });
    Ok(())
}
