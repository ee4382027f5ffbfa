//! Who holds an interface's XDP hook: the BPF links of type XDP attached to
//! it, their programs, and the processes holding them open. Read only when
//! an attach would collide, to name the other program instead of saying
//! "File exists". aya 0.14 does not expose a link's interface, so the link
//! info is read with the raw syscalls.

use std::{
    fmt, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_TYPE_XDP: u32 = 6;

/// An XDP program attached to an interface through a BPF link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpOwner {
    pub link_id: u32,
    pub program_id: u32,
    pub program: String,
    /// Processes holding the link open (a pinned link may have none).
    pub holders: Vec<(u32, String)>,
}

impl fmt::Display for XdpOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "program {:?} (id {}, link {})",
            self.program, self.program_id, self.link_id
        )?;
        let held: Vec<String> = self
            .holders
            .iter()
            .map(|(pid, comm)| format!("{comm} pid {pid}"))
            .collect();
        if !held.is_empty() {
            write!(f, " held by {}", held.join(", "))?;
        }
        Ok(())
    }
}

/// `union bpf_attr` for the *_GET_NEXT_ID and *_GET_FD_BY_ID commands.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, fully initialised bpf_attr member of the
    // size passed; the kernel writes within it only.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The XDP links attached to interface `ifindex` (empty when none, or when
/// links cannot be listed).
pub fn xdp_links_on(ifindex: u32) -> Vec<XdpOwner> {
    let mut found = Vec::new();
    let mut attr = IdAttr::default();
    while bpf(BPF_LINK_GET_NEXT_ID, &mut attr).is_ok() {
        let id = attr.next_id;
        attr.id = id;
        if let Some((program_id, link_ifindex)) = xdp_link_info(id)
            && link_ifindex == ifindex
        {
            found.push(XdpOwner {
                link_id: id,
                program_id,
                program: program_name(program_id),
                holders: holders_of_link(id),
            });
        }
    }
    found
}

/// (program id, interface index) of link `id`, if it is an XDP link.
fn xdp_link_info(id: u32) -> Option<(u32, u32)> {
    let mut attr = IdAttr {
        id,
        ..IdAttr::default()
    };
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).ok()?;
    // SAFETY: the kernel returned a new descriptor, owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).ok()?) };
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8
    // whose `xdp` member starts with ifindex. Zeroed tail: the kernel
    // accepts a larger buffer only if what it does not know is zero.
    let mut info = [0u32; 32];
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).ok()?,
        info_len: u32::try_from(std::mem::size_of_val(&info)).ok()?,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    (info[0] == BPF_LINK_TYPE_XDP).then_some((info[2], info[4]))
}

fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Processes with a descriptor of link `id` open (from /proc/*/fdinfo).
fn holders_of_link(id: u32) -> Vec<(u32, String)> {
    let wanted = format!("link_id:\t{id}\n");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for p in procs.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        let holds = fds
            .filter_map(Result::ok)
            .any(|fd| std::fs::read_to_string(fd.path()).is_ok_and(|text| text.contains(&wanted)));
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            holders.push((pid, comm.trim().to_owned()));
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_name_program_link_and_holders() {
        let o = XdpOwner {
            link_id: 7,
            program_id: 42,
            program: "scanner".into(),
            holders: vec![(1234, "scanner".into())],
        };
        assert_eq!(
            o.to_string(),
            "program \"scanner\" (id 42, link 7) held by scanner pid 1234"
        );
        let pinned = XdpOwner {
            holders: Vec::new(),
            ..o
        };
        assert_eq!(pinned.to_string(), "program \"scanner\" (id 42, link 7)");
    }
}
