use super::*;

const T0: u64 = 1_700_000_000_000;

fn engine() -> Engine<MemStorage, ManualClock> {
    Engine::new(MemStorage::default(), ManualClock::at(T0))
}

fn json(text: &str) -> Value {
    Value::json(text.to_string()).unwrap()
}

#[test]
fn get_set_delete_exists() {
    let e = engine();
    assert_eq!(e.get("b", "k").unwrap(), None);
    assert!(!e.exists("b", "k").unwrap());
    let v1 = e.set("b", "k", json("{\"hello\":\"world\"}")).unwrap();
    let got = e.get("b", "k").unwrap().unwrap();
    assert_eq!(got.value, json("{\"hello\":\"world\"}"));
    assert_eq!(got.version, v1);
    assert!(e.exists("b", "k").unwrap());
    let v2 = e.set("b", "k", json("2")).unwrap();
    assert!(v2 > v1, "versions increase");
    assert!(e.delete("b", "k").unwrap());
    assert!(
        !e.delete("b", "k").unwrap(),
        "a second delete finds nothing"
    );
    assert_eq!(e.get("b", "k").unwrap(), None);
}

#[test]
fn deleting_a_missing_key_writes_nothing() {
    let e = engine();
    let before = e.storage().current_version().unwrap();
    assert!(!e.delete("b", "nope").unwrap());
    assert_eq!(e.delete_many("b", &["x".into(), "y".into()]).unwrap(), 0);
    assert_eq!(e.storage().current_version().unwrap(), before);
}

#[test]
fn buckets_are_separate_namespaces() {
    let e = engine();
    e.set("a", "k", json("1")).unwrap();
    e.set("b", "k", json("2")).unwrap();
    e.set("ab", "k", json("3")).unwrap();
    assert_eq!(e.get("a", "k").unwrap().unwrap().value, json("1"));
    assert_eq!(e.get("b", "k").unwrap().unwrap().value, json("2"));
    assert_eq!(e.list("a", &ListOptions::default()).unwrap().items.len(), 1);
    assert_eq!(e.buckets().unwrap(), vec!["a", "ab", "b"]);
}

#[test]
fn invalid_input_is_rejected_and_stores_nothing() {
    let e = engine();
    e.set("b", "k", json("1")).unwrap();
    let version = e.storage().current_version().unwrap();
    assert!(matches!(
        Value::json("{nope".into()),
        Err(StoreError::InvalidValue(_))
    ));
    assert!(matches!(
        Value::json(" ".repeat(Limits::DEFAULT.value_bytes + 1)),
        Err(StoreError::InvalidValue(_))
    ));
    assert!(matches!(
        e.set("b", "", json("1")),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        e.set("", "k", json("1")),
        Err(StoreError::InvalidBucket(_))
    ));
    assert!(matches!(
        e.set("b\n", "k", json("1")),
        Err(StoreError::InvalidBucket(_))
    ));
    let long = "k".repeat(Limits::DEFAULT.key_bytes + 1);
    assert!(matches!(e.get("b", &long), Err(StoreError::InvalidKey(_))));
    let too_many: Vec<(String, Value)> = (0..=Limits::DEFAULT.batch)
        .map(|i| (i.to_string(), json("1")))
        .collect();
    assert!(matches!(
        e.set_many("b", too_many),
        Err(StoreError::InvalidKey(_))
    ));
    // One bad key spoils the whole batch: nothing is written.
    let mixed = vec![("ok".to_string(), json("1")), (String::new(), json("2"))];
    assert!(matches!(
        e.set_many("b", mixed),
        Err(StoreError::InvalidKey(_))
    ));
    assert_eq!(e.get("b", "ok").unwrap(), None);
    assert_eq!(e.storage().current_version().unwrap(), version);
}

#[test]
fn read_only_rejects_every_write() {
    let storage = MemStorage::default();
    let e = Engine::new(storage, ManualClock::at(T0));
    e.set("b", "k", json("1")).unwrap();
    let e = e.read_only(true);
    assert_eq!(e.set("b", "k", json("2")), Err(StoreError::ReadOnly));
    assert_eq!(e.delete("b", "k"), Err(StoreError::ReadOnly));
    assert_eq!(e.set_many("b", vec![]), Err(StoreError::ReadOnly));
    assert_eq!(e.increment("b", "n", 1i64), Err(StoreError::ReadOnly));
    assert_eq!(e.get("b", "k").unwrap().unwrap().value, json("1"));
}

