//! Real servers for tests: etcd, Redis and PostgreSQL, each started on free
//! loopback ports (127.0.0.1 only) with its data in a temp dir, and stopped
//! (killed, then waited for) when dropped.
//!
//! A server whose binary is missing is a loud skip on a developer machine
//! (`None`, with a line on stderr saying what to install) and a failure in
//! CI (`CI=true`), where `.ci/run` installs every one of them.

// Test support: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A loopback port nobody listens on right now, and one this process has
/// not handed out before: the kernel may give a port just released to the
/// next `bind(0)`, so two calls could otherwise name one port (an etcd
/// member's client and peer ports, say) and the server would fail to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn have(binary: &str, package: &str) -> bool {
    let found = Path::new(binary).exists();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{binary} is missing: `.ci/run` installs the Debian package `{package}`");
        }
        eprintln!(
            "SKIPPED: {binary} is not installed (apt-get install {package}); \
             the test that needs it did not run"
        );
    }
    found
}

/// Waits for `child` to listen on `port`; kills it and fails if it does not.
fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    if let Err(status) = listens(port, child, what) {
        panic!("{what} exited at start ({status})");
    }
}

/// Waits for `child` to listen on `port`: `Err` if it exited first (a port
/// taken by another process between [`free_port`] and the server's bind is
/// one reason: the caller may retry on other ports); fails if it neither
/// listens nor exits within 30 s.
fn listens(port: u16, child: &mut Child, what: &str) -> Result<(), std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(child);
    panic!("{what} did not listen on 127.0.0.1:{port} within 30 s");
}

/// A name no other caller in this process gets: a namespace per test on a
/// shared server.
pub fn unique(stem: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{stem}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs `cleanup` (shell) once this test process is gone: a server shared
/// by a whole test binary lives in a static, which is never dropped.
fn after_exit(cleanup: &str) {
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 0.5; done; {cleanup}",
        std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One `redis-server` with AOF `appendfsync always`.
pub struct Redis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Redis {
    pub fn start() -> Option<Redis> {
        if !have("/usr/bin/redis-server", "redis-server") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(port, dir.path());
        Some(Redis {
            child,
            port,
            _dir: dir,
        })
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let mut child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        wait_for_port(port, &mut child, "redis-server");
        child
    }

    /// Starts the server again, on its port and data.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, self._dir.path());
    }

    /// One server for the whole test binary (stopped after it exits);
    /// give each test its own `namespace` ([`unique`]).
    pub fn shared() -> Option<&'static Redis> {
        static SHARED: OnceLock<Option<Redis>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let redis = Redis::start()?;
                after_exit(&format!(
                    "kill -9 {}; rm -rf '{}'",
                    redis.child.id(),
                    redis._dir.path().display()
                ));
                Some(redis)
            })
            .as_ref()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// One etcd member of a cluster on loopback.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// An etcd cluster of one or more members, each with its own ports and
/// data dir; members can be killed and restarted.
pub struct Etcd {
    members: Vec<Member>,
    cluster: String,
    args: Vec<String>,
    /// Clients must use TLS, trusting this CA.
    tls: Option<Certificates>,
    _dir: TempDir,
}

