#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvstash_fuzz::json(data));
