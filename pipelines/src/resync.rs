//! A type finder for an MPEG transport stream that starts after bytes of
//! something else: a capture begun mid-write, a recorder's header, junk
//! left by a broken copy. GStreamer's own finder looks for packet sync in
//! the first few kilobytes only; behind 64 KiB of other bytes it finds
//! nothing, or an MPEG-2 elementary stream inside the packets (read
//! without the audio, the video failed verification). ffmpeg reads such a
//! file as a transport stream, and so does tsdemux once it is chosen: it
//! skips to the first packet itself.

use crate::error::{MediaError, Result};

/// How far into the file the packets are looked for (ffmpeg probes a few
/// megabytes before giving up).
const SCAN_BYTES: u64 = 1024 * 1024;
/// Consecutive packets, at one stride, that make a transport stream: by
/// chance 256^-64, and a second of even a low-rate stream.
const RUN: usize = 64;
/// Packet sizes: plain, with a 4-byte timestamp in front (M2TS, Blu-ray
/// and AVCHD), with Reed-Solomon parity (DVB).
const STRIDES: [usize; 3] = [188, 192, 204];
const SYNC: u8 = 0x47;

/// Registers the finder in this process, above every other.
pub(crate) fn register() -> Result<()> {
    let caps = gst::Caps::builder("video/mpegts")
        .field("systemstream", true)
        .build();
    gst::TypeFind::register(
        None,
        "vidmill-mpegts-resync",
        gst::Rank::PRIMARY + 1,
        None,
        Some(&caps),
        |find| {
            let Some(len) = find.length().map(|l| l.min(SCAN_BYTES)) else {
                return;
            };
            let Ok(size) = u32::try_from(len) else {
                return;
            };
            let Some(data) = find.peek(0, size) else {
                return;
            };
            if let Some(stride) = late_packets(data) {
                let caps = gst::Caps::builder("video/mpegts")
                    .field("systemstream", true)
                    .field("packetsize", stride as i32)
                    .build();
                find.suggest(gst::TypeFindProbability::Maximum, &caps);
            }
        },
    )
    .map_err(|e| MediaError::Pipeline(format!("register the transport stream finder: {e}")))
}

/// The packet size of a transport stream that begins after other bytes in
/// `data`; `None` when `data` starts as a known container or a transport
/// stream itself (GStreamer's finders know those), or holds no run of
/// [`RUN`] packets.
fn late_packets(data: &[u8]) -> Option<usize> {
    if starts_known(data) {
        return None;
    }
    let longest = STRIDES.iter().max().copied().unwrap_or(204);
    let last_start = data.len().checked_sub(longest * RUN)?;
    (1..=last_start)
        .filter(|at| data[*at] == SYNC)
        .find_map(|at| {
            STRIDES
                .iter()
                .copied()
                .find(|stride| (0..RUN).all(|k| data.get(at + k * stride) == Some(&SYNC)))
        })
}

/// Whether `data` starts as a file GStreamer recognises on its own.
fn starts_known(data: &[u8]) -> bool {
    let at = |from: usize, magic: &[u8]| data.get(from..from + magic.len()) == Some(magic);
    data.first() == Some(&SYNC)
        || [&b"ftyp"[..], b"moov", b"mdat", b"free", b"wide", b"skip"]
            .iter()
            .any(|m| at(4, m))
        || at(0, b"\x1a\x45\xdf\xa3")
        || at(0, b"RIFF")
        || at(0, b"OggS")
        || at(0, b"FLV")
        || at(0, b"\x30\x26\xb2\x75")
        || at(0, b"\x00\x00\x01\xba")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 7u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Never a sync byte, so the packets are all there is.
                match (x >> 24) as u8 {
                    SYNC => 0,
                    b => b,
                }
            })
            .collect()
    }

    fn packets(stride: usize, count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|_| {
                let mut p = vec![0u8; stride];
                // M2TS puts a 4-byte timestamp before each packet.
                p[if stride == 192 { 4 } else { 0 }] = SYNC;
                p
            })
            .collect()
    }

    #[test]
    fn packets_behind_other_bytes_are_found_at_their_stride() {
        for stride in STRIDES {
            let data = [noise(65_536), packets(stride, 100)].concat();
            assert_eq!(late_packets(&data), Some(stride), "stride {stride}");
        }
    }

    #[test]
    fn what_gstreamer_knows_or_too_few_packets_are_left_alone() {
        assert_eq!(late_packets(&packets(188, 100)), None);
        let mp4 = [b"\0\0\0\x20ftypisom".to_vec(), packets(188, 100)].concat();
        assert_eq!(late_packets(&mp4), None);
        let few = [noise(1000), packets(188, RUN - 1), noise(20_000)].concat();
        assert_eq!(late_packets(&few), None);
        assert_eq!(late_packets(&noise(300_000)), None);
    }
}
