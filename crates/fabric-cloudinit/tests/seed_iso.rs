//! The seed image read back by an independent ISO 9660 reader, genisoimage's
//! `isoinfo`: through Rock Ridge, through Joliet, and its descriptors.

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
