//! An HTTP app (`wasi:http/incoming-handler`, the shape of every Spin and
//! `wasmtime serve` app) on `wasi:keyvalue@0.2.0-draft2`:
//! `GET /hit` counts hits in the store and answers the count;
//! `GET /trap` traps; `GET /loop` never ends.

mod bindings {
    wit_bindgen::generate!({
    inline: "
        package test:apps;
        world http-kv {
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
        }
    ",
    path: "../../wit",
    world: "test:apps/http-kv",
    generate_all,
    });
}

use ::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use bindings::wasi::keyvalue0_2_0_draft2::{atomics, store};

struct Handler;

impl ::wasi::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match path.as_str() {
            "/hit" => match store::open("default")
                .and_then(|bucket| atomics::increment(&bucket, "http-hits", 1))
            {
                Ok(n) => (200, format!("hits={n}\n")),
                Err(e) => (500, format!("{e:?}\n")),
            },
            "/trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                (500, String::new())
            }
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            _ => (404, "not found\n".to_string()),
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = outgoing.write() {
            let _ = stream.blocking_write_and_flush(body.as_bytes());
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

::wasi::http::proxy::export!(Handler);

fn main() {}
