//! Bearer tokens with per-bucket scopes (docs/security.md).
//!
//! A tokens file holds, per token, its name, the SHA-256 of its secret
//! and what it may do: read these buckets, write (and read) those, take
//! these locks; `*` is every bucket or lock. The secret itself is printed
//! once by `kvstash token add` and stored nowhere. The server looks the
//! file up again whenever it changes, so `kvstash token revoke` takes
//! effect at the next request, with no restart.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What one token may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    /// Buckets it may read (`*`: all).
    #[serde(default)]
    pub read: Vec<String>,
    /// Buckets it may write and read (`*`: all).
    #[serde(default)]
    pub write: Vec<String>,
    /// Locks it may take, renew, release and look at (`*`: all).
    #[serde(default)]
    pub locks: Vec<String>,
    /// The store's records themselves (`/v1/storage`): what another host's
    /// `server` backend and a replica use. `read` reads every bucket, lock
    /// and schema; `write` may also write any of them, past schemas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageScope>,
}

/// What a token may do with the store's records (`/v1/storage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageScope {
    Read,
    Write,
}

fn names(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n == "*" || n == name)
}

impl Scopes {
    pub fn can_read(&self, bucket: &str) -> bool {
        names(&self.read, bucket) || names(&self.write, bucket)
    }

    pub fn can_write(&self, bucket: &str) -> bool {
        names(&self.write, bucket)
    }

    pub fn can_lock(&self, name: &str) -> bool {
        names(&self.locks, name)
    }

    /// Whether it may read (`Read`) or write the store's records.
    pub fn can_use_storage(&self, wanted: StorageScope) -> bool {
        self.storage.is_some_and(|has| has >= wanted)
    }
}

/// One token as the file holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    #[serde(flatten)]
    pub scopes: Scopes,
}

/// The tokens file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub tokens: Vec<Token>,
}

/// Secrets start with this, so one found in a log or a repository is
/// recognisable (as GitHub's `ghp_` tokens are).
const SECRET_PREFIX: &str = "kvst_";

fn digest(secret: &str) -> String {
    let hash = Sha256::digest(secret.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl TokensFile {
    /// Reads `path`; a file that others may write is refused (whoever can
    /// write it can give themselves any access). A missing file is empty.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            bail!(
                "{} may be written by other users (mode {:o}): anyone who can write it can give themselves access; chmod go-w it",
                path.display(),
                mode & 0o777
            );
        }
        let file: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a kvstash tokens file", path.display()))?;
        let mut seen = std::collections::HashSet::new();
        for token in &file.tokens {
            if !seen.insert(&token.name) {
                bail!("{}: two tokens are named `{}`", path.display(), token.name);
            }
        }
        Ok(file)
    }

    /// Writes the file whole (aside, then renamed over), readable and
    /// writable by its owner only.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".new");
        let aside = PathBuf::from(aside);
        let text = serde_json::to_string_pretty(self)? + "\n";
        {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&aside)
                .with_context(|| format!("writing {}", aside.display()))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&aside, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Adds a token named `name` with `scopes`; returns its secret.
    pub fn add(&mut self, name: &str, scopes: Scopes) -> anyhow::Result<String> {
        if name.is_empty() || name.chars().any(char::is_control) {
            bail!("a token name is not empty and has no control characters");
        }
        if self.tokens.iter().any(|t| t.name == name) {
            bail!("a token named `{name}` exists: revoke it first");
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| anyhow::anyhow!("no randomness from the system: {e}"))?;
        let secret = format!(
            "{SECRET_PREFIX}{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        self.tokens.push(Token {
            name: name.to_string(),
            sha256: digest(&secret),
            scopes,
        });
        Ok(secret)
    }

    /// Removes the token named `name`; whether there was one.
    pub fn revoke(&mut self, name: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        self.tokens.len() != before
    }
}

/// Who a request is, once its token was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// No tokens are configured (a loopback server): everything.
    Open,
    /// A token's name and scopes.
    Token { name: String, scopes: Scopes },
}

impl Access {
    pub fn can_read(&self, bucket: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Token { scopes, .. } => scopes.can_read(bucket),
        }
    }

    pub fn can_write(&self, bucket: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Token { scopes, .. } => scopes.can_write(bucket),
        }
    }

    pub fn can_lock(&self, name: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Token { scopes, .. } => scopes.can_lock(name),
        }
    }

    pub fn can_use_storage(&self, wanted: StorageScope) -> bool {
        match self {
            Access::Open => true,
            Access::Token { scopes, .. } => scopes.can_use_storage(wanted),
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that is not (or no longer) in the file.
    Unknown,
    /// The tokens file cannot be read now; nobody is let in.
    Unreadable(String),
}

/// The tokens a server checks requests against, read again when the file
/// changes.
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    /// (modification time, size, inode) of what was read.
    stamp: Option<(i64, i64, u64, u64)>,
    by_digest: Result<HashMap<String, Token>, String>,
}

