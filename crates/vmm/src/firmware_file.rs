//! Finding firmware files (`-bios`, `-boot splash=`) the way QEMU 7.2 does.
//!
//! `softmmu/datadir.c` `qemu_find_file(QEMU_FILE_TYPE_BIOS, name)`: a name
//! that is readable as given (absolute or relative to the working directory)
//! is used as is; otherwise `DIR/name` is tried in each data directory: the
//! `-L` ones in command-line order, then the built-in ones
//! (`qemu_add_default_firmwarepath`). There are at most 16 directories and a
//! repeated one counts once (`qemu_add_data_dir`).
//!
//! ferrovm ships no firmware of its own, so its built-in directories are
//! Debian's QEMU ones, as `qemu-system-x86_64 -L help` lists them there
//! (`/usr/share/qemu`, `/usr/share/seabios`, `/usr/lib/ipxe/qemu`). Debian's
//! `seabios` package puts `bios-256k.bin` in `/usr/share/seabios`;
//! `/usr/share/qemu` does not link to it, which is why that directory is searched.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The firmware without `-bios`: `hw/i386/pc_q35.c` sets the q35 machines'
/// `default_machine_opts` to `firmware=bios-256k.bin`.
pub const DEFAULT_BIOS: &str = "bios-256k.bin";

/// The built-in data directories, searched after the `-L` ones.
pub const DEFAULT_DATA_DIRS: &[&str] = &[
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/usr/lib/ipxe/qemu",
];

/// QEMU's `data_dir[16]`.
const MAX_DATA_DIRS: usize = 16;

/// The directories searched, in order: `data_dirs` (the `-L` ones), then
/// [`DEFAULT_DATA_DIRS`], without repeats, at most 16. `-L help` prints these.
pub fn search_dirs(data_dirs: &[PathBuf]) -> Vec<PathBuf> {
    with_defaults(data_dirs, DEFAULT_DATA_DIRS)
}

