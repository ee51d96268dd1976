//! What network an app gets: `tcp HOST:PORT` connects a socket and prints
//! `tcp=ok` or `tcp=denied`; `http HOST:PORT` sends a wasi:http request and
//! prints `http=ok` or `http=error …`.

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

fn main() {
    let mut args = std::env::args().skip(1);
    let (what, addr) = (
        args.next().unwrap_or_default(),
        args.next().unwrap_or_default(),
    );
    match what.as_str() {
        "tcp" => match std::net::TcpStream::connect(&addr) {
            Ok(_) => println!("tcp=ok"),
            Err(e) => println!("tcp=denied ({e})"),
        },
        "http" => {
            let request = OutgoingRequest::new(Fields::new());
            let _ = request.set_scheme(Some(&Scheme::Http));
            let _ = request.set_authority(Some(&addr));
            let _ = request.set_path_with_query(Some("/"));
            match outgoing_handler::handle(request, None) {
                Err(e) => println!("http=error {e:?}"),
                Ok(future) => {
                    future.subscribe().block();
                    match future.get() {
                        Some(Ok(Ok(_))) => println!("http=ok"),
                        Some(Ok(Err(e))) => println!("http=error {e:?}"),
                        other => println!("http=error {other:?}"),
                    }
                }
            }
        }
        _ => println!("usage: net tcp|http HOST:PORT"),
    }
}