fn stamp(path: &Path) -> Option<(i64, i64, u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.mtime(), meta.mtime_nsec(), meta.size(), meta.ino()))
}

fn index(file: TokensFile) -> HashMap<String, Token> {
    file.tokens
        .into_iter()
        .map(|t| (t.sha256.to_ascii_lowercase(), t))
        .collect()
}

impl Tokens {
    /// The tokens of `path`, which must be readable now.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let stamp = stamp(path);
        if stamp.is_none() {
            bail!(
                "no tokens file at {}: make one with `kvstash token add --tokens {} NAME …`",
                path.display(),
                path.display()
            );
        }
        let file = TokensFile::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                stamp,
                by_digest: Ok(index(file)),
            }),
        })
    }

    /// Who the `Authorization` header value `header` is.
    pub fn check(&self, header: Option<&str>) -> Result<Access, Refused> {
        let secret = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(Refused::Missing)?;
        let wanted = digest(secret);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now != loaded.stamp {
            loaded.stamp = now;
            loaded.by_digest = TokensFile::read(&self.path)
                .map(index)
                .map_err(|e| format!("{e:#}"));
        }
        // A lookup by the secret's digest: what is compared is a hash the
        // client does not choose, so its timing tells nothing of a secret.
        match &loaded.by_digest {
            Err(why) => Err(Refused::Unreadable(why.clone())),
            Ok(tokens) => tokens
                .get(&wanted)
                .map(|t| Access::Token {
                    name: t.name.clone(),
                    scopes: t.scopes.clone(),
                })
                .ok_or(Refused::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn scopes(read: &[&str], write: &[&str], locks: &[&str]) -> Scopes {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Scopes {
            read: owned(read),
            write: owned(write),
            locks: owned(locks),
            storage: None,
        }
    }

    #[test]
    fn scopes_name_buckets_or_all() {
        let s = scopes(&["config"], &["devices"], &["deploy"]);
        assert!(s.can_read("config") && !s.can_write("config"));
        assert!(
            s.can_read("devices") && s.can_write("devices"),
            "write implies read"
        );
        assert!(!s.can_read("secrets"));
        assert!(s.can_lock("deploy") && !s.can_lock("other"));
        let all = scopes(&[], &["*"], &["*"]);
        assert!(all.can_write("anything") && all.can_lock("anything"));
        assert!(
            !all.can_use_storage(StorageScope::Read),
            "the records are a scope of their own"
        );
        let reader = Scopes {
            storage: Some(StorageScope::Read),
            ..Scopes::default()
        };
        assert!(reader.can_use_storage(StorageScope::Read));
        assert!(!reader.can_use_storage(StorageScope::Write));
        let writer = Scopes {
            storage: Some(StorageScope::Write),
            ..Scopes::default()
        };
        assert!(
            writer.can_use_storage(StorageScope::Read),
            "write implies read"
        );
    }

    #[test]
    fn tokens_are_stored_hashed_checked_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let mut file = TokensFile::default();
        let secret = file.add("ci", scopes(&["config"], &[], &[])).unwrap();
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == SECRET_PREFIX.len() + 64);
        file.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret[SECRET_PREFIX.len()..]), "{text}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let tokens = Tokens::open(&path).unwrap();
        let access = tokens.check(Some(&format!("Bearer {secret}"))).unwrap();
        assert!(access.can_read("config") && !access.can_write("config"));
        assert_eq!(tokens.check(None), Err(Refused::Missing));
        assert_eq!(tokens.check(Some("Bearer kvst_00")), Err(Refused::Unknown));
        assert_eq!(
            tokens.check(Some(&secret)),
            Err(Refused::Missing),
            "not a bearer header"
        );

        let mut file = TokensFile::read(&path).unwrap();
        assert!(
            file.add("ci", Scopes::default()).is_err(),
            "names are unique"
        );
        assert!(file.revoke("ci"));
        file.write(&path).unwrap();
        assert_eq!(
            tokens.check(Some(&format!("Bearer {secret}"))),
            Err(Refused::Unknown),
            "a revoked token is refused at once"
        );
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        TokensFile::default().write(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = TokensFile::read(&path).unwrap_err();
        assert!(
            format!("{e}").contains("may be written by other users"),
            "{e}"
        );
    }
}
