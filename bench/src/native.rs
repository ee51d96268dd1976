//! The native baselines: redb used directly and SQLite, each one durable
//! transaction per write, as their users would write them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvstash::bench::{BenchError, Subject, disk_usage};
use redb::ReadableDatabase as _;

const TABLE: redb::TableDefinition<'_, &str, &str> = redb::TableDefinition::new("sensors");

/// redb used directly: one durable write transaction per put.
pub struct Redb {
    path: PathBuf,
    db: Option<redb::Database>,
}

impl Redb {
    pub fn create(path: &Path) -> Result<Self, BenchError> {
        Ok(Self {
            path: path.to_path_buf(),
            db: Some(redb::Database::create(path)?),
        })
    }

    fn db(&self) -> Result<&redb::Database, BenchError> {
        self.db.as_ref().ok_or_else(|| "closed".into())
    }

    fn write(&self, items: &[(&str, &str)]) -> Result<(), BenchError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for (key, value) in items {
                table.insert(*key, *value)?;
            }
        }
        txn.commit()?; // durable: fsync before it returns
        Ok(())
    }
}

#[async_trait::async_trait]
impl Subject for Redb {
    fn durable(&self) -> bool {
        true
    }
    async fn load(&mut self, items: &[(String, String)]) -> Result<(), BenchError> {
        let pairs: Vec<(&str, &str)> = items
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.write(&pairs)
    }
    async fn put(&mut self, key: &str, value: &str) -> Result<(), BenchError> {
        self.write(&[(key, value)])
    }
    async fn get(&mut self, key: &str) -> Result<bool, BenchError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TABLE)?;
        Ok(table.get(key)?.map(|v| v.value().len()).is_some())
    }
    async fn list(&mut self, start: &str, limit: usize) -> Result<Option<usize>, BenchError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let mut count = 0;
        for item in table.range(start..)?.take(limit) {
            let (_, value) = item?;
            std::hint::black_box(value.value());
            count += 1;
        }
        Ok(Some(count))
    }
    async fn txn(&mut self, items: &[(String, String)]) -> Result<bool, BenchError> {
        self.load(items).await?;
        Ok(true)
    }
    async fn reopen(&mut self) -> Result<Option<Duration>, BenchError> {
        drop(self.db.take());
        let start = Instant::now();
        self.db = Some(redb::Database::create(&self.path)?);
        Ok(Some(start.elapsed()))
    }
    fn disk_bytes(&self) -> Option<u64> {
        Some(disk_usage(&self.path))
    }
}

/// SQLite (bundled) as Spin's key/value store uses it: WAL journal,
/// `synchronous=FULL`, one transaction per put.
pub struct Sqlite {
    path: PathBuf,
    conn: Option<rusqlite::Connection>,
}

impl Sqlite {
    pub fn create(path: &Path) -> Result<Self, BenchError> {
        let mut this = Self {
            path: path.to_path_buf(),
            conn: None,
        };
        this.open()?;
        this.conn()?.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;",
        )?;
        Ok(this)
    }

    fn open(&mut self) -> Result<(), BenchError> {
        let conn = rusqlite::Connection::open(&self.path)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
        self.conn = Some(conn);
        Ok(())
    }

    fn conn(&self) -> Result<&rusqlite::Connection, BenchError> {
        self.conn.as_ref().ok_or_else(|| "closed".into())
    }

    fn write(&mut self, items: &[(String, String)]) -> Result<(), BenchError> {
        let conn = self.conn.as_mut().ok_or("closed")?;
        let txn = conn.transaction()?;
        {
            let mut insert = txn.prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?;
            for (key, value) in items {
                insert.execute((key, value.as_bytes()))?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Subject for Sqlite {
    fn durable(&self) -> bool {
        true
    }
    async fn load(&mut self, items: &[(String, String)]) -> Result<(), BenchError> {
        self.write(items)
    }
    async fn put(&mut self, key: &str, value: &str) -> Result<(), BenchError> {
        self.write(&[(key.to_string(), value.to_string())])
    }
    async fn get(&mut self, key: &str) -> Result<bool, BenchError> {
        let mut query = self
            .conn()?
            .prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
        let mut rows = query.query([key])?;
        Ok(match rows.next()? {
            Some(row) => std::hint::black_box(row.get::<_, Vec<u8>>(0)?).len() < usize::MAX,
            None => false,
        })
    }
    async fn list(&mut self, start: &str, limit: usize) -> Result<Option<usize>, BenchError> {
        let mut query = self
            .conn()?
            .prepare_cached("SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key LIMIT ?2")?;
        let mut rows = query.query((start, i64::try_from(limit)?))?;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            std::hint::black_box(row.get::<_, Vec<u8>>(1)?);
            count += 1;
        }
        Ok(Some(count))
    }
    async fn txn(&mut self, items: &[(String, String)]) -> Result<bool, BenchError> {
        self.write(items)?;
        Ok(true)
    }
    async fn reopen(&mut self) -> Result<Option<Duration>, BenchError> {
        drop(self.conn.take());
        let start = Instant::now();
        self.open()?;
        // Opening is lazy in SQLite: the first read does the work.
        self.conn()?
            .query_row("SELECT count(*) FROM kv WHERE key = ''", [], |_| Ok(()))?;
        Ok(Some(start.elapsed()))
    }
    fn disk_bytes(&self) -> Option<u64> {
        let dir = self.path.parent()?;
        let name = self.path.file_name()?.to_str()?;
        Some(
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(name)))
                .map(|e| disk_usage(&e.path()))
                .sum(),
        )
    }
}
