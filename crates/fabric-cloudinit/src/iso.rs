//! The NoCloud seed image: ISO 9660 with Rock Ridge and Joliet, labelled
//! `cidata`, built in memory.
//!
//! Rock Ridge gives Linux (which mounts the seed inside the VM) the real
//! lowercase names and modes; Joliet does the same for readers without
//! Rock Ridge. Every date in the image is one fixed instant and the writer
//! reads no clock, so the same seed always gives the same bytes.

use hadris_fs::{Content, DateTime, NoClock, Node, Owner, Permissions, SetAttr, Tree};
use hadris_iso::{IsoId, IsoLevel, IsoOptions};

use crate::Seed;

/// The volume label cloud-init's NoCloud datasource looks for.
pub const SEED_VOLUME_LABEL: &str = "cidata";

/// The one date in every seed image (1980-01-01T00:00:00Z, the earliest
/// date FAT and most tools agree on). A fixed date is what makes the image
/// reproducible; a real one would tell nothing cloud-init uses.
const SEED_TIME: DateTime = NoClock::TIME;

/// Why the seed image could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    /// The ISO writer refused the files.
    #[error("could not build the seed image: {0}")]
    Write(String),
    /// The writer stored something differently than asked (a name, a mode),
    /// so the image would not hold exactly the rendered files.
    #[error("the seed image would not hold the files as rendered: {0}")]
    Altered(String),
}

/// Builds the seed image holding exactly [`Seed::files`].
pub fn seed_iso(seed: &Seed) -> Result<Vec<u8>, IsoError> {
    let mut tree = Tree::new();
    // Root-owned and world-readable, as genisoimage -r would store them;
    // set explicitly so nothing of the host that builds the image leaks in.
    let attrs = SetAttr::new()
        .with_permissions(Permissions::new(0o644))
        .with_owner(Owner::new(0, 0))
        .with_modified(SEED_TIME)
        .with_accessed(SEED_TIME)
        .with_created(SEED_TIME);
    for (name, text) in seed.files() {
        let node = Node::file(Content::bytes(text.as_bytes())).with_attrs(attrs);
        tree.insert(name, node)
            .map_err(|e| IsoError::Write(format!("{name}: {e}")))?;
    }
    let options = IsoOptions::new()
        .with_id(IsoId::Volume, SEED_VOLUME_LABEL)
        .with_id(IsoId::Application, "FABRIC")
        .with_level(IsoLevel::L2)
        .with_joliet()
        .with_rock_ridge()
        .with_time(SEED_TIME);
    let mut image = Vec::new();
    let report = hadris_iso::sync::write(&mut image, &tree, &options)
        .map_err(|e| IsoError::Write(e.to_string()))?;
    if let Some(w) = report.warnings().first() {
        return Err(IsoError::Altered(w.to_string()));
    }
    drop_dot_entry_names(&mut image)?;
    Ok(image)
}

const SECTOR: usize = 2048;
/// ECMA-119 8.4: the primary volume descriptor is sector 16, and its root
/// directory record starts at byte 156.
const PVD_SECTOR: usize = 16;
const PVD_ROOT_RECORD: usize = 156;
/// RRIP `NM` flags: the name means `.` (CURRENT) or `..` (PARENT).
const NM_CURRENT_OR_PARENT: u8 = 0x02 | 0x04;

