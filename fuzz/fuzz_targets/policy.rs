#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpdome::fuzz::policy(data));
