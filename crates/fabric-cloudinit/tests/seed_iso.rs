//! The seed image read back by independent ISO 9660 readers: genisoimage's
//! `isoinfo` (Rock Ridge, Joliet and the descriptors), libisofs (`xorriso`),
//! libarchive (`bsdtar`), 7-Zip (`7z`), libcdio (`iso-info`, whose Rock
//! Ridge code is the Linux kernel's, ported) and, where the kernel has
//! iso9660, the kernel itself through a loop mount.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use fabric_cloudinit::seed_iso;

fn isoinfo(args: &[&str], iso: &Path) -> Vec<u8> {
    let out = Command::new("isoinfo")
        .args(args)
        .arg("-i")
        .arg(iso)
        .output()
        .expect("run isoinfo");
    assert!(
        out.status.success(),
        "isoinfo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn isoinfo_reads_the_seed_files_byte_for_byte() {
    let test = "isoinfo_reads_the_seed_files_byte_for_byte";
    if !have("isoinfo") {
        return oracle_unavailable(test, "isoinfo", "apt-get install genisoimage");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, _, seed) in fixture_seeds() {
        let image = seed_iso(&seed).unwrap();
        assert_eq!(image, seed_iso(&seed).unwrap(), "{name}: not reproducible");
        let iso = tmp.path().join(format!("{name}.iso"));
        std::fs::write(&iso, &image).unwrap();

        let info = String::from_utf8(isoinfo(&["-d"], &iso)).unwrap();
        assert!(info.contains("Volume id: cidata\n"), "{name}:\n{info}");
        assert!(
            info.contains("Rock Ridge signatures version"),
            "{name}: no Rock Ridge:\n{info}"
        );
        assert!(
            info.contains("Joliet with UCS level"),
            "{name}: no Joliet:\n{info}"
        );

        // The file names as Rock Ridge and Joliet readers list them.
        let rr = String::from_utf8(isoinfo(&["-R", "-f"], &iso)).unwrap();
        let joliet = String::from_utf8(isoinfo(&["-J", "-f"], &iso)).unwrap();
        let mut want: Vec<String> = seed.files().iter().map(|(n, _)| format!("/{n}")).collect();
        want.sort();
        for listing in [&rr, &joliet] {
            let mut got: Vec<&str> = listing.lines().collect();
            got.sort();
            assert_eq!(got, want, "{name}: listing");
        }

        for (file, text) in seed.files() {
            let path = format!("/{file}");
            for mode in ["-R", "-J"] {
                let got = isoinfo(&[mode, "-x", &path], &iso);
                assert_eq!(got, text.as_bytes(), "{name}: {mode} {path}");
            }
        }

        // Rock Ridge modes, owners and the fixed date, e.g.
        // "-rw-r--r--   1    0    0    76 Jan  1 1980 [     22 00]  meta-data".
        let long = String::from_utf8(isoinfo(&["-R", "-l"], &iso)).unwrap();
        for (file, _) in seed.files() {
            let line = long
                .lines()
                .find(|l| l.trim_end().ends_with(&format!(" {file}")))
                .unwrap_or_else(|| panic!("{name}: {file} not in listing:\n{long}"));
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[..4], ["-rw-r--r--", "1", "0", "0"], "{name}: {line}");
            assert!(line.contains(" Jan  1 1980 "), "{name}: {line}");
        }

        // `.` and `..` are named as in genisoimage's own images, e.g.
        // "drwxr-xr-x   2    0    0  2048 Jan  1 1980 [     19 02]  . ".
        // An empty Rock Ridge NM entry in those records made isoinfo list
        // them with no name at all.
        let dirs: Vec<&str> = long
            .lines()
            .filter(|l| l.starts_with('d'))
            .map(|l| l.rsplit(']').next().unwrap_or("").trim())
            .collect();
        assert_eq!(dirs, [".", ".."], "{name}: dot entries:\n{long}");
        for line in long.lines().filter(|l| l.starts_with('d')) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[..4], ["drwxr-xr-x", "2", "0", "0"], "{name}: {line}");
        }
    }
}

