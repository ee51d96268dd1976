//! Running a command: `wasi:cli/run`, to its exit code.

use wasmtime_wasi::p2::bindings::CommandPre;

use super::{App, AppError, AppKind};

impl App {
    /// Runs the command once and returns its exit code: 0 if `run` returned
    /// `ok`, 1 if it returned `err`, the code it passed to `exit` otherwise.
    /// A trap is [`AppError::Trap`]; the host is unharmed.
    pub async fn run_command(&self) -> Result<i32, AppError> {
        if self.kind != AppKind::Command {
            return Err(AppError::NoEntryPoint);
        }
        let pre =
            CommandPre::new(self.pre.clone()).map_err(|e| AppError::Host(format!("{e:#}")))?;
        let mut store = self.store()?;
        let command = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| AppError::Trap(format!("instantiating: {e:?}")))?;
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => Err(AppError::Trap(format!("{e:?}"))),
            },
        }
    }
}
