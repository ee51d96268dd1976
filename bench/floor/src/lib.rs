//! The bare boundary floor: forwards get and set to the host, nothing else.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // generated glue only
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "floor",
    });

    use exports::kvstash::floor::api::Guest;
    use kvstash::floor::backend;

    struct Floor;

    impl Guest for Floor {
        fn get(key: String) -> Option<String> {
            backend::get(key.as_bytes()).and_then(|v| String::from_utf8(v).ok())
        }

        fn set(key: String, value: String) {
            backend::set(key.as_bytes(), value.as_bytes());
        }
    }

    export!(Floor);
}
