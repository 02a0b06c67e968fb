//! The configuration loader (`src/config/load.rs`) on any TOML text and
//! `VIDMILL__SECTION__KEY` overrides: it answers a config or an error, and
//! a config it accepts prints (as `vidmill config` does) to text that loads
//! back to the same config.
//! Input: the TOML text, then optionally a NUL and override lines
//! `SECTION__KEY=value`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vidmill::config::load_text;

fuzz_target!(|data: &[u8]| {
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    let (text, overrides) = data.split_once('\0').unwrap_or((data, ""));
    let env: Vec<(String, String)> = overrides
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("VIDMILL__{k}"), v.to_string()))
        .collect();
    let Ok(config) = load_text(text, "fuzz", env) else {
        return;
    };
    let _ = config.masked();
    let _ = config.limits.media();
    let printed = toml::to_string(&config).expect("an accepted config prints");
    let again = load_text(&printed, "printed", Vec::new())
        .unwrap_or_else(|e| panic!("a printed config does not load: {e}\n{printed}"));
    assert_eq!(again, config, "{printed}");
});