/// One seed image per fixture, written to `dir`.
fn seed_images(dir: &Path) -> Vec<(&'static str, fabric_cloudinit::Seed, std::path::PathBuf)> {
    fixture_seeds()
        .into_iter()
        .map(|(name, _, seed)| {
            let iso = dir.join(format!("{name}.iso"));
            std::fs::write(&iso, seed_iso(&seed).unwrap()).unwrap();
            (name, seed, iso)
        })
        .collect()
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} exited {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // xorriso reports on stderr and lists on stdout; both are read.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every seed file, and nothing else, in `dir`, byte for byte.
fn assert_extracted(reader: &str, name: &str, seed: &fabric_cloudinit::Seed, dir: &Path) {
    let mut got: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = seed.files().iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{reader}: {name}: extracted names");
    for (file, text) in seed.files() {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert_eq!(bytes, text.as_bytes(), "{reader}: {name}: {file}");
    }
}

/// A long listing's lines for the seed files: mode, links, owner, group.
fn assert_listed_modes(reader: &str, name: &str, seed: &fabric_cloudinit::Seed, listing: &str) {
    for (file, _) in seed.files() {
        let line = listing
            .lines()
            .find(|l| {
                let l = l.trim_end().trim_end_matches('\'');
                l.ends_with(&format!("/{file}")) || l.ends_with(&format!(" {file}"))
            })
            .unwrap_or_else(|| panic!("{reader}: {name}: {file} not listed:\n{listing}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields[..4],
            ["-rw-r--r--", "1", "0", "0"],
            "{reader}: {name}: {line}"
        );
    }
}

/// libisofs, the reader of xorriso: it must load the tree and check the
/// medium without a single warning, list the Rock Ridge names, modes and
/// owners, and extract the files byte for byte.
#[test]
fn xorriso_reads_the_seed_without_warnings() {
    let test = "xorriso_reads_the_seed_without_warnings";
    if !have("xorriso") {
        return oracle_unavailable(test, "xorriso", "apt-get install xorriso");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, seed, iso) in seed_images(tmp.path()) {
        let out = tmp.path().join(format!("xorriso-{name}"));
        let iso = iso.to_str().unwrap();
        let out_arg = out.to_str().unwrap();
        // -return_with WARNING 32: any message of WARNING or worse (a bad
        // SUSP entry, a damaged tree, a read error) is a failed run.
        let log = run(
            "xorriso",
            &[
                "-abort_on",
                "NEVER",
                "-return_with",
                "WARNING",
                "32",
                "-indev",
                iso,
                "-check_media",
                "--",
                "-find",
                "/",
                "-exec",
                "lsdl",
                "--",
                "-osirrox",
                "on",
                "-extract",
                "/",
                out_arg,
            ],
        );
        assert!(log.contains("Volume id    : 'cidata'"), "{name}:\n{log}");
        assert!(
            log.lines()
                .any(|l| l.starts_with("Media region :") && l.ends_with("+ good")),
            "{name}: -check_media:\n{log}"
        );
        assert_listed_modes("xorriso", name, &seed, &log);
        assert_extracted("xorriso", name, &seed, &out);
    }
}

/// libarchive, the reader of bsdtar.
#[test]
fn bsdtar_reads_the_seed() {
    let test = "bsdtar_reads_the_seed";
    if !have("bsdtar") {
        return oracle_unavailable(test, "bsdtar", "apt-get install libarchive-tools");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, seed, iso) in seed_images(tmp.path()) {
        let iso = iso.to_str().unwrap();
        let listing = run("bsdtar", &["-tvf", iso]);
        assert_listed_modes("bsdtar", name, &seed, &listing);
        let root = listing.lines().next().unwrap_or("");
        assert!(
            root.starts_with("drwxr-xr-x ") && root.ends_with(" ."),
            "bsdtar: {name}: root directory:\n{listing}"
        );
        let out = tmp.path().join(format!("bsdtar-{name}"));
        std::fs::create_dir(&out).unwrap();
        run("bsdtar", &["-xf", iso, "-C", out.to_str().unwrap()]);
        assert_extracted("bsdtar", name, &seed, &out);
    }
}

/// 7-Zip's ISO reader (names from Joliet).
#[test]
fn seven_zip_reads_the_seed() {
    let test = "seven_zip_reads_the_seed";
    if !have("7z") {
        return oracle_unavailable(test, "7z", "apt-get install p7zip-full");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, seed, iso) in seed_images(tmp.path()) {
        let iso = iso.to_str().unwrap();
        let listing = run("7z", &["l", "-slt", iso]);
        assert!(listing.contains("Type = Iso"), "7z: {name}:\n{listing}");
        let out = tmp.path().join(format!("7z-{name}"));
        run("7z", &["x", "-y", &format!("-o{}", out.display()), iso]);
        assert_extracted("7z", name, &seed, &out);
    }
}

/// libcdio's `iso-info`, whose Rock Ridge parser is a port of the Linux
/// kernel's (fs/isofs/rock.c): names, modes and owners without Joliet.
#[test]
fn libcdio_lists_the_rock_ridge_tree() {
    let test = "libcdio_lists_the_rock_ridge_tree";
    if !have("iso-info") {
        return oracle_unavailable(test, "iso-info", "apt-get install libcdio-utils");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, seed, iso) in seed_images(tmp.path()) {
        let listing = run(
            "iso-info",
            &["--no-header", "--no-joliet", "-l", iso.to_str().unwrap()],
        );
        assert_listed_modes("iso-info", name, &seed, &listing);
        let dirs: Vec<&str> = listing
            .lines()
            .filter(|l| l.trim_start().starts_with('d'))
            .map(|l| l.rsplit(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(dirs, [".", ".."], "iso-info: {name}:\n{listing}");
    }
}

/// The Linux kernel's own iso9660 driver, through a read-only loop mount:
/// the names, modes, owners and contents as the VM's kernel sees them.
/// Needs root and a kernel with iso9660; a kernel without it (some
/// micro-VMs build it out) cannot be helped by installing anything, so
/// that case is reported on stderr and the test returns.
#[test]
fn the_kernel_mounts_the_seed() {
    use std::os::unix::fs::MetadataExt;
    let test = "the_kernel_mounts_the_seed";
    if !is_root() {
        return oracle_unavailable(test, "root (for a loop mount)", "run the tests as root");
    }
    if !have("mount") {
        return oracle_unavailable(test, "mount", "apt-get install mount");
    }
    let tmp = tempfile::tempdir().unwrap();
    for (name, seed, iso) in seed_images(tmp.path()) {
        let dir = tmp.path().join(format!("mnt-{name}"));
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "iso9660", "-o", "loop,ro"])
            .arg(&iso)
            .arg(&dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            let kernel_lacks_iso9660 = !filesystems
                .lines()
                .any(|l| l.trim_end().ends_with("iso9660"));
            if kernel_lacks_iso9660 {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: this kernel has no iso9660 driver ({})",
                    String::from_utf8_lossy(&out.stderr)
                        .trim()
                        .replace('\n', " ")
                );
                return;
            }
            panic!("mount {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let checked = std::panic::catch_unwind(|| {
            assert_extracted("kernel", name, &seed, &dir);
            for (file, _) in seed.files() {
                let meta = std::fs::metadata(dir.join(file)).unwrap();
                assert_eq!(meta.mode() & 0o7777, 0o644, "kernel: {name}: {file} mode");
                assert_eq!((meta.uid(), meta.gid()), (0, 0), "kernel: {name}: {file}");
            }
        });
        let _ = Command::new("umount").arg(&dir).status();
        if let Err(e) = checked {
            std::panic::resume_unwind(e);
        }
    }
}

/// blkid is how cloud-init's NoCloud datasource finds the seed
/// (`LABEL=cidata`); its probe must see an ISO 9660 volume with that label.
/// Its UUID comes from the volume's creation date, so it is fixed too.
#[test]
fn blkid_finds_the_cidata_label() {
    let test = "blkid_finds_the_cidata_label";
    if !have("blkid") {
        return oracle_unavailable(test, "blkid", "apt-get install util-linux");
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, seed) = fixture_seeds().remove(0);
    let iso = tmp.path().join("seed.iso");
    std::fs::write(&iso, seed_iso(&seed).unwrap()).unwrap();
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&iso)
        .output()
        .expect("run blkid");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "blkid: {text}");
    let fields: Vec<&str> = text.lines().collect();
    assert!(fields.contains(&"LABEL=cidata"), "{text}");
    assert!(fields.contains(&"TYPE=iso9660"), "{text}");
    assert!(fields.contains(&"UUID=1980-01-01-00-00-00-00"), "{text}");
}