/// A CA and a server certificate for 127.0.0.1 signed by it (PEM files),
/// made with the `openssl` command.
#[derive(Clone, Debug)]
pub struct Certificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificates {
    pub fn create(dir: &Path) -> Certificates {
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs (Debian package openssl)");
            assert!(status.success(), "openssl {args:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=kvstash test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        Certificates {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

impl Etcd {
    /// One member, with etcd's default limits.
    pub fn start() -> Option<Etcd> {
        Self::cluster(1, &[])
    }

    /// `size` members (3 for fault tests), all started, each with `args`
    /// added to its command line.
    pub fn cluster(size: usize, args: &[&str]) -> Option<Etcd> {
        Self::cluster_with(size, args, None)
    }

    /// One member that serves clients over TLS only.
    pub fn start_tls(certificates: Certificates) -> Option<Etcd> {
        Self::cluster_with(1, &[], Some(certificates))
    }

    /// Starts the members; if one exits at start (seen once in CI: a port
    /// raced away between probing and binding), starts afresh on new ports,
    /// up to three times.
    fn cluster_with(size: usize, args: &[&str], tls: Option<Certificates>) -> Option<Etcd> {
        if !have("/usr/bin/etcd", "etcd-server") {
            return None;
        }
        let mut attempt = 1;
        loop {
            match Self::try_cluster(size, args, tls.clone()) {
                Ok(etcd) => return Some(etcd),
                Err(status) if attempt < 3 => {
                    eprintln!("etcd exited at start ({status}); retrying on other ports");
                    attempt += 1;
                }
                Err(status) => panic!("etcd exited at start ({status}), three times"),
            }
        }
    }

    fn try_cluster(
        size: usize,
        args: &[&str],
        tls: Option<Certificates>,
    ) -> Result<Etcd, std::process::ExitStatus> {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            cluster,
            args: args.iter().map(|a| a.to_string()).collect(),
            tls,
            _dir: dir,
        };
        for i in 0..size {
            etcd.spawn(i);
        }
        let mut exited = None;
        for member in &mut etcd.members {
            let port = member.client_port;
            if let Err(status) = listens(port, member.child.as_mut().unwrap(), "etcd") {
                exited = Some(status);
            }
        }
        if let Some(status) = exited {
            // Dropping `etcd` stops the members that did start.
            return Err(status);
        }
        // Serving needs a leader: wait for the election.
        let deadline = Instant::now() + Duration::from_secs(30);
        while etcd.leader().is_none() {
            assert!(Instant::now() < deadline, "etcd elected no leader in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(etcd)
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut tls = Vec::new();
        if let Some(c) = &self.tls {
            tls.extend(["--cert-file".into(), c.cert.display().to_string()]);
            tls.extend(["--key-file".into(), c.key.display().to_string()]);
        }
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.cluster])
            .args([
                "--initial-cluster-token",
                "kvstash-test",
                "--initial-cluster-state",
                "new",
            ])
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "error",
            ])
            .args(&self.args)
            .args(&tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        m.child = Some(child);
    }

    /// One member for the whole test binary (stopped after it exits);
    /// give each test its own `namespace` ([`unique`]).
    pub fn shared() -> Option<&'static Etcd> {
        static SHARED: OnceLock<Option<Etcd>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let etcd = Etcd::start()?;
                let pids: Vec<String> = etcd
                    .members
                    .iter()
                    .filter_map(|m| m.child.as_ref().map(|c| c.id().to_string()))
                    .collect();
                after_exit(&format!(
                    "kill -9 {}; rm -rf '{}'",
                    pids.join(" "),
                    etcd._dir.path().display()
                ));
                Some(etcd)
            })
            .as_ref()
    }

    /// Every member's client endpoint (`127.0.0.1:port`).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The index of the member that leads now, if one does (asked with
    /// `etcdctl endpoint status`).
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && self
                    .etcdctl(i)
                    .args(["endpoint", "status", "-w", "fields"])
                    .output()
                    .is_ok_and(|out| {
                        // `"Leader" : N` and `"MemberID" : N` agree on the leader.
                        let text = String::from_utf8_lossy(&out.stdout);
                        let field = |name: &str| {
                            text.lines()
                                .find(|l| l.starts_with(&format!("\"{name}\"")))
                                .and_then(|l| l.split(':').nth(1))
                                .map(|v| v.trim().to_string())
                        };
                        field("Leader").is_some() && field("Leader") == field("MemberID")
                    })
        })
    }

    /// `etcdctl` (v3 API) pointed at member `i`.
    pub fn etcdctl(&self, i: usize) -> Command {
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3");
        match &self.tls {
            Some(c) => command
                .arg(format!(
                    "--endpoints=https://127.0.0.1:{}",
                    self.members[i].client_port
                ))
                .arg(format!("--cacert={}", c.ca.display())),
            None => command.arg(format!(
                "--endpoints=127.0.0.1:{}",
                self.members[i].client_port
            )),
        };
        command
    }

    /// Kills member `i` (SIGKILL); its data stays for a restart.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            stop(&mut child);
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        let m = &mut self.members[i];
        wait_for_port(m.client_port, m.child.as_mut().unwrap(), "etcd");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                stop(child);
            }
        }
    }
}

