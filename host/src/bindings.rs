//! Generated host bindings for the `kvstash` world. Nothing else lives here;
//! the rest of the crate speaks Rust types, not WIT ones.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "kvstash:store/kvstash",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq],
    with: {
        "kvstash:store/storage.backend": crate::runtime::BackendHandle,
    },
});