/// Removes the Rock Ridge `NM` entries hadris-iso 3.0.0-rc.2 records in
/// every directory's `.` and `..` records (an empty name with the CURRENT
/// or PARENT flag).
///
/// Those two records are named by their one-byte identifiers 0x00 and 0x01
/// (ECMA-119 6.8.2.2); genisoimage, libisofs (xorriso) and libarchive
/// (bsdtar) record only `SP`/`ER`/`PX`/`TF` there and never an `NM`.
/// Readers disagree about the flagged entry: Linux and libcdio skip it,
/// but genisoimage's `isoinfo -R` takes its empty content as the name and
/// lists `.` and `..` with no name. Without the entry every reader names
/// them from the identifier. hadris-iso has no option to leave it out.
///
/// Only the `.`/`..` records shrink; the records after them in the same
/// sector move up, and nothing refers to a record's offset (continuation
/// areas are addressed by their own block, which does not move).
fn drop_dot_entry_names(image: &mut [u8]) -> Result<(), IsoError> {
    let malformed = |what: &str| IsoError::Write(format!("unexpected ISO 9660 layout: {what}"));
    let pvd = image
        .get(PVD_SECTOR * SECTOR..(PVD_SECTOR + 1) * SECTOR)
        .ok_or_else(|| malformed("no primary volume descriptor"))?;
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Err(malformed("sector 16 is not the primary volume descriptor"));
    }
    let root = extent_of(&pvd[PVD_ROOT_RECORD..PVD_ROOT_RECORD + 34]);
    let mut pending = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some((block, size)) = pending.pop() {
        if !seen.insert(block) {
            continue;
        }
        let start = block as usize * SECTOR;
        let end = start + (size as usize).div_ceil(SECTOR) * SECTOR;
        let extent = image
            .get_mut(start..end)
            .ok_or_else(|| malformed("a directory extent lies outside the image"))?;
        for sector in extent.chunks_mut(SECTOR) {
            let mut at = 0;
            while at < SECTOR && sector[at] != 0 {
                let len = sector[at] as usize;
                let record = sector
                    .get(at..at + len)
                    .filter(|_| len >= 34)
                    .ok_or_else(|| malformed("a directory record crosses its sector"))?;
                let id = &record[33..33 + (record[32] as usize).min(len - 33)];
                if id == [0] || id == [1] {
                    drop_flagged_name(sector, at);
                } else if record[25] & 0x02 != 0 {
                    pending.push(extent_of(record));
                }
                at += sector[at] as usize;
            }
        }
    }
    Ok(())
}

/// A directory record's extent: its first block and its length in bytes.
fn extent_of(record: &[u8]) -> (u32, u32) {
    let le = |at: usize| {
        u32::from_le_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]])
    };
    (le(2), le(10))
}

