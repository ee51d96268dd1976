//! An app that imports kvstash's storage interface itself, to open a file
//! store of its choosing: it must be refused before it runs.

wit_bindgen::generate!({
    inline: "
        package test:apps;
        world escape {
            import kvstash:store/storage@0.1.0;
        }
    ",
    path: "../../wit",
    world: "test:apps/escape",
    generate_all,
});

use crate::kvstash::store::storage::Backend;

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/escaped.redb".into());
    let config = format!(r#"{{"type":"file","path":"{path}"}}"#);
    match Backend::open(&config) {
        Ok(_) => println!("opened {path}"),
        Err(e) => println!("refused: {e:?}"),
    }
}
