//! Linearizability: histories of concurrent operations on a few keys of a
//! store, recorded by clients in tasks or processes, and a checker that
//! searches for a sequential order consistent with real time and with a
//! model of the keys (Wing and Gong's search with Lowe's memoization, as
//! porcupine and Knossos do it).
//!
//! The model is kvstash's own contract: every commit takes a version above
//! every version committed before it, a read returns the latest committed
//! value and its version, a conditional write or a transaction's check
//! holds exactly when the key is at the expected version, and a
//! transaction's writes share its one version.
//!
//! An operation whose outcome is unknown (its client was killed, or it
//! failed with an error that leaves it open, like [`Error::Storage`]) may
//! have taken effect at any moment after it began, or never; its version
//! is then unknown too, and only bounded below.

use std::collections::HashSet;

use kvstash::{Bucket, Check, Error, Store, Value};
use serde::{Deserialize, Serialize};

/// One operation on key indexes into the history's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        key: usize,
    },
    Put {
        key: usize,
        value: i64,
    },
    /// A write only if the key is at `expected` (`None`: absent).
    Cas {
        key: usize,
        expected: Option<u64>,
        value: i64,
    },
    Delete {
        key: usize,
    },
    /// If `check` is at `expected`, `value` into both `writes` in one commit.
    Txn {
        check: usize,
        expected: Option<u64>,
        writes: [usize; 2],
        value: i64,
    },
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    /// A read: the value and its version, or absent.
    Entry(Option<(i64, u64)>),
    /// A write's version.
    Version(u64),
    /// A conditional write refused: the key's version then.
    Conflict(Option<u64>),
    /// A transaction's check failed: the key's version then.
    CheckFailed(Option<u64>),
    /// A delete: whether the key was live.
    Deleted(bool),
    /// Not known (see the module's documentation).
    Unknown,
}

/// One operation of one client, with when it began and returned (in any
/// unit, on one clock for the whole history); `ret` is `None` when its
/// outcome is unknown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub client: u32,
    pub op: Op,
    pub call: u64,
    pub ret: Option<u64>,
    pub result: Ret,
}

/// A key's version in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ver {
    Known(u64),
    /// Written by an operation of unknown outcome: above this.
    Above(u64),
}

impl Ver {
    /// Whether `seen` can be this version; and this version once it is.
    fn is(self, seen: u64) -> Option<Ver> {
        match self {
            Ver::Known(v) => (v == seen).then_some(self),
            Ver::Above(floor) => (seen > floor).then_some(Ver::Known(seen)),
        }
    }
}

/// The keys' values and versions, and the highest version committed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Model {
    keys: Vec<Option<(i64, Ver)>>,
    floor: u64,
}

impl Model {
    /// Whether key `k` is at `expected` (refining an unknown version to
    /// it); `None` if the model cannot say (an unknown version may or may
    /// not be it): both outcomes are then tried.
    fn at(&self, k: usize, expected: Option<u64>) -> Vec<(bool, Model)> {
        match (self.keys[k], expected) {
            (None, None) => vec![(true, self.clone())],
            (None, Some(_)) | (Some(_), None) => vec![(false, self.clone())],
            (Some((value, ver)), Some(e)) => match ver {
                Ver::Known(v) => vec![(v == e, self.clone())],
                Ver::Above(floor) => {
                    let mut out = vec![(false, self.clone())];
                    if e > floor {
                        let mut refined = self.clone();
                        refined.keys[k] = Some((value, Ver::Known(e)));
                        out.push((true, refined));
                    }
                    out
                }
            },
        }
    }

    /// Whether key `k`'s version can be what a refusal reported.
    fn reported(&self, k: usize, current: Option<u64>) -> Option<Model> {
        match (self.keys[k], current) {
            (None, None) => Some(self.clone()),
            (Some((value, ver)), Some(c)) => {
                let mut next = self.clone();
                next.keys[k] = Some((value, ver.is(c)?));
                Some(next)
            }
            _ => None,
        }
    }

