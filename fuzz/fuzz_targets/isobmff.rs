//! The ISO BMFF top-level box walk (`pipelines/src/isobmff.rs`) on any
//! bytes: it ends, and says nothing about a file that is not ISO BMFF.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vidmill_pipelines::fuzzing::layout_of_bytes;

fuzz_target!(|data: &[u8]| {
    let l = layout_of_bytes(data);
    if !l.iso {
        assert!(!l.mdat && !l.moov && !l.moof, "{l:?}");
    }
});
