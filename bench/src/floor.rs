//! The host of the bare boundary floor (`bench/floor`): the same async
//! wasmtime setup as kvstash's runtime, and the same memory backend behind
//! the import, so the floor differs from kvstash only by kvstash's own work.

use std::sync::Arc;

use kvstash::Backend as _;
use kvstash::backend::{MemoryBackend, Write};
use kvstash::bench::BenchError;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "floor/wit",
        world: "floor",
        imports: { default: async },
        exports: { default: async },
    });
}

pub struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
    backend: Arc<MemoryBackend>,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::kvstash::floor::backend::Host for Ctx {
    async fn get(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        self.backend.get(&key).await.ok().flatten().map(|e| e.value)
    }

    async fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let write = Write {
            key,
            value: Some(value),
        };
        // The floor has no error channel; a failed set shows as a missing get.
        let _ = self.backend.commit(Vec::new(), vec![write]).await;
    }
}

/// One floor instance on a fresh memory backend.
pub struct Floor {
    store: Store<Ctx>,
    api: bindings::Floor,
}

impl Floor {
    pub async fn new() -> anyhow::Result<Self> {
        let engine = Engine::new(&wasmtime::Config::new()).map_err(anyhow::Error::msg)?;
        let wasm = std::fs::read(env!("KVSTASH_FLOOR_WASM"))?;
        let component = Component::new(&engine, &wasm).map_err(anyhow::Error::msg)?;
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::msg)?;
        bindings::Floor::add_to_linker::<_, HasSelf<_>>(&mut linker, |ctx| ctx)
            .map_err(anyhow::Error::msg)?;
        let ctx = Ctx {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            backend: Arc::new(MemoryBackend::default()),
        };
        let mut store = Store::new(&engine, ctx);
        let api = bindings::Floor::instantiate_async(&mut store, &component, &linker)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(Self { store, api })
    }

    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        self.api
            .kvstash_floor_api()
            .call_get(&mut self.store, key)
            .await
            .map_err(anyhow::Error::msg)
    }

    pub async fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.api
            .kvstash_floor_api()
            .call_set(&mut self.store, key, value)
            .await
            .map_err(anyhow::Error::msg)
    }
}

/// The floor measures the architecture's own cost: puts and gets only.
#[async_trait::async_trait]
impl kvstash::bench::Subject for Floor {
    fn durable(&self) -> bool {
        false
    }
    async fn load(&mut self, items: &[(String, String)]) -> Result<(), BenchError> {
        for (key, value) in items {
            self.set(key, value).await?;
        }
        Ok(())
    }
    async fn put(&mut self, key: &str, value: &str) -> Result<(), BenchError> {
        Ok(self.set(key, value).await?)
    }
    async fn get(&mut self, key: &str) -> Result<bool, BenchError> {
        Ok(Floor::get(self, key).await?.is_some())
    }
    async fn list(&mut self, _: &str, _: usize) -> Result<Option<usize>, BenchError> {
        Ok(None)
    }
    async fn txn(&mut self, _: &[(String, String)]) -> Result<bool, BenchError> {
        Ok(false)
    }
    async fn reopen(&mut self) -> Result<Option<std::time::Duration>, BenchError> {
        Ok(None)
    }
    fn disk_bytes(&self) -> Option<u64> {
        None
    }
}
