//! `kvstash._native`: the Rust host (every backend) as a Python module.
//!
//! The Python package `kvstash` (python/kvstash) re-exports what is here.
//! Every call that reaches the store releases the GIL while it runs
//! (component call, backend I/O, fsync), so other Python threads go on.
//! Values are JSON: Python objects go through the standard `json` module;
//! `bytes` are stored as raw bytes and come back as `bytes`.

use std::time::Duration;

use std::sync::Mutex;

use kvstash::{
    BlockingBucket, BlockingStore, BlockingWatch, Check, Error, EventKind, ListOptions, Value,
    WatchOptions, WriteOptions,
};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

pyo3::create_exception!(
    kvstash,
    KvstashError,
    PyException,
    "Every kvstash error. Input errors leave stored data untouched."
);
pyo3::create_exception!(
    kvstash,
    InvalidError,
    KvstashError,
    "Bad input: a key, bucket, value, path, cursor, argument or configuration."
);
pyo3::create_exception!(
    kvstash,
    ConflictError,
    KvstashError,
    "A condition did not hold (`if_version`, `if_absent`, a transaction check); nothing was written. `.current` is the key's version (None: absent)."
);
pyo3::create_exception!(
    kvstash,
    NotFoundError,
    KvstashError,
    "The operation needs a key, or a path in a document, that does not exist."
);
pyo3::create_exception!(
    kvstash,
    ContentionError,
    KvstashError,
    "A write lost races with other writers until its retry deadline."
);
pyo3::create_exception!(
    kvstash,
    ReadOnlyError,
    KvstashError,
    "The store is read-only."
);
pyo3::create_exception!(
    kvstash,
    CompactedError,
    KvstashError,
    "Versions older than `.oldest` are no longer retained."
);
pyo3::create_exception!(
    kvstash,
    StorageError,
    KvstashError,
    "The backend failed or is unavailable. A read wrote nothing; a write may or may not have been made: read back to find out."
);
pyo3::create_exception!(
    kvstash,
    CorruptError,
    StorageError,
    "What the store's backend holds is damaged (a checksum failed); nothing was served or written. `kvstash check` names the damage."
);

pyo3::create_exception!(
    kvstash,
    LockedError,
    KvstashError,
    "The lock is held by another lease."
);
pyo3::create_exception!(
    kvstash,
    LeaseLostError,
    KvstashError,
    "The lease no longer holds its lock."
);

/// One page of a listing: `(key, entry)` pairs and the next page's cursor.
type Page = (Vec<(String, Entry)>, Option<String>);

/// `e` as its Python exception, where no `Python` token is at hand.
fn raise(e: Error) -> PyErr {
    Python::attach(|py| to_py(py, e))
}

/// The Python exception for a kvstash error, with its details as
/// attributes (`current`, `index`, `oldest`).
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let message = e.to_string();
    let code = e.code();
    let (err, attrs): (PyErr, Vec<(&str, Option<u64>)>) = match e {
        Error::Conflict { current } => {
            (ConflictError::new_err(message), vec![("current", current)])
        }
        Error::CheckFailed { index, current } => (
            ConflictError::new_err(message),
            vec![("current", current), ("index", Some(u64::from(index)))],
        ),
        Error::Compacted { oldest } => (
            CompactedError::new_err(message),
            vec![("oldest", Some(oldest))],
        ),
        Error::NotFound(_) | Error::PathNotFound(_) => (NotFoundError::new_err(message), vec![]),
        Error::Contention => (ContentionError::new_err(message), vec![]),
        Error::ReadOnly => (ReadOnlyError::new_err(message), vec![]),
        Error::Storage(_) | Error::Trap(_) | Error::Runtime(_) => {
            (StorageError::new_err(message), vec![])
        }
        Error::InvalidKey(_)
        | Error::InvalidBucket(_)
        | Error::InvalidValue(_)
        | Error::InvalidCursor
        | Error::InvalidConfig(_)
        | Error::InvalidArgument(_)
        | Error::InvalidPath(_)
        | Error::PathTypeMismatch(_)
        | Error::SchemaViolation(_)
        | Error::NotJson
        | Error::Serde(_) => (InvalidError::new_err(message), vec![]),
        Error::Locked { .. } => (LockedError::new_err(message), vec![]),
        Error::LeaseLost(_) => (LeaseLostError::new_err(message), vec![]),
        Error::Corrupt(_) => (CorruptError::new_err(message), vec![]),
        // Errors added to the API later: still a KvstashError.
        _ => (KvstashError::new_err(message), vec![]),
    };
    let value = err.value(py);
    let _ = value.setattr("code", code);
    for (name, v) in attrs {
        // Setting an attribute on a fresh exception object cannot fail in
        // practice; if it did, the exception is still raised.
        let _ = value.setattr(name, v);
    }
    err
}