    /// `value` into `keys`, at `version`, or (unknown) above `above`.
    fn write(&mut self, keys: &[usize], value: i64, version: Option<u64>, above: u64) {
        let ver = match version {
            Some(v) => {
                self.floor = v;
                Ver::Known(v)
            }
            None => Ver::Above(above),
        };
        for &k in keys {
            self.keys[k] = Some((value, ver));
        }
    }

    /// The states after `op` returned `ret` here; none if it could not
    /// have. An unknown write's version is above `above`.
    fn step(&self, op: &Op, ret: &Ret, above: u64) -> Vec<Model> {
        let fresh = |v: &u64| *v > self.floor;
        match (op, ret) {
            (Op::Get { key }, Ret::Entry(seen)) => match (self.keys[*key], seen) {
                (None, None) => vec![self.clone()],
                (Some((value, ver)), Some((v, version))) if value == *v => ver
                    .is(*version)
                    .map(|ver| {
                        let mut next = self.clone();
                        next.keys[*key] = Some((value, ver));
                        next.floor = next.floor.max(*version);
                        next
                    })
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            },
            (Op::Put { key, value }, Ret::Version(v)) if fresh(v) => {
                let mut next = self.clone();
                next.write(&[*key], *value, Some(*v), above);
                vec![next]
            }
            (Op::Put { key, value }, Ret::Unknown) => {
                let mut next = self.clone();
                next.write(&[*key], *value, None, above);
                vec![next]
            }
            (Op::Delete { key }, Ret::Deleted(live)) if self.keys[*key].is_some() == *live => {
                let mut next = self.clone();
                next.keys[*key] = None;
                vec![next]
            }
            (Op::Delete { key }, Ret::Unknown) => {
                let mut next = self.clone();
                next.keys[*key] = None;
                vec![next]
            }
            (
                Op::Cas {
                    key,
                    expected,
                    value,
                },
                ret,
            ) => self.conditional((*key, *expected), &[*key], *value, ret, false, above),
            (
                Op::Txn {
                    check,
                    expected,
                    writes,
                    value,
                },
                ret,
            ) => self.conditional((*check, *expected), writes, *value, ret, true, above),
            _ => Vec::new(),
        }
    }

    /// A write of `value` into `writes` if key `check.0` is at version
    /// `check.1`: a conditional write, or a transaction (`txn`).
    fn conditional(
        &self,
        (check, expected): (usize, Option<u64>),
        writes: &[usize],
        value: i64,
        ret: &Ret,
        txn: bool,
        above: u64,
    ) -> Vec<Model> {
        let mut out = Vec::new();
        for (holds, model) in self.at(check, expected) {
            match ret {
                Ret::Version(v) if holds && *v > model.floor => {
                    let mut next = model;
                    next.write(writes, value, Some(*v), above);
                    out.push(next);
                }
                Ret::Unknown if holds => {
                    let mut next = model;
                    next.write(writes, value, None, above);
                    out.push(next);
                }
                Ret::Unknown => out.push(model),
                Ret::Conflict(current) if !holds && !txn => {
                    out.extend(model.reported(check, *current));
                }
                Ret::CheckFailed(current) if !holds && txn => {
                    out.extend(model.reported(check, *current));
                }
                Ret::Version(_)
                | Ret::Conflict(_)
                | Ret::CheckFailed(_)
                | Ret::Entry(_)
                | Ret::Deleted(_) => {}
            }
        }
        out
    }
}

/// Checks that `events` on `keys` keys (all absent at first) are
/// linearizable; else says so, with the longest prefix of the history (in
/// order of return) that is.
pub fn check(events: &[Event], keys: usize) -> Result<(), String> {
    // The search recurses once per operation: give it a deep stack.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn_scoped(scope, || search(events, keys))
            .map_err(|e| format!("starting the checker: {e}"))?
            .join()
            .map_err(|_| "the checker panicked".to_string())?
    })
}

