//! Gives the kernel back the pages of the `weft` executable that only start-up used.
//!
//! A started node has touched code it will not run again (argument and configuration parsing,
//! certificate generation, opening the database, ...), and the kernel maps 64 KiB of the file
//! around every page a process touches (fault-around), so most of the executable's pages are
//! resident: about 18 MB of an edge node's 26 MB (bench/RESULTS.md, "Footprint"). They are
//! clean file pages the kernel could reclaim under pressure, but they count in the node's
//! resident memory until it does. `MADV_PAGEOUT` reclaims them now; the pages serving needs come
//! back from the file on first use. Only `weft node` does this, once it is serving: an
//! in-process node shares its process, and its executable, with others.

use std::ops::Range;

/// What [`release`] did: the process's file-backed resident memory before and after, in bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Released {
    pub before: u64,
    pub after: u64,
}

/// Advises the kernel to page out every read-only mapping of this process's executable, and
/// measures what that gave back. Pages another process also maps stay (the kernel skips them).
#[cfg(target_os = "linux")]
pub(super) fn release() -> std::io::Result<Released> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let ranges = executable_mappings(&maps, release as *const () as usize);
    if ranges.is_empty() {
        return Err(std::io::Error::other(
            "no mapping of the executable in /proc/self/maps",
        ));
    }
    let before = file_resident_bytes()?;
    for range in ranges {
        // SAFETY: the range is a whole mapping of the executable's file that is not writable:
        // code and read-only data, whose pages are clean file pages that the next access reads
        // from the file again, and the loader's relocated read-only data (RELRO), private pages
        // the kernel keeps or swaps like any other. Paging out changes no byte of either.
        #[allow(unsafe_code)]
        unsafe {
            rustix::mm::madvise(
                range.start as *mut std::ffi::c_void,
                range.end - range.start,
                rustix::mm::Advice::LinuxPageOut,
            )
        }?;
    }
    Ok(Released {
        before,
        after: file_resident_bytes()?,
    })
}

/// Elsewhere there is no `MADV_PAGEOUT`.
#[cfg(not(target_os = "linux"))]
pub(super) fn release() -> std::io::Result<Released> {
    Err(std::io::Error::other("only Linux can page out code"))
}

/// The address ranges of the mappings in `maps` (the text of `/proc/self/maps`) that are not
/// writable and map the same file (device and inode) as the mapping holding `addr`: the
/// executable's code and read-only data, without its relocated, written data.
fn executable_mappings(maps: &str, addr: usize) -> Vec<Range<usize>> {
    let mappings: Vec<Mapping<'_>> = maps.lines().filter_map(Mapping::parse).collect();
    let Some(own) = mappings
        .iter()
        .find(|m| m.range.contains(&addr) && m.inode != "0")
    else {
        return Vec::new();
    };
    mappings
        .iter()
        .filter(|m| m.device == own.device && m.inode == own.inode && !m.perms.contains('w'))
        .map(|m| m.range.clone())
        .collect()
}

/// One line of `/proc/self/maps`: `start-end perms offset device inode path`.
struct Mapping<'a> {
    range: Range<usize>,
    perms: &'a str,
    device: &'a str,
    inode: &'a str,
}

impl<'a> Mapping<'a> {
    fn parse(line: &'a str) -> Option<Mapping<'a>> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
        let perms = fields.next()?;
        let _offset = fields.next()?;
        let device = fields.next()?;
        let inode = fields.next()?;
        Some(Mapping {
            range,
            perms,
            device,
            inode,
        })
    }
}

/// `RssFile` of `/proc/self/status`, in bytes.
fn file_resident_bytes() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| std::io::Error::other("no RssFile in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0a0000000-55d0a0790000 r--p 00000000 103:02 4456 /opt/weft/bin/weft
55d0a0790000-55d0a1cb4000 r-xp 00790000 103:02 4456 /opt/weft/bin/weft
55d0a1cb4000-55d0a1d56000 r--p 01cb4000 103:02 4456 /opt/weft/bin/weft
55d0a1d56000-55d0a1d62000 rw-p 01d56000 103:02 4456 /opt/weft/bin/weft
55d0a1d62000-55d0a1d70000 rw-p 00000000 00:00 0
7f00b0000000-7f00b0200000 r-xp 00000000 103:02 9001 /usr/lib/libc.so.6
7f00b0300000-7f00b0310000 r--p 00000000 103:05 4456 /mnt/other/inode-4456-elsewhere
7ffd10000000-7ffd10021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn the_executables_read_only_mappings_are_found_from_an_address_in_its_code() {
        let check = |addr: usize, expected: &[Range<usize>]| {
            assert_eq!(
                executable_mappings(MAPS, addr),
                expected,
                "address {addr:#x}"
            );
        };
        let weft = [
            0x55d0a0000000..0x55d0a0790000,
            0x55d0a0790000..0x55d0a1cb4000,
            0x55d0a1cb4000..0x55d0a1d56000,
        ];
        check(0x55d0a0800000, &weft);
        // From the written data too: the same file.
        check(0x55d0a1d57000, &weft);
        let libc = 0x7f00b0000000..0x7f00b0200000;
        check(0x7f00b0000010, std::slice::from_ref(&libc));
        // Anonymous memory and addresses in no mapping name no file.
        check(0x55d0a1d63000, &[]);
        check(0x7ffd10000100, &[]);
        check(0x1000, &[]);
    }

    #[test]
    fn paging_out_the_test_binary_gives_back_its_resident_pages() {
        let released = release().expect("MADV_PAGEOUT on this kernel");
        assert!(
            released.after < released.before,
            "file-backed resident memory went from {} to {} bytes",
            released.before,
            released.after
        );
    }
}