/// A Python object as a stored value: `bytes` as bytes, anything else as
/// JSON (via the `json` module, so what `json.dumps` takes, kvstash takes).
fn value_of(value: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Value::Bytes(bytes.as_bytes().to_vec()));
    }
    let json = value.py().import("json")?;
    let text: String = json.call_method1("dumps", (value,))?.extract()?;
    Ok(Value::Json(text))
}

/// A Python object as a JSON document (for paths and schemas, which hold
/// only JSON).
fn json_of(value: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let json = value.py().import("json")?;
    let text: String = json
        .call_method1("dumps", (value,))
        .map_err(|e| raise(Error::InvalidValue(format!("not JSON: {e}"))))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| raise(Error::InvalidValue(format!("not JSON: {e}"))))
}

fn object_of_json(py: Python<'_>, value: &serde_json::Value) -> PyResult<Py<PyAny>> {
    object_of(py, &Value::Json(value.to_string()))
}

/// A point in time as seconds since the epoch.
fn epoch_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn object_of(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    match value {
        Value::Json(text) => Ok(py
            .import("json")?
            .call_method1("loads", (text.as_str(),))?
            .unbind()),
        Value::Bytes(bytes) => Ok(PyBytes::new(py, bytes).into_any().unbind()),
    }
}

/// `seconds` as a duration; `what` names the argument in the error.
fn seconds(what: &str, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                raise(Error::InvalidArgument(format!(
                    "{what} must be a positive number of seconds, not {s}"
                )))
            })
        })
        .transpose()
}

/// A stored value with the version of the commit that last wrote it.
#[pyclass(frozen, module = "kvstash")]
pub struct Entry {
    #[pyo3(get)]
    value: Py<PyAny>,
    #[pyo3(get)]
    version: u64,
    /// Seconds since the epoch when the key expires, or None.
    #[pyo3(get)]
    expires_at: Option<f64>,
}

#[pymethods]
impl Entry {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Entry(value={}, version={})",
            self.value.bind(py).repr()?,
            self.version
        ))
    }
}

fn entry(py: Python<'_>, e: &kvstash::Entry) -> PyResult<Entry> {
    Ok(Entry {
        value: object_of(py, &e.value)?,
        version: e.version,
        expires_at: e
            .expires_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
    })
}

/// An open store. `kvstash.open(config)` makes one.
#[pyclass(frozen, module = "kvstash")]
pub struct Store {
    inner: BlockingStore,
}

#[pymethods]
impl Store {
    /// A bucket of this store (buckets need no creating).
    fn bucket(&self, name: &str) -> Bucket {
        Bucket {
            inner: self.inner.bucket(name),
            name: name.to_string(),
        }
    }

