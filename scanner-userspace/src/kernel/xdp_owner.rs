//! Who holds an interface's XDP hook: the program attached to it (asked of
//! rtnetlink, in this network namespace: interface indexes are per
//! namespace, BPF link ids are not), the BPF link that holds it, and the
//! processes holding that link open. Read before attaching, to name the
//! other program instead of failing with "File exists". aya 0.14 exposes
//! neither, so both are read with raw sockets and syscalls.

use std::{fmt, io, os::fd::AsRawFd as _};

use crate::{
    netlink,
    sys::{self, BpfCmd},
};

const BPF_LINK_TYPE_XDP: u32 = 6;

/// The XDP program attached to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XdpOwner {
    /// The BPF link that holds it; None when attached through netlink.
    pub link_id: Option<u32>,
    pub program_id: u32,
    pub program: String,
    /// Processes holding the program open (the daemon that loaded it; a
    /// program kept only by a pinned link has none).
    pub holders: Vec<(u32, String)>,
}

impl fmt::Display for XdpOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.link_id {
            Some(link) => write!(
                f,
                "program {:?} (id {}, link {link})",
                self.program, self.program_id
            )?,
            None => write!(
                f,
                "program {:?} (id {}, attached without a BPF link)",
                self.program, self.program_id
            )?,
        }
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

/// The XDP program on interface `ifindex` of this network namespace, if any.
pub(crate) fn xdp_owner(ifindex: u32) -> Option<XdpOwner> {
    let program_id = attached_program(ifindex)?;
    let link_id = xdp_link_of(program_id, ifindex);
    Some(XdpOwner {
        link_id,
        program_id,
        program: program_name(program_id),
        holders: holders_of_program(program_id),
    })
}

/// The XDP link that attaches program `program_id` to `ifindex`.
fn xdp_link_of(program_id: u32, ifindex: u32) -> Option<u32> {
    let mut attr = IdAttr::default();
    while sys::bpf(BpfCmd::LinkGetNextId, &mut attr).is_ok() {
        let id = attr.next_id;
        attr.id = id;
        if xdp_link_info(id) == Some((program_id, ifindex)) {
            return Some(id);
        }
    }
    None
}

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;

/// The id of the XDP program on `ifindex`, asked of rtnetlink (RTM_GETLINK).
fn attached_program(ifindex: u32) -> Option<u32> {
    let fd = netlink::socket(libc::NETLINK_ROUTE).ok()?;
    // struct ifinfomsg naming the interface.
    let mut ifinfo = Vec::with_capacity(16);
    ifinfo.extend_from_slice(&[0, 0, 0, 0]);
    ifinfo.extend_from_slice(&i32::try_from(ifindex).ok()?.to_ne_bytes());
    ifinfo.extend_from_slice(&[0; 8]);
    netlink::send(
        &fd,
        &netlink::message(RTM_GETLINK, libc::NLM_F_REQUEST as u16, &ifinfo),
    )
    .ok()?;
    xdp_program_in(&netlink::recv(&fd).ok()?)
}

/// The XDP program id in an RTM_NEWLINK answer.
fn xdp_program_in(answer: &[u8]) -> Option<u32> {
    let u16_at =
        |b: &[u8], at: usize| Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let len = usize::try_from(u32_at(answer, 0)?).ok()?;
    let kind = u16_at(answer, 4)?;
    if kind != RTM_NEWLINK {
        return None;
    }
    // After the 16-byte nlmsghdr and the 16-byte ifinfomsg: attributes.
    let xdp = netlink::attributes(answer.get(32..len.min(answer.len()))?)
        .find(|(t, _)| *t == IFLA_XDP)?
        .1;
    let ids: Vec<(u16, u32)> = netlink::attributes(xdp)
        .filter_map(|(t, v)| Some((t, u32_at(v, 0)?)))
        .collect();
    [IFLA_XDP_PROG_ID, IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID]
        .iter()
        .find_map(|want| ids.iter().find(|(t, id)| t == want && *id != 0))
        .map(|(_, id)| *id)
}