/// A PostgreSQL 15 cluster of its own (`initdb` in a temp dir, trust
/// authentication on loopback), run as the `postgres` user when the tests
/// run as root (PostgreSQL refuses root).
pub struct Postgres {
    port: u16,
    data: PathBuf,
    _dir: TempDir,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str) -> Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let path = format!("{PG_BIN}/{program}");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &path]);
        command
    } else {
        Command::new(path)
    }
}

impl Postgres {
    pub fn start() -> Option<Postgres> {
        if !have(&format!("{PG_BIN}/initdb"), "postgresql-15") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kvstash-pg")
            .tempdir()
            .unwrap();
        // The postgres user must own (and reach) the data directory.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let status = as_postgres("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let pg = Postgres {
            port: free_port(),
            data,
            _dir: dir,
        };
        pg.pg_start();
        Some(pg)
    }

    fn pg_start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on",
            self.port,
            self._dir.path().display()
        );
        let status = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &options, "-w", "-t", "60", "-l"])
            .arg(self._dir.path().join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// Starts the server again, on its port and data.
    pub fn restart(&mut self) {
        self.pg_start();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// One cluster for the whole test binary (stopped after it exits);
    /// give each test its own `namespace` ([`unique`]).
    pub fn shared() -> Option<&'static Postgres> {
        static SHARED: OnceLock<Option<Postgres>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let pg = Postgres::start()?;
                let stop = as_postgres("pg_ctl");
                let program = std::iter::once(stop.get_program())
                    .chain(stop.get_args())
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                after_exit(&format!(
                    "{program} -D '{}' -m immediate -w stop; rm -rf '{}'",
                    pg.data.display(),
                    pg._dir.path().display()
                ));
                Some(pg)
            })
            .as_ref()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server immediately (no shutdown checkpoint), keeping its data.
    pub fn kill(&mut self) {
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python of a virtualenv at `target/NAME` holding `requirements`
/// (pinned PyPI packages: the real peers some tests check against, or the
/// tools they run), made on first use; installed again when the list
/// changes (it is recorded in the venv).
pub fn python_venv(name: &str, requirements: &[&str]) -> PathBuf {
    python_venv_with(name, Path::new("python3"), requirements)
}

/// [`python_venv`] made with the interpreter `python`.
pub fn python_venv_with(name: &str, python: &Path, requirements: &[&str]) -> PathBuf {
    let interpreter = python;
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(name);
    let python = venv.join("bin").join("python");
    let record = venv.join("kvstash-requirements.txt");
    // The interpreter too: a venv made by another one is made again.
    let wanted = format!("{}\n{}", interpreter.display(), requirements.join("\n"));
    // Tests run in parallel threads (and test binaries may run in parallel
    // processes): one makes the venv while the others wait, instead of
    // finding a half-made one without pip.
    std::fs::create_dir_all(venv.parent().expect("target/NAME has a parent"))
        .expect("target is writable");
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("target is writable");
    lock.lock().expect("the venv's lock file can be locked");
    if std::fs::read_to_string(&record).is_ok_and(|had| had == wanted) && python.is_file() {
        return python;
    }
    let made_by = std::fs::read_to_string(&record).ok();
    let made_by = made_by.as_deref().and_then(|r| r.lines().next());
    if python.is_file() && made_by != Some(&*interpreter.to_string_lossy()) {
        std::fs::remove_dir_all(&venv).expect("target is writable");
    }
    if !python.is_file() {
        let made = Command::new(interpreter)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap_or_else(|e| panic!("{} (with venv) is needed: {e}", interpreter.display()));
        assert!(
            made.success(),
            "{} -m venv {} failed",
            interpreter.display(),
            venv.display()
        );
    }
    let installed = pip_install(&python)
        .args(requirements)
        .status()
        .expect("pip runs");
    assert!(
        installed.success(),
        "pip install {} failed",
        requirements.join(" ")
    );
    std::fs::write(&record, wanted).expect("the venv is writable");
    python
}

/// `python -m pip install`, quietly: add what to install.
pub fn pip_install(python: &Path) -> Command {
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    pip
}

/// Runs `command` to completion; fails, showing its output, unless it
/// succeeds.
pub fn run(command: &mut Command) -> std::process::Output {
    let shown = format!("{command:?}");
    let output = command.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}