    /// The names of the buckets that hold keys.
    fn buckets(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.buckets()).map_err(|e| to_py(py, e))
    }

    /// A new transaction: add checks and writes, then `commit()`.
    fn transaction(&self) -> Transaction {
        Transaction {
            store: self.inner.clone(),
            inner: Mutex::new(Some(self.inner.as_async().transaction())),
        }
    }

    /// Takes the lock `name` for `ttl` seconds and returns its `Lease`;
    /// waits up to `wait` seconds for another holder to let go, then raises
    /// `LockedError`. Use it as a context manager to release it on exit.
    #[pyo3(signature = (name, ttl, *, owner=None, wait=0.0))]
    fn lock(
        &self,
        py: Python<'_>,
        name: &str,
        ttl: f64,
        owner: Option<String>,
        wait: f64,
    ) -> PyResult<Lease> {
        let ttl = seconds("ttl", Some(ttl))?.unwrap_or_default();
        let wait = seconds("wait", Some(wait))?.unwrap_or_default();
        let lease = py
            .detach(|| {
                if wait.is_zero() {
                    self.inner.acquire(name, ttl, owner.as_deref())
                } else {
                    self.inner.lock(name, ttl, owner.as_deref(), wait)
                }
            })
            .map_err(|e| to_py(py, e))?;
        Ok(Lease {
            store: self.inner.clone(),
            inner: Mutex::new(lease),
        })
    }

    /// Who holds the lock `name` (`.token`, `.expires_at`, `.owner`), or None.
    fn lock_status(&self, py: Python<'_>, name: &str) -> PyResult<Option<LockHolder>> {
        let holder = py
            .detach(|| self.inner.lock_status(name))
            .map_err(|e| to_py(py, e))?;
        Ok(holder.map(|h| LockHolder {
            token: h.token,
            expires_at: epoch_seconds(h.expires_at),
            owner: h.owner,
        }))
    }

    /// Removes up to `limit` expired keys now (reads never show them
    /// anyway); how many it removed.
    #[pyo3(signature = (limit=1000))]
    fn sweep(&self, py: Python<'_>, limit: u32) -> PyResult<u32> {
        py.detach(|| self.inner.sweep(limit))
            .map_err(|e| to_py(py, e))
    }

    fn __repr__(&self) -> String {
        format!("Store({})", self.inner.as_async().describe().join(", "))
    }
}

/// A bucket: keys (strings) to values.
#[pyclass(frozen, module = "kvstash")]
pub struct Bucket {
    inner: BlockingBucket,
    name: String,
}

