//! What a scanner learned, seen from the server: an AF_PACKET capture on the
//! server's interface, inside its namespace, of the scan's probes coming in
//! (after XDP: a dropped probe never shows) and the server's answers going
//! out. Bounded by a stop flag and a deadline.

use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use scanner_common::{IPPROTO_TCP, TCP_ACK as ACK, TCP_RST as RST, TCP_SYN as SYN};

use crate::Netns;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;

/// What the capture saw between the scanner and the server.
#[derive(Debug, Default, Clone)]
pub struct Learned {
    /// When the scanner's first probe reached the server.
    pub first_probe: Option<SystemTime>,
    /// Probes that reached the server (passed by XDP).
    pub probes: usize,
    /// Server ports that answered the scanner (SYN-ACK or RST): what it
    /// learned, open or closed.
    pub answered: BTreeSet<u16>,
    /// Of those, the ports that answered SYN-ACK (open).
    pub open: BTreeSet<u16>,
    /// Every SYN to the server, from any source (the first [`MAX_SYNS`]):
    /// when it crossed the interface, its source, its destination port.
    pub syns: Vec<(SystemTime, [u8; 4], u16)>,
}

/// The most SYNs [`Learned::syns`] keeps.
pub const MAX_SYNS: usize = 100_000;

/// A running capture; [`Capture::finish`] stops it and returns the result.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Learned>>,
}

impl Capture {
    /// Starts capturing IPv4 TCP between `scanner` and `server` on `ifname`
    /// inside `ns`, for at most `limit`.
    pub fn start(
        ns: &Netns,
        ifname: &str,
        scanner: [u8; 4],
        server: [u8; 4],
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let fd = ns.enter(|| open(ifname))??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || read(&fd, scanner, server, &flag, limit));
        Ok(Self { stop, thread })
    }

    pub fn finish(self) -> anyhow::Result<Learned> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("capture thread panicked"))?
    }
}

fn open(ifname: &str) -> anyhow::Result<OwnedFd> {
    let index = crate::netns::ifindex(ifname)?;
    // SAFETY: plain socket creation; the fd is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set follow.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ALL.to_be();
    addr.sll_ifindex = index as i32;
    // SAFETY: a valid address of the right length.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error()).context("binding the capture");
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    let rcvbuf: libc::c_int = 16 << 20;
    // SAFETY: valid option values of the sizes given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        );
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const rcvbuf).cast(),
            size_of::<libc::c_int>() as u32,
        );
    }
    Ok(fd)
}

fn read(
    fd: &OwnedFd,
    scanner: [u8; 4],
    server: [u8; 4],
    stop: &AtomicBool,
    limit: Duration,
) -> anyhow::Result<Learned> {
    let mut learned = Learned::default();
    let mut buf = [0u8; 2048];
    let began = Instant::now();
    while !stop.load(Ordering::Relaxed) && began.elapsed() < limit {
        // SAFETY: a valid buffer of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            continue; // timeout (EAGAIN) or interrupted: look at the flag again
        };
        let at = stamp(fd).unwrap_or_else(SystemTime::now);
        if let Some(seg) = tcp_of(&buf[..n]) {
            if seg.dst == server
                && seg.flags & (SYN | ACK | RST) == SYN
                && learned.syns.len() < MAX_SYNS
            {
                learned.syns.push((at, seg.src, seg.dport));
            }
            if seg.src == scanner && seg.dst == server && seg.flags & (SYN | ACK | RST) == SYN {
                learned.first_probe.get_or_insert(at);
                learned.probes += 1;
            } else if seg.src == server && seg.dst == scanner {
                if seg.flags & (SYN | ACK) == SYN | ACK {
                    learned.open.insert(seg.sport);
                    learned.answered.insert(seg.sport);
                } else if seg.flags & RST != 0 {
                    learned.answered.insert(seg.sport);
                }
            }
        }
    }
    Ok(learned)
}

/// The kernel's receive time of the last packet read from `fd`
/// (SIOCGSTAMPNS): when it crossed the interface, not when this thread
/// got to it.
fn stamp(fd: &OwnedFd) -> Option<SystemTime> {
    const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the ioctl to fill.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSTAMPNS, &raw mut ts) };
    (r == 0).then(|| {
        SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(ts.tv_sec).unwrap_or(0),
                u32::try_from(ts.tv_nsec).unwrap_or(0),
            )
    })
}

struct Segment {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
}

/// The IPv4 TCP segment in an Ethernet frame, if it is one.
fn tcp_of(frame: &[u8]) -> Option<Segment> {
    if frame.len() < 14 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.len() < ihl + 14 || ip[9] != IPPROTO_TCP {
        return None;
    }
    let tcp = &ip[ihl..];
    Some(Segment {
        src: ip[12..16].try_into().ok()?,
        dst: ip[16..20].try_into().ok()?,
        sport: u16::from_be_bytes([tcp[0], tcp[1]]),
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        flags: tcp[13],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_read_from_frames() {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        f[14] = 0x45;
        f[14 + 9] = IPPROTO_TCP;
        f[14 + 12..14 + 16].copy_from_slice(&[198, 18, 0, 2]);
        f[14 + 16..14 + 20].copy_from_slice(&[198, 18, 0, 1]);
        f[34..36].copy_from_slice(&80u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        f[34 + 13] = SYN | ACK;
        let s = tcp_of(&f).expect("a segment");
        assert_eq!(
            (s.src, s.dst, s.sport, s.dport, s.flags),
            ([198, 18, 0, 2], [198, 18, 0, 1], 80, 40000, SYN | ACK)
        );
        assert!(tcp_of(&f[..30]).is_none());
    }
}
