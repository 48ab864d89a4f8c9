//! Any input to the manifest parser and validator yields diagnostics or a
//! manifest, never a panic; and every diagnostic is renderable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let diags = match berth_manifest::check_str("berth.toml", text) {
        Ok((_, warnings)) => warnings,
        Err(diags) => diags,
    };
    for d in &diags {
        let _ = berth_manifest::diag::render(d, &berth_manifest::diag::Styles::plain());
    }
    // Product cloning must not panic on anything the parser accepts.
    if diags.iter().all(|d| !d.is_error()) {
        let _ = berth_manifest::product_add::add_product("berth.toml", text, "fuzzed", "bestays", true);
    }
});