#[pymethods]
impl Bucket {
    /// The entry at `key` (`.value`, `.version`), or None.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Option<Entry>> {
        let found = py
            .detach(|| self.inner.get(key))
            .map_err(|e| to_py(py, e))?;
        found.map(|e| entry(py, &e)).transpose()
    }

    /// Stores `value` (JSON-able, or `bytes`); returns the new version.
    /// `if_version`: only if the key is at that version; `if_absent`: only
    /// if it has none; otherwise `ConflictError`. `ttl`: seconds to live.
    #[pyo3(signature = (key, value, *, if_version=None, if_absent=false, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        if_version: Option<u64>,
        if_absent: bool,
        ttl: Option<f64>,
    ) -> PyResult<u64> {
        let value = value_of(value)?;
        let options = WriteOptions {
            if_version,
            if_absent,
            ttl: seconds("ttl", ttl)?,
        };
        py.detach(|| self.inner.set_with(key, value, &options))
            .map_err(|e| to_py(py, e))
    }

    /// Deletes `key`; whether it existed.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        py.detach(|| self.inner.delete(key))
            .map_err(|e| to_py(py, e))
    }

    /// Adds `delta` to the integer at `key` (absent: 0), atomically; the new value.
    #[pyo3(signature = (key, delta=1))]
    fn increment(&self, py: Python<'_>, key: &str, delta: i64) -> PyResult<i64> {
        py.detach(|| self.inner.increment(key, delta))
            .map_err(|e| to_py(py, e))
    }

    /// One page of `(key, Entry)` pairs in key order, and the cursor of the
    /// next page (None: no more).
    #[pyo3(signature = (*, prefix=None, start=None, end=None, limit=None, cursor=None, reverse=false))]
    #[allow(clippy::too_many_arguments)]
    fn list(
        &self,
        py: Python<'_>,
        prefix: Option<String>,
        start: Option<String>,
        end: Option<String>,
        limit: Option<u32>,
        cursor: Option<String>,
        reverse: bool,
    ) -> PyResult<Page> {
        let options = ListOptions {
            prefix,
            start,
            end,
            limit,
            cursor,
            reverse,
            keys_only: false,
        };
        let page = py
            .detach(|| self.inner.list(&options))
            .map_err(|e| to_py(py, e))?;
        let mut items = Vec::with_capacity(page.items.len());
        for item in page.items {
            let value = match &item.value {
                Some(v) => object_of(py, v)?,
                None => py.None(),
            };
            let expires_at = item
                .expires_at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64());
            items.push((
                item.key,
                Entry {
                    value,
                    version: item.version,
                    expires_at,
                },
            ));
        }
        Ok((items, page.cursor))
    }

    /// Whether `key` holds a live value.
    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        py.detach(|| self.inner.exists(key))
            .map_err(|e| to_py(py, e))
    }

    /// The JSON at `path` (an RFC 6901 pointer such as `/wifi/ssid`; `""`
    /// is the whole document) as an `Entry` whose version is the
    /// document's; None if the key is absent, `NotFoundError` if the path is.
    fn get_path(&self, py: Python<'_>, key: &str, path: &str) -> PyResult<Option<Entry>> {
        let found = py
            .detach(|| self.inner.get_path_json::<serde_json::Value>(key, path))
            .map_err(|e| to_py(py, e))?;
        found
            .map(|(value, version)| {
                Ok(Entry {
                    value: object_of_json(py, &value)?,
                    version,
                    expires_at: None,
                })
            })
            .transpose()
    }

    /// Sets the JSON at `path` inside the document at `key`, atomically
    /// (the parent must exist; `/list/-` appends); the new version.
    fn set_path(
        &self,
        py: Python<'_>,
        key: &str,
        path: &str,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let value = json_of(value)?;
        py.detach(|| self.inner.set_path_json(key, path, &value))
            .map_err(|e| to_py(py, e))
    }

    /// Removes the value at `path`; the new version.
    fn delete_path(&self, py: Python<'_>, key: &str, path: &str) -> PyResult<u64> {
        py.detach(|| self.inner.delete_path(key, path))
            .map_err(|e| to_py(py, e))
    }

    /// Appends `value` to the array at `path`; the new version.
    fn append_path(
        &self,
        py: Python<'_>,
        key: &str,
        path: &str,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let value = json_of(value)?;
        py.detach(|| self.inner.append_path_json(key, path, &value))
            .map_err(|e| to_py(py, e))
    }

    /// Makes the bucket typed: every value written from now on must match
    /// the JSON Schema `schema` (None: untyped again). Existing values are
    /// checked first unless `force`; the version of the change.
    #[pyo3(signature = (schema, *, force=false))]
    fn set_schema(
        &self,
        py: Python<'_>,
        schema: Option<&Bound<'_, PyAny>>,
        force: bool,
    ) -> PyResult<u64> {
        let schema = schema.map(json_of).transpose()?;
        py.detach(|| self.inner.set_schema(schema.as_ref(), force))
            .map_err(|e| to_py(py, e))
    }

    /// The bucket's schema and its version, or None if it is untyped.
    fn schema(&self, py: Python<'_>) -> PyResult<Option<(Py<PyAny>, u64)>> {
        let found = py
            .detach(|| self.inner.schema())
            .map_err(|e| to_py(py, e))?;
        found
            .map(|(schema, version)| Ok((object_of_json(py, &schema)?, version)))
            .transpose()
    }

    /// Keeps the last `keep` changes of this bucket for `undo`/`redo`
    /// (0: history off, and what was kept is dropped).
    fn set_history(&self, py: Python<'_>, keep: u32) -> PyResult<()> {
        py.detach(|| self.inner.set_history(keep))
            .map_err(|e| to_py(py, e))
    }

    /// Undoes the bucket's last change, as a new version (returned);
    /// `NotFoundError` if there is nothing to undo.
    fn undo(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.undo()).map_err(|e| to_py(py, e))
    }

    /// Redoes the last undone change; the new version.
    fn redo(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.redo()).map_err(|e| to_py(py, e))
    }

    /// `(undoable, redoable)`: how many changes `undo` and `redo` can take back.
    fn history(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        py.detach(|| self.inner.history()).map_err(|e| to_py(py, e))
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The bucket's changes, in version order, as an iterator of `Event`s:
    /// after version `since`, or from now when it is None; only keys
    /// starting with `prefix`. Resume after an event with
    /// `since=event.version`.
    #[pyo3(signature = (*, since=None, prefix=None))]
    fn watch(&self, py: Python<'_>, since: Option<u64>, prefix: Option<String>) -> PyResult<Watch> {
        let options = WatchOptions {
            since,
            prefix,
            ..WatchOptions::default()
        };
        let inner = py
            .detach(|| self.inner.watch(options))
            .map_err(|e| to_py(py, e))?;
        Ok(Watch {
            inner: Mutex::new(inner),
        })
    }
}