/// Removes a flagged `NM` entry from the system use field of the record at
/// `at` in `sector`, keeping the record's length even (as the writer made
/// it, and every reader expects) and moving the following records up to
/// close the gap.
fn drop_flagged_name(sector: &mut [u8], at: usize) {
    let len = sector[at] as usize;
    let id_len = sector[at + 32] as usize;
    // The system use field starts after the identifier and its pad byte.
    let mut entry = at + 33 + id_len + (1 - id_len % 2);
    let record_end = at + len;
    while entry + 4 <= record_end {
        let entry_len = sector[entry + 2] as usize;
        if entry_len < 4 || entry + entry_len > record_end {
            return;
        }
        if &sector[entry..entry + 2] == b"NM"
            && entry_len == 5
            && sector[entry + 4] & NM_CURRENT_OR_PARENT != 0
        {
            let mut records_end = record_end;
            while records_end < SECTOR && sector[records_end] != 0 {
                records_end += sector[records_end] as usize;
            }
            let records_end = records_end.min(SECTOR);
            sector.copy_within(entry + entry_len..records_end, entry);
            let mut new_len = len - entry_len;
            let closed = records_end - entry_len;
            sector[closed..records_end].fill(0);
            if new_len % 2 == 1 {
                // The pad byte: move what follows one further down.
                sector.copy_within(at + new_len..closed, at + new_len + 1);
                sector[at + new_len] = 0;
                new_len += 1;
            }
            sector[at] = new_len as u8;
            return;
        }
        entry += entry_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SUSP entries (signature and body) of the record at `at`.
    fn entries(sector: &[u8], at: usize) -> Vec<([u8; 2], Vec<u8>)> {
        let len = sector[at] as usize;
        let id_len = sector[at + 32] as usize;
        let mut p = at + 33 + id_len + (1 - id_len % 2);
        let mut out = Vec::new();
        while p + 4 <= at + len {
            let l = sector[p + 2] as usize;
            assert!(l >= 4 && p + l <= at + len, "entry overruns its record");
            out.push(([sector[p], sector[p + 1]], sector[p + 4..p + l].to_vec()));
            p += l;
        }
        out
    }

    fn record(id: &[u8], system_use: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[32] = id.len() as u8;
        r.extend_from_slice(id);
        if id.len().is_multiple_of(2) {
            r.push(0);
        }
        r.extend_from_slice(system_use);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r[0] = r.len() as u8;
        r
    }

    /// RRIP/SUSP as genisoimage writes them: the root's `.` starts its
    /// system use field with SP, `.` and `..` carry PX and TF but no NM,
    /// and the files keep their NM names.
    #[test]
    fn dot_records_carry_sp_and_px_but_no_name() {
        let seed = crate::render(
            &fabric_model::Machine::from_yaml(include_str!("../tests/fixtures/yaml11-traps.yaml"))
                .unwrap(),
            None,
            &crate::RenderOptions::default(),
        )
        .unwrap();
        let image = seed_iso(&seed).unwrap();
        let pvd = &image[PVD_SECTOR * SECTOR..];
        let (block, _) = extent_of(&pvd[PVD_ROOT_RECORD..PVD_ROOT_RECORD + 34]);
        let sector = &image[block as usize * SECTOR..][..SECTOR];
        let dot = entries(sector, 0);
        let dotdot_at = sector[0] as usize;
        let dotdot = entries(sector, dotdot_at);
        assert_eq!(&dot[0].0, b"SP");
        assert_eq!(dot[0].1, [0xBE, 0xEF, 0]);
        for (which, list) in [(".", &dot), ("..", &dotdot)] {
            let sigs: Vec<&[u8; 2]> = list.iter().map(|(s, _)| s).collect();
            assert!(sigs.contains(&b"PX"), "{which}: {sigs:?}");
            assert!(sigs.contains(&b"TF"), "{which}: {sigs:?}");
            assert!(!sigs.contains(&b"NM"), "{which}: {sigs:?}");
        }
        // The ER entry that says "this is Rock Ridge" sits in the root
        // `.`'s continuation area; the CE must still point at it.
        let (_, ce) = dot.iter().find(|(s, _)| s == b"CE").expect("CE in root .");
        let at = u32::from_le_bytes(ce[0..4].try_into().unwrap()) as usize * SECTOR
            + u32::from_le_bytes(ce[8..12].try_into().unwrap()) as usize;
        assert_eq!(&image[at..at + 2], b"ER");
        assert_eq!(&image[at + 8..at + 18], b"RRIP_1991A");
        let mut at = dotdot_at + sector[dotdot_at] as usize;
        let mut names = Vec::new();
        while sector[at] != 0 {
            for (sig, body) in entries(sector, at) {
                if &sig == b"NM" {
                    assert_eq!(body[0], 0, "a file's NM has no flags");
                    names.push(String::from_utf8(body[1..].to_vec()).unwrap());
                }
            }
            at += sector[at] as usize;
        }
        let want: Vec<&str> = seed.files().iter().map(|(n, _)| *n).collect();
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        names.sort();
        assert_eq!(names, want);
    }

    /// The removal keeps the record even, moves the next record up intact
    /// and leaves zeros behind.
    #[test]
    fn a_flagged_name_is_cut_and_the_next_record_moves_up() {
        // An 8-byte filler entry, then the 5-byte NM: 34 + 8 + 5 = 47,
        // padded to 48; after the cut 43, padded to 44.
        let filler = b"ZZ\x08\x01abcd";
        let dot = record(&[0], &[&filler[..], b"NM\x05\x01\x02"].concat());
        let next = record(b"A.;1", b"NM\x07\x01\x00ab");
        let mut sector = vec![0u8; SECTOR];
        sector[..dot.len()].copy_from_slice(&dot);
        sector[dot.len()..dot.len() + next.len()].copy_from_slice(&next);
        drop_flagged_name(&mut sector, 0);
        let first = sector[0] as usize;
        assert_eq!(first % 2, 0);
        assert_eq!(entries(&sector, 0), [(*b"ZZ", b"abcd".to_vec())]);
        assert_eq!(&sector[first..first + next.len()], &next[..]);
        assert!(sector[first + next.len()..].iter().all(|&b| b == 0));

        // An odd remainder gets its pad byte back: 34 + 7 + 5 = 46 -> 41 -> 42.
        let dot = record(&[1], &[&b"ZZ\x07\x01abc"[..], b"NM\x05\x01\x04"].concat());
        let mut sector = vec![0u8; SECTOR];
        sector[..dot.len()].copy_from_slice(&dot);
        sector[dot.len()..dot.len() + next.len()].copy_from_slice(&next);
        drop_flagged_name(&mut sector, 0);
        assert_eq!(sector[0], 42);
        assert_eq!(sector[41], 0);
        assert_eq!(&sector[42..42 + next.len()], &next[..]);
        assert!(sector[42 + next.len()..].iter().all(|&b| b == 0));

        // A name without CURRENT/PARENT is a real name and stays.
        let mut sector = vec![0u8; SECTOR];
        sector[..next.len()].copy_from_slice(&next);
        let before = sector.clone();
        drop_flagged_name(&mut sector, 0);
        assert_eq!(sector, before);
    }
}
