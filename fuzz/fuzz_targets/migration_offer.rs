#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ldmd::fuzz::migration_offer(data));