/// Checks and writes committed together: build it with the methods below
/// (each returns the transaction, so calls chain), then `commit()`. Either
/// every check holds and every write lands at one version, or nothing is
/// written and `commit` raises (`ConflictError` with `.index` of the failed
/// check). A transaction commits once.
#[pyclass(frozen, module = "kvstash")]
pub struct Transaction {
    store: BlockingStore,
    inner: Mutex<Option<kvstash::Transaction>>,
}

impl Transaction {
    fn add<'py>(
        slf: Bound<'py, Self>,
        step: impl FnOnce(kvstash::Transaction) -> Result<kvstash::Transaction, Error>,
    ) -> PyResult<Bound<'py, Self>> {
        {
            let mut inner = slf.get().inner.lock().unwrap_or_else(|p| p.into_inner());
            let tx = inner.take().ok_or_else(committed)?;
            *inner = Some(step(tx).map_err(|e| to_py(slf.py(), e))?);
        }
        Ok(slf)
    }
}

fn committed() -> PyErr {
    raise(Error::InvalidArgument(
        "the transaction was already committed".into(),
    ))
}

#[pymethods]
impl Transaction {
    /// Only if `key` is live at exactly `version`.
    fn check_version<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
        version: u64,
    ) -> PyResult<Bound<'py, Self>> {
        let check = Check::version(bucket, key, version);
        Self::add(slf, |tx| Ok(tx.check(check)))
    }

    /// Only if `key` is absent (or expired).
    fn check_absent<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
    ) -> PyResult<Bound<'py, Self>> {
        let check = Check::absent(bucket, key);
        Self::add(slf, |tx| Ok(tx.check(check)))
    }

    /// Only if `key` is live.
    fn check_exists<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
    ) -> PyResult<Bound<'py, Self>> {
        let check = Check::exists(bucket, key);
        Self::add(slf, |tx| Ok(tx.check(check)))
    }

    /// Only if `key` holds `value` (JSON compared as JSON, bytes as bytes).
    fn check_equals<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let check = Check::equals(bucket, key, value_of(value)?);
        Self::add(slf, |tx| Ok(tx.check(check)))
    }

    /// Only while `lease` still holds its lock (fencing).
    fn check_lease<'py>(
        slf: Bound<'py, Self>,
        lease: &Bound<'py, Lease>,
    ) -> PyResult<Bound<'py, Self>> {
        let check = {
            let held = lease.get().held();
            Check::lease(&held.name, held.token)
        };
        Self::add(slf, |tx| Ok(tx.check(check)))
    }

    /// Stores `value` (JSON-able, or `bytes`); `ttl`: seconds to live.
    #[pyo3(signature = (bucket, key, value, *, ttl=None))]
    fn set<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
        value: &Bound<'py, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<Bound<'py, Self>> {
        let value = value_of(value)?;
        let ttl = seconds("ttl", ttl)?;
        Self::add(slf, |tx| Ok(with_ttl(tx.set(bucket, key, value), ttl)))
    }

    fn delete<'py>(slf: Bound<'py, Self>, bucket: &str, key: &str) -> PyResult<Bound<'py, Self>> {
        Self::add(slf, |tx| Ok(tx.delete(bucket, key)))
    }

    /// Adds `delta` to the integer at `key` (absent: 0).
    #[pyo3(signature = (bucket, key, delta=1))]
    fn increment<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
        delta: i64,
    ) -> PyResult<Bound<'py, Self>> {
        Self::add(slf, |tx| Ok(tx.increment(bucket, key, delta)))
    }

    /// Sets the JSON at `path` inside the document at `key`.
    fn set_path<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
        path: &str,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let value = json_of(value)?;
        Self::add(slf, |tx| tx.set_path_json(bucket, key, path, &value))
    }

    fn delete_path<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
        path: &str,
    ) -> PyResult<Bound<'py, Self>> {
        Self::add(slf, |tx| Ok(tx.delete_path(bucket, key, path)))
    }

    /// Appends `value` to the array at `path`.
    fn append_path<'py>(
        slf: Bound<'py, Self>,
        bucket: &str,
        key: &str,
        path: &str,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let value = json_of(value)?;
        Self::add(slf, |tx| tx.append_path_json(bucket, key, path, &value))
    }

    /// Commits: the transaction's version.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        let tx = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(committed)?;
        py.detach(|| self.store.commit(tx))
            .map_err(|e| to_py(py, e))
    }
}

