//! What the component imports and exports: the contract with every host.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The component may import only the storage interface, `wasi:clocks`, and what `wasm32-wasip2` std needs
/// (`wasi:io`, `wasi:cli`). No filesystem, no sockets, no HTTP: that is what
/// lets it run under Spin, jco, wasmtime-py and on devices.
#[test]
fn imports_only_storage_clocks_and_std() {
    let (imports, _) = kvstash::component_interfaces().unwrap();
    assert!(
        imports.contains(&"kvstash:store/storage@0.1.0".to_string()),
        "{imports:?}"
    );
    let allowed = |name: &str| {
        name == "kvstash:store/storage@0.1.0"
            || ["wasi:clocks/", "wasi:io/", "wasi:cli/"]
                .iter()
                .any(|p| name.starts_with(p))
    };
    let foreign: Vec<&String> = imports.iter().filter(|name| !allowed(name)).collect();
    assert!(foreign.is_empty(), "unexpected imports: {foreign:?}");
    for forbidden in [
        "wasi:filesystem",
        "wasi:sockets",
        "wasi:http",
        "wasi:keyvalue",
    ] {
        assert!(
            !imports.iter().any(|i| i.starts_with(forbidden)),
            "{forbidden} is imported"
        );
    }
}

#[test]
fn exports_the_rich_api_both_wasi_keyvalue_drafts_and_spins_key_value() {
    let (_, exports) = kvstash::component_interfaces().unwrap();
    let mut want = vec![
        "kvstash:store/store@0.1.0".to_string(),
        // Exported so that no host must supply it.
        "kvstash:store/types@0.1.0".to_string(),
        "fermyon:spin/key-value@2.0.0".to_string(),
        "fermyon:spin/key-value".to_string(),
    ];
    for version in ["0.2.0-draft", "0.2.0-draft2"] {
        for interface in ["store", "atomics", "batch"] {
            want.push(format!("wasi:keyvalue/{interface}@{version}"));
        }
    }
    let mut got = exports.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn the_embedded_component_is_small() {
    // Also a benchmark target; checked here because a size is not a timing.
    assert!(
        kvstash::GUEST_WASM.len() <= 1024 * 1024,
        "guest is {} bytes",
        kvstash::GUEST_WASM.len()
    );
    assert_eq!(&kvstash::GUEST_WASM[..4], b"\0asm");
}