#[test]
fn list_pages_through_everything_in_order() {
    let e = engine();
    let mut expected: Vec<String> = (0..250).map(|i| format!("sensor_{i:06}")).collect();
    for key in expected.iter().rev() {
        e.set("s", key, json("{}")).unwrap();
    }
    e.set("s", "other", json("0")).unwrap();
    e.set("t", "sensor_x", json("0")).unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = e
            .list(
                "s",
                &ListOptions {
                    prefix: Some("sensor_".into()),
                    limit: Some(100),
                    cursor: cursor.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(page.items.len() <= 100);
        seen.extend(page.items.into_iter().map(|i| i.key));
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn list_cursor_survives_concurrent_writes() {
    let e = engine();
    for key in ["a", "b", "c", "d"] {
        e.set("b", key, json("1")).unwrap();
    }
    let first = e
        .list(
            "b",
            &ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|i| i.key.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    e.delete("b", "b").unwrap(); // the cursor's own key vanishes
    e.set("b", "bb", json("1")).unwrap(); // a key after the cursor appears
    e.set("b", "aa", json("1")).unwrap(); // a key before it appears
    let rest = e
        .list(
            "b",
            &ListOptions {
                limit: Some(10),
                cursor: first.cursor,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|i| i.key.as_str())
            .collect::<Vec<_>>(),
        ["bb", "c", "d"]
    );
    assert_eq!(rest.cursor, None);
}

#[test]
fn list_rejects_bad_cursors() {
    let e = engine();
    e.set("b", "apple", json("1")).unwrap();
    for cursor in ["garbage", "c1zz"] {
        let options = ListOptions {
            cursor: Some(cursor.into()),
            ..Default::default()
        };
        assert_eq!(e.list("b", &options), Err(StoreError::InvalidCursor));
    }
    // A cursor outside the requested prefix is not one `list` could have given.
    let page = e
        .list(
            "b",
            &ListOptions {
                limit: Some(1),
                prefix: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.cursor, None);
    let foreign = keys::encode_cursor("zebra", false);
    let options = ListOptions {
        prefix: Some("a".into()),
        cursor: Some(foreign),
        ..Default::default()
    };
    assert_eq!(e.list("b", &options), Err(StoreError::InvalidCursor));
}

#[test]
fn batch_operations() {
    let e = engine();
    let v = e
        .set_many(
            "b",
            vec![
                ("x".into(), json("1")),
                ("y".into(), json("2")),
                ("x".into(), json("3")),
            ],
        )
        .unwrap();
    let got = e
        .get_many("b", &["x".into(), "nope".into(), "y".into()])
        .unwrap();
    assert_eq!(
        got[0].as_ref().unwrap().value,
        json("3"),
        "the last of a repeated key wins"
    );
    assert_eq!(got[0].as_ref().unwrap().version, v);
    assert_eq!(got[1], None);
    assert_eq!(
        got[2].as_ref().unwrap().version,
        v,
        "one commit, one version"
    );
    assert_eq!(
        e.delete_many("b", &["x".into(), "x".into(), "nope".into()])
            .unwrap(),
        1
    );
    assert_eq!(e.get("b", "x").unwrap(), None);
    assert!(e.exists("b", "y").unwrap());
}

#[test]
fn bytes_and_json_values() {
    let e = engine();
    e.set("b", "raw", Value::bytes(vec![0xff, 0, 1]).unwrap())
        .unwrap();
    assert_eq!(
        e.get("b", "raw").unwrap().unwrap().value,
        Value::Bytes(vec![0xff, 0, 1])
    );
    assert_eq!(
        Value::sniff(b"{\"a\":1}".to_vec()).unwrap(),
        json("{\"a\":1}")
    );
    assert_eq!(
        Value::sniff(b"plain text".to_vec()).unwrap(),
        Value::Bytes(b"plain text".to_vec())
    );
    e.set("b", "empty", Value::bytes(Vec::new()).unwrap())
        .unwrap();
    assert_eq!(
        e.get("b", "empty").unwrap().unwrap().value,
        Value::Bytes(Vec::new())
    );
}

/// What a write accepts, every read can read: a document nested as deep
/// as the check allows is read back whole and by path; one level deeper
/// is refused when written (it was stored, then `path get` failed on it).
#[test]
fn json_accepted_is_json_readable() {
    let e = engine();
    let deepest = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    e.set("b", "deep", json(&deepest)).unwrap();
    assert_eq!(e.get("b", "deep").unwrap().unwrap().value, json(&deepest));
    let path = "/0".repeat(126);
    assert_eq!(e.get_path("b", "deep", &path).unwrap().unwrap().0, "[1]");
    for too_deep in [
        format!("{}1{}", "[".repeat(128), "]".repeat(128)),
        "[".repeat(100_000),
    ] {
        let err = Value::json(too_deep).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidValue(m) if m.contains("nesting deeper than 127 levels")),
            "{err:?}"
        );
    }
    for unreadable in ["1e400", "\"\\ud800\""] {
        assert!(
            matches!(
                Value::json(unreadable.into()),
                Err(StoreError::InvalidValue(_))
            ),
            "{unreadable}"
        );
    }
}

#[test]
fn little_endian_counters_are_stored_as_eight_bytes() {
    // Spin's built-in store keeps draft2 counters as i64 LE bytes; an app
    // that reads its counter back must see exactly those bytes.
    let e = engine();
    assert_eq!(
        e.increment("b", "c", LittleEndianI64(5)).unwrap(),
        LittleEndianI64(5)
    );
    assert_eq!(
        e.increment("b", "c", LittleEndianI64(-7)).unwrap(),
        LittleEndianI64(-2)
    );
    let stored = e.get("b", "c").unwrap().unwrap().value.into_bytes();
    assert_eq!(stored, (-2i64).to_le_bytes());
    // Eight bytes that are also valid JSON text are still a counter.
    e.set("b", "digits", Value::sniff(b"12345678".to_vec()).unwrap())
        .unwrap();
    assert_eq!(
        e.increment("b", "digits", LittleEndianI64(0)).unwrap(),
        LittleEndianI64(i64::from_le_bytes(*b"12345678"))
    );
    // Anything else is refused and left as it was.
    e.set("b", "short", json("5")).unwrap();
    match e.increment("b", "short", LittleEndianI64(1)) {
        Err(StoreError::InvalidValue(why)) => assert!(why.contains("1 bytes"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.get("b", "short").unwrap().unwrap().value, json("5"));
    e.set(
        "b",
        "max",
        Value::bytes(i64::MAX.to_le_bytes().to_vec()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        e.increment("b", "max", LittleEndianI64(1)),
        Err(StoreError::InvalidValue(_))
    ));
}

#[test]
fn increment_and_swap() {
    let e = engine();
    assert_eq!(e.increment("b", "n", 5i64).unwrap(), 5);
    assert_eq!(e.increment("b", "n", -7i64).unwrap(), -2);
    assert_eq!(e.get("b", "n").unwrap().unwrap().value, json("-2"));
    assert!(matches!(
        e.increment("b", "n", 1u64),
        Err(StoreError::InvalidValue(_))
    ));
    e.set("b", "big", json(&i64::MAX.to_string())).unwrap();
    assert!(matches!(
        e.increment("b", "big", 1i64),
        Err(StoreError::InvalidValue(_))
    ));
    e.set("b", "text", json("\"x\"")).unwrap();
    assert!(matches!(
        e.increment("b", "text", 1i64),
        Err(StoreError::InvalidValue(_))
    ));

    let (_, version) = e.read_for_swap("b", "n").unwrap().unwrap();
    let latest = e.storage().current_version().unwrap();
    assert_eq!(
        e.swap("b", "fresh", None, json("1")).unwrap(),
        Swap::Done(latest + 1)
    );
    assert_eq!(
        e.swap("b", "fresh", None, json("2")).unwrap(),
        Swap::Conflict
    );
    assert!(matches!(
        e.swap("b", "n", Some(version), json("10")).unwrap(),
        Swap::Done(_)
    ));
    assert_eq!(
        e.swap("b", "n", Some(version), json("11")).unwrap(),
        Swap::Conflict
    );
    assert_eq!(e.get("b", "n").unwrap().unwrap().value, json("10"));
}

#[test]
fn offset_listing_for_the_u64_cursor() {
    let e = engine();
    for i in 0..25 {
        e.set("b", &format!("k{i:02}"), json("1")).unwrap();
    }
    let (page, more) = e.list_keys_at("b", 0, 10).unwrap();
    assert_eq!(page.len(), 10);
    assert!(more);
    let (page, more) = e.list_keys_at("b", 20, 10).unwrap();
    assert_eq!(page, ["k20", "k21", "k22", "k23", "k24"]);
    assert!(!more);
    assert_eq!(e.list_keys_at("b", 99, 10).unwrap(), (vec![], false));
}

#[test]
fn prefixed_stores_share_a_backend_without_seeing_each_other() {
    let shared = std::rc::Rc::new(MemStorage::default());
    let a = Engine::new(
        Prefixed::new(shared.clone(), b"tenant-a/".to_vec()),
        ManualClock::at(T0),
    );
    let b = Engine::new(
        Prefixed::new(shared.clone(), b"tenant-b/".to_vec()),
        ManualClock::at(T0),
    );
    a.set("cfg", "k", json("1")).unwrap();
    b.set("cfg", "k", json("2")).unwrap();
    b.set("other", "k", json("2")).unwrap();
    assert_eq!(a.get("cfg", "k").unwrap().unwrap().value, json("1"));
    assert_eq!(b.get("cfg", "k").unwrap().unwrap().value, json("2"));
    assert_eq!(a.buckets().unwrap(), vec!["cfg"]);
    assert_eq!(b.buckets().unwrap(), vec!["cfg", "other"]);
    assert_eq!(
        a.list("cfg", &ListOptions::default()).unwrap().items.len(),
        1
    );
}

#[test]
fn mem_storage_change_feed_and_compaction() {
    let s = MemStorage::with_retention(3);
    for i in 0..5u8 {
        s.commit(
            vec![],
            vec![Write {
                key: vec![i],
                value: Some(vec![i]),
            }],
        )
        .unwrap();
    }
    s.commit(
        vec![],
        vec![
            Write {
                key: vec![0],
                value: None,
            },
            Write {
                key: vec![9],
                value: Some(vec![]),
            },
        ],
    )
    .unwrap();
    // 6 commits, 3 retained: versions 4, 5, 6.
    assert_eq!(
        s.changes(0, 100),
        Err(StorageError::Compacted { oldest: 4 })
    );
    let feed = s.changes(3, 100).unwrap();
    assert_eq!(
        feed.iter().map(|c| c.version).collect::<Vec<_>>(),
        [4, 5, 6, 6]
    );
    assert_eq!(feed[2].value, None);
    // Whole commits only: a limit never splits one.
    assert_eq!(s.changes(4, 2).unwrap().len(), 3);
    assert_eq!(s.changes(5, 1).unwrap().len(), 2);
    assert!(s.changes(6, 100).unwrap().is_empty());
}

mod faults;
mod history;
mod leases;
mod limits;
/// xorshift64*, so failures of random tests replay by seed.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(super) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What a [`Hooked`] commit hook decides: fail the commit with this error,
/// or (`None`) let it through.
type CommitHook = Box<dyn FnMut(&MemStorage, &[Check]) -> Option<StorageError>>;

/// A `MemStorage` with hooks, for the tests that inject races and faults:
/// `before_commit` runs before each commit (and may fail it), `before_scan`
/// before each scan.
pub(super) struct Hooked {
    pub(super) inner: std::rc::Rc<MemStorage>,
    before_commit: std::cell::RefCell<CommitHook>,
    before_scan: std::cell::RefCell<Box<dyn FnMut()>>,
}

impl Hooked {
    pub(super) fn new(inner: std::rc::Rc<MemStorage>) -> Self {
        Self {
            inner,
            before_commit: std::cell::RefCell::new(Box::new(|_, _| None)),
            before_scan: std::cell::RefCell::new(Box::new(|| {})),
        }
    }

    pub(super) fn before_commit(
        self,
        hook: impl FnMut(&MemStorage, &[Check]) -> Option<StorageError> + 'static,
    ) -> Self {
        *self.before_commit.borrow_mut() = Box::new(hook);
        self
    }

    pub(super) fn before_scan(self, hook: impl FnMut() + 'static) -> Self {
        *self.before_scan.borrow_mut() = Box::new(hook);
        self
    }
}

impl Storage for Hooked {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        self.inner.get_many(keys)
    }
    fn scan(
        &self,
        s: &[u8],
        e: Option<&[u8]>,
        l: u32,
        r: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        (self.before_scan.borrow_mut())();
        self.inner.scan(s, e, l, r)
    }
    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
        if let Some(e) = (self.before_commit.borrow_mut())(&self.inner, &checks) {
            return Err(e);
        }
        self.inner.commit(checks, writes)
    }
    fn current_version(&self) -> Result<u64, StorageError> {
        self.inner.current_version()
    }
    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        self.inner.changes(since, limit)
    }
    fn commits_here(&self) -> u64 {
        self.inner.commits_here()
    }
}

mod listing;
mod model;
mod transactions;
mod ttl;
mod typed;
mod watching;
