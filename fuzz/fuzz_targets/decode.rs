#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cpamp_fuzz::decode(data));
