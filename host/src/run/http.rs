//! Serving an HTTP app: `wasi:http/incoming-handler`, as `spin up` and
//! `wasmtime serve` do.
//!
//! Every request gets a fresh instance from the pre-linked app (linking and
//! type checks are done once, in [`App::load`]; an instance costs tens of
//! microseconds), so no request sees another's memory and a trap harms only
//! its own request: it is answered `500` and the server goes on. A request
//! running longer than [`super::AppOptions::request_timeout`] is stopped
//! (its instance yields every few milliseconds, so a loop holds no thread)
//! and answered `503`. At most [`super::AppOptions::max_instances`] requests
//! run at once; more wait.
//! Everything requests share lives in the store, behind its commits.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::{App, AppError, AppKind};

type Response = hyper::Response<HyperOutgoingBody>;

/// What every connection's requests share.
struct Server {
    app: Arc<App>,
    pre: ProxyPre<crate::runtime::KvCtx>,
    permits: Arc<Semaphore>,
}

impl App {
    /// Serves the app's requests on `listener` until `shutdown` completes.
    /// Connections in progress are not waited for.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AppError> {
        if self.kind != AppKind::Http {
            return Err(AppError::NoEntryPoint);
        }
        let pre = ProxyPre::new(self.pre.clone()).map_err(|e| AppError::Host(format!("{e:#}")))?;
        let server = Arc::new(Server {
            permits: Arc::new(Semaphore::new(self.options.max_instances.max(1))),
            app: self,
            pre,
        });
        tokio::pin!(shutdown);
        loop {
            let (client, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors and the like: wait, do not spin.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(request).await) }
                });
                // A client that goes away mid-request is not the server's error.
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(client), service)
                    .await;
            });
        }
    }
}

impl Server {
    async fn handle(&self, request: hyper::Request<Incoming>) -> Response {
        match self.try_handle(request).await {
            Ok(response) => response,
            Err(e) if e.is::<tokio::time::error::Elapsed>() => {
                eprintln!(
                    "kvstash: {}: a request ran longer than {:?} and was stopped",
                    self.app.name, self.app.options.request_timeout
                );
                error_response(
                    hyper::StatusCode::SERVICE_UNAVAILABLE,
                    "request timed out\n",
                )
            }
            Err(e) => {
                eprintln!("kvstash: {}: request failed: {e:?}", self.app.name);
                error_response(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error\n",
                )
            }
        }
    }

    async fn try_handle(&self, request: hyper::Request<Incoming>) -> wasmtime::Result<Response> {
        let permit = self.permits.clone().acquire_owned().await?;
        let mut store = self.app.store().map_err(wasmtime::Error::msg)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let name = self.app.name.clone();
        let timeout = self.app.options.request_timeout;
        // The handler may go on writing the body after it set the response;
        // the deadline covers all of it.
        let task = tokio::spawn(async move {
            let _permit = permit;
            let handled = tokio::time::timeout(timeout, async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            })
            .await;
            match handled {
                Ok(Ok(())) => Ok(()),
                Ok(Err(trap)) => {
                    // Reported here too: after the response was set, no
                    // one else sees it.
                    eprintln!("kvstash: {name}: the app trapped: {trap:?}");
                    Err(trap)
                }
                Err(elapsed) => Err(wasmtime::Error::new(elapsed)),
            }
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(wasmtime::Error::msg(format!(
                "the app answered with an error: {code:?}"
            ))),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::Error::msg("the app set no response")),
                Ok(Err(trap)) => Err(trap.context("the app trapped")),
                Err(join) => Err(wasmtime::Error::msg(format!(
                    "the request task failed: {join}"
                ))),
            },
        }
    }
}

fn error_response(status: hyper::StatusCode, message: &'static str) -> Response {
    let body = http_body_util::Full::new(Bytes::from_static(message.as_bytes()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response
}