fn with_ttl(tx: kvstash::Transaction, ttl: Option<Duration>) -> kvstash::Transaction {
    match ttl {
        Some(ttl) => tx.ttl(ttl),
        None => tx,
    }
}

/// A held lock: `.name`, `.token` (the fencing token) and `.expires_at`.
/// `with store.lock(...) as lease:` releases it on exit.
#[pyclass(frozen, module = "kvstash")]
pub struct Lease {
    store: BlockingStore,
    inner: Mutex<kvstash::Lease>,
}

impl Lease {
    fn held(&self) -> kvstash::Lease {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[pymethods]
impl Lease {
    #[getter]
    fn name(&self) -> String {
        self.held().name
    }

    #[getter]
    fn token(&self) -> u64 {
        self.held().token
    }

    /// Seconds since the epoch when the lease runs out unless renewed.
    #[getter]
    fn expires_at(&self) -> f64 {
        epoch_seconds(self.held().expires_at)
    }

    /// Extends the lease to `ttl` seconds from now; `LeaseLostError` if it
    /// no longer holds the lock.
    fn renew(&self, py: Python<'_>, ttl: f64) -> PyResult<()> {
        let ttl = seconds("ttl", Some(ttl))?.unwrap_or_default();
        let held = self.held();
        let renewed = py
            .detach(|| self.store.renew(&held, ttl))
            .map_err(|e| to_py(py, e))?;
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = renewed;
        Ok(())
    }

    /// Lets go of the lock; whether this lease still held it.
    fn release(&self, py: Python<'_>) -> PyResult<bool> {
        let held = self.held();
        py.detach(|| self.store.release(&held))
            .map_err(|e| to_py(py, e))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let held = self.held();
        format!("Lease(name={:?}, token={})", held.name, held.token)
    }
}

/// Who holds a lock, from `Store.lock_status`.
#[pyclass(frozen, module = "kvstash")]
pub struct LockHolder {
    #[pyo3(get)]
    token: u64,
    /// Seconds since the epoch.
    #[pyo3(get)]
    expires_at: f64,
    #[pyo3(get)]
    owner: Option<String>,
}

/// One change seen by a watch.
#[pyclass(frozen, module = "kvstash")]
pub struct Event {
    /// The version of the commit that made it.
    #[pyo3(get)]
    version: u64,
    #[pyo3(get)]
    key: String,
    /// `"set"`, `"delete"` or `"expire"`.
    #[pyo3(get)]
    kind: &'static str,
    /// The new value (for `"set"`), else None.
    #[pyo3(get)]
    value: Py<PyAny>,
}

#[pymethods]
impl Event {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Event(version={}, key={:?}, kind={:?}, value={})",
            self.version,
            self.key,
            self.kind,
            self.value.bind(py).repr()?
        ))
    }
}

