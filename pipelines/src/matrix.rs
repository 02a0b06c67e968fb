//! The display matrix of an MP4/MOV video track, read from its `tkhd` box
//! without GStreamer. qtdemux 1.22 names seven of the eight matrices that
//! turn a picture by quarter turns and mirror it, and says nothing for the
//! eighth, `[0 -1; -1 0]` (mirrored, then turned 90°: the anti-diagonal
//! transpose ffmpeg calls `transpose=clock_flip`), so such a video came
//! out mirrored and on its side. Reading the matrix here covers all eight.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::facts::Orientation;

/// The most of a `moov` box read to find the matrix: an hour of video
/// indexes in a few megabytes; a larger one is left to qtdemux's tag.
const MAX_MOOV: u64 = 64 * 1024 * 1024;

/// Sample entries of still-image codecs: a track of them is cover art or
/// a thumbnail when a moving-picture track is beside it (see
/// `graph::Picture`).
const STILL_ENTRIES: &[&[u8; 4]] = &[b"jpeg", b"png ", b"mjpa", b"mjpb", b"mjp2"];

/// How the video track the pipelines read must be turned for display, as
/// its `tkhd` matrix says; `None` when `path` is no MP4/MOV, has no video
/// track, or its matrix is not a quarter turn with or without a mirror.
pub(crate) fn orientation(path: &Path) -> Option<Orientation> {
    let moov = read_moov(path)?;
    let tracks: Vec<Track> = children(&moov)
        .filter(|(kind, _)| kind == b"trak")
        .filter_map(|(_, body)| Track::parse(body))
        .filter(|t| t.video)
        .collect();
    let track = tracks
        .iter()
        .find(|t| !t.still)
        .or_else(|| tracks.first())?;
    from_matrix(track.matrix)
}

/// The orientation a display matrix `[a b; c d]` (16.16 fixed point, the
/// order `tkhd` stores it) stands for. Only signs count, so a matrix that
/// also scales is read as the turn it makes.
fn from_matrix([a, b, c, d]: [i32; 4]) -> Option<Orientation> {
    let sign = |x: i32| x.signum();
    let (rotation, flipped) = match (sign(a), sign(b), sign(c), sign(d)) {
        (1, 0, 0, 1) => (0, false),
        (0, 1, -1, 0) => (90, false),
        (-1, 0, 0, -1) => (180, false),
        (0, -1, 1, 0) => (270, false),
        // Mirrored (x → −x), then turned clockwise: the names of
        // GStreamer's `flip-rotate-*` tags.
        (-1, 0, 0, 1) => (0, true),
        (0, -1, -1, 0) => (90, true),
        (1, 0, 0, -1) => (180, true),
        (0, 1, 1, 0) => (270, true),
        _ => return None,
    };
    Some(Orientation { rotation, flipped })
}

/// What one `trak` says about itself.
struct Track {
    video: bool,
    still: bool,
    matrix: [i32; 4],
}

