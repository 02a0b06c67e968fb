//! WebSocket framing (RFC 6455 section 5) as the event streams need it:
//! whole unmasked frames out, built once and written as they are to every
//! subscriber (a server's frames are the same bytes for all), and a reader
//! of the client's masked frames that keeps nothing but control frames'
//! payloads, so a client's data costs no memory whatever its size.

use axum::body::Bytes;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;
const CONTINUATION: u8 = 0x0;

/// A whole frame (FIN set, not masked) of `opcode` carrying `payload`.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n => match u16::try_from(n) {
            Ok(n) => {
                frame.push(126);
                frame.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        },
    }
    frame.extend_from_slice(payload);
    frame.into()
}

pub fn text(text: &str) -> Bytes {
    encode(TEXT, text.as_bytes())
}

/// A close frame: the code, then the reason (cut to fit a control frame).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(CLOSE, &payload)
}

/// What the client sent that asks for something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong,
    /// The client closes (its code, when it gave one).
    Close(Option<u16>),
}

/// A frame or message over the size limit, or one that breaks the
/// protocol (unmasked, reserved bits or opcodes, a fragmented or oversized
/// control frame, a continuation of nothing).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// The frame being read.
#[derive(Debug)]
struct Frame {
    opcode: u8,
    /// Payload bytes still to come.
    left: u64,
    mask: [u8; 4],
    /// Payload bytes read so far (the mask's position).
    at: usize,
    /// A control frame's payload, unmasked.
    control: Vec<u8>,
}

/// Reads the client's frames as their bytes arrive, in pieces of any size.
#[derive(Debug)]
pub struct Reader {
    max: u64,
    head: [u8; 14],
    have: usize,
    frame: Option<Frame>,
    /// Bytes of the data message under way, when one is.
    message: Option<u64>,
}

