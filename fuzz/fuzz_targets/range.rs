//! The `Range` header policy (`src/http/range.rs`): any header and object
//! length give an answer, and a partial answer lies inside the object.
//! Input: 8 bytes of object length (little-endian), then the header text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vidmill::fuzzing::decide;
use vidmill::http::range::RangeAnswer;

fuzz_target!(|data: &[u8]| {
    let Some((len, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let len = u64::from_le_bytes(*len);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    match decide(Some(header), len) {
        RangeAnswer::Partial { start, end } => {
            assert!(
                start <= end && end < len,
                "{header:?} on {len}: {start}-{end}"
            )
        }
        RangeAnswer::Full | RangeAnswer::Unsatisfiable => {}
    }
});