fn search(events: &[Event], keys: usize) -> Result<(), String> {
    let n = events.len();
    let mut search = Search::new(events)?;
    let start = Model {
        keys: vec![None; keys],
        floor: 0,
    };
    let found = search.from(&start);
    match found {
        Some(true) => Ok(()),
        Some(false) => {
            let mut by_return: Vec<&Event> = events.iter().filter(|e| e.ret.is_some()).collect();
            by_return.sort_by_key(|e| e.ret);
            Err(format!(
                "not linearizable: no order of the {n} operations is consistent with \
                 their real-time order and the model; the history:\n{}",
                by_return
                    .iter()
                    .map(|e| format!("{e:?}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        }
        None => Err(format!(
            "the search gave up after {BUDGET} steps on {n} operations"
        )),
    }
}

/// Most states the search visits before it gives up.
const BUDGET: u64 = 20_000_000;

/// The version a result shows, if it shows one.
fn shown_version(ret: &Ret) -> Option<u64> {
    match ret {
        Ret::Entry(Some((_, v)))
        | Ret::Version(v)
        | Ret::Conflict(Some(v))
        | Ret::CheckFailed(Some(v)) => Some(*v),
        Ret::Entry(None)
        | Ret::Conflict(None)
        | Ret::CheckFailed(None)
        | Ret::Deleted(_)
        | Ret::Unknown => None,
    }
}

/// The search's state is where each client is in its own (sequential)
/// operations that returned, which operations of unknown outcome are
/// placed, and the model; a client's operations go in its order, so the
/// candidates for the next place are each client's next operation and the
/// unplaced ones of unknown outcome that began in time.
struct Search<'h> {
    events: &'h [Event],
    /// Per client, its operations that returned, in order.
    lanes: Vec<Vec<usize>>,
    /// How many of each lane are placed.
    at: Vec<usize>,
    /// The operations of unknown outcome, and which are placed.
    unknown: Vec<usize>,
    placed: Vec<bool>,
    /// States already found to lead nowhere.
    seen: HashSet<(Vec<usize>, Vec<bool>, Model)>,
    /// Per event: the highest version that returned before it began, which
    /// its version is above wherever it goes (the same at every place, so
    /// that an unknown write's places lead to fewer states).
    above: Vec<u64>,
    /// Per unknown operation: whether its value was read (it took effect).
    observed: Vec<bool>,
    budget: u64,
}

impl<'h> Search<'h> {
    fn new(events: &'h [Event]) -> Result<Self, String> {
        let mut clients: Vec<u32> = events.iter().map(|e| e.client).collect();
        clients.sort_unstable();
        clients.dedup();
        let mut lanes = vec![Vec::new(); clients.len()];
        let mut unknown = Vec::new();
        for (i, e) in events.iter().enumerate() {
            // An outcome of `Unknown` is unknown, whatever `ret` says.
            match e.ret.filter(|_| e.result != Ret::Unknown) {
                Some(_) => {
                    let lane = clients.binary_search(&e.client).unwrap_or_default();
                    lanes[lane].push(i);
                }
                None => unknown.push(i),
            }
        }
        for lane in &mut lanes {
            lane.sort_by_key(|&i| events[i].call);
            for pair in lane.windows(2) {
                let (a, b) = (&events[pair[0]], &events[pair[1]]);
                if a.ret.is_some_and(|ret| ret > b.call) {
                    return Err(format!(
                        "client {}'s operations overlap: {a:?} and {b:?}",
                        a.client
                    ));
                }
            }
        }
        let mut returned: Vec<(u64, u64)> = events
            .iter()
            .filter_map(|e| Some((e.ret?, shown_version(&e.result)?)))
            .collect();
        returned.sort_unstable();
        let mut highest = Vec::with_capacity(returned.len());
        let mut most = 0;
        for (_, v) in &returned {
            most = most.max(*v);
            highest.push(most);
        }
        let above = events
            .iter()
            .map(|e| {
                let before = returned.partition_point(|(ret, _)| *ret < e.call);
                before.checked_sub(1).map_or(0, |i| highest[i])
            })
            .collect();
        let read: HashSet<i64> = events
            .iter()
            .filter_map(|e| match e.result {
                Ret::Entry(Some((value, _))) => Some(value),
                Ret::Entry(None)
                | Ret::Version(_)
                | Ret::Conflict(_)
                | Ret::CheckFailed(_)
                | Ret::Deleted(_)
                | Ret::Unknown => None,
            })
            .collect();
        let observed = unknown
            .iter()
            .map(|&i| match events[i].op {
                Op::Put { value, .. } | Op::Cas { value, .. } | Op::Txn { value, .. } => {
                    read.contains(&value)
                }
                Op::Get { .. } | Op::Delete { .. } => false,
            })
            .collect();
        Ok(Search {
            events,
            at: vec![0; lanes.len()],
            lanes,
            placed: vec![false; unknown.len()],
            unknown,
            seen: HashSet::new(),
            above,
            observed,
            budget: BUDGET,
        })
    }

    /// Whether the rest of the history can be linearized from `model`
    /// (`None`: out of budget).
    fn from(&mut self, model: &Model) -> Option<bool> {
        let events = self.events;
        // The earliest return among what is left bounds what may go next:
        // nothing that began after it.
        let heads = self
            .lanes
            .iter()
            .zip(&self.at)
            .filter_map(|(lane, &at)| lane.get(at).copied());
        let Some(first_return) = heads.filter_map(|i| events[i].ret).min() else {
            return Some(true);
        };
        let key = (self.at.clone(), self.placed.clone(), model.clone());
        if self.seen.contains(&key) {
            return Some(false);
        }
        self.budget = self.budget.checked_sub(1)?;
        // First an operation of unknown outcome whose value was read (it
        // took effect, most likely soon after it began), then each
        // client's next, then one of unknown outcome nobody saw (most
        // likely it never took effect: tried only where the rest cannot
        // go on without it).
        enum Next {
            Lane(usize),
            Unknown(usize),
        }
        let mut order = Vec::new();
        for want in [true, false] {
            if !want {
                order.extend((0..self.lanes.len()).map(Next::Lane));
            }
            order.extend(
                (0..self.unknown.len())
                    .filter(|&u| !self.placed[u] && self.observed[u] == want)
                    .map(Next::Unknown),
            );
        }
        for next in order {
            let i = match next {
                Next::Lane(lane) => match self.lanes[lane].get(self.at[lane]) {
                    Some(&i) => i,
                    None => continue,
                },
                Next::Unknown(u) => self.unknown[u],
            };
            let event = &events[i];
            if event.call > first_return {
                continue;
            }
            for after in model.step(&event.op, &event.result, self.above[i]) {
                match next {
                    Next::Lane(lane) => self.at[lane] += 1,
                    Next::Unknown(u) => self.placed[u] = true,
                }
                let found = self.from(&after);
                match next {
                    Next::Lane(lane) => self.at[lane] -= 1,
                    Next::Unknown(u) => self.placed[u] = false,
                }
                if found != Some(false) {
                    return found;
                }
            }
        }
        self.seen.insert(key);
        Some(false)
    }
}

/// A client's random operations on keys `0..keys`, repeatable from `seed`;
/// conditional ones mostly expect the versions the client last saw.
pub struct Workload {
    seed: u64,
    client: u32,
    count: i64,
    seen: Vec<Option<u64>>,
}

impl Workload {
    pub fn new(client: u32, keys: usize, seed: u64) -> Self {
        Workload {
            seed: seed.max(1),
            client,
            count: 0,
            seen: vec![None; keys],
        }
    }

    fn next(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    /// The next operation; values are unique in the whole history.
    pub fn op(&mut self) -> Op {
        self.count += 1;
        let value = i64::from(self.client) * 1_000_000 + self.count;
        let keys = self.seen.len();
        let key = self.below(keys);
        let expected = if self.below(4) == 0 {
            // Sometimes a stale or made-up version, to see refusals.
            Some(self.next() % 50)
        } else {
            self.seen[key]
        };
        match self.below(10) {
            0..=3 => Op::Get { key },
            4 | 5 => Op::Put { key, value },
            6 | 7 => Op::Cas {
                key,
                expected,
                value,
            },
            8 => Op::Delete { key },
            _ => Op::Txn {
                check: key,
                expected,
                writes: [(key + 1) % keys, (key + 2) % keys],
                value,
            },
        }
    }

    /// Remembers what `op` showed of the keys' versions.
    pub fn saw(&mut self, op: &Op, ret: &Ret) {
        match (op, ret) {
            (Op::Get { key }, Ret::Entry(e)) => self.seen[*key] = e.map(|(_, v)| v),
            (Op::Put { key, .. } | Op::Cas { key, .. }, Ret::Version(v)) => {
                self.seen[*key] = Some(*v);
            }
            (Op::Cas { key, .. }, Ret::Conflict(c)) => self.seen[*key] = *c,
            (Op::Delete { key }, Ret::Deleted(_)) => self.seen[*key] = None,
            (Op::Txn { writes, .. }, Ret::Version(v)) => {
                for k in writes {
                    self.seen[*k] = Some(*v);
                }
            }
            (Op::Txn { check, .. }, Ret::CheckFailed(c)) => self.seen[*check] = *c,
            _ => {}
        }
    }
}

/// The name of key `k`.
pub fn key_name(k: usize) -> String {
    format!("k{k}")
}

/// Runs `op` on `bucket` of `store`. `None`: it failed and certainly had no
/// effect (a read that failed, a write refused for contention), so it is
/// left out of the history. An error that leaves a write open is
/// [`Ret::Unknown`].
pub async fn run(store: &Store, bucket: &Bucket, op: &Op) -> Result<Option<Ret>, Error> {
    let json = |v: i64| Value::Json(v.to_string());
    let outcome = match op {
        Op::Get { key } => match bucket.get(&key_name(*key)).await {
            Ok(entry) => Ok(Ret::Entry(match entry {
                None => None,
                Some(e) => {
                    let text = String::from_utf8_lossy(e.value.as_bytes()).into_owned();
                    let value = text
                        .parse()
                        .map_err(|_| Error::Storage(format!("not a number: {text}")))?;
                    Some((value, e.version))
                }
            })),
            Err(e) => Err(e),
        },
        Op::Put { key, value } => bucket
            .set_with(&key_name(*key), json(*value), &Default::default())
            .await
            .map(Ret::Version),
        Op::Cas {
            key,
            expected,
            value,
        } => {
            let options = kvstash::WriteOptions {
                if_version: *expected,
                if_absent: expected.is_none(),
                ttl: None,
            };
            bucket
                .set_with(&key_name(*key), json(*value), &options)
                .await
                .map(Ret::Version)
        }
        Op::Delete { key } => bucket.delete(&key_name(*key)).await.map(Ret::Deleted),
        Op::Txn {
            check,
            expected,
            writes,
            value,
        } => {
            let name = bucket.name();
            let check = match expected {
                Some(v) => Check::version(name, &key_name(*check), *v),
                None => Check::absent(name, &key_name(*check)),
            };
            let mut txn = store.transaction().check(check);
            for k in writes {
                txn = txn.set(name, &key_name(*k), json(*value));
            }
            txn.commit().await.map(Ret::Version)
        }
    };
    let write = !matches!(op, Op::Get { .. });
    match outcome {
        Ok(ret) => Ok(Some(ret)),
        Err(Error::Conflict { current }) => Ok(Some(Ret::Conflict(current))),
        Err(Error::CheckFailed { current, .. }) => Ok(Some(Ret::CheckFailed(current))),
        Err(Error::Contention) => Ok(None),
        Err(Error::Storage(_) | Error::Trap(_) | Error::Runtime(_)) if write => {
            Ok(Some(Ret::Unknown))
        }
        Err(Error::Storage(_) | Error::Trap(_) | Error::Runtime(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
