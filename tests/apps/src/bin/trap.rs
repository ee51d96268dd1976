//! A command that writes, then traps.

wit_bindgen::generate!({
    inline: "
        package test:apps;
        world trap {
            import wasi:keyvalue/store@0.2.0-draft2;
        }
    ",
    path: "../../wit",
    world: "test:apps/trap",
    generate_all,
});

fn main() {
    let bucket = crate::wasi::keyvalue0_2_0_draft2::store::open("default").expect("open");
    bucket.set("before-trap", b"written").expect("set");
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
}
