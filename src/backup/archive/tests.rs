use std::io::{Seek, Write as _};

use super::*;

/// A file holding `bytes`, its cursor at the end (as a spool is).
fn file_of(bytes: &[u8]) -> File {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file
}

/// An archive of a manifest, a section of the first 5 bytes of a longer
/// file, and an empty section.
fn sample() -> (Vec<Section>, Vec<u8>) {
    let sections = || {
        vec![
            Section::bytes(MANIFEST, br#"{"position":7}"#.to_vec()),
            Section::file(STORE, file_of(b"hello, and what came after"), 5),
            Section::bytes("events/x", Vec::new()),
        ]
    };
    let mut out = Vec::new();
    let mut names = Vec::new();
    write(sections(), &mut out, &mut |n| names.push(n.to_string())).unwrap();
    assert_eq!(names, [MANIFEST, STORE, "events/x"]);
    (sections(), out)
}

#[test]
fn an_archive_reads_back_section_by_section_at_its_announced_size() {
    let (sections, out) = sample();
    assert_eq!(size(&sections), out.len() as u64);
    assert!(out.starts_with(b"pushd-backup-v1\n"));
    let entries = verify(&mut &out[..], out.len() as u64).unwrap();
    let read: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|e| {
            let at = e.offset as usize;
            (e.name.as_str(), &out[at..at + e.len as usize])
        })
        .collect();
    assert_eq!(
        read,
        [
            (MANIFEST, &br#"{"position":7}"#[..]),
            (STORE, b"hello"),
            ("events/x", b""),
        ]
    );
}

#[test]
fn every_cut_and_every_changed_byte_is_refused_as_damage() {
    let (_, out) = sample();
    for len in 0..out.len() {
        let e = verify(&mut &out[..len], len as u64).unwrap_err();
        assert!(
            matches!(e, Error::Damaged(_) | Error::NotABackup(_)),
            "cut at {len}: {e}"
        );
    }
    for at in 0..out.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut changed = out.clone();
            changed[at] ^= flip;
            assert!(
                verify(&mut &changed[..], changed.len() as u64).is_err(),
                "byte {at} ^ {flip:#x} passed"
            );
        }
    }
    let mut longer = out.clone();
    longer.push(0);
    let e = verify(&mut &longer[..], longer.len() as u64).unwrap_err();
    assert!(e.to_string().contains("1 bytes follow its end"), "{e}");
    let mut changed = out.clone();
    let middle = out.len() / 2;
    changed[middle] ^= 1;
    let e = verify(&mut &changed[..], changed.len() as u64).unwrap_err();
    assert!(e.to_string().contains("checksum does not match"), "{e}");
    let e = verify(&mut &out[..out.len() - 10], out.len() as u64 - 10).unwrap_err();
    assert!(e.to_string().contains("cut short"), "{e}");
}

#[test]
fn a_newer_version_is_refused_naming_both_and_another_file_is_not_a_backup() {
    let (_, out) = sample();
    let newer = [b"pushd-backup-v2\n", &out[16..]].concat();
    let e = verify(&mut &newer[..], newer.len() as u64).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Version { .. }), "{text}");
    assert!(
        text.contains("pushd-backup-v2") && text.contains("pushd-backup-v1"),
        "{text}"
    );
    for other in [
        &b"PK\x03\x04 a zip file"[..],
        b"",
        b"pushd-portable-snapshot-v1\n",
    ] {
        let e = verify(&mut &other[..], other.len() as u64).unwrap_err();
        assert!(matches!(e, Error::NotABackup(_)), "{e}");
    }
}

#[test]
fn a_file_that_shrinks_while_it_is_written_fails_the_write() {
    let mut file = file_of(b"0123456789");
    file.rewind().unwrap();
    let short = Section::file(STORE, file, 20);
    let e = write(vec![short], &mut Vec::new(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("shrank"), "{e}");
}