/// A bucket's changes: iterate it, or call `next_event(timeout)`.
#[pyclass(frozen, module = "kvstash")]
pub struct Watch {
    inner: Mutex<BlockingWatch>,
}

impl Watch {
    /// Waits up to `timeout` for the next event: `Ok(None)` if none came.
    fn wait(&self, py: Python<'_>, timeout: Duration) -> PyResult<Option<Event>> {
        let next = py.detach(|| {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.next_within(timeout)
        });
        match next {
            None => Ok(None),
            Some(None) => Err(to_py(py, Error::Storage("the watch ended".into()))),
            Some(Some(Err(e))) => Err(to_py(py, e)),
            Some(Some(Ok(event))) => Ok(Some(Event {
                version: event.version,
                key: event.key,
                kind: match event.kind {
                    EventKind::Set => "set",
                    EventKind::Delete => "delete",
                    EventKind::Expire => "expire",
                },
                value: match &event.value {
                    Some(v) => object_of(py, v)?,
                    None => py.None(),
                },
            })),
        }
    }
}

#[pymethods]
impl Watch {
    /// The next event, waiting at most `timeout` seconds (None: no limit);
    /// None if none came in time. Nothing is lost by a timeout.
    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Event>> {
        match seconds("timeout", timeout)? {
            Some(limit) => self.wait(py, limit),
            None => loop {
                if let Some(event) = self.wait(py, Duration::from_millis(100))? {
                    return Ok(Some(event));
                }
                // Ctrl-C and other signals reach a waiting thread.
                py.check_signals()?;
            },
        }
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        self.next_event(py, None)
    }
}

/// Opens a store: `config` is the JSON configuration (text or a dict),
/// e.g. `{"type": "file", "path": "/var/lib/app/kvstash.redb"}`.
#[pyfunction]
fn open(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Store> {
    let config: String = if let Ok(text) = config.cast::<PyString>() {
        text.extract::<String>()?
    } else if config.cast::<PyDict>().is_ok() {
        py.import("json")?
            .call_method1("dumps", (config,))?
            .extract()?
    } else {
        return Err(to_py(
            py,
            Error::InvalidConfig("config must be JSON text or a dict".into()),
        ));
    };
    let inner = py
        .detach(|| BlockingStore::open(&config))
        .map_err(|e| to_py(py, e))?;
    Ok(Store { inner })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_class::<Store>()?;
    m.add_class::<Bucket>()?;
    m.add_class::<Entry>()?;
    m.add_class::<Event>()?;
    m.add_class::<Watch>()?;
    m.add_class::<Transaction>()?;
    m.add_class::<Lease>()?;
    m.add_class::<LockHolder>()?;
    m.add("KvstashError", py.get_type::<KvstashError>())?;
    m.add("InvalidError", py.get_type::<InvalidError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("ContentionError", py.get_type::<ContentionError>())?;
    m.add("ReadOnlyError", py.get_type::<ReadOnlyError>())?;
    m.add("CompactedError", py.get_type::<CompactedError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("CorruptError", py.get_type::<CorruptError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add("LeaseLostError", py.get_type::<LeaseLostError>())?;
    Ok(())
}