impl Track {
    fn parse(trak: &[u8]) -> Option<Self> {
        let mut matrix = None;
        let mut video = false;
        let mut still = false;
        for (kind, body) in children(trak) {
            match &kind {
                b"tkhd" => matrix = tkhd_matrix(body),
                b"mdia" => {
                    for (kind, body) in children(body) {
                        match &kind {
                            b"hdlr" => video = body.get(8..12) == Some(b"vide"),
                            b"minf" => {
                                still = first_entry(body)
                                    .is_some_and(|e| STILL_ENTRIES.iter().any(|s| **s == e))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Self {
            video,
            still,
            matrix: matrix?,
        })
    }
}

/// `[a b; c d]` of a `tkhd` body (after its box header).
fn tkhd_matrix(body: &[u8]) -> Option<[i32; 4]> {
    // version and flags (4), then times and ids: 20 bytes in version 0,
    // 32 in version 1; reserved (8), layer, group, volume, reserved (8).
    let times = match body.first()? {
        0 => 20,
        1 => 32,
        _ => return None,
    };
    let at = 4 + times + 8 + 8;
    let word = |i: usize| -> Option<i32> {
        let b = body.get(at + 4 * i..at + 4 * i + 4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    Some([word(0)?, word(1)?, word(3)?, word(4)?])
}

/// The format of the first sample entry under `minf/stbl/stsd`.
fn first_entry(minf: &[u8]) -> Option<[u8; 4]> {
    let (_, stbl) = children(minf).find(|(k, _)| k == b"stbl")?;
    let (_, stsd) = children(stbl).find(|(k, _)| k == b"stsd")?;
    // version and flags (4), entry count (4), then the first entry's size
    // (4) and format (4).
    let f = stsd.get(12..16)?;
    Some([f[0], f[1], f[2], f[3]])
}

/// The boxes inside `data`, as (type, body); stops at the first that does
/// not fit.
fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = data.get(at..at.checked_add(8)?)?;
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = [header[4], header[5], header[6], header[7]];
        let (start, end) = match size {
            0 => (at + 8, data.len()),
            1 => {
                let long = data.get(at + 8..at.checked_add(16)?)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(long);
                (
                    at + 16,
                    at.checked_add(usize::try_from(u64::from_be_bytes(b)).ok()?)?,
                )
            }
            n if n >= 8 => (at + 8, at.checked_add(n)?),
            _ => return None,
        };
        let body = data.get(start..end)?;
        at = end;
        Some((kind, body))
    })
}

/// The body of the file's top-level `moov` box.
fn read_moov(path: &Path) -> Option<Vec<u8>> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut at = 0u64;
    while len.saturating_sub(at) >= 8 {
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut header[..8]).ok()?;
        let mut size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let mut head = 8;
        if size == 1 {
            file.read_exact(&mut header[8..16]).ok()?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[8..16]);
            size = u64::from_be_bytes(b);
            head = 16;
        } else if size == 0 {
            size = len - at;
        }
        if size < head {
            return None;
        }
        if &header[4..8] == b"moov" {
            let body = (size - head).min(len - at - head);
            if body > MAX_MOOV {
                return None;
            }
            let mut moov = vec![0u8; usize::try_from(body).ok()?];
            file.read_exact(&mut moov).ok()?;
            return Some(moov);
        }
        at = at.saturating_add(size);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: i32 = 0x0001_0000;

    #[test]
    fn all_eight_quarter_turn_matrices_are_read() {
        let o = |rotation, flipped| Some(Orientation { rotation, flipped });
        assert_eq!(from_matrix([ONE, 0, 0, ONE]), o(0, false));
        assert_eq!(from_matrix([0, ONE, -ONE, 0]), o(90, false));
        assert_eq!(from_matrix([-ONE, 0, 0, -ONE]), o(180, false));
        assert_eq!(from_matrix([0, -ONE, ONE, 0]), o(270, false));
        assert_eq!(from_matrix([-ONE, 0, 0, ONE]), o(0, true));
        assert_eq!(from_matrix([0, -ONE, -ONE, 0]), o(90, true));
        assert_eq!(from_matrix([ONE, 0, 0, -ONE]), o(180, true));
        assert_eq!(from_matrix([0, ONE, ONE, 0]), o(270, true));
        // A shear or a 45° turn is none of them.
        assert_eq!(from_matrix([ONE, ONE, 0, ONE]), None);
    }

    #[test]
    fn the_transverse_matrix_is_turned_along_the_anti_diagonal() {
        let o = from_matrix([0, -ONE, -ONE, 0]).expect("orientation");
        assert_eq!(o.flip_method(), "ur-ll");
    }

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn trak(format: &[u8; 4], matrix: [i32; 4]) -> Vec<u8> {
        let mut tkhd = vec![0u8; 4 + 20 + 16];
        for v in [
            matrix[0],
            matrix[1],
            0,
            matrix[2],
            matrix[3],
            0,
            0,
            0,
            0x4000_0000,
        ] {
            tkhd.extend_from_slice(&v.to_be_bytes());
        }
        tkhd.extend_from_slice(&[0u8; 8]);
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(b"vide");
        hdlr.extend_from_slice(&[0u8; 13]);
        let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 16];
        stsd.extend_from_slice(format);
        stsd.extend_from_slice(&[0u8; 8]);
        let stbl = boxed(b"stbl", &boxed(b"stsd", &stsd));
        let mdia = [boxed(b"hdlr", &hdlr), boxed(b"minf", &stbl)].concat();
        boxed(
            b"trak",
            &[boxed(b"tkhd", &tkhd), boxed(b"mdia", &mdia)].concat(),
        )
    }

    #[test]
    fn the_matrix_of_the_moving_picture_track_is_taken_over_a_cover() {
        let cover = trak(b"jpeg", [ONE, 0, 0, ONE]);
        let video = trak(b"avc1", [0, -ONE, -ONE, 0]);
        let moov = boxed(b"moov", &[cover, video].concat());
        let file = [boxed(b"ftyp", b"isom\0\0\0\0"), moov, boxed(b"mdat", &[])].concat();
        let f = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(f.path(), file).expect("write");
        assert_eq!(
            orientation(f.path()),
            Some(Orientation {
                rotation: 90,
                flipped: true
            })
        );
        std::fs::write(f.path(), b"\x1aE\xdf\xa3 not an mp4").expect("write");
        assert_eq!(orientation(f.path()), None);
    }
}
