//! Every fuzz target of `kvstash_fuzz` on random inputs for a bounded time
//! (2 s each here; `BOLERO_RANDOM_TEST_TIME_MS`, which `just fuzz-ci`
//! sets, changes it), and every input in `regressions/TARGET/` (inputs
//! that once broke a target, kept so they never do again).

use std::time::Duration;

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                bolero::check!()
                    .with_test_time(Duration::from_secs(2))
                    .for_each(|data: &[u8]| kvstash_fuzz::$name(data));
            }
        )*

        #[test]
        fn regressions_stay_fixed() {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
            let mut replayed = 0;
            $(
                let dir = root.join(stringify!($name));
                for entry in std::fs::read_dir(&dir).into_iter().flatten() {
                    let path = entry.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    eprintln!("{}", path.display());
                    kvstash_fuzz::$name(&data);
                    replayed += 1;
                }
            )*
            eprintln!("{replayed} regression inputs replayed");
        }
    };
}

targets!(
    config, json, pointer, schema, record, log, import, http, model
);
