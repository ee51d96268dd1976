//! Paths of the test apps in `tests/apps`, built by this crate's build
//! script: `DRAFT` (wasi:keyvalue 0.2.0-draft), `DRAFT2` (0.2.0-draft2, also
//! `DRAFT2_WASIP1`, a preview1 core module), `SPIN_KV`
//! (fermyon:spin/key-value@2.0.0), `RICH` (kvstash:store/store), `TRAP`,
//! `MISSING` (an import nobody provides), `ESCAPE` (imports kvstash's own
//! storage interface), `NET` (tries a socket and an outgoing HTTP request)
//! and `HTTP` (a wasi:http handler);
//! `EXAMPLE_SPIN`, the Spin SDK app in `examples/spin`; and `RUNAWAY_GUEST`,
//! the kvstash guest built with its test-only `runaway` feature (a `get` of
//! `kvstash-test-runaway` never returns).

include!(concat!(env!("OUT_DIR"), "/apps.rs"));
