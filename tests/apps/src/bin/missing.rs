//! A command importing an interface no kvstash host provides.

wit_bindgen::generate!({
    inline: "
        package test:missing;
        interface nothing-here {
            call: func() -> u32;
        }
        world missing {
            import nothing-here;
            import wasi:keyvalue/store@0.2.0-draft2;
        }
    ",
    path: "../../wit",
    world: "test:missing/missing",
    generate_all,
});

fn main() {
    let _ = crate::wasi::keyvalue0_2_0_draft2::store::open("default");
    println!("{}", test::missing::nothing_here::call());
}
