#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    caf_fuzz::run(caf_fuzz::Target::Video, data);
});
