//! Random operation sequences against a reference model: plain writes,
//! conditional transactions across buckets, TTLs and a moving clock,
//! deletes, listing and sweeps. Seeded, so a failure replays.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::{Rng, T0, json};
use crate::engine::*;

#[derive(Clone, Debug, PartialEq)]
struct Cell {
    value: i64,
    version: u64,
    expires: Option<u64>,
}

#[derive(Default)]
struct Model {
    cells: BTreeMap<(String, String), Cell>,
}

impl Model {
    fn live(&self, bucket: &str, key: &str, now: u64) -> Option<&Cell> {
        self.cells
            .get(&(bucket.to_string(), key.to_string()))
            .filter(|c| c.expires.is_none_or(|at| at > now))
    }
}

const BUCKETS: &[&str] = &["cfg", "stats", "a b"];
const KEYS: &[&str] = &["k", "k0", "k1", "k10", "z", "ü", "k\0x"];

type TestEngine = Engine<Box<dyn Storage>, Rc<ManualClock>>;

#[test]
fn model_based_random_operations() {
    for seed in 1..=60u64 {
        let clock = Rc::new(ManualClock::at(T0));
        let e = Engine::new(
            Box::new(MemStorage::default()) as Box<dyn Storage>,
            clock.clone(),
        );
        run(seed, &[e], &clock);
    }
}

/// The same operations through two engines (two instances of the
/// component), each with a small cache of its own over one store: every
/// read means what the store holds, whichever instance wrote last, and
/// whatever the caches evicted.
#[test]
fn model_based_random_operations_through_caches() {
    for seed in 1..=60u64 {
        let clock = Rc::new(ManualClock::at(T0));
        let store = Rc::new(MemStorage::default());
        let policy = CachePolicy {
            max_entries: 4,
            cull_to_percent: 50,
            timeout_ms: 10_000,
            ..CachePolicy::default()
        };
        let instance = || {
            let cache = Caching::new(
                store.clone(),
                clock.clone(),
                policy.clone(),
                Default::default(),
            );
            Engine::new(Box::new(cache) as Box<dyn Storage>, clock.clone())
        };
        run(seed, &[instance(), instance()], &clock);
    }
}

/// 300 random operations, each on one of `engines` (which share a store).
fn run(seed: u64, engines: &[TestEngine], clock: &ManualClock) {
    {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut model = Model::default();
        let mut now = T0;
        let mut last_version = 0;
        for step in 0..300 {
            let e = &engines[rng.below(engines.len() as u64) as usize];
            let ctx = format!("seed {seed} step {step}");
            let bucket = rng.pick(BUCKETS);
            let key = rng.pick(KEYS);
            match rng.below(10) {
                0 | 1 => {
                    let value = rng.below(100) as i64;
                    let ttl = (rng.below(3) == 0).then(|| 1 + rng.below(40));
                    let options = WriteOptions {
                        ttl_ms: ttl,
                        ..Default::default()
                    };
                    let v = e
                        .set_with(bucket, key, json(&value.to_string()), &options)
                        .unwrap();
                    assert!(v > last_version, "{ctx}");
                    last_version = v;
                    let cell = Cell {
                        value,
                        version: v,
                        expires: ttl.map(|t| now + t),
                    };
                    model.cells.insert((bucket.into(), key.into()), cell);
                }
                2 => {
                    let existed = model.live(bucket, key, now).is_some();
                    assert_eq!(e.delete(bucket, key).unwrap(), existed, "{ctx}");
                    model.cells.remove(&(bucket.into(), key.into()));
                }
                3 => {
                    let got = e.get(bucket, key).unwrap().map(|v| {
                        let Value::Json(text) = v.value else {
                            panic!("{ctx}: bytes")
                        };
                        Cell {
                            value: text.parse().unwrap(),
                            version: v.version,
                            expires: v.expires_at_ms,
                        }
                    });
                    assert_eq!(got.as_ref(), model.live(bucket, key, now), "{ctx}");
                }
                4 => {
                    let by = rng.below(30);
                    clock.advance(by);
                    now += by;
                }
                5 | 6 => transaction(&mut rng, e, &mut model, now, &mut last_version, &ctx),
                7 => {
                    let listed: Vec<(String, i64, u64)> = e
                        .list(
                            bucket,
                            &ListOptions {
                                limit: Some(1000),
                                ..Default::default()
                            },
                        )
                        .unwrap()
                        .items
                        .into_iter()
                        .map(|i| {
                            let Some(Value::Json(text)) = i.value else {
                                panic!("{ctx}")
                            };
                            (i.key, text.parse().unwrap(), i.version)
                        })
                        .collect();
                    let want: Vec<(String, i64, u64)> = model
                        .cells
                        .iter()
                        .filter(|((b, k), _)| b == bucket && model.live(b, k, now).is_some())
                        .map(|((_, k), c)| (k.clone(), c.value, c.version))
                        .collect();
                    assert_eq!(listed, want, "{ctx}");
                }
                8 => {
                    e.sweep(1 + rng.below(5) as u32).unwrap();
                }
                _ => {
                    let mut want: Vec<&str> = model
                        .cells
                        .iter()
                        .filter(|((b, k), _)| model.live(b, k, now).is_some())
                        .map(|((b, _), _)| b.as_str())
                        .collect();
                    want.dedup();
                    assert_eq!(e.buckets().unwrap(), want, "{ctx}");
                }
            }
        }
    }
}