/// (program id, interface index) of link `id`, if it is an XDP link.
fn xdp_link_info(id: u32) -> Option<(u32, u32)> {
    let mut attr = IdAttr {
        id,
        ..IdAttr::default()
    };
    let fd = sys::bpf_fd(BpfCmd::LinkGetFdById, &mut attr).ok()?;
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8
    // whose `xdp` member starts with ifindex. Zeroed tail: the kernel
    // accepts a larger buffer only if what it does not know is zero.
    let mut info = [0u32; 32];
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).ok()?,
        info_len: u32::try_from(std::mem::size_of_val(&info)).ok()?,
        info: info.as_mut_ptr() as u64,
    };
    sys::bpf(BpfCmd::ObjGetInfoByFd, &mut attr).ok()?;
    (info[0] == BPF_LINK_TYPE_XDP).then_some((info[2], info[4]))
}

/// The ids of the maps program `fd` uses, asked of the descriptor itself
/// (BPF_OBJ_GET_INFO_BY_FD): aya's `ProgramInfo::map_ids` opens the program
/// again by id, which needs CAP_SYS_ADMIN.
pub(crate) fn program_map_ids(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    // struct bpf_prog_info up to map_ids: nr_map_ids is u32 13, map_ids
    // (a pointer) u32s 14-15. Zeroed, and no longer than needed.
    const NR_MAP_IDS: usize = 13;
    const MAP_IDS: usize = 14;
    let too_many = || io::Error::other("too many maps");
    let ask = |ids: &mut [u32]| -> io::Result<u32> {
        let mut info = [0u32; 16];
        info[NR_MAP_IDS] = u32::try_from(ids.len()).map_err(|_| too_many())?;
        let ptr = ids.as_mut_ptr() as u64;
        info[MAP_IDS] = ptr as u32;
        info[MAP_IDS + 1] = (ptr >> 32) as u32;
        let mut attr = InfoAttr {
            bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(|_| too_many())?,
            info_len: u32::try_from(std::mem::size_of_val(&info)).map_err(|_| too_many())?,
            info: info.as_mut_ptr() as u64,
        };
        sys::bpf(BpfCmd::ObjGetInfoByFd, &mut attr)?;
        Ok(info[NR_MAP_IDS])
    };
    let count = ask(&mut [])?;
    let mut ids = vec![0u32; count as usize];
    let filled = ask(&mut ids)?;
    ids.truncate(filled as usize);
    Ok(ids)
}

fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Processes with a descriptor of program `id` open (from /proc/*/fdinfo).
fn holders_of_program(id: u32) -> Vec<(u32, String)> {
    let wanted = format!("prog_id:\t{id}\n");
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
            link_id: Some(7),
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
        let netlink = XdpOwner {
            link_id: None,
            ..pinned
        };
        assert!(
            netlink
                .to_string()
                .ends_with("attached without a BPF link)")
        );
    }

    #[test]
    fn loopback_has_no_xdp_program_and_answers_parse() {
        assert_eq!(xdp_owner(1), None, "nothing attaches XDP to lo");
        // RTM_NEWLINK, ifinfomsg, then IFLA_XDP { ATTACHED=1, PROG_ID=42 }.
        let mut msg = Vec::new();
        msg.extend_from_slice(&60u32.to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&[0; 16]);
        msg.extend_from_slice(&20u16.to_ne_bytes());
        msg.extend_from_slice(&(IFLA_XDP | 0x8000).to_ne_bytes());
        msg.extend_from_slice(&5u16.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes());
        msg.extend_from_slice(&[1, 0, 0, 0]);
        msg.extend_from_slice(&8u16.to_ne_bytes());
        msg.extend_from_slice(&IFLA_XDP_PROG_ID.to_ne_bytes());
        msg.extend_from_slice(&42u32.to_ne_bytes());
        msg.extend_from_slice(&[0; 8]);
        assert_eq!(xdp_program_in(&msg), Some(42));
        assert_eq!(xdp_program_in(&msg[..40]), None, "cut short");
    }
}