impl Reader {
    /// A reader refusing frames and messages over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max: max as u64,
            head: [0; 14],
            have: 0,
            frame: None,
            message: None,
        }
    }

    /// Takes in `bytes`, adding what the client asked for to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Incoming>) -> Result<(), Refused> {
        while !bytes.is_empty() {
            let Some(frame) = &mut self.frame else {
                let take = (self.head_len() - self.have).min(bytes.len());
                self.head[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                // Reserved bits (no extension was agreed), an unmasked
                // client frame: refused before the rest of the head.
                if self.have >= 2 && (self.head[0] & 0x70 != 0 || self.head[1] & 0x80 == 0) {
                    return Err(Refused);
                }
                if self.have == self.head_len() {
                    self.start_frame()?;
                    self.finish_frame_if_done(out);
                }
                continue;
            };
            let take = usize::try_from(frame.left)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            if frame.opcode >= CLOSE {
                for &b in &bytes[..take] {
                    frame.control.push(b ^ frame.mask[frame.at % 4]);
                    frame.at += 1;
                }
            }
            frame.left -= take as u64;
            bytes = &bytes[take..];
            self.finish_frame_if_done(out);
        }
        Ok(())
    }

    /// How long the head of the frame now arriving is: two bytes, then
    /// what the second says (a longer length, then the mask).
    fn head_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let length = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + length + 4
    }

    fn start_frame(&mut self) -> Result<(), Refused> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        let (len, mask_at) = match b1 & 0x7f {
            126 => (
                u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                4,
            ),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&self.head[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        if len > self.max {
            return Err(Refused);
        }
        match opcode {
            CLOSE | PING | PONG if !fin || len > 125 => return Err(Refused),
            CLOSE | PING | PONG => {}
            TEXT | BINARY | CONTINUATION => {
                let so_far = match (opcode, self.message) {
                    (CONTINUATION, Some(n)) => n,
                    (CONTINUATION, None) | (_, Some(_)) => return Err(Refused),
                    _ => 0,
                };
                let total = so_far + len;
                if total > self.max {
                    return Err(Refused);
                }
                self.message = (!fin).then_some(total);
            }
            _ => return Err(Refused),
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.head[mask_at..mask_at + 4]);
        self.frame = Some(Frame {
            opcode,
            left: len,
            mask,
            at: 0,
            control: Vec::new(),
        });
        self.have = 0;
        Ok(())
    }

    fn finish_frame_if_done(&mut self, out: &mut Vec<Incoming>) {
        let Some(frame) = self.frame.take_if(|f| f.left == 0) else {
            return;
        };
        match frame.opcode {
            PING => out.push(Incoming::Ping(frame.control)),
            PONG => out.push(Incoming::Pong),
            CLOSE => out.push(Incoming::Close(
                frame
                    .control
                    .get(..2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]])),
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frame: masked with `mask`.
    fn client(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn read_in_pieces(bytes: &[u8], piece: usize) -> Result<Vec<Incoming>, Refused> {
        let mut r = Reader::new(64 << 10);
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            r.feed(chunk, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn frames_out_carry_their_length_in_the_shortest_form() {
        assert_eq!(&encode(TEXT, b"hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = encode(TEXT, &[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = encode(BINARY, &vec![0; 70_000]);
        assert_eq!(&big[..2], &[0x82, 127]);
        assert_eq!(big.len(), 70_010);
        assert_eq!(
            &close(1013, "slow")[..],
            &[0x88, 6, 0x03, 0xf5, b's', b'l', b'o', b'w']
        );
        assert_eq!(close(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }

    #[test]
    fn control_frames_come_out_of_any_split_and_data_is_skipped() {
        let mut bytes = client(0x81, b"ignored text", [1, 2, 3, 4]);
        bytes.extend(client(0x02, &[7; 1000], [9, 9, 9, 9]));
        bytes.extend(client(0x89, b"are you there", [5, 6, 7, 8]));
        bytes.extend(client(0x80, &[1; 200], [0, 0, 0, 1]));
        bytes.extend(client(0x8A, b"", [0; 4]));
        bytes.extend(client(0x88, &[0x03, 0xe8, b'b', b'y', b'e'], [4, 3, 2, 1]));
        let want = vec![
            Incoming::Ping(b"are you there".to_vec()),
            Incoming::Pong,
            Incoming::Close(Some(1000)),
        ];
        for piece in [1, 2, 3, 7, 64, 5000] {
            assert_eq!(read_in_pieces(&bytes, piece), Ok(want.clone()), "{piece}");
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let at_limit = client(0x82, &vec![0; 64 << 10], [1; 4]);
        assert_eq!(read_in_pieces(&at_limit, 4096), Ok(vec![]));
        let over = client(0x82, &vec![0; (64 << 10) + 1], [1; 4]);
        assert_eq!(
            read_in_pieces(&over[..20], 20),
            Err(Refused),
            "refused from its head"
        );
        // A 4 MiB frame's head alone.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(4u64 << 20).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(read_in_pieces(&huge, 1), Err(Refused));
        // A message over the limit in frames under it.
        let mut pieces = client(0x02, &vec![0; 40 << 10], [1; 4]);
        pieces.extend(client(0x80, &vec![0; 40 << 10], [1; 4]));
        assert_eq!(read_in_pieces(&pieces, 4096), Err(Refused));
        let unmasked = [0x81, 0x02, b'h', b'i'];
        assert_eq!(read_in_pieces(&unmasked, 4), Err(Refused));
        for bad in [
            client(0xC1, b"x", [0; 4]),      // a reserved bit
            client(0x83, b"x", [0; 4]),      // a reserved opcode
            client(0x09, b"x", [0; 4]),      // a fragmented ping
            client(0x89, &[0; 126], [0; 4]), // a ping over 125 bytes
            client(0x80, b"x", [0; 4]),      // a continuation of nothing
        ] {
            assert_eq!(read_in_pieces(&bad, 3), Err(Refused), "{bad:?}");
        }
        let mut interleaved = client(0x01, b"part", [0; 4]);
        interleaved.extend(client(0x81, b"new", [0; 4]));
        assert_eq!(read_in_pieces(&interleaved, 100), Err(Refused));
    }
}