/// A random transaction, with the outcome the model predicts.
fn transaction(
    rng: &mut Rng,
    e: &TestEngine,
    model: &mut Model,
    now: u64,
    last_version: &mut u64,
    ctx: &str,
) {
    let mut checks = Vec::new();
    for _ in 0..rng.below(3) {
        let (bucket, key) = (rng.pick(BUCKETS), rng.pick(KEYS));
        let live = model.live(bucket, key, now).cloned();
        let condition = match rng.below(5) {
            0 => Condition::VersionIs(live.as_ref().map_or(1, |c| c.version)),
            1 => Condition::VersionIs(rng.below(50) + 1),
            2 => Condition::Absent,
            3 => Condition::Exists,
            _ => Condition::ValueEquals(json(
                &live
                    .as_ref()
                    .map_or(rng.below(3) as i64, |c| c.value)
                    .to_string(),
            )),
        };
        checks.push(TxnCheck::key(bucket, key, condition));
    }
    let mut mutations = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let (bucket, key) = (rng.pick(BUCKETS), rng.pick(KEYS));
        let (op, ttl_ms) = match rng.below(3) {
            0 => (
                Op::Set(json(&rng.below(100).to_string())),
                (rng.below(3) == 0).then(|| 1 + rng.below(40)),
            ),
            1 => (Op::Delete, None),
            _ => (Op::Increment(rng.below(7) as i64 - 3), None),
        };
        mutations.push(Mutation {
            bucket: bucket.into(),
            key: key.into(),
            op,
            ttl_ms,
        });
    }
    // What the model expects.
    let failed = checks.iter().enumerate().find_map(|(index, c)| {
        let TxnCheck::Key {
            bucket,
            key,
            condition,
        } = c
        else {
            panic!("{ctx}: the model makes no lease checks")
        };
        let live = model.live(bucket, key, now);
        let holds = match condition {
            Condition::VersionIs(v) => live.is_some_and(|l| l.version == *v),
            Condition::Absent => live.is_none(),
            Condition::Exists => live.is_some(),
            Condition::ValueEquals(Value::Json(t)) => {
                live.is_some_and(|l| l.value.to_string() == *t)
            }
            Condition::ValueEquals(Value::Bytes(_)) => false,
        };
        (!holds).then(|| StoreError::CheckFailed {
            index: index as u32,
            current: live.map(|l| l.version),
        })
    });
    let result = e.transact(&checks, &mutations);
    if let Some(expected) = failed {
        assert_eq!(result, Err(expected), "{ctx}");
        return;
    }
    let version = result.unwrap_or_else(|err| panic!("{ctx}: {err:?}"));
    assert!(version > *last_version, "{ctx}");
    *last_version = version;
    for m in mutations {
        let id = (m.bucket.clone(), m.key.clone());
        let live = model.live(&m.bucket, &m.key, now).cloned();
        match m.op {
            Op::Set(Value::Json(t)) => {
                let cell = Cell {
                    value: t.parse().unwrap(),
                    version,
                    expires: m.ttl_ms.map(|t| now + t),
                };
                model.cells.insert(id, cell);
            }
            Op::Delete => {
                model.cells.remove(&id);
            }
            Op::Increment(d) => {
                let (value, expires) = live.map_or((0, None), |c| (c.value, c.expires));
                model.cells.insert(
                    id,
                    Cell {
                        value: value + d,
                        version,
                        expires,
                    },
                );
            }
            other @ (Op::Set(Value::Bytes(_))
            | Op::SetPath { .. }
            | Op::DeletePath { .. }
            | Op::AppendPath { .. }) => {
                panic!("{ctx}: the model makes no {other:?}")
            }
        }
    }
}