fn with_defaults(data_dirs: &[PathBuf], defaults: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let all = data_dirs
        .iter()
        .cloned()
        .chain(defaults.iter().map(PathBuf::from));
    for d in all {
        if out.len() == MAX_DATA_DIRS {
            break;
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// `access(path, R_OK) == 0`.
fn readable(p: &Path) -> bool {
    std::fs::File::open(p).is_ok()
}

/// `qemu_find_file(QEMU_FILE_TYPE_BIOS, name)` over explicit directories.
fn find_in(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let direct = Path::new(name);
    if readable(direct) {
        return Some(direct.to_path_buf());
    }
    dirs.iter().find_map(|d| {
        // "%s/%s": joined as strings, so an absolute name is looked up below
        // the directory too (PathBuf::join would replace the directory).
        let mut s = OsString::from(d.as_os_str());
        s.push("/");
        s.push(name);
        let p = PathBuf::from(s);
        readable(&p).then_some(p)
    })
}

/// Resolve a `-bios` name (or [`DEFAULT_BIOS`]) to a readable file.
///
/// The error is QEMU's (`hw/i386/x86.c` `x86_bios_rom_init`), which prints
/// `qemu: could not load PC BIOS 'NAME'` with the name as given.
pub fn find_firmware(name: &str, data_dirs: &[PathBuf]) -> Result<PathBuf, String> {
    find_in(name, &search_dirs(data_dirs)).ok_or_else(|| bios_error(name))
}

fn bios_error(name: &str) -> String {
    format!("could not load PC BIOS '{name}'")
}

/// Find and read the PC BIOS image for `bios` (`-bios`; `None` is
/// [`DEFAULT_BIOS`]). QEMU maps it just below 4 GiB, so it must be a
/// non-empty multiple of 64 KiB; otherwise the same error as a missing file.
pub fn load_bios(bios: Option<&Path>, data_dirs: &[PathBuf]) -> Result<Vec<u8>, String> {
    load_bios_in(bios, &search_dirs(data_dirs))
}

fn load_bios_in(bios: Option<&Path>, dirs: &[PathBuf]) -> Result<Vec<u8>, String> {
    let name = bios.map_or_else(
        || DEFAULT_BIOS.to_string(),
        |p| p.to_string_lossy().into_owned(),
    );
    let path = find_in(&name, dirs).ok_or_else(|| bios_error(&name))?;
    let data = std::fs::read(&path).map_err(|_| bios_error(&name))?;
    if data.is_empty() || data.len() % 65536 != 0 {
        return Err(bios_error(&name));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("ferrovm-fwfile-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn file(&self, name: &str, len: usize) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, vec![0xa5u8; len]).unwrap();
            p
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn existing_path_is_used_as_is() {
        let t = TempDir::new("direct");
        let f = t.file("my.bin", 16);
        // Even when a -L directory has a file of the same name.
        let other = TempDir::new("direct-l");
        other.file("my.bin", 16);
        let got = find_firmware(f.to_str().unwrap(), std::slice::from_ref(&other.0)).unwrap();
        assert_eq!(got, f);
    }

    #[test]
    fn l_dirs_in_order_before_defaults() {
        let a = TempDir::new("order-a");
        let b = TempDir::new("order-b");
        b.file("fw.bin", 16);
        let fb = a.file("only-a.bin", 16);
        let dirs = vec![a.0.clone(), b.0.clone()];
        assert_eq!(find_firmware("fw.bin", &dirs).unwrap(), b.0.join("fw.bin"));
        assert_eq!(find_firmware("only-a.bin", &dirs).unwrap(), fb);
        // Both have it: the first -L wins.
        a.file("fw.bin", 16);
        assert_eq!(find_firmware("fw.bin", &dirs).unwrap(), a.0.join("fw.bin"));
    }

    #[test]
    fn missing_is_qemus_error() {
        let a = TempDir::new("missing");
        assert_eq!(
            find_firmware("nosuch.bin", std::slice::from_ref(&a.0)).unwrap_err(),
            "could not load PC BIOS 'nosuch.bin'"
        );
    }

    #[test]
    fn subpaths_are_joined_as_strings() {
        let a = TempDir::new("sub");
        fs::create_dir_all(a.0.join("x")).unwrap();
        a.file("x/y.bin", 16);
        let dirs = vec![a.0.clone()];
        assert_eq!(find_in("x/y.bin", &dirs).unwrap(), a.0.join("x/y.bin"));
        // "/x/y.bin" does not exist at the root, so QEMU tries "DIR//x/y.bin".
        let got = find_in("/x/y.bin", &dirs).unwrap();
        assert!(readable(&got) && got.to_string_lossy().ends_with("//x/y.bin"));
    }

    #[test]
    fn search_dirs_dedup_and_cap() {
        let d = with_defaults(
            &[PathBuf::from("/a"), PathBuf::from("/usr/share/qemu")],
            DEFAULT_DATA_DIRS,
        );
        // As `qemu-system-x86_64 -L /a -L /usr/share/qemu -L help`, minus
        // QEMU's "/usr/bin/.." relocation of its own directories.
        let want: Vec<PathBuf> = [
            "/a",
            "/usr/share/qemu",
            "/usr/share/seabios",
            "/usr/lib/ipxe/qemu",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(d, want);
        let many: Vec<PathBuf> = (0..15).map(|i| PathBuf::from(format!("/d{i}"))).collect();
        let d = search_dirs(&many);
        assert_eq!(d.len(), 16);
        assert_eq!(d[15], PathBuf::from("/usr/share/qemu"));
    }

    #[test]
    fn load_bios_sizes() {
        let a = TempDir::new("load");
        a.file("ok.bin", 128 * 1024);
        a.file("odd.bin", 65536 + 512);
        a.file("empty.bin", 0);
        a.file(DEFAULT_BIOS, 256 * 1024);
        let dirs = vec![a.0.clone()];
        assert_eq!(
            load_bios_in(Some(Path::new("ok.bin")), &dirs)
                .unwrap()
                .len(),
            128 * 1024
        );
        assert_eq!(load_bios_in(None, &dirs).unwrap().len(), 256 * 1024);
        assert_eq!(
            load_bios_in(Some(Path::new("odd.bin")), &dirs).unwrap_err(),
            "could not load PC BIOS 'odd.bin'"
        );
        assert_eq!(
            load_bios_in(Some(Path::new("empty.bin")), &dirs).unwrap_err(),
            "could not load PC BIOS 'empty.bin'"
        );
    }

    #[test]
    fn debian_seabios_is_found_by_default() {
        // On a Debian host with the seabios package (this one), the default
        // firmware resolves like QEMU's: /usr/share/seabios/bios-256k.bin.
        let seabios = Path::new("/usr/share/seabios/bios-256k.bin");
        let shadowed =
            Path::new(DEFAULT_BIOS).exists() || Path::new("/usr/share/qemu/bios-256k.bin").exists();
        if seabios.exists() && !shadowed {
            let p = find_firmware(DEFAULT_BIOS, &[]).unwrap();
            assert_eq!(p, PathBuf::from("/usr/share/seabios/bios-256k.bin"));
        }
    }
}
