//! Generated bindings for the `kvstash` world, and the export of
//! [`crate::exports::Component`]. Nothing else lives here.

wit_bindgen::generate!({
    path: "../wit",
    world: "kvstash:store/kvstash",
});

use crate::exports::Component;

export!(Component);
