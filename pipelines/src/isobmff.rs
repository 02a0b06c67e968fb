//! A look at an MP4/MOV file's top-level boxes without GStreamer: a file
//! with media data (`mdat`) but no index (`moov`, or `moof` fragments) is a
//! recording cut off before it was finalised. Telling that from the box
//! headers takes microseconds; the demuxer would read the whole file first.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

/// What the top-level boxes of a file say. Public only for the fuzz target
/// (through [`crate::fuzzing`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Starts like ISO BMFF (`ftyp`, `wide`, `free` or `mdat`).
    pub iso: bool,
    pub mdat: bool,
    pub moov: bool,
    /// Movie fragments: a fragmented MP4 (OBS's crash-safe recording,
    /// DASH/HLS segments), whose demuxer seeks by guessing.
    pub moof: bool,
    /// A box says it ends past the end of the file: the file was cut off
    /// (or its size lies).
    pub cut_off: bool,
}

/// True when `path` is an ISO BMFF file that has `mdat` but no `moov` or
/// `moof`; false for complete files and for anything that is not ISO BMFF.
pub(crate) fn lacks_index(path: &Path) -> bool {
    let l = layout(path);
    l.iso && l.mdat && !l.moov && !l.moof
}

/// Whether `path` is a fragmented ISO BMFF file.
/// An ISO BMFF file whose last box ends past the end of the file.
pub(crate) fn is_cut_off(path: &Path) -> bool {
    let l = layout(path);
    l.iso && l.cut_off
}

pub(crate) fn is_fragmented(path: &Path) -> bool {
    let l = layout(path);
    l.iso && l.moof
}

/// Walks the top-level box headers of the file at `path`; an unreadable
/// file is no ISO BMFF.
pub(crate) fn layout(path: &Path) -> Layout {
    let Ok(mut file) = File::open(path) else {
        return Layout::default();
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Layout::default();
    };
    layout_of(&mut file, len)
}

/// [`layout`] of bytes in memory: the same walk without a file, so the fuzz
/// target needs none.
pub fn layout_of_bytes(bytes: &[u8]) -> Layout {
    layout_of(&mut Cursor::new(bytes), bytes.len() as u64)
}

/// Walks the top-level box headers of `file`, `len` bytes long (reading 16
/// bytes of each).
fn layout_of<R: Read + Seek>(file: &mut R, len: u64) -> Layout {
    let mut l = Layout::default();
    let mut at = 0u64;
    // A box may declare any 64-bit size, so `at` may run past `len` (up to
    // u64::MAX, saturated): what is left is counted down from `len`, never
    // up from `at`, which could overflow.
    while len.saturating_sub(at) >= 8 {
        let mut header = [0u8; 16];
        if file.seek(SeekFrom::Start(at)).is_err() || file.read_exact(&mut header[..8]).is_err() {
            return l;
        }
        let kind: [u8; 4] = [header[4], header[5], header[6], header[7]];
        let kind = &kind;
        // Box types are four printable characters (`©nam` aside, whose
        // boxes live inside others): anything else after the boxes is
        // data appended to the file, not a box of it.
        if !kind.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            return l;
        }
        if at == 0 {
            if !matches!(kind, b"ftyp" | b"wide" | b"free" | b"mdat") {
                return l;
            }
            l.iso = true;
        }
        let mut size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        if size == 1 {
            if file.read_exact(&mut header[8..16]).is_err() {
                l.mdat |= kind == b"mdat";
                return l;
            }
            size = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
        } else if size == 0 {
            size = len - at;
        }
        match kind {
            b"moov" => l.moov = true,
            b"moof" => l.moof = true,
            b"mdat" => l.mdat = true,
            _ => {}
        }
        if size < 8 {
            return l;
        }
        l.cut_off |= at.saturating_add(size) > len;
        at = at.saturating_add(size);
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = ((body + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(body + 8, 0);
        b
    }

    fn file(parts: &[Vec<u8>], cut: usize) -> tempfile::NamedTempFile {
        let mut bytes: Vec<u8> = parts.concat();
        bytes.truncate(bytes.len() - cut);
        let f = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(f.path(), bytes).expect("write");
        f
    }

    #[test]
    fn media_without_an_index_is_detected() {
        let cut = file(&[boxed(b"ftyp", 16), boxed(b"mdat", 1000)], 500);
        assert!(lacks_index(cut.path()));
    }

    #[test]
    fn a_file_cut_off_is_told_from_one_with_data_appended() {
        let whole = [boxed(b"ftyp", 16), boxed(b"moov", 50), boxed(b"mdat", 1000)];
        assert!(is_cut_off(file(&whole, 10).path()));
        assert!(!is_cut_off(file(&whole, 0).path()));
        let appended = [whole.concat(), b"PK\x03\x04\x14\x00\x00\x00 a zip".to_vec()];
        assert!(!is_cut_off(file(&appended, 0).path()));
    }

    #[test]
    fn complete_and_foreign_files_pass() {
        let whole = file(
            &[boxed(b"ftyp", 16), boxed(b"mdat", 100), boxed(b"moov", 50)],
            0,
        );
        assert!(!lacks_index(whole.path()));
        let fragmented = file(
            &[boxed(b"ftyp", 16), boxed(b"moof", 20), boxed(b"mdat", 100)],
            0,
        );
        assert!(!lacks_index(fragmented.path()));
        assert!(is_fragmented(fragmented.path()));
        assert!(!is_fragmented(whole.path()));
        let other = file(&[b"\x1aE\xdf\xa3 matroska".to_vec()], 0);
        assert!(!lacks_index(other.path()));
    }

    /// Found by the `isobmff` fuzz target: a box whose 64-bit size is
    /// u64::MAX took the walk's position to u64::MAX, and the next loop
    /// test overflowed.
    #[test]
    fn fuzz_a_64_bit_box_size_of_u64_max_ends_the_walk() {
        let mut bytes = boxed(b"free", 0);
        bytes.extend_from_slice(b"\0\0\0\x01\0\0\0\0");
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            layout_of_bytes(&bytes),
            Layout {
                iso: true,
                ..Layout::default()
            }
        );
        let near_end = [
            &boxed(b"ftyp", 0)[..],
            b"\0\0\0\x01mdat",
            &(u64::MAX - 3).to_be_bytes(),
        ]
        .concat();
        assert!(layout_of_bytes(&near_end).mdat);
    }
}
