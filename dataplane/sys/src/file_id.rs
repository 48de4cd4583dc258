//! The identity of an open file in one `statx(2)`: its inode number,
//! `stat`'s device, and the id of the mount it was opened through (which
//! names, in the mount table, the device of the file's superblock: what
//! the kernel's own structures hold, where `stat`'s device may differ).
use std::{fs::File, io, os::fd::AsRawFd as _};

/// What [`file_id`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Inode number.
    pub ino: u64,
    /// `stat`'s device: major and minor.
    pub dev: (u32, u32),
    /// The mount's id (`/proc/self/mountinfo`'s first field), if the
    /// kernel reported it (Linux 5.8 and later).
    pub mnt_id: Option<u64>,
}

/// `statx` of `file` (`AT_EMPTY_PATH`).
pub fn file_id(file: &File) -> io::Result<FileId> {
    // SAFETY: `statx` is plain integers, for which all-zero is valid.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the duration of the call, the
    // path is an empty NUL-terminated string, `st` is writable.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_INO | libc::STATX_MNT_ID,
            &raw mut st,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileId {
        ino: st.stx_ino,
        dev: (st.stx_dev_major, st.stx_dev_minor),
        mnt_id: (st.stx_mask & libc::STATX_MNT_ID != 0).then_some(st.stx_mnt_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn agrees_with_stat_and_names_a_mount() {
        let f = File::open("/proc/self/exe").unwrap();
        let id = file_id(&f).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(id.ino, m.ino());
        assert!(id.mnt_id.is_some());
    }
}
