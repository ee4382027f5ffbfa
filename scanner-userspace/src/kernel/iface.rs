//! Interface names and indexes.

use std::ffi::CString;

use thiserror::Error;

#[derive(Debug, Error)]
pub(crate) enum IfaceError {
    #[error("unknown interface {name:?} (interfaces here: {available})")]
    Unknown { name: String, available: String },
}

/// The interface's index, or an error listing the interfaces that exist.
pub(crate) fn index_of(name: &str) -> Result<u32, IfaceError> {
    lookup(name).ok_or_else(|| IfaceError::Unknown {
        name: name.to_owned(),
        available: available().join(", "),
    })
}

/// The interface's index, if it exists (cheap: for periodic checks).
pub(crate) fn lookup(name: &str) -> Option<u32> {
    CString::new(name)
        .ok()
        // SAFETY: a valid NUL-terminated string.
        .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) })
        .filter(|&index| index != 0)
}

/// Names of the interfaces in this network namespace.
pub(crate) fn available() -> Vec<String> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut names = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_nonsense_does_not() {
        assert!(index_of("lo").is_ok_and(|i| i > 0));
        let err = index_of("no-such-if0").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("no-such-if0") && e.contains("lo")));
        assert!(index_of("bad\0name").is_err());
    }
}
